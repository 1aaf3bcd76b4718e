"""LayerNorm, GroupNorm, InstanceNorm1d/2d/3d and F.layer_norm / group_norm / instance_norm:
against a NumPy reference, float64 gradchecks, and torch.nn in training and eval."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays
from test_nn import module_gradcheck

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn


def _data(shape, seed, scale=2.0, shift=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


def _ref(x, axes, eps=1e-5):
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


# ---------------------------------------------------------------- NumPy reference + hypothesis


@given(
    x=arrays(st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(2, 6))),
    k=st.integers(1, 2),
)
def test_layer_norm_matches_numpy(x, k):
    shape = x.shape[-k:]
    axes = tuple(range(3 - k, 3))
    np.testing.assert_allclose(F.layer_norm(tg.Tensor(x), shape).data, _ref(x, axes), atol=1e-9)


@given(
    n=st.integers(0, 3),
    groups=st.sampled_from([1, 2, 3]),
    per=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 4), max_size=2),
    data=st.data(),
)
def test_group_norm_matches_numpy(n, groups, per, spatial, data):
    c = groups * per
    x = data.draw(arrays((n, c, *spatial)))
    want = _ref(x.reshape(n, groups, -1), (2,)).reshape(x.shape) if n else x
    out = F.group_norm(tg.Tensor(x), groups)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.data, want, atol=1e-9)


@given(
    x=arrays(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 5), st.integers(1, 3)))
)
def test_instance_norm_matches_numpy(x):
    np.testing.assert_allclose(F.instance_norm(tg.Tensor(x)).data, _ref(x, (2, 3)), atol=1e-9)


# ---------------------------------------------------------------- float64 gradchecks


def test_gradchecks():
    x = tg.Tensor(_data((3, 4, 5), 0), requires_grad=True)
    w = tg.Tensor(_data((5,), 1), requires_grad=True)
    b = tg.Tensor(_data((5,), 2), requires_grad=True)
    tg.gradcheck(lambda x, w, b: F.layer_norm(x, (5,), w, b), [x, w, b])
    w2 = tg.Tensor(_data((4, 5), 3), requires_grad=True)
    tg.gradcheck(lambda x, w: F.layer_norm(x, (4, 5), w), [x, w2])
    wc, bc = (tg.Tensor(_data((4,), s), requires_grad=True) for s in (4, 5))
    tg.gradcheck(lambda x, w, b: F.group_norm(x, 2, w, b), [x, wc, bc])
    tg.gradcheck(lambda x, w, b: F.instance_norm(x, weight=w, bias=b), [x, wc, bc])
    rm, rv = tg.Tensor(_data((4,), 6)), tg.Tensor(np.abs(_data((4,), 7)) + 0.5)
    tg.gradcheck(lambda x, w: F.instance_norm(x, rm, rv, w, None, use_input_stats=False), [x, wc])


@pytest.mark.parametrize(
    "module,shape",
    [
        (lambda: nn.LayerNorm((3, 4), dtype=np.float64), (2, 3, 4)),
        (lambda: nn.GroupNorm(3, 6, dtype=np.float64), (2, 6, 2, 2)),
        (lambda: nn.InstanceNorm2d(3, affine=True, dtype=np.float64), (2, 3, 2, 3)),
    ],
)
def test_module_gradcheck(module, shape):
    m = module()
    for p in m.parameters():
        p.data[...] = _data(p.shape, 9)
    module_gradcheck(m, tg.Tensor(_data(shape, 8), requires_grad=True))


# ---------------------------------------------------------------- against PyTorch


def _compare(ours, theirs, torch, shape, steps=3, seed=0):
    """Forward and backward of both modules on the same data, in training then eval."""
    rng = np.random.default_rng(seed)
    for p, (_, tp) in zip(ours.parameters(), theirs.named_parameters()):
        p.data[...] = rng.standard_normal(p.shape)
        with torch.no_grad():
            tp.copy_(torch.from_numpy(p.data))
    for training in [True] * steps + [False]:
        ours.train(training)
        theirs.train(training)
        x_np, dy = _data(shape, rng.integers(1 << 30)), rng.standard_normal(shape)
        x, tx = tg.Tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
        ours.zero_grad()
        theirs.zero_grad()
        out, tout = ours(x), theirs(tx)
        out.backward(dy)
        tout.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-8, atol=1e-9)
        for p, (name, tp) in zip(ours.parameters(), theirs.named_parameters()):
            np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-8, atol=1e-9)
        theirs_state = theirs.state_dict()
        assert set(ours.state_dict()) == set(theirs_state)
        for key, value in ours.state_dict().items():
            np.testing.assert_allclose(value.data, theirs_state[key].numpy(), rtol=1e-12)


@pytest.mark.parametrize("normalized_shape", [4, (3, 4)])
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, True)])
def test_layer_norm_matches_torch(normalized_shape, affine, bias):
    torch = pytest.importorskip("torch")
    kw = dict(eps=1e-4, elementwise_affine=affine, bias=bias)
    ours = nn.LayerNorm(normalized_shape, **kw, dtype=np.float64)
    theirs = torch.nn.LayerNorm(normalized_shape, **kw).double()
    _compare(ours, theirs, torch, (2, 5, 3, 4))
    assert repr(theirs).startswith(repr(ours)[:-1])  # theirs adds ", bias=True)"


@pytest.mark.parametrize(
    "groups,channels,shape",
    [(1, 4, (3, 4)), (2, 6, (2, 6, 5)), (3, 6, (2, 6, 2, 3)), (4, 4, (2, 4, 3))],
)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_torch(groups, channels, shape, affine):
    torch = pytest.importorskip("torch")
    ours = nn.GroupNorm(groups, channels, affine=affine, dtype=np.float64)
    theirs = torch.nn.GroupNorm(groups, channels, affine=affine).double()
    _compare(ours, theirs, torch, shape)


@pytest.mark.parametrize(
    "cls,shape",
    [
        (nn.InstanceNorm1d, (3, 4, 5)),
        (nn.InstanceNorm1d, (4, 5)),  # unbatched
        (nn.InstanceNorm2d, (2, 4, 3, 3)),
        (nn.InstanceNorm2d, (4, 2, 3)),  # unbatched
        (nn.InstanceNorm3d, (2, 4, 2, 2, 3)),
    ],
)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track,momentum", [(False, 0.1), (True, 0.3), (True, None)])
def test_instance_norm_matches_torch(cls, shape, affine, track, momentum):
    torch = pytest.importorskip("torch")
    kw = dict(affine=affine, track_running_stats=track, momentum=momentum)
    ours = cls(4, **kw, dtype=np.float64)
    theirs = getattr(torch.nn, cls.__name__)(4, **kw).double()
    _compare(ours, theirs, torch, shape)
    assert repr(ours) == re.sub(", bias=(True|False)", "", repr(theirs))


def test_functional_instance_norm_matches_torch():
    torch = pytest.importorskip("torch")
    x = _data((3, 2, 6), 0)
    rm, rv = np.array([0.5, -1.0]), np.array([2.0, 0.5])
    ours_rm, ours_rv = rm.copy(), rv.copy()
    theirs_rm, theirs_rv = torch.tensor(rm), torch.tensor(rv)
    for use in (True, False):
        out = F.instance_norm(tg.Tensor(x), ours_rm, ours_rv, use_input_stats=use, momentum=0.2)
        want = torch.nn.functional.instance_norm(
            torch.from_numpy(x), theirs_rm, theirs_rv, use_input_stats=use, momentum=0.2
        )
        np.testing.assert_allclose(out.data, want.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours_rm, theirs_rm.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours_rv, theirs_rv.numpy(), rtol=1e-12)


def test_empty_batches_match_torch():
    torch = pytest.importorskip("torch")
    for ours, theirs, shape in (
        (nn.LayerNorm(3), torch.nn.LayerNorm(3), (0, 3)),
        (nn.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4), (0, 4, 3)),
    ):
        out = ours(tg.Tensor(np.zeros(shape, dtype=np.float32), requires_grad=True))
        assert out.shape == tuple(theirs(torch.zeros(shape)).shape)
        out.sum().backward()


def test_float32_stays_float32():
    x = tg.randn(2, 4, 3, seed=0)
    for m in (nn.LayerNorm(3), nn.GroupNorm(2, 4), nn.InstanceNorm1d(4, affine=True)):
        assert m(x).dtype == np.float32


# ---------------------------------------------------------------- errors


def test_errors():
    x = tg.randn(2, 6, 4, seed=0)
    with pytest.raises(
        ValueError, match=r"num_channels \(5\) must be divisible by num_groups \(2\)"
    ):
        nn.GroupNorm(2, 5)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        F.group_norm(tg.randn(2, 5), 2)
    with pytest.raises(ValueError, match="expected 6 channels"):
        nn.GroupNorm(2, 6)(tg.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"expected input of shape \(\*, 5\)"):
        nn.LayerNorm(5)(x)
    with pytest.raises(ValueError, match=r"expected weight of shape \(4,\) \(got \(3,\)\)"):
        F.layer_norm(x, 4, weight=tg.ones(3))
    with pytest.raises(TypeError, match="normalized_shape"):
        F.layer_norm(x, "4")
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        nn.InstanceNorm1d(6)(tg.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match="to match num_features"):
        nn.InstanceNorm1d(5, affine=True)(x)
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm1d(5)(x)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nn.InstanceNorm1d(6)(tg.randn(2, 6, 1))
    with pytest.raises(ValueError, match="required when use_input_stats=False"):
        F.instance_norm(x, use_input_stats=False)
    with pytest.raises(ValueError, match="eps"):
        nn.LayerNorm(3, eps=-1.0)
    with pytest.raises(ValueError, match="num_groups"):
        nn.GroupNorm(0, 4)
    with pytest.raises(TypeError, match="Tensor"):
        F.layer_norm(np.zeros((2, 3)), 3)
