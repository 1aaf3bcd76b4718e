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
