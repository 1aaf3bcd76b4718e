"""The ops a PyTorch user reaches for (issue 13): each against PyTorch (forward and gradients,
float64) where torch is installed, and tg.gradcheck in float64 over hypothesis-drawn inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import arrays, separated, shapes

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional
few = settings(max_examples=15)


def T(a, grad=True):
    return tg.Tensor(np.asarray(a, np.float64), requires_grad=grad)


def against_torch(fn, torch_fn, *arrays_, grad=True, atol=1e-10):
    """fn(*tensors) vs torch_fn(*torch tensors): values, and gradients of sum(out * r)."""
    ours = [T(a, grad) for a in arrays_]
    theirs = [torch.tensor(np.asarray(a, np.float64), requires_grad=grad) for a in arrays_]
    out, ref = fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-9, atol=atol)
    if grad:
        r = np.random.default_rng(0).standard_normal(out.shape)
        (out * tg.Tensor(r)).sum().backward()
        (ref * torch.tensor(r)).sum().backward()
        for o, t in zip(ours, theirs):
            want = np.zeros(o.shape) if t.grad is None else t.grad.numpy()
            got = np.zeros(o.shape) if o.grad is None else o.grad.numpy()
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=atol)
    return out


# ------------------------------------------------------------------ dtypes and comparisons


def test_integer_and_bool_data_keep_their_dtype_and_never_require_grad():
    assert tg.Tensor(np.array([1, 2])).dtype == np.int64
    assert tg.Tensor(np.array([True])).dtype == np.bool_
    assert tg.Tensor([1, 2]).dtype == np.float32  # the project's convention for lists
    assert tg.Tensor([1, 2], dtype=np.int64).dtype == np.int64
    with pytest.raises(RuntimeError, match="floating point"):
        tg.Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(RuntimeError, match="floating point"):
        tg.Tensor(np.array([1, 2])).requires_grad_()
    i = tg.Tensor(np.array([1, 2]))
    assert (i + 1).dtype == np.int64 and (i * 0.5).dtype == np.float32
    assert (i / 2).dtype == np.float32 and (i + tg.ones(2)).dtype == np.float32
    assert (i**2).dtype == np.int64 and (i**0.5).dtype == np.float32
    assert i.float().dtype == np.float32 and tg.ones(2).long().dtype == np.int64


@pytest.mark.parametrize("op", ["__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"])
@given(a=arrays((3, 4), bound=2.0), b=arrays((4,), bound=2.0))
@few
def test_comparisons_return_bool_tensors(op, a, b):
    a, b = np.round(a), np.round(b)  # ties happen
    out = getattr(tg.Tensor(a), op)(tg.Tensor(b))
    ref = getattr(torch.tensor(a), op)(torch.tensor(b))
    assert out.dtype == np.bool_ and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    np.testing.assert_array_equal(getattr(tg.Tensor(a), op)(1.0).numpy(), getattr(a, op)(1.0))


def test_tensors_still_hash_by_identity():
    a, b = tg.ones(2, requires_grad=True), tg.ones(2, requires_grad=True)
    assert len({a, b}) == 2 and {a: 1}[a] == 1 and (a == None) is False  # noqa: E711
    (a * b).sum().backward()  # the graph keys dicts and sets by tensor
    np.testing.assert_array_equal(a.grad.numpy(), [1, 1])
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(a == b)
    assert bool(tg.Tensor(1.0) == 1.0)


@given(a=arrays((3, 4), elements=separated()), b=arrays((3, 4), elements=separated()))
@few
def test_where_masked_fill_maximum_minimum(a, b):
    c = a > b
    against_torch(
        lambda x, y: tg.where(tg.Tensor(c), x, y),
        lambda x, y: torch.where(torch.tensor(c), x, y),
        a,
        b,
    )
    against_torch(
        lambda x: x.masked_fill(tg.Tensor(c), -1.5),
        lambda x: x.masked_fill(torch.tensor(c), -1.5),
        a,
    )
    against_torch(lambda x, y: x.maximum(y), torch.maximum, a, b)
    against_torch(lambda x, y: x.minimum(y), torch.minimum, a, b)
    assert tg.gradcheck(lambda x, y: tg.where(tg.Tensor(c), x, y * y), [T(a), T(b)])


def test_maximum_splits_the_gradient_at_ties_as_pytorch():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 0.0, 3.0])
    against_torch(lambda x, y: x.maximum(y), torch.maximum, a, b)
    against_torch(lambda x, y: x.minimum(y), torch.minimum, a, b)


@given(a=arrays((4, 5), elements=separated()))
@few
def test_clamp_with_numbers_and_tensors(a):
    lo, hi = np.full((5,), -0.5), np.linspace(0.0, 1.0, 5)
    against_torch(lambda x: x.clamp(-0.5, 0.7), lambda x: x.clamp(-0.5, 0.7), a)
    against_torch(lambda x: x.clip(max=0.3), lambda x: x.clip(max=0.3), a)
    against_torch(lambda x, lo_, hi_: x.clamp(lo_, hi_), torch.clamp, a, lo, hi)
    assert tg.gradcheck(lambda x: x.clamp(-0.5, 0.7) * x, [T(a)])


def test_clamp_gradient_at_the_bounds_and_min_above_max_as_pytorch():
    a = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    against_torch(lambda x: x.clamp(0.0, 1.0), lambda x: x.clamp(0.0, 1.0), a)
    against_torch(lambda x: x.clamp(1.0, 0.0), lambda x: x.clamp(1.0, 0.0), a)
    with pytest.raises(ValueError, match="at least one"):
        tg.ones(2).clamp()


@given(a=arrays((3, 4), bound=2.0))
@few
def test_min_argmax_argmin_abs_sign(a):
    a = np.round(a * 2) / 2  # ties
    against_torch(lambda x: x.min(), lambda x: x.min(), a)
    # with dim, PyTorch sends a tie's gradient to one index (we split it): compare values
    against_torch(lambda x: x.min(dim=1), lambda x: x.min(dim=1).values, a, grad=False)
    distinct = np.random.default_rng(0).permutation(12).reshape(3, 4) * 1.0
    against_torch(lambda x: x.min(dim=1), lambda x: x.min(dim=1).values, distinct)
    t, r = tg.Tensor(a), torch.tensor(a)
    for dim in (None, 0, 1, -1):
        for keep in (False, True):
            kw = {} if dim is None else {"dim": dim}
            got = t.argmax(dim, keep)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got.numpy(), r.argmax(**kw, keepdim=keep).numpy())
            np.testing.assert_array_equal(t.argmin(dim, keep).numpy(), r.argmin(**kw, keepdim=keep))
    against_torch(lambda x: x.sign() * x, lambda x: x.sign() * x, a)
    against_torch(lambda x: x.abs(), lambda x: x.abs(), a)


# ------------------------------------------------------------------ indexing (bugs)


def test_int_and_index_list_separated_by_a_slice_follow_pytorch():
    a = np.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    for index in [
        (0, slice(None), [0, 1]),
        (slice(None), 1, slice(None), [0, 2]),
        ([0, 1], slice(None), 0),
        (Ellipsis, 0, [1, 2]),
        (0, [0, 2], slice(None), [1, 3]),
        (1, None, slice(None), [0, 1]),
    ]:
        ours, ref = tg.Tensor(a)[index], torch.tensor(a)[index]
        np.testing.assert_array_equal(ours.numpy(), ref.numpy(), err_msg=repr(index))
    against_torch(lambda x: x[0, :, [0, 1, 1]], lambda x: x[0, :, [0, 1, 1]], a)


def test_bool_tensor_index_is_a_mask_and_float_tensor_index_is_an_error():
    a = np.arange(12.0).reshape(3, 4)
    mask = a > 4
    against_torch(lambda x: x[tg.Tensor(mask)], lambda x: x[torch.tensor(mask)], a)
    rows = np.array([True, False, True])
    against_torch(lambda x: x[tg.Tensor(rows), 1:], lambda x: x[torch.tensor(rows), 1:], a)
    against_torch(lambda x: x[tg.Tensor(np.array([2, 0]))], lambda x: x[torch.tensor([2, 0])], a)
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        tg.Tensor(a)[tg.Tensor([0.0, 1.0])]


# ------------------------------------------------------------------ shape ops


@given(shape=shapes(min_dims=1, max_dims=3, max_side=3), data=st.data())
@few
def test_squeeze_unsqueeze_expand_flip_stack(shape, data):
    a = data.draw(arrays(shape))
    d = data.draw(st.integers(-len(shape) - 1, len(shape)))
    against_torch(lambda x: x.unsqueeze(d), lambda x: x.unsqueeze(d), a)
    b = a.reshape((1,) + shape)
    against_torch(lambda x: x.squeeze(), lambda x: x.squeeze(), b)
    against_torch(lambda x: x.squeeze(0), lambda x: x.squeeze(0), b)
    against_torch(lambda x: x.expand(2, *shape), lambda x: x.expand(2, *shape), b)
    dims = (0, -1) if len(shape) > 1 else (0,)
    against_torch(lambda x: x.flip(*dims), lambda x: x.flip(*dims), a)
    against_torch(lambda x, y: tg.stack([x, y], d), lambda x, y: torch.stack([x, y], d), a, a * 2)
    assert tg.gradcheck(lambda x: x.expand(3, *shape).flip(0) * x, [T(b)])


@pytest.mark.parametrize("how", [2, 3, [1, 4], [0, 5]])
def test_split_and_chunk(how):
    a = np.random.default_rng(1).standard_normal((5, 2))
    ours = tg.Tensor(a).split(how)
    ref = torch.tensor(a).split(how)
    assert [o.shape for o in ours] == [tuple(r.shape) for r in ref]
    for c in (1, 2, 3, 6):
        assert [o.shape for o in tg.Tensor(a).chunk(c)] == [
            tuple(r.shape) for r in torch.tensor(a).chunk(c)
        ]
    against_torch(lambda x: tg.cat(x.split(how)[::-1]), lambda x: torch.cat(x.split(how)[::-1]), a)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@given(data=st.data())
@few
def test_pad_modes(mode, data):
    a = data.draw(arrays((2, 3, 4, 5)))
    p = tuple(data.draw(st.lists(st.integers(0, 2), min_size=4, max_size=4)))
    kw = {"value": 0.5} if mode == "constant" else {}
    against_torch(lambda x: F.pad(x, p, mode, **kw), lambda x: TF.pad(x, p, mode=mode, **kw), a)
    assert tg.gradcheck(lambda x: F.pad(x, p, mode) * F.pad(x, p, mode), [T(a[:1, :1])])
    with pytest.raises(ValueError, match="pad"):
        F.pad(tg.Tensor(a), (1, 2, 3))


def test_negative_constant_pads_crop_as_pytorch():
    a = np.random.default_rng(5).standard_normal((2, 3, 5))
    for p in [(-1, 2), (1, -2, -1, 0), (-2, -2, 0, 1)]:
        against_torch(lambda x: F.pad(x, p, value=1.0), lambda x: TF.pad(x, p, value=1.0), a)
    with pytest.raises(ValueError, match="pad: expected pad to be an integer >= 0"):
        F.pad(tg.Tensor(a), (-1, 0), mode="reflect")


@given(a=arrays((3, 4), elements=st.floats(0.3, 2.0)), b=arrays((3, 4), bound=2.0))
@few
def test_method_aliases_and_tensor_powers(a, b):
    against_torch(lambda x, y: x.add(y).sub(y, alpha=2).mul(y).div(x).neg(), _torch_alias, a, b)
    against_torch(lambda x, y: x**y, lambda x, y: x**y, a, b)
    against_torch(lambda x: 2.5**x, lambda x: 2.5**x, b)
    against_torch(lambda x: x.pow(2), lambda x: x.pow(2), b)
    assert tg.gradcheck(lambda x, y: x**y, [T(a), T(b)])


def _torch_alias(x, y):
    return x.add(y).sub(y, alpha=2).mul(y).div(x).neg()


def test_pow_tensor_gradient_at_zero_base_as_pytorch():
    against_torch(lambda x, y: x**y, lambda x, y: x**y, [0.0, 0.0, 2.0], [2.0, 0.0, 0.0])


# ------------------------------------------------------------------ reductions


@given(a=arrays((3, 4), elements=separated(2.0)))
@few
def test_std_logsumexp_prod_norm(a):
    against_torch(lambda x: x.std(), lambda x: x.std(), a)
    against_torch(lambda x: x.std(dim=1, correction=0), lambda x: x.std(dim=1, correction=0), a)
    for dim, keep in [(1, False), (0, True), ((0, 1), False)]:
        against_torch(lambda x: x.logsumexp(dim, keep), lambda x: x.logsumexp(dim, keep), a)
    against_torch(lambda x: x.prod(), lambda x: x.prod(), a)
    against_torch(lambda x: x.prod(1, True), lambda x: x.prod(1, keepdim=True), a)
    for p in ("fro", 1, 2, 3, float("inf")):
        against_torch(lambda x: x.norm(p), lambda x: x.norm(p), a)
        against_torch(lambda x: x.norm(p, dim=1), lambda x: x.norm(p, dim=1), a)
    assert tg.gradcheck(lambda x: x.prod(0) + x.logsumexp(1).sum() + x.norm(3), [T(a)])


def test_prod_and_norm_gradients_at_zero_as_pytorch():
    a = np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    against_torch(lambda x: x.prod(1), lambda x: x.prod(1), a)
    against_torch(lambda x: x.norm(dim=1), lambda x: x.norm(dim=1), a)
    inf = np.full((2, 2), -np.inf)
    np.testing.assert_array_equal(tg.Tensor(inf).logsumexp(1).numpy(), [-np.inf, -np.inf])


# ------------------------------------------------------------------ activations

ACTIVATIONS = {
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1)),
    "elu": (lambda x: F.elu(x, 1.5), lambda x: TF.elu(x, 1.5)),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (F.silu, TF.silu),
    "softplus": (lambda x: F.softplus(x, 2.0, 3.0), lambda x: TF.softplus(x, 2.0, 3.0)),
    "hardtanh": (lambda x: F.hardtanh(x, -0.5, 1.0), lambda x: TF.hardtanh(x, -0.5, 1.0)),
    "log_sigmoid": (F.log_sigmoid, TF.logsigmoid),
    "softmax0": (lambda x: F.softmax(x, 0), lambda x: TF.softmax(x, 0)),
    "log_softmax1": (lambda x: F.log_softmax(x, 1), lambda x: TF.log_softmax(x, 1)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(a=arrays((3, 4, 2), elements=separated(4.0)))
@few
def test_activations(name, a):
    ours, ref = ACTIVATIONS[name]
    against_torch(ours, ref, a)
    assert tg.gradcheck(ours, [T(a)])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_at_kinks_and_extremes(name):
    ours, ref = ACTIVATIONS[name]
    against_torch(ours, ref, [[-1000.0, -1.0, -0.5, 0.0, 1.0, 1.5, 3.0, 1000.0]])


def test_activation_modules():
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    pairs = [
        (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (nn.ELU(), torch.nn.ELU()),
        (nn.GELU("tanh"), torch.nn.GELU("tanh")),
        (nn.SiLU(), torch.nn.SiLU()),
        (nn.Softplus(beta=2), torch.nn.Softplus(beta=2)),
        (nn.Hardtanh(), torch.nn.Hardtanh()),
        (nn.LogSigmoid(), torch.nn.LogSigmoid()),
        (nn.Softmax(0), torch.nn.Softmax(0)),
        (nn.LogSoftmax(1), torch.nn.LogSoftmax(1)),
    ]
    for ours, ref in pairs:
        against_torch(ours, ref, x)


# ------------------------------------------------------------------ losses


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5,), (4, 5), (3, 5, 2), (2, 5, 2, 3)])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_and_nll_loss_with_class_indices(reduction, shape, smoothing, weighted):
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape)
    tshape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    t = rng.integers(0, 5, tshape)
    t.reshape(-1)[:1] = -100  # one ignored target
    w = rng.uniform(0.5, 2.0, 5) if weighted else None
    tw = None if w is None else torch.tensor(w)
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    ce = against_torch(
        lambda x: F.cross_entropy(x, tg.Tensor(t), weight=w, **kw),
        lambda x: TF.cross_entropy(x, torch.tensor(t), weight=tw, **kw),
        a,
    )
    assert tg.gradcheck(lambda x: F.cross_entropy(x, t, weight=w, **kw), [T(a)])
    against_torch(
        lambda x: F.nll_loss(x.log_softmax(0 if x.ndim == 1 else 1), t, w, reduction=reduction),
        lambda x: TF.nll_loss(
            x.log_softmax(0 if x.ndim == 1 else 1), torch.tensor(t), tw, reduction=reduction
        ),
        a,
    )
    module = nn.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_allclose(module(T(a), t).numpy(), ce.numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_with_probability_targets(reduction, smoothing):
    rng = np.random.default_rng(3)
    a, p = rng.standard_normal((4, 3, 2)), rng.dirichlet(np.ones(3), (4, 2)).transpose(0, 2, 1)
    w = rng.uniform(0.5, 2.0, 3)
    for weight in (None, w):
        tw = None if weight is None else torch.tensor(weight)
        kw = {"reduction": reduction, "label_smoothing": smoothing}
        against_torch(
            lambda x, y: F.cross_entropy(x, y, weight=weight, **kw),
            lambda x, y: TF.cross_entropy(x, y, weight=tw, **kw),
            a,
            p,
        )


def test_cross_entropy_all_targets_ignored_is_nan_as_pytorch():
    t = np.full(3, -100)
    a = np.zeros((3, 2))
    assert np.isnan(F.cross_entropy(tg.Tensor(a), t).item())
    assert np.isnan(TF.cross_entropy(torch.tensor(a), torch.tensor(t)).item())
    with pytest.raises(ValueError, match="target values"):
        F.cross_entropy(tg.Tensor(a), np.array([0, 2, 1]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(a=arrays((3, 4), elements=separated(3.0)), t=arrays((3, 4), elements=st.floats(0, 1)))
@few
def test_elementwise_losses(reduction, a, t):
    p = 1 / (1 + np.exp(-a))
    w, pw = np.linspace(0.5, 1.5, 4), np.linspace(0.2, 3.0, 4)
    kw = {"reduction": reduction}
    cases = [
        (lambda x, y: F.mse_loss(x, y, **kw), lambda x, y: TF.mse_loss(x, y, **kw), a),
        (lambda x, y: F.l1_loss(x, y, **kw), lambda x, y: TF.l1_loss(x, y, **kw), a),
        (
            lambda x, y: F.binary_cross_entropy_with_logits(x, y, w, pos_weight=pw, **kw),
            lambda x, y: TF.binary_cross_entropy_with_logits(
                x, y, torch.tensor(w), pos_weight=torch.tensor(pw), **kw
            ),
            a,
        ),
    ]
    for ours, ref, x in cases:
        against_torch(ours, ref, x, t)
    against_torch(
        lambda x: F.binary_cross_entropy(x, t, w, **kw),
        lambda x: TF.binary_cross_entropy(x, torch.tensor(t), torch.tensor(w), **kw),
        p,
    )
    assert tg.gradcheck(lambda x: F.binary_cross_entropy(x, t, **kw), [T(p)])
    assert tg.gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(x, y, **kw), [T(a), T(t)])


def test_binary_cross_entropy_clamps_the_log_as_pytorch():
    x, t = np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 1.0])
    against_torch(
        lambda y: F.binary_cross_entropy(y, t, reduction="none"),
        lambda y: TF.binary_cross_entropy(y, torch.tensor(t), reduction="none"),
        x,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.binary_cross_entropy(tg.Tensor([1.5]), tg.Tensor([1.0]))


def test_loss_modules():
    rng = np.random.default_rng(0)
    a, t = rng.standard_normal((4, 3)), rng.uniform(size=(4, 3))
    for ours, ref in [
        (nn.MSELoss(), torch.nn.MSELoss()),
        (nn.L1Loss(reduction="sum"), torch.nn.L1Loss(reduction="sum")),
        (nn.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss()),
    ]:
        against_torch(ours, ref, a, t)
    against_torch(nn.BCELoss(), torch.nn.BCELoss(), 1 / (1 + np.exp(-a)), t)
    labels = np.array([0, 2, 1, 1])
    against_torch(
        lambda x: nn.NLLLoss()(x.log_softmax(1), labels),
        lambda x: torch.nn.NLLLoss()(x.log_softmax(1), torch.tensor(labels)),
        a,
    )


# ------------------------------------------------------------------ convolution and pooling


@pytest.mark.parametrize(
    "kw",
    [
        {"dilation": 2},
        {"dilation": (2, 1), "padding": 1, "stride": 2},
        {"groups": 2},
        {"groups": 4, "padding": "same"},
        {"padding": "same", "dilation": 2},
        {"padding": "valid"},
    ],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d_dilation_groups_same_valid(kw, with_bias):
    rng = np.random.default_rng(0)
    groups = kw.get("groups", 1)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((4, 4 // groups, 3, 2))
    args = (x, w, rng.standard_normal(4)) if with_bias else (x, w)
    against_torch(lambda *t: F.conv2d(*t, **kw), lambda *t: TF.conv2d(*t, **kw), *args)
    small = [a[:1, :, :6, :5] if a is x else a for a in args]
    assert tg.gradcheck(lambda *t: F.conv2d(*t, **kw), [T(a) for a in small])


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("geometry", [(3, 2, 1), (2, 2, 0), ((3, 2), (2, 3), (1, 0))])
def test_avg_pool2d(ceil_mode, count_include_pad, geometry):
    k, s, p = geometry
    a = np.random.default_rng(1).standard_normal((2, 3, 7, 8))
    kw = {"ceil_mode": ceil_mode, "count_include_pad": count_include_pad}
    against_torch(
        lambda x: F.avg_pool2d(x, k, s, p, **kw), lambda x: TF.avg_pool2d(x, k, s, p, **kw), a
    )
    against_torch(
        lambda x: F.avg_pool2d(x, k, s, p, divisor_override=5),
        lambda x: TF.avg_pool2d(x, k, s, p, divisor_override=5),
        a,
    )
    assert tg.gradcheck(lambda x: F.avg_pool2d(x, k, s, p, **kw), [T(a[:1, :1])])


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("geometry", [(3, 2, 1), (2, 2, 0), ((3, 2), (2, 3), (1, 0))])
def test_max_pool2d_ceil_mode_and_indices(ceil_mode, geometry):
    k, s, p = geometry
    a = np.random.default_rng(2).permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8) * 1.0
    y, idx = F.max_pool2d(tg.Tensor(a), k, s, p, ceil_mode=ceil_mode, return_indices=True)
    ry, ridx = TF.max_pool2d(torch.tensor(a), k, s, p, ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y.numpy(), ry.numpy())
    np.testing.assert_array_equal(idx.numpy(), ridx.numpy())
    against_torch(
        lambda x: F.max_pool2d(x, k, s, p, ceil_mode=ceil_mode),
        lambda x: TF.max_pool2d(x, k, s, p, ceil_mode=ceil_mode),
        a,
    )


@pytest.mark.parametrize("size", [1, (2, 3), (3, None), (5, 4)])
def test_adaptive_avg_pool2d(size):
    a = np.random.default_rng(3).standard_normal((2, 3, 7, 5))
    against_torch(
        lambda x: F.adaptive_avg_pool2d(x, size), lambda x: TF.adaptive_avg_pool2d(x, size), a
    )
    assert tg.gradcheck(lambda x: F.adaptive_avg_pool2d(x, size), [T(a[:1, :1])])


def test_pooling_modules():
    a = np.random.default_rng(4).standard_normal((1, 2, 6, 5))
    against_torch(
        nn.AvgPool2d(3, 2, 1, ceil_mode=True), torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True), a
    )
    against_torch(nn.AdaptiveAvgPool2d((2, 2)), torch.nn.AdaptiveAvgPool2d((2, 2)), a)


def test_new_argument_errors():
    x = tg.ones(3, 4)
    with pytest.raises(ValueError, match="cross_entropy: expected label_smoothing between 0 and 1"):
        F.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="nll_loss: expected ignore_index to be an integer"):
        F.nll_loss(x, np.array([0, 1, 2]), ignore_index=0.5)
    with pytest.raises(ValueError, match="gelu: expected approximate 'none' or 'tanh'"):
        F.gelu(x, "fast")
    with pytest.raises(ValueError, match="conv2d: padding='same' expects stride 1"):
        F.conv2d(tg.ones(1, 1, 4, 4), tg.ones(1, 1, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="pad: expected reflect pads of dim 1"):
        F.pad(x, (4, 0), mode="reflect")
    with pytest.raises(ValueError, match="expand: expected sizes"):
        x.expand(2, 3)
    with pytest.raises(ValueError, match="split: expected sections that sum"):
        x.split([1, 1])
    with pytest.raises(TypeError, match="where: expected a bool mask"):
        tg.where(x, x, x)
    with pytest.raises(ValueError, match="masked_fill: expected a mask that broadcasts"):
        x.masked_fill(tg.Tensor(np.ones(5, bool)), 0.0)


@st.composite
def mixed_indices(draw, shape):
    """An index with an int, an index list, a slice and one more item (int, list, slice or
    None) in any order, sometimes with an Ellipsis: valid for shape (4 dims)."""
    kinds = draw(st.permutations(["int", "list", "slice", draw(st.sampled_from(KINDS))]))
    items, dims = [], iter(shape)
    for kind in kinds:
        if kind == "none":
            items.append(None)
            continue
        n = next(dims)
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            items.append(slice(draw(st.integers(0, n - 1)), None, draw(st.integers(1, 2))))
        else:
            items.append(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3)))
    if draw(st.booleans()):
        items.insert(draw(st.integers(0, len(items))), Ellipsis)
    return tuple(items)


KINDS = ["int", "list", "slice", "none"]


@given(data=st.data())
@settings(max_examples=60)
def test_mixed_indexing_matches_pytorch(data):
    shape = (2, 3, 4, 3)
    index = data.draw(mixed_indices(shape))
    a = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    against_torch(lambda x: x[index], lambda x: x[index], a)
