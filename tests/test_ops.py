"""Every op: forward against NumPy, and gradcheck in float64 over hypothesis-drawn inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import DTYPES, arrays, broadcast_pair, floats, positive, separated, shapes, tol

import tinygrad_bn as tg
import tinygrad_bn.functional as F

pytestmark = pytest.mark.usefixtures("each_backend")


def T(a, grad=True):
    return tg.Tensor(a, requires_grad=grad)


# ------------------------------------------------------------------ binary, broadcasting

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_broadcast_forward_and_grad(name, data):
    sa, sb = data.draw(broadcast_pair())
    a = data.draw(arrays(sa))
    # keep divisors away from zero
    b = data.draw(arrays(sb, elements=positive() if name == "div" else floats()))
    op, ref = BINARY[name]
    for dtype in DTYPES:
        out = op(tg.Tensor(a.astype(dtype)), tg.Tensor(b.astype(dtype)))
        assert out.dtype == dtype
        np.testing.assert_allclose(out.numpy(), ref(a.astype(dtype), b.astype(dtype)), **tol(dtype))
    assert tg.gradcheck(op, [T(a), T(b)])


@pytest.mark.parametrize("name", sorted(BINARY))
@given(a=arrays((2, 3)), s=st.floats(0.5, 2.0))
def test_binary_with_python_scalars_on_either_side(name, a, s):
    op, ref = BINARY[name]
    x = tg.Tensor((np.abs(a) + 0.5).astype(np.float32))
    assert op(x, s).dtype == np.float32 and op(s, x).dtype == np.float32
    np.testing.assert_allclose(op(x, s).numpy(), ref(x.numpy(), np.float32(s)), rtol=1e-6)
    np.testing.assert_allclose(op(s, x).numpy(), ref(np.float32(s), x.numpy()), rtol=1e-6)
    assert tg.gradcheck(lambda t: op(s, op(t, s)), [T(a + 4.0)])


def test_numpy_operands_and_dtype_promotion():
    x = tg.Tensor(np.ones((2, 2), np.float32))
    assert (x + np.ones(2)).dtype == np.float64  # an array promotes as in NumPy and PyTorch
    assert (np.ones(2) + x).dtype == np.float64
    assert (x + np.ones(2, np.float32)).dtype == np.float32
    assert isinstance(np.ones(2) * x, tg.Tensor)
    y = tg.Tensor(np.ones((2, 2), np.float64))
    assert (x + y).dtype == np.float64  # two tensors promote like NumPy


# ------------------------------------------------------------------ unary

UNARY = {
    "neg": (lambda t: -t, np.negative, floats()),
    "exp": (lambda t: t.exp(), np.exp, floats()),
    "log": (lambda t: t.log(), np.log, positive()),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, positive()),
    "abs": (lambda t: t.abs(), np.abs, separated()),
    "relu": (lambda t: t.relu(), lambda a: np.maximum(a, 0), separated()),
    "sigmoid": (lambda t: t.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), floats()),
    "tanh": (lambda t: t.tanh(), np.tanh, floats()),
    "pow3": (lambda t: t**3, lambda a: a**3, floats()),
    "pow-1.5": (lambda t: t**-1.5, lambda a: a**-1.5, positive()),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_forward_and_grad(name, data):
    op, ref, elements = UNARY[name]
    a = data.draw(arrays(data.draw(shapes()), elements=elements))
    for dtype in DTYPES:
        out = op(tg.Tensor(a.astype(dtype)))
        assert out.dtype == dtype and out.shape == a.shape
        np.testing.assert_allclose(out.numpy(), ref(a.astype(dtype)), **tol(dtype))
    assert tg.gradcheck(op, [T(a)])


def test_sigmoid_is_stable_for_large_inputs():
    x = tg.Tensor(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], np.float32))
    with np.errstate(over="raise"):
        y = x.sigmoid().numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, [0.0, 1.9287e-22, 0.5, 1.0, 1.0], rtol=1e-4, atol=0)


def test_f_activations_match_methods():
    x = tg.randn(3, 4, seed=0)
    for f, m in ((F.relu, "relu"), (F.sigmoid, "sigmoid"), (F.tanh, "tanh")):
        np.testing.assert_array_equal(f(x).numpy(), getattr(x, m)().numpy())


# ------------------------------------------------------------------ reductions


@st.composite
def reduce_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=4))
    axes = draw(
        st.one_of(
            st.none(),
            st.integers(-len(shape), len(shape) - 1),
            st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True).map(tuple),
        )
    )
    return shape, axes, draw(st.booleans())


@given(case=reduce_case(), data=st.data())
def test_sum_mean_forward_and_grad(case, data):
    shape, axes, keep = case
    a = data.draw(arrays(shape))
    for name in ("sum", "mean"):
        out = getattr(T(a), name)(axis=axes, keepdims=keep)
        np.testing.assert_allclose(
            out.numpy(), getattr(np, name)(a, axis=axes, keepdims=keep), rtol=1e-12, atol=1e-12
        )
        assert tg.gradcheck(lambda t: getattr(t, name)(dim=axes, keepdim=keep), [T(a)])


@given(case=reduce_case(), data=st.data())
def test_max_forward_and_grad(case, data):
    shape, axes, keep = case
    a = data.draw(arrays(shape, elements=separated(), unique=True))
    out = T(a).max(axis=axes, keepdims=keep)
    np.testing.assert_array_equal(out.numpy(), np.max(a, axis=axes, keepdims=keep))
    assert tg.gradcheck(lambda t: t.max(axis=axes, keepdims=keep), [T(a)])


def test_max_splits_gradient_between_ties():
    x = T(np.array([1.0, 3.0, 3.0]))
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.5, 0.5])


@given(case=reduce_case(), data=st.data(), correction=st.sampled_from([0, 1]))
def test_var_forward_and_grad(case, data, correction):
    shape, axes, keep = case
    a = data.draw(arrays(shape))
    n = a.size if axes is None else np.prod([shape[i] for i in np.atleast_1d(axes)])
    if n - correction < 1:
        return
    out = T(a).var(axis=axes, keepdims=keep, correction=correction)
    np.testing.assert_allclose(
        out.numpy(), np.var(a, axis=axes, keepdims=keep, ddof=correction), rtol=1e-10, atol=1e-12
    )
    assert tg.gradcheck(lambda t: t.var(dim=axes, keepdim=keep, ddof=correction), [T(a)])


def test_var_defaults_to_unbiased_like_pytorch():
    a = np.array([1.0, 2.0, 4.0])
    assert np.isclose(T(a).var().item(), np.var(a, ddof=1))


# ------------------------------------------------------------------ movement


@given(shape=shapes(min_dims=1, max_dims=4), data=st.data())
def test_reshape_flatten_permute_transpose(shape, data):
    a = data.draw(arrays(shape))
    x = T(a)
    np.testing.assert_array_equal(x.reshape(-1).numpy(), a.reshape(-1))
    np.testing.assert_array_equal(x.flatten().numpy(), a.reshape(-1))
    perm = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(x.permute(*perm).numpy(), a.transpose(perm))
    np.testing.assert_array_equal(x.T.numpy(), a.T)
    assert tg.gradcheck(lambda t: t.permute(*perm).reshape(-1) * np.arange(a.size), [x])
    if len(shape) >= 2:
        np.testing.assert_array_equal(x.transpose(0, -1).numpy(), np.swapaxes(a, 0, -1))
        np.testing.assert_array_equal(x.flatten(1).numpy(), a.reshape(shape[0], -1))
        assert tg.gradcheck(lambda t: t.transpose(0, 1).flatten(1), [x])


@given(a=arrays((3, 4, 5)), data=st.data())
def test_basic_indexing_and_slicing(a, data):
    index = data.draw(
        st.sampled_from(
            [
                0,
                -1,
                (1, 2),
                (slice(None), 1),
                (slice(0, 3, 2), Ellipsis, slice(1, None)),
                (None, 2, slice(None, None, -1)),
                (Ellipsis, 3),
                (slice(1, 2), slice(None), 0),
            ]
        )
    )
    np.testing.assert_array_equal(T(a)[index].numpy(), a[index])
    assert tg.gradcheck(lambda t: t[index], [T(a)])


def test_integer_array_indexing_accumulates_repeats():
    x = T(np.arange(4.0))
    x[np.array([0, 2, 2])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 2.0, 0.0])


@given(data=st.data(), axis=st.integers(0, 2))
def test_cat(data, axis):
    shapes_ = []
    for _ in range(data.draw(st.integers(1, 3))):
        s = [2, 3, 2]
        s[axis] = data.draw(st.integers(0, 3))
        shapes_.append(tuple(s))
    arrs = [data.draw(arrays(s)) for s in shapes_]
    out = tg.cat([T(a) for a in arrs], dim=axis)
    np.testing.assert_array_equal(out.numpy(), np.concatenate(arrs, axis=axis))
    if out.numpy().size:
        assert tg.gradcheck(lambda *ts: tg.concatenate(ts, axis=axis) * 1.5, [T(a) for a in arrs])


# ------------------------------------------------------------------ matmul


@given(m=st.integers(1, 5), k=st.integers(1, 5), n=st.integers(1, 5), data=st.data())
def test_matmul_2d(m, k, n, data):
    a, b = data.draw(arrays((m, k))), data.draw(arrays((k, n)))
    for dtype in DTYPES:
        out = tg.Tensor(a.astype(dtype)) @ tg.Tensor(b.astype(dtype))
        assert out.dtype == dtype
        np.testing.assert_allclose(
            out.numpy(),
            a.astype(dtype) @ b.astype(dtype),
            rtol=1e-5 if dtype == np.float32 else 1e-12,
            atol=1e-5,
        )
    assert tg.gradcheck(lambda x, y: x @ y, [T(a), T(b)])


@given(data=st.data())
def test_matmul_batched_broadcast_and_vectors(data):
    batch_a = data.draw(st.sampled_from([(), (2,), (1,), (2, 1)]))
    batch_b = data.draw(st.sampled_from([(), (2,), (3, 1, 1)[1:]]))
    a = data.draw(arrays(batch_a + (3, 4)))
    b = data.draw(arrays(batch_b + (4, 2)))
    np.testing.assert_allclose((T(a) @ T(b)).numpy(), a @ b, rtol=1e-12)
    assert tg.gradcheck(lambda x, y: x @ y, [T(a), T(b)])
    v = data.draw(arrays((4,)))
    np.testing.assert_allclose((T(a) @ T(v)).numpy(), a @ v, rtol=1e-12)
    np.testing.assert_allclose((T(v) @ T(b)).numpy(), v @ b, rtol=1e-12)
    np.testing.assert_allclose((T(v) @ T(v)).numpy(), v @ v, rtol=1e-12)
    assert tg.gradcheck(lambda x, y: x @ y, [T(v), T(b)])


# ------------------------------------------------------------------ softmax family, losses


@given(shape=shapes(min_dims=1, max_dims=3), data=st.data())
def test_softmax_and_log_softmax(shape, data):
    a = data.draw(arrays(shape, bound=10.0))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    shifted = a - a.max(axis=axis, keepdims=True)
    ref_log = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(F.log_softmax(T(a), dim=axis).numpy(), ref_log, atol=1e-12)
    np.testing.assert_allclose(F.softmax(T(a), dim=axis).numpy(), np.exp(ref_log), atol=1e-12)
    assert tg.gradcheck(lambda t: F.softmax(t, axis), [T(a)])
    assert tg.gradcheck(lambda t: F.log_softmax(t, axis), [T(a)])


def test_softmax_stable_for_huge_logits():
    x = tg.Tensor(np.array([[1000.0, 0.0, -1000.0]], np.float32))
    np.testing.assert_allclose(F.softmax(x).numpy(), [[1.0, 0.0, 0.0]])
    assert np.all(np.isfinite(F.log_softmax(x).numpy()))


@given(
    n=st.integers(1, 6),
    c=st.integers(1, 5),
    data=st.data(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_cross_entropy(n, c, data, reduction):
    logits = data.draw(arrays((n, c), bound=5.0))
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    per = -logp[np.arange(n), labels]
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    out = F.cross_entropy(T(logits), labels, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert tg.gradcheck(lambda t: F.cross_entropy(t, labels, reduction=reduction), [T(logits)])


# ------------------------------------------------------------------ conv2d, max_pool2d


@st.composite
def conv_case(draw):
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([1, 2, (1, 2)]))
    padding = draw(st.sampled_from([0, 1, (0, 1)]))
    h, w = draw(st.integers(kh, 6)), draw(st.integers(kw, 6))
    return (n, c, h, w), (o, c, kh, kw), stride, padding


def _conv_ref(x, w, b, stride, padding):
    """Direct loops: the definition of cross-correlation, independent of im2col."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, hp, wp = xp.shape
    o, _, kh, kw = w.shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            y[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return y + (0 if b is None else b.reshape(1, -1, 1, 1))


@given(case=conv_case(), data=st.data(), with_bias=st.booleans())
@settings(max_examples=25)
def test_conv2d(case, data, with_bias):
    xs, ws, stride, padding = case
    x, w = data.draw(arrays(xs)), data.draw(arrays(ws))
    b = data.draw(arrays((ws[0],))) if with_bias else None
    out = F.conv2d(T(x), T(w), None if b is None else T(b), stride=stride, padding=padding)
    np.testing.assert_allclose(
        out.numpy(), _conv_ref(x, w, b, stride, padding), rtol=1e-10, atol=1e-10
    )
    args = [T(x), T(w)] + ([T(b)] if with_bias else [])
    assert tg.gradcheck(lambda *t: F.conv2d(*t, stride=stride, padding=padding), args)


@given(data=st.data())
@settings(max_examples=25)
def test_max_pool2d(data):
    k = data.draw(st.sampled_from([1, 2, 3, (2, 3)]))
    kh, kw = (k, k) if isinstance(k, int) else k
    stride = data.draw(st.sampled_from([None, 1, 2]))
    padding = data.draw(st.integers(0, min(kh, kw) // 2))
    shape = (
        data.draw(st.integers(1, 2)),
        data.draw(st.integers(1, 2)),
        data.draw(st.integers(kh, 6)),
        data.draw(st.integers(kw, 6)),
    )
    a = data.draw(arrays(shape, elements=separated(), unique=True))
    out = F.max_pool2d(T(a), k, stride, padding)
    sh, sw = (kh, kw) if stride is None else (stride, stride)
    ap = np.pad(
        a, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf
    )
    oh, ow = (ap.shape[2] - kh) // sh + 1, (ap.shape[3] - kw) // sw + 1
    ref = np.array(
        [
            [
                [
                    [ap[i, j, p * sh : p * sh + kh, q * sw : q * sw + kw].max() for q in range(ow)]
                    for p in range(oh)
                ]
                for j in range(shape[1])
            ]
            for i in range(shape[0])
        ]
    )
    np.testing.assert_array_equal(out.numpy(), ref)
    assert tg.gradcheck(lambda t: F.max_pool2d(t, k, stride, padding), [T(a)])


# ------------------------------------------------------------------ dropout


def test_dropout_train_scales_and_eval_is_identity():
    x = tg.ones(200, 50, requires_grad=True)
    y = F.dropout(x, p=0.25, training=True, generator=0)
    kept = y.numpy() != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.75, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy() != 0, kept)
    assert F.dropout(x, p=0.25, training=False) is x
    assert np.all(F.dropout(x, p=1.0).numpy() == 0)
    np.testing.assert_array_equal(
        F.dropout(x, 0.5, generator=3).numpy(), F.dropout(x, 0.5, generator=3).numpy()
    )


@given(a=arrays((3, 4)), p=st.floats(0.0, 0.9))
def test_dropout_gradcheck(a, p):
    # a fixed generator seed gives the same mask in every evaluation
    assert tg.gradcheck(lambda t: F.dropout(t, p, generator=7), [T(a)])


# ------------------------------------------------------------------ no op mutates its inputs


@given(a=arrays((2, 3, 4, 4)), w=arrays((2, 3, 3, 3)))
@settings(max_examples=10)
def test_ops_never_mutate_inputs(a, w):
    a0, w0 = a.copy(), w.copy()
    x, wt = T(a), T(w)
    outs = [
        x + 1,
        x * x,
        x / 2,
        -x,
        x.exp(),
        x.abs(),
        x.relu(),
        x.sigmoid(),
        x.tanh(),
        x.sum(1),
        x.max(2),
        x.var(0),
        x.reshape(6, 16),
        x.permute(3, 2, 1, 0),
        x[0],
        tg.cat([x, x]),
        F.softmax(x),
        F.conv2d(x, wt, padding=1),
        F.max_pool2d(x, 2),
        F.batch_norm(x, None, None, training=True),
        F.dropout(x, 0.5),
    ]
    for o in outs:
        o.sum().backward()
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(x.numpy(), a0)
    np.testing.assert_array_equal(wt.numpy(), w0)


# ------------------------------------------------------------------ linear (fused)


@given(
    lead=st.sampled_from([(), (3,), (2, 3)]),
    i=st.integers(1, 4),
    o=st.integers(1, 4),
    data=st.data(),
    with_bias=st.booleans(),
)
def test_linear(lead, i, o, data, with_bias):
    x, w = data.draw(arrays(lead + (i,))), data.draw(arrays((o, i)))
    b = data.draw(arrays((o,))) if with_bias else None
    out = F.linear(T(x), T(w), None if b is None else T(b))
    np.testing.assert_allclose(
        out.numpy(), x @ w.T + (0 if b is None else b), rtol=1e-12, atol=1e-12
    )
    args = [T(x), T(w)] + ([T(b)] if with_bias else [])
    assert tg.gradcheck(F.linear, args)
