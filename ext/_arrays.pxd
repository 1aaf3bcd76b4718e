# What memory safety needs from the arrays and tuples a compiled kernel is handed, checked
# once in Python before `nogil` (cimported by conv2d, pool and batchnorm; no module of its own).
# tinygrad_bn.kernels validates for the user first; these checks keep a direct call of a
# tinygrad_bn._ext function from reading out of bounds (the kernels index raw pointers).
cimport numpy as cnp


cdef inline int float_array(str op, str arg, object a, int ndim_lo, int ndim_hi,
                            int typenum) except -1:
    """a's type number after checking: an ndarray of float32 or float64 (typenum, when it is
    not NPY_NOTYPE) in native byte order, ndim_lo <= ndim <= ndim_hi, C-contiguous, aligned."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{op}: {arg}: expected a numpy.ndarray (got {type(a).__name__})")
    cdef cnp.ndarray x = <cnp.ndarray> a
    cdef int t = cnp.PyArray_TYPE(x)
    cdef int nd = cnp.PyArray_NDIM(x)
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not cnp.PyArray_ISNOTSWAPPED(x):
        raise TypeError(f"{op}: {arg}: expected float32 or float64 in native byte order "
                        f"(got {a.dtype.str})")
    if typenum != cnp.NPY_NOTYPE and t != typenum:
        raise TypeError(f"{op}: {arg}: expected the dtype of the first array, "
                        f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'float64'} (got {a.dtype})")
    if nd < ndim_lo or nd > ndim_hi:
        want = f"{ndim_lo}D" if ndim_lo == ndim_hi else f"{ndim_lo}D to {ndim_hi}D"
        raise ValueError(f"{op}: {arg}: expected a {want} array (got shape {a.shape})")
    if not cnp.PyArray_IS_C_CONTIGUOUS(x) or not cnp.PyArray_ISALIGNED(x):
        raise ValueError(f"{op}: {arg}: expected a C-contiguous, aligned array (got strides "
                         f"{a.strides})")
    return t


cdef inline tuple int_tuple(str op, str arg, object v, Py_ssize_t length):
    """v as a tuple of `length` Python ints, or a ValueError (a short tuple would be read past
    its end by the kernels)."""
    cdef list t = []
    try:
        for i in v:
            t.append(int(i.__index__()))
            if len(t) > length:
                break
    except (TypeError, AttributeError):
        t = []
    if len(t) != length:
        raise ValueError(f"{op}: {arg}: expected a tuple of {length} integers (got {v!r})")
    return tuple(t)


cdef inline int same_shape(str op, str arg, object a, object like) except -1:
    """Check that the ndarray a has the shape of the ndarray like (C-level: this runs per call)."""
    cdef cnp.ndarray x = <cnp.ndarray> a
    cdef cnp.ndarray y = <cnp.ndarray> like
    cdef int d
    cdef bint same = cnp.PyArray_NDIM(x) == cnp.PyArray_NDIM(y)
    for d in range(cnp.PyArray_NDIM(x) if same else 0):
        same = same and cnp.PyArray_DIM(x, d) == cnp.PyArray_DIM(y, d)
    if not same:
        raise ValueError(f"{op}: {arg}: expected shape {like.shape} (got {a.shape})")
    return 0


cdef inline int mask_bits(str op, object mask) except -1:
    """(dx, dweight, dbias) booleans as bits 1, 2, 4 (as ATen's output_mask)."""
    if len(mask) != 3:
        raise ValueError(f"{op}: output_mask: expected 3 booleans (got {mask!r})")
    return (1 if mask[0] else 0) | (2 if mask[1] else 0) | (4 if mask[2] else 0)
