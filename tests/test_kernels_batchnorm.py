"""Compiled batch-norm kernels (ext/batchnorm.pyx) against the NumPy reference.

Every test runs the kernels through tinygrad_bn.kernels with the "cython" backend and
first asserts that the compiled batch-norm kernels are really loaded: without that check a
missing build would silently fall back to the reference and compare it with itself.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinygrad_bn import kernels as K

BN_KERNELS = (
    "batch_norm_forward_train",
    "batch_norm_backward",
    "batch_norm_forward_eval",
    "running_average",
)
# compiled vs reference: both compute in double and round once, so they agree to ~1 ulp
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


@pytest.fixture(autouse=True)
def compiled_bn():
    missing = [k for k in BN_KERNELS if k not in K.info()["compiled_kernels"]]
    assert not missing, (
        f"compiled batch-norm kernels missing: {missing}; {K.info()['import_errors']}"
    )
    threads = K.get_num_threads()
    with K.backend("cython"):
        yield
    K.set_num_threads(threads)


def close(got, want, dtype, scale=None):
    """|got - want| <= rtol * (|want| + scale) elementwise; scale (a number or an array
    broadcasting against want) defaults to max |want|, the array's magnitude."""
    rtol = RTOL[np.dtype(dtype)]
    assert got.shape == want.shape and got.dtype == want.dtype, (
        got.shape,
        got.dtype,
        want.shape,
        want.dtype,
    )
    if scale is None:
        scale = float(np.max(np.abs(want), initial=0.0))
    err = np.abs(got.astype(np.float64) - want)
    bound = rtol * (np.abs(want) + scale) + 1e-300
    bad = err > bound
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} differ; worst error {err.max():.3g} "
        f"(bound there {np.broadcast_to(bound, err.shape)[bad].min():.3g})"
    )


def check_forward(got, want, x, w):
    """y, mean, var, invstd: each within ~1 ulp of its dtype, plus the rounding of the sums
    relative to the data's scale (not to the result: a mean or var near 0 beside large
    values has only that absolute accuracy). float32 sums its elements in float before the
    double accumulators, so its part is float-sized; float64's is double-sized."""
    big = float(np.max(np.abs(x), initial=0.0))
    fp = (16 if x.dtype == np.float32 else 64) * float(np.finfo(x.dtype).eps)
    y, mean, var, invstd = got
    close(mean, want[1], x.dtype, scale=big * fp / RTOL[x.dtype] + np.abs(want[1]))
    close(var, want[2], x.dtype, scale=big * big * fp / RTOL[x.dtype] + np.abs(want[2]))
    close(invstd, want[3], x.dtype, scale=np.abs(want[3]))
    wi = float(np.max(np.abs(w * want[3]), initial=0.0))
    close(
        y,
        want[0],
        x.dtype,
        scale=float(np.max(np.abs(want[0]), initial=0.0)) + big * wi * fp / RTOL[x.dtype],
    )


def check_backward(got, want, dy, x, mean, invstd, w):
    """dbias = sum dy and dweight = sum dy*xhat are sums: their error is relative to the
    sums of absolute values. dx = w*invstd/m * (m*dy - dbias - xhat*dweight) combines
    terms: its error is relative to their sizes, with those sums' error bounds in them."""
    c = x.shape[1]
    cshape = (1, c) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    m = max(x.size // c if c else 0, 1)
    xhat = (x.astype(np.float64) - mean.reshape(cshape)) * invstd.reshape(cshape)
    abs_db = np.sum(np.abs(dy), axis=axes)
    abs_dw = np.sum(np.abs(dy * xhat), axis=axes)
    terms = (
        np.abs(w * invstd).reshape(cshape)
        / m
        * (m * np.abs(dy) + abs_db.reshape(cshape) + np.abs(xhat) * abs_dw.reshape(cshape))
    )
    close(got[0], want[0], x.dtype, scale=terms)
    close(got[1], want[1], x.dtype, scale=abs_dw)
    close(got[2], want[2], x.dtype, scale=abs_db)


def reference(name, *args):
    with K.backend("numpy"):
        return getattr(K, name)(*args)


def strided(a, how):
    """The same values as `a` in a non-contiguous layout."""
    if how == "contiguous":
        return a
    if how == "fortran":
        return np.asfortranarray(a)
    big = np.zeros((2 * a.shape[0],) + a.shape[1:], dtype=a.dtype)  # every other row
    big[::2] = a
    return big[::2]


@st.composite
def bn_case(draw, min_m=2):
    """x (N, C) or (N, C, L) with size-1, odd and zero-size axes, plus per-channel params."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 9))
    c = draw(st.integers(0, 6))
    shape = (n, c) if draw(st.booleans()) else (n, c, draw(st.integers(0, 11)))
    m = n * (shape[2] if len(shape) == 3 else 1)
    assume(c == 0 or m >= min_m)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    loc = draw(st.sampled_from([0.0, 3.0, -50.0]))
    scale = draw(st.sampled_from([1e-3, 1.0, 20.0]))
    x = (loc + scale * rng.standard_normal(shape)).astype(dtype)
    if draw(st.booleans()) and x.size:  # exact ties and a constant channel
        x[:, 0] = x.flat[0]
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    layout = draw(st.sampled_from(["contiguous", "fortran", "rows"]))
    threads = draw(st.sampled_from([1, 2]))
    return x, w, b, dy, layout, threads


@given(case=bn_case())
@settings(deadline=None)
def test_forward_train_matches_reference(case):
    x, w, b, _, layout, threads = case
    K.set_num_threads(threads)
    got = K.batch_norm_forward_train(strided(x, layout), w, b, 1e-5)
    want = reference("batch_norm_forward_train", x, w, b, 1e-5)
    check_forward(got, want, x, w)


@given(case=bn_case(min_m=0))
@settings(deadline=None)
def test_backward_matches_reference(case):
    x, w, b, dy, layout, threads = case
    K.set_num_threads(threads)
    c = x.shape[1]
    rng = np.random.default_rng(1)
    mean = (x.mean(axis=(0,) + tuple(range(2, x.ndim))) if x.size else np.zeros(c)).astype(x.dtype)
    invstd = rng.uniform(0.5, 2.0, c).astype(x.dtype)
    got = K.batch_norm_backward(strided(dy, layout), strided(x, layout), mean, invstd, w)
    want = reference("batch_norm_backward", dy, x, mean, invstd, w)
    check_backward(got, want, dy, x, mean, invstd, w)


@given(case=bn_case(min_m=0))
@settings(deadline=None)
def test_forward_eval_matches_reference(case):
    x, w, b, _, layout, threads = case
    K.set_num_threads(threads)
    c = x.shape[1]
    rng = np.random.default_rng(2)
    rmean = rng.standard_normal(c).astype(x.dtype)
    rvar = rng.uniform(0.1, 3.0, c).astype(x.dtype)
    got = K.batch_norm_forward_eval(strided(x, layout), rmean, rvar, w, b, 1e-5)
    want = reference("batch_norm_forward_eval", x, rmean, rvar, w, b, 1e-5)
    scale = float(np.max(np.abs(want), initial=0) + np.max(np.abs(x), initial=0)) + 1e-30
    close(got, want, x.dtype, scale=scale)


# Shapes past the serial threshold (32768 elements) so the threaded paths run: (N, C) with
# one block per thread (rows of whole cache lines, or C >= 512 with a boundary inside a
# line), (N, C) with many narrow L2-capped blocks, (N, C) kept serial (C = 131), (N, C, L)
# with L over a strip (512) and not a multiple of it, L = 1 routed to the (N, C) walk, C = 1.
BIG = [
    (257, 144),
    (40, 1030),
    (2049, 48),
    (257, 131),
    (3, 7, 1601),
    (64, 5, 113),
    (40000, 1),
    (9, 2, 2000),
]


@pytest.mark.parametrize("shape", BIG)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_threaded_paths_match_reference(shape, dtype, threads):
    K.set_num_threads(threads)
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    x = (1.5 + 2 * rng.standard_normal(shape)).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    got = K.batch_norm_forward_train(x, w, b, 1e-5)
    want = reference("batch_norm_forward_train", x, w, b, 1e-5)
    check_forward(got, want, x, w)
    _, mean, var, invstd = want
    got = K.batch_norm_backward(dy, x, mean, invstd, w)
    check_backward(
        got, reference("batch_norm_backward", dy, x, mean, invstd, w), dy, x, mean, invstd, w
    )
    got = K.batch_norm_forward_eval(x, mean, var, w, b, 1e-5)
    close(
        got,
        reference("batch_norm_forward_eval", x, mean, var, w, b, 1e-5),
        dtype,
        scale=float(np.max(np.abs(x)) * np.max(np.abs(w * invstd))),
    )


@pytest.mark.parametrize("shape", [(257, 144), (40, 1030), (3, 7, 1601)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_the_thread_count(shape, dtype):
    """Every channel is summed in the same order however the channels are split."""
    rng = np.random.default_rng(7)
    c = shape[1]
    x, dy = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    outs = []
    for threads in (1, 2):
        K.set_num_threads(threads)
        fwd = K.batch_norm_forward_train(x, w, b, 1e-5)
        bwd = K.batch_norm_backward(dy, x, fwd[1], fwd[3], w)
        outs.append([a.tobytes() for a in fwd + bwd])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("shape", [(500, 64), (64, 8, 300)])
def test_large_mean_float32_is_accurate(shape):
    """mean 1e4, std 1 in float32: naive float sum-of-squares would lose every digit of var."""
    rng = np.random.default_rng(0)
    x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    c = shape[1]
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    y, mean, var, invstd = K.batch_norm_forward_train(x, w, b, 1e-5)
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    true_mean = x64.mean(axis=axes)
    true_var = x64.var(axis=axes)
    np.testing.assert_allclose(mean, true_mean, rtol=1e-7)
    np.testing.assert_allclose(var, true_var, rtol=1e-6)
    cshape = (1, c) + (1,) * (x.ndim - 2)
    true_y = (x64 - true_mean.reshape(cshape)) / np.sqrt(true_var.reshape(cshape) + 1e-5)
    # float32 output: within a few ulp of the exact result (|y| ~ 1)
    assert np.max(np.abs(y - true_y)) < 1e-5
    assert abs(float(y.astype(np.float64).mean())) < 1e-5


@pytest.mark.parametrize("shape", [(300, 20), (40, 3, 50), (6, 4, 700)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outlier_first_element_takes_the_exact_second_pass(shape, dtype):
    """The one-pass sums are shifted by the first element; when it is an outlier the
    kernel must redo them around the mean (without that pass float32 (N, C) fails here)."""
    rng = np.random.default_rng(6)
    x = (5.0 + 0.01 * rng.standard_normal(shape)).astype(dtype)
    x[0] = 500.0  # first row: every channel's shift is an outlier
    c = shape[1]
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    got = K.batch_norm_forward_train(x, w, b, 1e-5)
    check_forward(got, reference("batch_norm_forward_train", x, w, b, 1e-5), x, w)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3), (2, 1, 1)])
def test_backward_matches_central_differences_float64(shape):
    """dx, dweight, dbias are the gradient of sum(y * g) for the compiled forward."""
    rng = np.random.default_rng(3)
    c = shape[1]
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    w, b = rng.standard_normal(c), rng.standard_normal(c)

    def loss(x, w, b):
        return float(np.sum(K.batch_norm_forward_train(x, w, b, 1e-3)[0] * g))

    _, mean, _, invstd = K.batch_norm_forward_train(x, w, b, 1e-3)
    dx, dw, db = K.batch_norm_backward(g, x, mean, invstd, w)
    h = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, w, b)
            arr[i] = old - h
            down = loss(x, w, b)
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_with_batch_statistics_equals_training_output(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((33, 6, 17)).astype(dtype)
    w, b = rng.standard_normal(6).astype(dtype), rng.standard_normal(6).astype(dtype)
    y, mean, var, _ = K.batch_norm_forward_train(x, w, b, 1e-5)
    np.testing.assert_allclose(
        K.batch_norm_forward_eval(x, mean, var, w, b, 1e-5),
        y,
        rtol=RTOL[np.dtype(dtype)] * 10,
        atol=RTOL[np.dtype(dtype)] * 10,
    )


def test_inputs_are_not_mutated_and_outputs_are_fresh():
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((7, 3, 5)), rng.standard_normal((7, 3, 5))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    saved = [a.copy() for a in (x, dy, w, b)]
    y, mean, var, invstd = K.batch_norm_forward_train(x, w, b, 1e-5)
    dx, dw, db = K.batch_norm_backward(dy, x, mean, invstd, w)
    ye = K.batch_norm_forward_eval(x, mean, var, w, b, 1e-5)
    for a, s in zip((x, dy, w, b), saved):
        np.testing.assert_array_equal(a, s)
    for out in (y, dx, ye):
        assert out.flags.c_contiguous and not np.shares_memory(out, x)


def test_zero_size_axes():
    w, b = np.ones(3), np.zeros(3)
    x = np.zeros((0, 3, 4))
    dx, dw, db = K.batch_norm_backward(x, x, np.zeros(3), np.ones(3), w)
    assert dx.shape == (0, 3, 4)
    assert np.array_equal(dw, np.zeros(3)) and np.array_equal(db, np.zeros(3))
    assert K.batch_norm_forward_eval(np.zeros((0, 3)), w, w, w, b, 1e-5).shape == (0, 3)
    y, mean, var, invstd = K.batch_norm_forward_train(
        np.zeros((4, 0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32), 1e-5
    )
    assert y.shape == (4, 0, 2) and mean.shape == var.shape == invstd.shape == (0,)
    assert y.dtype == mean.dtype == np.float32
    with pytest.raises(ValueError, match="at least 1 value per channel"):
        K.batch_norm_forward_train(np.zeros((0, 3)), w, b, 1e-5)


def test_compiled_wrapper_rejects_empty_channels_itself():
    """The dispatcher checks this first; the compiled kernel still never divides by m = 0."""
    from tinygrad_bn._ext import batchnorm

    with pytest.raises(ValueError, match="at least 1 value per channel"):
        batchnorm.batch_norm_forward_train(np.zeros((0, 3)), np.ones(3), np.zeros(3), 1e-5)


def test_compiled_wrappers_check_what_memory_safety_depends_on():
    """Called directly (past the dispatcher), a wrong dtype or length is an error, not a
    read past the end of an array."""
    from tinygrad_bn._ext import batchnorm

    x = np.ones((4, 3), np.float32)
    ok = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="weight: expected the dtype of the first array"):
        batchnorm.batch_norm_forward_train(x, np.ones(3), ok, 1e-5)
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\)"):
        batchnorm.batch_norm_forward_train(x, ok, np.ones(2, np.float32), 1e-5)
    with pytest.raises(ValueError, match="grad_out"):
        batchnorm.batch_norm_backward(np.ones((4, 3, 1), np.float32), x, ok, ok, ok)
    with pytest.raises(ValueError, match="grad_out"):
        batchnorm.batch_norm_backward(np.ones((5, 3), np.float32), x, ok, ok, ok)
    with pytest.raises(TypeError, match="float32 or float64"):
        batchnorm.batch_norm_forward_eval(x.astype(np.int32), ok, ok, ok, ok, 1e-5)
    with pytest.raises(ValueError, match="2D to 3D"):
        batchnorm.batch_norm_forward_eval(np.ones((2, 3, 1, 1), np.float32), ok, ok, ok, ok, 1e-5)


def test_eps_zero_is_the_callers_choice():
    """eps is checked where the user passed it (nn, F); the kernel computes with eps = 0."""
    x = np.array([[1.0, 2.0], [3.0, 2.0]])
    one, zero = np.ones(2), np.zeros(2)
    y, mean, var, invstd = K.batch_norm_forward_train(x, one, zero, 0.0)
    np.testing.assert_array_equal(var, [1.0, 0.0])
    assert invstd[1] == np.inf


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_in_a_channel_gives_nan_statistics_on_both_backends(shape, dtype):
    """Was: the compiled path clamped a NaN variance to 0 (NumPy and PyTorch give NaN)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    x[2, 1] = np.nan
    w, b = np.ones(5, dtype), np.zeros(5, dtype)
    for name in ("cython", "numpy"):
        with K.backend(name):
            y, mean, var, invstd = K.batch_norm_forward_train(x, w, b, 1e-5)
        assert np.isnan(mean[1]) and np.isnan(var[1]) and np.isnan(invstd[1]), name
        assert np.isnan(y[:, 1]).all(), name
        others = [0, 2, 3, 4]
        assert np.isfinite(var[others]).all() and np.isfinite(y[:, others]).all(), name


@pytest.mark.parametrize("shape", [(60, 100), (64, 8, 49)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_output_mask(shape, dtype):
    """Each mask returns exactly the asked-for gradients, equal to the unmasked ones, on
    both backends; dx off skips its pass."""
    rng = np.random.default_rng(6)
    x, dy = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    _, mean, _, invstd = K.batch_norm_forward_train(x, w, w, 1e-5)
    for name in ("cython", "numpy"):
        with K.backend(name):
            full = K.batch_norm_backward(dy, x, mean, invstd, w)
            for mask in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]:
                got = K.batch_norm_backward(dy, x, mean, invstd, w, mask)
                for want, g, m in zip(full, got, mask):
                    assert (g is None) == (not m), (name, mask)
                    if m:
                        np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("shape", [(60, 100), (8, 6, 5, 7)])
def test_matches_pytorch(shape):
    """An independent implementation: torch's fused CPU kernels, float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    c = shape[1]
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    x3, dy3 = x.reshape(shape[0], c, -1), dy.reshape(shape[0], c, -1)
    y, mean, var, invstd = K.batch_norm_forward_train(x3, w, b, 1e-5)
    dx, dw, db = K.batch_norm_backward(dy3, x3, mean, invstd, w)
    t = [torch.from_numpy(a) for a in (x, dy, w, b)]
    ty, tmean, tinvstd = torch.ops.aten.native_batch_norm(
        t[0], t[2], t[3], None, None, True, 0.1, 1e-5
    )
    tdx, tdw, tdb = torch.ops.aten.native_batch_norm_backward(
        t[1], t[0], t[2], None, None, tmean, tinvstd, True, 1e-5, [True, True, True]
    )
    for ours, theirs in (
        (y, ty),
        (mean, tmean),
        (invstd, tinvstd),
        (dx, tdx),
        (dw, tdw),
        (db, tdb),
    ):
        np.testing.assert_allclose(
            ours.reshape(theirs.shape), theirs.numpy(), rtol=1e-10, atol=1e-10
        )


# ---------------------------------------------------------------- running estimates


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_running_average_has_the_bits_of_the_numpy_expression(dtype):
    """Each product rounded on its own, as `r *= keep; r += w * s` (an FMA would differ in
    about a quarter of the elements); keep and w rounded to the arrays' dtype."""
    rng = np.random.default_rng(4)
    for momentum in (0.1, 0.01, 0.3333, np.float32(0.1)):
        for m in (2, 60, 997):
            r = (rng.standard_normal(257) * 10.0 ** rng.integers(-3, 4, 257)).astype(dtype)
            s = (rng.standard_normal(257) * 10.0 ** rng.integers(-3, 4, 257)).astype(dtype)
            want = r.copy()
            want *= 1 - momentum
            want += (momentum * m / (m - 1)) * s
            got = r.copy()
            assert K.running_average(got, s, 1 - momentum, momentum * m / (m - 1)) is got
            np.testing.assert_array_equal(got, want)


def test_running_average_takes_the_numpy_expression_for_other_arrays():
    """A float64 estimate of a float32 batch, or a strided one, is updated all the same."""
    rng = np.random.default_rng(5)
    s = rng.standard_normal(6).astype(np.float32)
    for r in (rng.standard_normal(6), rng.standard_normal(12).astype(np.float32)[::2]):
        want = r * 0.9 + (0.1 * s).astype(r.dtype)
        K.running_average(r, s, 0.9, 0.1)
        np.testing.assert_allclose(r, want, rtol=1e-6)
