"""Testing helpers for your own ops and modules (needs the [test] extra: hypothesis).

    from hypothesis import given
    from tinygrad_bn.testing import tensors, assert_grad_close, assert_matches_numpy

    @given(tensors(shape=(3, 4)))
    def test_softplus(x):
        assert_matches_numpy(softplus, lambda a: np.log1p(np.exp(a)), x.numpy())
        assert_grad_close(softplus, x)

The strategies are bounded so that float64 central differences stay meaningful; the
gradient check is the same engine as ``tinygrad_bn.gradcheck``.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .gradcheck import GradcheckError, gradcheck
from .tensor import Tensor

__all__ = [
    "shapes",
    "broadcastable_shapes",
    "arrays",
    "tensors",
    "floats",
    "assert_grad_close",
    "assert_matches_numpy",
    "tolerance",
    "GradcheckError",
]

# forward comparisons: (rtol, atol) per dtype
TOLERANCE = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-12, 1e-12)}


def tolerance(dtype):
    """{"rtol": ..., "atol": ...} for comparing a forward result of this dtype."""
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    return {"rtol": rtol, "atol": atol}


# ---------------------------------------------------------------- strategies


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Array shapes, small enough that a gradient check over every element is quick."""
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def floats(bound=3.0):
    """Finite floats in [-bound, bound]."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False)


@st.composite
def broadcastable_shapes(draw, max_dims=3, max_side=4):
    """A pair of shapes that broadcast together (size-1 axes, missing leading axes)."""
    base = draw(shapes(min_dims=0, max_dims=max_dims, max_side=max_side))
    a, b = list(base), list(base)
    for shape in (a, b):
        for i in range(len(shape)):
            if draw(st.integers(0, 3)) == 0:
                shape[i] = 1
    drop = draw(st.integers(0, len(b)))
    return tuple(a), tuple(b[drop:])


def arrays(dtype=np.float64, shape=None, elements=None, bound=3.0, unique=False):
    """NumPy arrays of `dtype`; shape defaults to `shapes()`, elements to `floats(bound)`."""
    return hnp.arrays(
        np.dtype(dtype),
        shape if shape is not None else shapes(),
        elements=elements if elements is not None else floats(bound),
        unique=unique,
    )


@st.composite
def tensors(draw, shape=None, dtype=np.float64, elements=None, bound=3.0, requires_grad=True):
    """Tensors (float64 and requiring grad by default, ready for assert_grad_close)."""
    data = draw(arrays(dtype, shape, elements, bound))
    return Tensor(data, requires_grad=requires_grad)


# ---------------------------------------------------------------- assertions


def assert_grad_close(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Assert fn's backward matches float64 central differences for every input that
    requires grad; on failure the GradcheckError (an AssertionError) names the input,
    the worst element and both values."""
    gradcheck(fn, inputs, eps=eps, atol=atol, rtol=rtol)


def assert_matches_numpy(op, ref, *arrays_, rtol=None, atol=None):
    """Assert op(*Tensors) equals ref(*arrays) in shape, dtype and value.

    Each array is wrapped in a Tensor for `op`; `ref` gets the arrays themselves.
    Tolerances default to the dtype's entry in TOLERANCE.
    """
    out = op(*[Tensor(a) for a in arrays_])
    want = np.asarray(ref(*arrays_))
    if not isinstance(out, Tensor):
        raise AssertionError(f"op: expected a Tensor result (got {type(out).__name__})")
    if out.shape != want.shape:
        raise AssertionError(f"op: expected the reference shape {want.shape} (got {out.shape})")
    if want.dtype.kind == "f" and out.dtype != want.dtype:
        raise AssertionError(f"op: expected the reference dtype {want.dtype} (got {out.dtype})")
    tol = tolerance(out.dtype)
    np.testing.assert_allclose(
        out.numpy(),
        want,
        rtol=tol["rtol"] if rtol is None else rtol,
        atol=tol["atol"] if atol is None else atol,
    )
