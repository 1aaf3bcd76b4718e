"""Compiled matmul: C = A @ B for (M, K) @ (K, N) or batched (B, M, K) @ (B, K, N).

Arguments are validated by tinygrad_bn.kernels; this wrapper only reads strides (any
layout, transposed views included, is used in place) and calls the GEMM in gemm.pxd.
The NumPy C API is used instead of typed memoryviews because on the paper's small MLP
shapes the per-call overhead (buffer acquisition, fused dispatch) is a visible share.
"""
import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from gemm cimport gemm, tgbn_max_threads, PAR_MIN_WORK
from microkernel cimport MR, NR, NH, TGBN_GEMM_PATH

cnp.import_array()

GEMM_PATH = TGBN_GEMM_PATH.decode("ascii")  # "avx512", "avx2" or "portable": see microkernel.pxd.tp
GEMM_TILE = (MR, NR, NH)  # register tile rows, columns, columns of the ragged-panel tile


cdef object _usable(object x):
    """x itself when its strides are whole elements and it is aligned, else an aligned copy."""
    cdef cnp.ndarray arr = <cnp.ndarray> x
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(arr)
    cdef int d
    if not cnp.PyArray_ISALIGNED(arr):
        return np.array(x, order="C")
    for d in range(cnp.PyArray_NDIM(arr)):
        if cnp.PyArray_STRIDES(arr)[d] % item:
            return np.array(x, order="C")
    return x


cdef void _check(object a, object b) except *:
    """What memory safety needs, for a direct call (the kernel door validates the rest):
    arrays, one float dtype in native byte order (the GEMM reads raw floats), 2D or 3D,
    and shapes that agree (the GEMM trusts them for every index). Any strides are fine.
    C API reads only: attribute lookups and shape tuples were a visible share of a 2 us call."""
    if not (isinstance(a, cnp.ndarray) and isinstance(b, cnp.ndarray)):
        raise TypeError(
            f"matmul: expected numpy arrays (got {type(a).__name__} @ {type(b).__name__})")
    cdef cnp.ndarray A = <cnp.ndarray> a
    cdef cnp.ndarray B = <cnp.ndarray> b
    cdef int nd = cnp.PyArray_NDIM(A)
    cdef int ta = cnp.PyArray_TYPE(A)
    if (ta != cnp.PyArray_TYPE(B) or (ta != cnp.NPY_FLOAT and ta != cnp.NPY_DOUBLE)
            or not cnp.PyArray_ISNOTSWAPPED(A) or not cnp.PyArray_ISNOTSWAPPED(B)):
        raise TypeError("matmul: expected two float32 or two float64 arrays in native byte "
                        f"order (got {a.dtype.str} @ {b.dtype.str})")
    cdef cnp.npy_intp* ad = cnp.PyArray_DIMS(A)
    cdef cnp.npy_intp* bd = cnp.PyArray_DIMS(B)
    if ((nd != 2 and nd != 3) or cnp.PyArray_NDIM(B) != nd or ad[nd - 1] != bd[nd - 2]
            or (nd == 3 and ad[0] != bd[0])):
        raise ValueError(
            f"matmul: expected (M, K) @ (K, N) or (B, M, K) @ (B, K, N) (got {a.shape} @ {b.shape})")


cdef int _batched(Py_ssize_t nbatch, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                  const floating* a, Py_ssize_t sab, Py_ssize_t sa0, Py_ssize_t sa1,
                  const floating* b, Py_ssize_t sbb, Py_ssize_t sb0, Py_ssize_t sb1,
                  floating* c) noexcept nogil:
    """C[i] = A[i] @ B[i] for each batch item; returns -1 when out of memory."""
    cdef Py_ssize_t i
    cdef int failed = 0
    cdef int* fail = &failed
    # many small products: one thread per item beats threading each tiny GEMM
    cdef bint per_item = (nbatch >= tgbn_max_threads() and M * N * K < 64 * PAR_MIN_WORK)
    if per_item:
        for i in prange(nbatch, schedule='static',
                        use_threads_if=nbatch * M * N * K >= PAR_MIN_WORK):
            if gemm(M, N, K, a + i * sab, sa0, sa1, b + i * sbb, sb0, sb1,
                    c + i * M * N, N, False, False) < 0:
                fail[0] = 1
    else:
        for i in range(nbatch):
            if gemm(M, N, K, a + i * sab, sa0, sa1, b + i * sbb, sb0, sb1,
                    c + i * M * N, N, False, True) < 0:
                fail[0] = 1
    return -1 if failed else 0


def matmul(a, b):
    """C = A @ B: (M, K) @ (K, N) -> (M, N) or (B, M, K) @ (B, K, N) -> (B, M, N), any strides."""
    _check(a, b)
    a = _usable(a)
    b = _usable(b)
    cdef cnp.ndarray A = <cnp.ndarray> a
    cdef cnp.ndarray B = <cnp.ndarray> b
    cdef int nd = cnp.PyArray_NDIM(A)
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(A)
    cdef cnp.npy_intp* ad = cnp.PyArray_DIMS(A)
    cdef cnp.npy_intp* bd = cnp.PyArray_DIMS(B)
    cdef cnp.npy_intp* ast = cnp.PyArray_STRIDES(A)
    cdef cnp.npy_intp* bst = cnp.PyArray_STRIDES(B)
    cdef Py_ssize_t nbatch = ad[0] if nd == 3 else 1
    cdef Py_ssize_t M = ad[nd - 2], K = ad[nd - 1], N = bd[nd - 1]
    cdef Py_ssize_t sab = ast[0] // item if nd == 3 else 0
    cdef Py_ssize_t sbb = bst[0] // item if nd == 3 else 0
    cdef Py_ssize_t sa0 = ast[nd - 2] // item, sa1 = ast[nd - 1] // item
    cdef Py_ssize_t sb0 = bst[nd - 2] // item, sb1 = bst[nd - 1] // item
    cdef int typenum = cnp.PyArray_TYPE(A)
    cdef int rc = 0
    cdef cnp.npy_intp dims[3]
    dims[0] = nbatch if nd == 3 else M
    dims[1] = M if nd == 3 else N
    dims[2] = N
    cdef cnp.ndarray C = cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    cdef void* pa = cnp.PyArray_DATA(A)
    cdef void* pb = cnp.PyArray_DATA(B)
    cdef void* pc = cnp.PyArray_DATA(C)
    if nbatch == 0 or M == 0 or N == 0:
        return C
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            if nbatch == 1:
                rc = gemm(M, N, K, <float*> pa, sa0, sa1, <float*> pb, sb0, sb1,
                          <float*> pc, N, False, True)
            else:
                rc = _batched(nbatch, M, N, K, <float*> pa, sab, sa0, sa1,
                              <float*> pb, sbb, sb0, sb1, <float*> pc)
        else:
            if nbatch == 1:
                rc = gemm(M, N, K, <double*> pa, sa0, sa1, <double*> pb, sb0, sb1,
                          <double*> pc, N, False, True)
            else:
                rc = _batched(nbatch, M, N, K, <double*> pa, sab, sa0, sa1,
                              <double*> pb, sbb, sb0, sb1, <double*> pc)
    if rc < 0:
        raise MemoryError(f"matmul: out of memory for packing buffers of {a.shape} @ {b.shape}")
    return C
