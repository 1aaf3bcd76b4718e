"""Activations (relu, sigmoid, tanh) forward and backward, and bias + activation in place.

  activation_forward(x, act)        y = act(x), any shape
  activation_backward(g, out, act)  dx from the saved output (relu: where out > 0)
  bias_activation(y, bias, act)    y = act(y + bias[c]) in place over y (N, C) or (N, C, L):
                                    the epilogue of a linear layer's or a convolution's GEMM
  sum_rows(x)                       the column sums of x (M, N): a linear layer's bias gradient
The element functions live in _activations.pxd (shared with batchnorm.pyx's fused forward).
No element depends on another, so any split between threads gives the same bits; arrays
below MIN_PARALLEL elements run on one thread.
"""
from cython cimport floating
from cython.parallel cimport prange

cimport numpy as cnp
import numpy as np

from _activations cimport (act_code, act_run, tgbn_backward_d, tgbn_backward_f, MODE_COPY,
                           MODE_INPLACE, MODE_SCALAR, MODE_VECTOR)
from _arrays cimport float_array, same_shape
from _openmp cimport tgbn_max_threads

cnp.import_array()

cdef enum:
    CHUNK = 16384          # elements per piece of work a thread takes
    MIN_PARALLEL = 65536   # elements at which threads start (float32 sigmoid of 65536 on the Zen 5,
                           # loaded: 20.0 us on 1 thread, 10.8 on 2; a lower bound is untested)
    MAX_NDIM = 64          # NumPy's NPY_MAXDIMS

# On one thread the loops below run without an OpenMP region: prange's use_threads_if=False
# still enters libgomp's parallel machinery, ~0.8 us a call (Zen 5), where a relu of 6000
# floats takes 0.3; the elements and their order are the same, so are the bits.


cdef void _flat(floating tag, int act, floating* y, const floating* x, Py_ssize_t n, int mode,
                int nt) noexcept nogil:
    """act over n contiguous elements (MODE_COPY: y = act(x); MODE_INPLACE: y = act(y))."""
    cdef Py_ssize_t i, nchunk = (n + CHUNK - 1) // CHUNK
    if nt == 1:  # no OpenMP region (see above)
        act_run(act, y, x, <floating*> NULL, 0, 1, n, 0, mode)
        return
    for i in prange(nchunk, schedule="static", num_threads=nt, use_threads_if=nt > 1):
        act_run(act, y + i * CHUNK, x + i * CHUNK if x != NULL else NULL, <floating*> NULL,
                0, 1, min(<Py_ssize_t> CHUNK, n - i * CHUNK), 0, mode)


cdef void _backward(floating tag, int act, floating* dx, const floating* g, const floating* o,
                    Py_ssize_t n, int nt) noexcept nogil:
    cdef Py_ssize_t i, w, nchunk = (n + CHUNK - 1) // CHUNK
    if nt == 1:  # no OpenMP region
        if floating is float:
            tgbn_backward_f(act, dx, g, o, n)
        else:
            tgbn_backward_d(act, dx, g, o, n)
        return
    for i in prange(nchunk, schedule="static", num_threads=nt, use_threads_if=nt > 1):
        w = min(<Py_ssize_t> CHUNK, n - i * CHUNK)
        if floating is float:
            tgbn_backward_f(act, dx + i * CHUNK, g + i * CHUNK, o + i * CHUNK, w)
        else:
            tgbn_backward_d(act, dx + i * CHUNK, g + i * CHUNK, o + i * CHUNK, w)


cdef void _bias_act(floating tag, int act, floating* y, const floating* bias, Py_ssize_t N,
                    Py_ssize_t C, Py_ssize_t L, int nt) noexcept nogil:
    """y = act(y + bias[c]) over y (N, C, L); rows of C (L == 1) or runs of L take the bias."""
    cdef Py_ssize_t r0, i, rows
    if nt == 1 and L == 1:  # no OpenMP region
        act_run(act, y, <floating*> NULL, bias, 0, N, C, C, MODE_VECTOR)
    elif L == 1:   # rows of C channels: the bias vector along each row
        rows = max(1, CHUNK // max(C, 1))
        for r0 in prange(0, N, rows, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            act_run(act, y + r0 * C, <floating*> NULL, bias, 0, min(rows, N - r0), C, C,
                    MODE_VECTOR)
    else:        # runs of L elements of one channel: one bias value each
        for i in prange(N * C, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            act_run(act, y + i * L, <floating*> NULL, <floating*> NULL, bias[i % C], 1, L, 0,
                    MODE_SCALAR)


cdef void _sum_rows(floating tag, const floating* x, floating* out, Py_ssize_t M,
                    Py_ssize_t N) noexcept nogil:
    """out[j] = ((0 + x[0, j]) + x[1, j]) + ...: each column in row order, in x's dtype, as
    NumPy sums a C-contiguous x over axis 0 (a row at a time, vectorized along it)."""
    cdef Py_ssize_t i, j
    cdef const floating* row
    for j in range(N):
        out[j] = 0
    for i in range(M):
        row = x + i * N
        for j in range(N):
            out[j] = out[j] + row[j]


# ---------------------------------------------------------------- public kernels
# tinygrad_bn.kernels validates for the user and passes C-contiguous arrays; these wrappers
# check what memory safety depends on (_arrays.pxd) and call the loops with raw pointers.

cdef inline cnp.ndarray _empty_like(x):
    cdef cnp.ndarray xa = <cnp.ndarray> x
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.PyArray_TYPE(xa), 0)


cdef inline int _threads(Py_ssize_t n) noexcept:
    return tgbn_max_threads() if n >= MIN_PARALLEL else 1


def activation_forward(x, activation):
    """y = activation(x) elementwise for activation 'relu', 'sigmoid', 'tanh' (None: a copy),
    x any shape. Raises TypeError/ValueError."""
    cdef int act = act_code("activation_forward", activation)
    cdef int t = float_array("activation_forward", "input", x, 0, MAX_NDIM, cnp.NPY_NOTYPE)
    y = _empty_like(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray> x)
    cdef void* yp = cnp.PyArray_DATA(<cnp.ndarray> y)
    cdef const void* xp = cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef int nt = _threads(n)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _flat(<float> 0, act, <float*> yp, <const float*> xp, n, MODE_COPY, nt)
        else:
            _flat(<double> 0, act, <double*> yp, <const double*> xp, n, MODE_COPY, nt)
    return y


def activation_backward(grad_out, out, activation):
    """dx of activation_forward from its output: sigmoid g*out*(1 - out), tanh g*(1 - out^2),
    relu g where out > 0 else 0. Raises TypeError/ValueError."""
    cdef int act = act_code("activation_backward", activation)
    cdef int t = float_array("activation_backward", "out", out, 0, MAX_NDIM, cnp.NPY_NOTYPE)
    float_array("activation_backward", "grad_out", grad_out, 0, MAX_NDIM, t)
    same_shape("activation_backward", "grad_out", grad_out, out)
    dx = _empty_like(out)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray> out)
    cdef void* dp = cnp.PyArray_DATA(<cnp.ndarray> dx)
    cdef const void* gp = cnp.PyArray_DATA(<cnp.ndarray> grad_out)
    cdef const void* op = cnp.PyArray_DATA(<cnp.ndarray> out)
    cdef int nt = _threads(n)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _backward(<float> 0, act, <float*> dp, <const float*> gp, <const float*> op, n, nt)
        else:
            _backward(<double> 0, act, <double*> dp, <const double*> gp, <const double*> op, n,
                      nt)
    return dx


def bias_activation(y, bias, activation):
    """y = activation(y + bias[c]) in place over y (N, C) or (N, C, L); bias (C,) or None
    (then y = activation(y)); returns y. Raises TypeError/ValueError."""
    cdef int act = act_code("bias_activation", activation)
    cdef int t = float_array("bias_activation", "input", y, 2, 3, cnp.NPY_NOTYPE)
    cdef cnp.ndarray ya = <cnp.ndarray> y
    if not cnp.PyArray_ISWRITEABLE(ya):
        raise ValueError("bias_activation: input: expected a writeable array (got read-only)")
    cdef Py_ssize_t N = cnp.PyArray_DIM(ya, 0), C = cnp.PyArray_DIM(ya, 1)
    cdef Py_ssize_t L = cnp.PyArray_DIM(ya, 2) if cnp.PyArray_NDIM(ya) == 3 else 1
    cdef void* yp = cnp.PyArray_DATA(ya)
    cdef const void* bp = NULL
    if bias is not None:
        float_array("bias_activation", "bias", bias, 1, 1, t)
        if cnp.PyArray_DIM(<cnp.ndarray> bias, 0) != C:
            raise ValueError(f"bias_activation: bias: expected shape ({C},) (got {bias.shape})")
        bp = cnp.PyArray_DATA(<cnp.ndarray> bias)
    cdef int nt = _threads(N * C * L)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            if bp == NULL:
                _flat(<float> 0, act, <float*> yp, <float*> NULL, N * C * L, MODE_INPLACE, nt)
            else:
                _bias_act(<float> 0, act, <float*> yp, <const float*> bp, N, C, L, nt)
        else:
            if bp == NULL:
                _flat(<double> 0, act, <double*> yp, <double*> NULL, N * C * L, MODE_INPLACE,
                      nt)
            else:
                _bias_act(<double> 0, act, <double*> yp, <const double*> bp, N, C, L, nt)
    return y


def sum_rows(x):
    """out (N,) = the sum over the rows of x (M, N), each column from 0 in row order, in x's
    dtype. Serial: a bias gradient is M * N adds, next to its layer's GEMMs' M * N * K.
    Raises TypeError/ValueError."""
    cdef int t = float_array("sum_rows", "input", x, 2, 2, cnp.NPY_NOTYPE)
    cdef cnp.ndarray xa = <cnp.ndarray> x
    cdef Py_ssize_t M = cnp.PyArray_DIM(xa, 0)
    cdef cnp.npy_intp N = cnp.PyArray_DIM(xa, 1)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &N, t, 0)
    cdef const void* xp = cnp.PyArray_DATA(xa)
    cdef void* op = cnp.PyArray_DATA(out)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _sum_rows(<float> 0, <const float*> xp, <float*> op, M, N)
        else:
            _sum_rows(<double> 0, <const double*> xp, <double*> op, M, N)
    return out
