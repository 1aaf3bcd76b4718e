"""Strategies for the project's own tests: tinygrad_bn.testing, plus a few local ones."""

import numpy as np
from hypothesis import strategies as st

from tinygrad_bn.testing import arrays as _arrays
from tinygrad_bn.testing import broadcastable_shapes as broadcast_pair  # noqa: F401
from tinygrad_bn.testing import floats, shapes, tensors  # noqa: F401
from tinygrad_bn.testing import tolerance as tol  # noqa: F401

DTYPES = (np.float32, np.float64)


def arrays(shape, dtype=np.float64, bound=3.0, elements=None, unique=False):
    """Shape-first spelling used throughout the tests."""
    return _arrays(dtype, shape, elements, bound, unique)


def positive(bound=3.0, low=0.2):
    return st.floats(low, bound, allow_nan=False)


def separated(bound=3.0, gap=0.05):
    """Floats on a grid offset from zero, so kinks (abs, relu) are never within ±eps."""
    return st.integers(int(-bound / gap), int(bound / gap)).map(lambda k: k * gap + gap / 3)


# Memory layouts a kernel door must accept: contiguous, strided, negative strides, channels-last.
LAYOUTS = st.sampled_from(["c", "step", "neg", "channels_last"])


def layout(a, how):
    """The values of the 4D array `a` in another memory layout."""
    if how == "c":
        return np.ascontiguousarray(a)
    if how == "step":
        big = np.zeros(a.shape[:2] + (2 * a.shape[2], 2 * a.shape[3]), a.dtype)
        big[:, :, ::2, ::2] = a
        return big[:, :, ::2, ::2]
    if how == "neg":
        return np.ascontiguousarray(a[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]
    if how == "channels_last":
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    raise ValueError(how)
