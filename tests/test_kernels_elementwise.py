"""Activation kernels (ext/elementwise.pyx, ext/_activations.pxd) against the NumPy reference,
their documented accuracy, their extremes, and the fused passes (bias + activation, batch
norm + activation) against the unfused ones, bit for bit, at any thread count."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_bn import kernels as K
from tinygrad_bn.kernels import reference as R

K.require_extension()

ACTS = ("relu", "sigmoid", "tanh")
# the bounds ext/_activations.pxd documents (measured: sigmoid 2.7 ulp, tanh 1.5 ulp)
MAX_ULP = {"sigmoid": 3.0, "tanh": 2.0}


def _cy(name, *args):
    with K.backend("cython"):
        return getattr(K, name)(*args)


def _ulps(got, exact, dtype):
    """|got - exact| in units of the last place of exact rounded to dtype (subnormals: the
    smallest subnormal)."""
    step = np.spacing(np.abs(exact.astype(dtype))).astype(exact.dtype)
    step = np.maximum(step, np.finfo(dtype).smallest_subnormal)
    return np.abs(got.astype(exact.dtype) - exact) / step


def _exact(name, x):
    return np.tanh(x) if name == "tanh" else 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_documented_max_ulp_error(name, dtype):
    """float32 against float64, float64 against long double, over the range where the
    functions change (and out to where sigmoid underflows)."""
    wide = np.float64 if dtype == np.float32 else np.longdouble
    if np.finfo(wide).eps >= np.finfo(np.float64).eps and dtype == np.float64:
        pytest.skip("long double is double here: no wider reference")
    rng = np.random.default_rng(0)
    edge = 110 if dtype == np.float32 else 745
    x = np.concatenate(
        [
            rng.uniform(-30, 30, 1 << 17),
            rng.uniform(-1, 1, 1 << 15),
            rng.normal(0, 1e-3, 1 << 13),
            rng.uniform(-edge, edge, 1 << 15),
        ]
    ).astype(dtype)
    err = _ulps(_cy("activation_forward", x, name), _exact(name, x.astype(wide)), dtype)
    assert err.max() <= MAX_ULP[name], (x[err.argmax()], err.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extremes_and_nan(dtype):
    inf, nan = np.inf, np.nan
    x = np.array([-inf, inf, nan, 0.0, -0.0, -1e4, 1e4, -1e300 if dtype == np.float64 else -1e30])
    x = x.astype(dtype)
    for backend in ("cython", "numpy"):
        with K.backend(backend):
            s = K.activation_forward(x, "sigmoid")
            t = K.activation_forward(x, "tanh")
            r = K.activation_forward(x, "relu")
        np.testing.assert_array_equal(s, np.array([0, 1, nan, 0.5, 0.5, 0, 1, 0], dtype))
        np.testing.assert_array_equal(t, np.array([-1, 1, nan, 0, 0, -1, 1, -1], dtype))
        assert np.signbit(t[4]) and not np.signbit(t[3])  # tanh(-0) = -0
        np.testing.assert_array_equal(r, np.array([0, inf, nan, 0, 0, 0, 1e4, 0], dtype))
        assert not np.signbit(r[4])  # relu(-0) = +0


def test_sigmoid_rounds_to_zero_only_where_the_exact_value_does():
    """No flush to zero: a subnormal sigmoid(x) is returned as such (float32 at x = -100)."""
    x = np.array([-87.0, -95.0, -100.0, -103.0, -104.0], np.float32)
    got = _cy("activation_forward", x, "sigmoid")
    want = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    assert np.all(got[:-1] > 0) and got[-1] == 0
    assert np.all(_ulps(got, want.astype(np.float64), np.float32) <= 1)


def _values(dtype):
    """Any value, NaN and infinities included, of this dtype's width."""
    return st.floats(width=32 if dtype == np.float32 else 64)


@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_kernels_match_the_reference(data, dtype):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=40))
    x = data.draw(hnp.arrays(dtype, shape, elements=_values(dtype)))
    g = data.draw(hnp.arrays(dtype, shape, elements=_values(dtype)))
    rtol = 4 * np.finfo(dtype).eps
    for name in ACTS:
        y = _cy("activation_forward", x, name)
        assert y.shape == x.shape and y.dtype == x.dtype
        want = R.activation_forward(x, name)
        if name == "relu":
            np.testing.assert_array_equal(y, want)
        else:
            np.testing.assert_allclose(y, want, rtol=rtol, atol=np.finfo(dtype).tiny)
        dx = _cy("activation_backward", g, y, name)
        want_dx = R.activation_backward(g, y, name)
        if name == "tanh":  # 1 - o*o may be one fused multiply-add in the kernel
            _assert_close_to_grad(dx, want_dx, g, dtype)
        else:  # the same operations in the same order: the same bits
            np.testing.assert_array_equal(dx, want_dx)


def _assert_close_to_grad(dx, want, g, dtype, k=4):
    """|dx - want| <= k eps |g|: a backward from the output, 1 - o^2 near o = 1, loses
    absolute, not relative, digits."""
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~(np.abs(dx - want) <= k * np.finfo(dtype).eps * np.abs(g))
    bad &= ~(np.isnan(dx) & np.isnan(want)) & ~(dx == want)
    assert not bad.any(), (dx[bad][:5], want[bad][:5], g[bad][:5])


def test_relu_backward_is_a_select():
    """0 where out <= 0, even for an inf or NaN gradient; g where out is NaN (as PyTorch's
    threshold_backward)."""
    out = np.array([0.0, 2.0, 0.0, np.nan])
    g = np.array([np.inf, np.nan, np.nan, 1.0])
    for backend in ("cython", "numpy"):
        with K.backend(backend):
            dx = K.activation_backward(g, out, "relu")
        np.testing.assert_array_equal(dx, [0.0, np.nan, 0.0, 1.0])


@pytest.mark.parametrize("name", ACTS)
def test_door_copies_non_contiguous_inputs(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 12)).astype(np.float32)
    for view in (x[:, ::2], x.T, x[::-1]):
        np.testing.assert_array_equal(
            _cy("activation_forward", view, name), _cy("activation_forward", view.copy(), name)
        )
        out = _cy("activation_forward", view.copy(), name)
        np.testing.assert_array_equal(
            _cy("activation_backward", view, out, name),
            _cy("activation_backward", view.copy(), out, name),
        )


def test_door_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="activation: expected None, 'relu'"):
        K.activation_forward(x, "gelu")
    with pytest.raises(TypeError, match="float32 or float64"):
        K.activation_forward(x.astype(np.int32), "relu")
    with pytest.raises(ValueError, match=r"grad_out: expected shape \(2, 3\)"):
        K.activation_backward(np.ones((3, 2), np.float32), x, "relu")
    with pytest.raises(TypeError, match="one dtype"):
        K.activation_backward(np.ones((2, 3)), x, "relu")
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\)"):
        K.bias_activation(x, np.ones(2, np.float32), "relu")
    with pytest.raises(ValueError, match="expected 2D or 3D"):
        K.bias_activation(np.ones(3, np.float32), None, "relu")
    with pytest.raises(ValueError, match="activation"):
        K.batch_norm_forward_train(x, np.ones(3, np.float32), np.ones(3, np.float32), 1e-5, "elu")


# ---------------------------------------------------------------- fused passes


@given(
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
    name=st.sampled_from((None,) + ACTS),
    with_bias=st.booleans(),
    three_d=st.booleans(),
)
def test_bias_activation_equals_add_then_activation(data, dtype, name, with_bias, three_d):
    """Bit for bit, odd widths included (the vector loops' remainders)."""
    shape = data.draw(
        hnp.array_shapes(min_dims=3 if three_d else 2, max_dims=3 if three_d else 2, max_side=37)
    )
    y = data.draw(hnp.arrays(dtype, shape, elements=_values(dtype)))
    bias = data.draw(hnp.arrays(dtype, (shape[1],), elements=_values(dtype))) if with_bias else None
    plain = y.copy()
    if with_bias:
        plain += bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    want = plain if name is None else _cy("activation_forward", plain, name)
    got = _cy("bias_activation", y.copy(), bias, name)
    np.testing.assert_array_equal(got, want)
    with K.backend("numpy"):
        ref = K.bias_activation(y.copy(), bias, name)
    np.testing.assert_allclose(ref, want, rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)


def test_bias_activation_works_in_place_and_never_on_a_callers_view():
    y = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    b = np.ones(4, np.float32)
    assert _cy("bias_activation", y, b, "relu") is y  # a fresh GEMM result: in its own memory
    view = np.arange(24, dtype=np.float32).reshape(3, 8)[:, ::2]
    before = view.copy()
    out = _cy("bias_activation", view, b, "relu")
    np.testing.assert_array_equal(view, before)
    np.testing.assert_array_equal(out, np.maximum(before + 1, 0))
    frozen = np.ones((2, 4), np.float32)
    frozen.flags.writeable = False
    np.testing.assert_array_equal(_cy("bias_activation", frozen, b, "relu"), 2 * frozen)


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("shape", [(60, 100), (7, 33), (5, 3, 29), (4, 16, 300)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_with_activation_equals_batch_norm_then_activation(name, shape, dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    y, *stats = _cy("batch_norm_forward_train", x, w, b, 1e-5)
    fy, *fstats = _cy("batch_norm_forward_train", x, w, b, 1e-5, name)
    np.testing.assert_array_equal(fy, _cy("activation_forward", y, name))
    for s, fs in zip(stats, fstats):
        np.testing.assert_array_equal(s, fs)
    with K.backend("numpy"):
        ry = K.batch_norm_forward_train(x, w, b, 1e-5, name)[0]
    tol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(fy, ry, rtol=tol, atol=tol)


def test_results_do_not_depend_on_the_thread_count():
    """Above the threading threshold (65536 elements), odd sizes: the same bits on 1 and 2."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((61, 7, 331)).astype(np.float32) * 5
    b = rng.standard_normal(7).astype(np.float32)
    w = np.ones(7, np.float32)
    x2 = x.reshape(331, 427)
    b2, w2 = rng.standard_normal(427).astype(np.float32), rng.random(427).astype(np.float32)
    before = K.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            K.set_num_threads(n)
            res = [_cy("activation_forward", x, a) for a in ACTS]
            res += [_cy("activation_backward", x, res[i], a) for i, a in enumerate(ACTS)]
            res += [_cy("bias_activation", x.copy(), b, a) for a in ACTS]
            res += [_cy("bias_activation", x.reshape(61 * 7, 331).copy(), None, "sigmoid")]
            res += [_cy("batch_norm_forward_train", x, w, b, 1e-5, a)[0] for a in ACTS]
            # (N, C) rows: the one-thread paths that skip the OpenMP region, against two
            res += [_cy("bias_activation", x2.copy(), b2, a) for a in ACTS + (None,)]
            bn = _cy("batch_norm_forward_train", x2, w2, b2, 1e-5, "sigmoid")
            res += [bn[0]] + list(_cy("batch_norm_backward", x2[::-1].copy(), x2, *bn[1:3], w2))
            out.append(res)
    finally:
        K.set_num_threads(before)
    for a, b_ in zip(*out):
        np.testing.assert_array_equal(a, b_)


# ---------------------------------------------------------------- against PyTorch


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_forward_and_backward(name, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(1000) * 10, [0.0, -0.0, 50, -50, 200, -200]])
    x = np.concatenate([x, [np.inf, -np.inf, np.nan]]).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch, name)(tx)
    ty.backward(torch.tensor(g))
    y = _cy("activation_forward", x, name)
    dx = _cy("activation_backward", g, y, name)
    tol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=np.finfo(dtype).tiny)
    _assert_close_to_grad(dx, tx.grad.numpy(), g, dtype, k=8)


# ---------------------------------------------------------------- bias gradient


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(60, 100), (60, 10), (1, 7), (0, 4), (9, 1), (257, 33)])
def test_sum_rows_adds_each_column_in_row_order(shape, dtype):
    """Bit for bit the sum from 0 down each column (NumPy's order for x.sum(axis=0) of a
    C-contiguous array), on both backends' worth of inputs: views go through the door."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(dtype)
    want = np.zeros(shape[1], dtype)
    for row in x:
        want = want + row
    got = _cy("sum_rows", x)
    assert got.dtype == dtype and got.shape == (shape[1],)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(R.sum_rows(x), want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    wide = np.repeat(x, 2, axis=1)[:, ::2]  # strided: the door copies it
    np.testing.assert_array_equal(_cy("sum_rows", wide), want)


def test_sum_rows_door_errors_and_signed_zeros():
    with pytest.raises(ValueError, match=r"sum_rows: input: expected 2D"):
        K.sum_rows(np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"sum_rows: input: expected float32 or float64"):
        K.sum_rows(np.ones((2, 3), np.int32))
    got = _cy("sum_rows", np.array([[-0.0, 1.0], [-0.0, -1.0]], np.float32))
    assert not np.signbit(got[0]) and got[1] == 0.0  # from +0, as NumPy's sum
