"""nn.BatchNorm1d / 2d / 3d against a hand NumPy model, F.batch_norm and torch.nn."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_nn import module_gradcheck

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn

# ---------------------------------------------------------------- NumPy reference


class NumpyBN:
    """Algorithms 1 and 2 of the paper written out in NumPy, with PyTorch's momentum rule."""

    def __init__(self, c, eps=1e-5, momentum=0.1):
        self.mean, self.var, self.count = np.zeros(c), np.ones(c), 0
        self.eps, self.momentum = eps, momentum

    @staticmethod
    def _axes(x):
        return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)

    def train_step(self, x, gamma, beta, dy):
        """Forward on batch stats, update running stats; return y, dx, dgamma, dbeta."""
        axes, shape = self._axes(x)
        m = x.size // x.shape[1]
        mu, var = x.mean(axis=axes), x.var(axis=axes)  # var: biased (1/m)
        invstd = 1 / np.sqrt(var + self.eps)
        xhat = (x - mu.reshape(shape)) * invstd.reshape(shape)
        y = gamma.reshape(shape) * xhat + beta.reshape(shape)
        self.count += 1
        f = 1 / self.count if self.momentum is None else self.momentum
        self.mean = (1 - f) * self.mean + f * mu
        self.var = (1 - f) * self.var + f * var * m / (m - 1)  # unbiased
        dxhat = dy * gamma.reshape(shape)
        dx = (
            invstd.reshape(shape)
            / m
            * (
                m * dxhat
                - dxhat.sum(axis=axes).reshape(shape)
                - xhat * (dxhat * xhat).sum(axis=axes).reshape(shape)
            )
        )
        return y, dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)

    def eval(self, x, gamma, beta):
        _, shape = self._axes(x)
        return gamma.reshape(shape) * (x - self.mean.reshape(shape)) / np.sqrt(
            self.var.reshape(shape) + self.eps
        ) + beta.reshape(shape)


SHAPES = {
    nn.BatchNorm1d: [(6, 3), (4, 3, 5)],
    nn.BatchNorm2d: [(3, 3, 4, 2)],
    nn.BatchNorm3d: [(2, 3, 2, 3, 2)],
}
CASES = [(cls, s) for cls, shapes in SHAPES.items() for s in shapes]


def _data(shape, seed, scale=2.0, shift=1.5):
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


@pytest.mark.parametrize("cls,shape", CASES)
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
def test_matches_numpy_over_training_then_eval(cls, shape, momentum):
    c = shape[1]
    bn = cls(c, momentum=momentum, dtype=np.float64)
    rng = np.random.default_rng(1)
    bn.weight.data[...] = rng.uniform(0.5, 2, c)
    bn.bias.data[...] = rng.standard_normal(c)
    ref = NumpyBN(c, momentum=momentum)
    for step in range(4):
        x = tg.Tensor(_data(shape, step), requires_grad=True)
        dy = _data(shape, 100 + step, 1.0, 0.0)
        y, dx, dgamma, dbeta = ref.train_step(x.data, bn.weight.data, bn.bias.data, dy)
        bn.zero_grad()
        out = bn(x)
        out.backward(dy)
        np.testing.assert_allclose(out.data, y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(x.grad.data, dx, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(bn.weight.grad.data, dgamma, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(bn.bias.grad.data, dbeta, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(bn.running_mean.data, ref.mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bn.running_var.data, ref.var, rtol=1e-12)
        assert bn.num_batches_tracked.item() == step + 1
    bn.eval()
    before = {k: v.data.copy() for k, v in bn.state_dict().items()}
    x = tg.Tensor(_data(shape, 50))
    np.testing.assert_allclose(
        bn(x).data, ref.eval(x.data, bn.weight.data, bn.bias.data), rtol=1e-10, atol=1e-12
    )
    for k, v in bn.state_dict().items():  # eval changes nothing
        np.testing.assert_array_equal(v.data, before[k])


def test_momentum_none_is_the_population_average():
    """Algorithm 2 literally: E[x] = mean of the batch means, Var = mean of unbiased vars."""
    bn = nn.BatchNorm1d(4, momentum=None, dtype=np.float64)
    batches = [_data((5, 4), s) for s in range(6)]
    for b in batches:
        bn(tg.Tensor(b))
    np.testing.assert_allclose(
        bn.running_mean.data, np.mean([b.mean(0) for b in batches], 0), rtol=1e-12
    )
    np.testing.assert_allclose(
        bn.running_var.data, np.mean([b.var(0, ddof=1) for b in batches], 0), rtol=1e-12
    )


@pytest.mark.parametrize("cls,shape", CASES)
def test_matches_functional_batch_norm(cls, shape):
    c = shape[1]
    bn = cls(c, momentum=0.3)
    rm, rv = tg.zeros(c), tg.ones(c)
    w, b = tg.Tensor(np.linspace(0.5, 1.5, c).astype(np.float32)), tg.zeros(c)
    bn.weight.data[...] = w.data
    for step in range(3):
        x = tg.Tensor(_data(shape, step).astype(np.float32))
        np.testing.assert_allclose(
            bn(x).data, F.batch_norm(x, rm, rv, w, b, True, 0.3).data, rtol=1e-6, atol=1e-6
        )
    np.testing.assert_allclose(bn.running_mean.data, rm.data, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.data, rv.data, rtol=1e-6)
    bn.eval()
    x = tg.Tensor(_data(shape, 9).astype(np.float32))
    np.testing.assert_allclose(
        bn(x).data, F.batch_norm(x, rm, rv, w, b, False).data, rtol=1e-6, atol=1e-6
    )


@settings(deadline=None, max_examples=8)
@given(
    n=st.integers(2, 4),
    c=st.integers(1, 3),
    length=st.integers(1, 3),
    affine=st.booleans(),
    training=st.booleans(),
)
def test_gradcheck(n, c, length, affine, training):
    bn = nn.BatchNorm1d(c, affine=affine, dtype=np.float64)
    bn.running_mean.data[...] = np.linspace(-1, 1, c)
    bn.running_var.data[...] = np.linspace(0.5, 2, c)
    if affine:
        bn.weight.data[...] = np.linspace(0.5, 1.5, c)
        bn.bias.data[...] = np.linspace(-0.2, 0.3, c)
    bn.train(training)
    x = tg.Tensor(_data((n, c, length), n + c), requires_grad=True)
    assert module_gradcheck(bn, x)


def test_batchnorm2d_gradcheck():
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    bn.weight.data[...] = [0.7, 1.3]
    assert module_gradcheck(bn, tg.Tensor(_data((2, 2, 2, 3), 3), requires_grad=True))


def test_no_affine_and_no_running_stats():
    bn = nn.BatchNorm2d(3, affine=False, track_running_stats=False, dtype=np.float64)
    assert bn.weight is None and bn.bias is None
    assert bn.running_mean is None and bn.running_var is None and bn.num_batches_tracked is None
    assert list(bn.parameters()) == [] and list(bn.state_dict()) == []
    x = _data((4, 3, 2, 2), 0)
    axes = (0, 2, 3)
    ref = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(bn(tg.Tensor(x)).data, ref, rtol=1e-10)
    bn.eval()  # no running estimates: batch statistics in eval too
    np.testing.assert_allclose(bn(tg.Tensor(x)).data, ref, rtol=1e-10)


def test_under_no_grad_training_still_updates_running_stats():
    bn = nn.BatchNorm1d(2)
    with tg.no_grad():
        out = bn(tg.Tensor(_data((4, 2), 0).astype(np.float32)))
    assert not out.requires_grad
    assert bn.num_batches_tracked.item() == 1 and np.any(bn.running_mean.data != 0)


def test_reset_running_stats_and_parameters():
    bn = nn.BatchNorm1d(3)
    bn(tg.Tensor(_data((5, 3), 0).astype(np.float32)))
    bn.weight.data[...] = 3
    bn.bias.data[...] = -1
    bn.reset_running_stats()
    assert np.all(bn.running_mean.data == 0) and np.all(bn.running_var.data == 1)
    assert bn.num_batches_tracked.item() == 0 and np.all(bn.weight.data == 3)
    bn.reset_parameters()
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)


def test_defaults_dtype_and_docstring():
    bn = nn.BatchNorm2d(4)
    assert (bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (1e-5, 0.1, True, True)
    assert bn.weight.dtype == bn.running_var.dtype == np.float32
    assert nn.BatchNorm1d(2, dtype=np.float64).running_mean.dtype == np.float64
    doc = nn.BatchNorm1d.__doc__
    assert "Ioffe" in doc and "*biased*" in doc and "*unbiased*" in doc


def test_num_batches_tracked_round_trips_through_state_dict():
    bn = nn.BatchNorm1d(2)
    for s in range(3):
        bn(tg.Tensor(_data((4, 2), s).astype(np.float32)))
    other = nn.BatchNorm1d(2)
    other.load_state_dict(bn.state_dict())
    assert other.num_batches_tracked.item() == 3
    np.testing.assert_array_equal(other.running_var.data, bn.running_var.data)


def test_error_messages():
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected 2D or 3D input \(got 4D input\)"):
        nn.BatchNorm1d(3)(tg.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input \(got 2D input\)"):
        nn.BatchNorm2d(3)(tg.zeros(2, 3))
    with pytest.raises(ValueError, match=r"expected 3 channels .* got input of shape \(2, 4\)"):
        nn.BatchNorm1d(3)(tg.zeros(2, 4))
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn(tg.zeros(1, 3))
    assert bn.num_batches_tracked.item() == 0  # a refused batch is not counted
    assert bn.eval()(tg.zeros(1, 3)).shape == (1, 3)  # fine in eval
    with pytest.raises(TypeError, match="Tensor"):
        bn(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm1d(0)
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm1d(2, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        nn.BatchNorm1d(2, eps=-1)


# ---------------------------------------------------------------- against PyTorch


@pytest.mark.parametrize("cls,shape", CASES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_torch(cls, shape, momentum):
    torch = pytest.importorskip("torch")
    c = shape[1]
    ours = cls(c, momentum=momentum, dtype=np.float64)
    theirs = getattr(torch.nn, cls.__name__)(c, momentum=momentum).double()
    gamma = np.linspace(0.5, 1.5, c)
    ours.weight.data[...] = gamma
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(gamma))
    for step in range(3):
        x_np, dy = _data(shape, step), _data(shape, 10 + step, 1.0, 0.0)
        x, tx = tg.Tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
        ours.zero_grad()
        theirs.zero_grad()
        out, tout = ours(x), theirs(tx)
        out.backward(dy)
        tout.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(
            ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(
            ours.bias.grad.data, theirs.bias.grad.numpy(), rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(
            ours.running_mean.data, theirs.running_mean.numpy(), rtol=1e-12, atol=1e-14
        )
        np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy(), rtol=1e-12)
        assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item()
    ours.eval()
    theirs.eval()
    x_np = _data(shape, 99)
    np.testing.assert_allclose(
        ours(tg.Tensor(x_np)).data,
        theirs(torch.from_numpy(x_np)).detach().numpy(),
        rtol=1e-10,
        atol=1e-12,
    )
    assert set(ours.state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize(
    "cls,shape",
    [(nn.BatchNorm1d, (0, 3)), (nn.BatchNorm1d, (2, 3, 0)), (nn.BatchNorm2d, (0, 3, 4, 4))],
)
def test_empty_batch_gives_empty_output_and_keeps_statistics(cls, shape):
    """Before the fix training raised and BatchNorm2d eval crashed in a reshape."""
    bn = cls(3, dtype=np.float64)
    bn.running_mean.data[...] = [1.0, 2.0, 3.0]
    for training in (True, False):
        bn.train(training)
        x = tg.Tensor(np.zeros(shape), requires_grad=True)
        out = bn(x)
        assert out.shape == shape
        out.sum().backward()
        assert x.grad.shape == shape and np.all(bn.weight.grad.data == 0)
        np.testing.assert_array_equal(bn.running_mean.data, [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(bn.running_var.data, [1.0, 1.0, 1.0])
    assert bn.num_batches_tracked.item() == 1  # PyTorch counts the empty batch too
    out = F.batch_norm(tg.Tensor(np.zeros((0, 3))), None, None, training=True)
    assert out.shape == (0, 3)


def test_empty_batch_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        assert ours(tg.zeros(0, 3, 2, 2)).shape == tuple(theirs(torch.zeros(0, 3, 2, 2)).shape)
        for name, t in theirs.state_dict().items():
            np.testing.assert_array_equal(ours.state_dict()[name].data, t.numpy())


def test_track_running_stats_turned_off_later_still_uses_buffers_in_eval():
    """PyTorch: eval normalizes with the buffers that exist, whatever the flag says now.
    Before the fix eval used batch statistics."""
    bn = nn.BatchNorm1d(2, dtype=np.float64)
    bn.running_mean.data[...] = [1.0, -1.0]
    bn.running_var.data[...] = [4.0, 0.25]
    bn.track_running_stats = False
    bn.eval()
    x = np.array([[3.0, 0.0], [5.0, -2.0]])
    want = (x - bn.running_mean.data) / np.sqrt(bn.running_var.data + bn.eps)
    np.testing.assert_allclose(bn(tg.Tensor(x)).data, want, rtol=1e-12)
    bn.train()  # training: batch statistics, and the buffers and counter stay as they are
    bn(tg.Tensor(x))
    np.testing.assert_array_equal(bn.running_mean.data, [1.0, -1.0])
    assert bn.num_batches_tracked.item() == 0
    late = nn.BatchNorm1d(2, track_running_stats=False, dtype=np.float64)
    late.track_running_stats = True  # no buffers to update or use: batch statistics
    for training in (True, False):
        late.train(training)
        out = late(tg.Tensor(x)).data
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)


@pytest.mark.parametrize("built_with", [True, False])
def test_track_running_stats_toggled_matches_torch(built_with):
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm1d(3, track_running_stats=built_with, dtype=np.float64)
    theirs = torch.nn.BatchNorm1d(3, track_running_stats=built_with).double()
    x = _data((5, 3), 0)
    for training in (True, False, True):
        for m in (ours, theirs):
            m.train(training)
        ours(tg.Tensor(x))  # one batch with the flag as built
        theirs(torch.from_numpy(x))
        ours.track_running_stats = theirs.track_running_stats = not built_with
        np.testing.assert_allclose(
            ours(tg.Tensor(x)).data, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-10
        )
        ours.track_running_stats = theirs.track_running_stats = built_with
    for name, t in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name].data, t.numpy(), rtol=1e-12)
