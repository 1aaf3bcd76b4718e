"""Compiled conv2d (ext/conv2d.pyx) against the NumPy reference kernels.

Calls go through tinygrad_bn.kernels with the "cython" backend; the oracle is
tinygrad_bn.kernels.reference evaluated in float64. Shapes include zero-size axes, 1x1
maps and kernels, strides and paddings that leave ragged edges, and non-contiguous inputs;
every case runs on 1 and 2 threads.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import LAYOUTS, layout

from tinygrad_bn import kernels as K
from tinygrad_bn.kernels import reference as R

K.require_extension()  # a missing build fails this module instead of testing NumPy against itself

DTYPES = st.sampled_from([np.float32, np.float64])


def ref_conv(x, w, g, stride, padding):
    """(y, dx, dw) from the reference in float64, plus the same for |x|, |w|, |g| (error scales)."""
    out = []
    for xx, ww, gg in [(x, w, g), (np.abs(x), np.abs(w), np.abs(g))]:
        xx, ww, gg = (v.astype(np.float64) for v in (xx, ww, gg))
        y = R.conv2d_forward(xx, ww, stride, padding)
        if gg.size:  # the reference cannot reshape an empty grad_out; an empty sum is 0
            dx, dw, db = R.conv2d_backward(xx, ww, gg, stride, padding)
        else:
            dx, dw, db = np.zeros_like(xx), np.zeros_like(ww), np.zeros(ww.shape[0])
        out.append((y, dx, dw, db))
    return out


def close(got, want, scale, dtype, k):
    """|got - want| <= rtol * scale, scale = the same sum over absolute values, k terms each."""
    rtol = 1e-12 if dtype == np.float64 else 2e-6 * np.sqrt(k + 1)
    assert got.shape == want.shape and got.dtype == dtype, (got.shape, got.dtype, want.shape)
    assert got.flags.c_contiguous
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= rtol * scale + 1e-300), f"max error {err.max()}"


@st.composite
def conv_case(draw):
    n, c, o = draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 10))
    w = draw(st.integers(max(1, kw - 2 * pw), 10))
    return (n, c, h, w), (o, c, kh, kw), (sh, sw), (ph, pw)


@settings(max_examples=60, deadline=None)
@given(
    case=conv_case(),
    dtype=DTYPES,
    lx=LAYOUTS,
    lw=LAYOUTS,
    lg=LAYOUTS,
    seed=st.integers(0, 2**32 - 1),
)
def test_conv2d_matches_reference(threads, case, dtype, lx, lw, lg, seed):
    xs, ws, stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, xs).astype(dtype)
    w = rng.uniform(-1, 1, ws).astype(dtype)
    oh = (xs[2] + 2 * padding[0] - ws[2]) // stride[0] + 1
    ow = (xs[3] + 2 * padding[1] - ws[3]) // stride[1] + 1
    g = rng.uniform(-1, 1, (xs[0], ws[0], oh, ow)).astype(dtype)
    (y, dx, dw, db), (sy, sdx, sdw, sdb) = ref_conv(x, w, g, stride, padding)

    got_y = K.conv2d_forward(layout(x, lx), layout(w, lw), stride, padding)
    got_dx, got_dw, got_db = K.conv2d_backward(
        layout(x, lx), layout(w, lw), layout(g, lg), stride, padding
    )
    ckk = ws[1] * ws[2] * ws[3]
    close(got_y, y, sy, dtype, ckk)
    close(got_dx, dx, sdx, dtype, ws[0] * ws[2] * ws[3])
    close(got_dw, dw, sdw, dtype, xs[0] * oh * ow)
    close(got_db, db, sdb, dtype, xs[0] * oh * ow)


@pytest.mark.parametrize(
    "n,c,hw,o",
    [(64, 1, 28, 32), (8, 32, 14, 64), (1, 3, 9, 33), (5, 7, 6, 1), (3, 2, 1, 3), (2, 3, 2, 5)]
    + [(60, 1, 28, 8), (60, 8, 14, 16), (3, 64, 3, 64), (2, 64, 5, 64), (3, 8, 5, 256)],
)
def test_conv2d_benchmark_shapes(threads, n, c, hw, o):
    """The benchmark's layers (k3 p1: the flat-shift im2col), a single image (the GEMM-threaded
    path) and 1x1 / 2x2 maps where most of each window is padding; the claims net's layers;
    64x64 and 8->256 channels, whose dW sums would not stay vectors through a run (DW_ACC):
    the GEMM takes them, as dW^T and as dW."""
    rng = np.random.default_rng(n * c + o)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
        w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
        g = rng.standard_normal((n, o, hw, hw)).astype(dtype)
        (y, dx, dw, _), (sy, sdx, sdw, _) = ref_conv(x, w, g, (1, 1), (1, 1))
        close(K.conv2d_forward(x, w, 1, 1), y, sy, dtype, c * 9)
        got_dx, got_dw, _ = K.conv2d_backward(x, w, g, 1, 1)
        close(got_dx, dx, sdx, dtype, o * 9)
        close(got_dw, dw, sdw, dtype, n * hw * hw)


def test_conv2d_deterministic(threads):
    """Same inputs and thread count -> bit-identical outputs (dW partials summed in fixed order)."""
    rng = np.random.default_rng(3)
    for stride, oh in [(1, 12), (2, 6)]:  # big enough for the threaded per-image path
        x = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
        w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
        g = rng.standard_normal((16, 16, oh, oh)).astype(np.float32)
        first = K.conv2d_forward(x, w, stride, 1), *K.conv2d_backward(x, w, g, stride, 1)
        for _ in range(3):
            again = K.conv2d_forward(x, w, stride, 1), *K.conv2d_backward(x, w, g, stride, 1)
            for a, b in zip(first, again):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n,c,o", [(60, 8, 16), (5, 8, 16), (1, 8, 16), (20, 32, 64), (9, 8, 256)])
def test_conv2d_backward_bits_do_not_depend_on_thread_count(n, c, o):
    """dW and db are summed over fixed runs of images, the runs in order: 1 and 2 threads give
    the same bits (the claims net's second layer; 196 outputs per image leave a ragged vector;
    32->64 and 8->256 channels take the GEMM in its two orientations)."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, c, 14, 14)).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    g = rng.standard_normal((n, o, 14, 14)).astype(np.float32)
    before = K.get_num_threads()
    try:
        got = []
        for threads in (1, 2):
            K.set_num_threads(threads)
            with K.backend("cython"):
                got.append(K.conv2d_backward(x, w, g, 1, 1))
    finally:
        K.set_num_threads(before)
    for a, b in zip(*got):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_backward_output_mask(threads, stride, padding, dtype):
    """Each of the 8 masks returns exactly the asked-for gradients, bit-equal to the unmasked
    call, on both backends; per-image threading (16 images) and the GEMM-threaded path (1)."""
    rng = np.random.default_rng(7)
    for n in (16, 1):
        x = rng.standard_normal((n, 3, 12, 12)).astype(dtype)
        w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
        oh = (12 + 2 * padding - 3) // stride + 1
        g = rng.standard_normal((n, 8, oh, oh)).astype(dtype)
        for name in ("cython", "numpy"):
            with K.backend(name):
                full = K.conv2d_backward(x, w, g, stride, padding)
                for mask in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]:
                    got = K.conv2d_backward(x, w, g, stride, padding, mask)
                    for want, gm, m in zip(full, got, mask):
                        assert (gm is None) == (not m), (name, mask)
                        if m:
                            np.testing.assert_array_equal(gm, want)
        db = K.conv2d_backward(x, w, g, stride, padding, (False, False, True))[2]
        np.testing.assert_allclose(db, g.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5)
