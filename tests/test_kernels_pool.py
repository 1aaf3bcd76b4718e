"""Compiled max_pool2d (ext/pool.pyx) against the NumPy reference kernels.

Calls go through tinygrad_bn.kernels with the "cython" backend; the reference must agree
exactly (a max is exact). Shapes include zero-size axes, strides and paddings that leave
ragged edges, ties, -inf and NaN, and non-contiguous inputs; every case runs on 1 and 2
threads.
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


@st.composite
def pool_case(draw):
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw)


# few distinct values (many ties), plus -inf, which padding must never beat
POOL_VALUES = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, -np.inf])


@settings(max_examples=80, deadline=None)
@given(case=pool_case(), dtype=DTYPES, lx=LAYOUTS, data=st.data())
def test_max_pool2d_matches_reference_exactly(threads, case, dtype, lx, data):
    xs, k, stride, padding = case
    x = np.array(
        data.draw(st.lists(POOL_VALUES, min_size=int(np.prod(xs)), max_size=int(np.prod(xs)))),
        dtype=dtype,
    ).reshape(xs)
    y, arg = K.max_pool2d_forward(layout(x, lx), k, stride, padding)
    want_y, want_arg = R.max_pool2d_forward(x, k, stride, padding)
    assert y.dtype == dtype and arg.dtype == np.int64 and y.shape == want_y.shape
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(arg, want_arg)  # ties: first in row-major window order

    g = np.random.default_rng(len(x.shape)).standard_normal(y.shape).astype(dtype)
    dx = K.max_pool2d_backward(layout(g, lx), arg, xs)
    assert dx.shape == xs and dx.dtype == dtype
    if g.size:
        np.testing.assert_allclose(dx, R.max_pool2d_backward(g, want_arg, xs), rtol=1e-6, atol=0)
    else:
        assert not dx.any()


# the float32 2x2 stride-2 path runs rows of 4+ outputs in vector chunks, the last chunk
# overlapping: widths around the chunk sizes 4 and 8, odd ones leaving a column out
@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(2, 7), st.integers(8, 41)),
    values=st.sampled_from([[-1.0, 0.0, 1.0], [-0.0, 0.0, -np.inf], [np.nan, 1.0, 2.0, -np.inf]]),
    seed=st.integers(0, 2**16),
)
def test_max_pool2d_2x2_stride2_rows_match_reference(threads, shape, values, seed):
    x = np.random.default_rng(seed).choice(np.array(values, np.float32), size=shape)
    y, arg = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    want_y, want_arg = R.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, want_y)  # NaN where the reference has NaN
    np.testing.assert_array_equal(arg, want_arg)  # ties: the first; NaN: the last
    assert np.array_equal(np.signbit(y), np.signbit(want_y))  # -0.0 first keeps -0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_overlapping_windows_accumulate(threads, dtype):
    """Stride < kernel: one input can win several windows; backward adds every gradient."""
    x = np.zeros((2, 3, 5, 5), dtype)
    x[:, :, 2, 2] = 1.0
    y, arg = K.max_pool2d_forward(x, (3, 3), (1, 1), (1, 1))
    dx = K.max_pool2d_backward(np.ones_like(y), arg, x.shape)
    assert dx[0, 0, 2, 2] == 9.0  # the centre wins all 9 windows that contain it
    np.testing.assert_array_equal(dx, R.max_pool2d_backward(np.ones_like(y), arg, x.shape))


def test_max_pool2d_large_parallel_planes(threads):
    """Enough work for the threaded path (> 2^20 window reads); compared against the reference."""
    x = np.random.default_rng(4).standard_normal((64, 64, 16, 16)).astype(np.float32)
    y, arg = K.max_pool2d_forward(x, 3, 1, 1)
    want_y, want_arg = R.max_pool2d_forward(x, (3, 3), (1, 1), (1, 1))
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(arg, want_arg)
    g = np.random.default_rng(5).standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(
        K.max_pool2d_backward(g, arg, x.shape), R.max_pool2d_backward(g, arg, x.shape)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_nan_wins_like_pytorch(dtype, each_backend):
    """Was: NaN was dropped, and an all-NaN window sent its gradient outside the window."""
    x = np.arange(2 * 4 * 4, dtype=dtype).reshape(1, 2, 4, 4)
    x[0, 0, 0, 1] = np.nan  # one NaN among larger values (window (0, 0))
    x[0, 0, 2:, 2:] = np.nan  # an all-NaN window ((1, 1)): last NaN is (3, 3)
    y, arg = K.max_pool2d_forward(x, 2, 2, 0)
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 1
    assert np.isnan(y[0, 0, 1, 1]) and arg[0, 0, 1, 1] == 3 * 4 + 3
    assert np.isfinite(y[0, 0, 0, 1]) and np.isfinite(y[0, 1]).all()
    dx = K.max_pool2d_backward(np.ones_like(y), arg, x.shape)
    assert dx[0, 0, 0, 1] == 1 and dx[0, 0, 3, 3] == 1
    assert dx[0, 0].sum() == 4  # every window's gradient landed inside that window
    torch = pytest.importorskip("torch")
    ty, targ = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, 2, 0, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(arg, targ.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_all_minus_inf_window_points_inside(dtype, each_backend):
    """A window of -inf only (padding aside) picks its first real element, as PyTorch."""
    x = np.full((1, 1, 3, 3), -np.inf, dtype)
    x[0, 0, 0, 0] = 1.0
    y, arg = K.max_pool2d_forward(x, 2, 1, 1)
    torch = pytest.importorskip("torch")
    ty, targ = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, 1, 1, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(arg, targ.numpy())


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("bad", [-1, 4, 2**40])
def test_backward_refuses_an_argmax_outside_the_plane_on_both_backends(backend, bad):
    """The compiled kernel checks the range in its scatter pass (the door's scan took 11 us of
    a 76 us call at (60, 8, 28, 28)); the NumPy backend in the door. Same words either way."""
    g = np.ones((2, 3, 1, 2), np.float32)
    arg = np.zeros((2, 3, 1, 2), np.int64)
    arg[1, 2, 0, 1] = bad
    with (
        K.backend(backend),
        pytest.raises(ValueError, match=r"argmax: expected values in \[0, 4\)"),
    ):
        K.max_pool2d_backward(g, arg, (2, 3, 2, 2))
