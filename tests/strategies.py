"""Hypothesis strategies shared by the tests, and tolerances per dtype in one place."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_bn as tg

DTYPES = (np.float32, np.float64)
# forward comparisons against NumPy: (rtol, atol) per dtype
TOL = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-12, 1e-12)}


def tol(dtype):
    rtol, atol = TOL[np.dtype(dtype)]
    return {"rtol": rtol, "atol": atol}


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def floats(bound=3.0):
    """Bounded finite floats: central differences stay meaningful on them."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False)


def arrays(shape, dtype=np.float64, bound=3.0, elements=None):
    return hnp.arrays(np.dtype(dtype), shape, elements=elements or floats(bound))


@st.composite
def broadcast_pair(draw, max_dims=3, max_side=4):
    """Two shapes that broadcast together, including size-1 and missing leading axes."""
    base = draw(shapes(min_dims=0, max_dims=max_dims, max_side=max_side))
    a, b = list(base), list(base)
    for shape in (a, b):
        for i in range(len(shape)):
            if draw(st.booleans()) and draw(st.booleans()):
                shape[i] = 1
    drop = draw(st.integers(0, len(b)))
    return tuple(a), tuple(b[drop:])


@st.composite
def tensors(draw, shape=None, dtype=np.float64, bound=3.0, requires_grad=True, elements=None):
    if shape is None:
        shape = draw(shapes())
    data = draw(arrays(shape, dtype, bound, elements))
    return tg.Tensor(data, requires_grad=requires_grad)


def positive(bound=3.0, low=0.2):
    return st.floats(low, bound, allow_nan=False)


def separated(bound=3.0, gap=0.05):
    """Floats rounded to a grid so max/abs/relu ties and kinks are away from ±eps."""
    return st.integers(int(-bound / gap), int(bound / gap)).map(lambda k: k * gap + gap / 3)
