"""Compiled max_pool2d (forward with argmax, backward as a scatter-add) for NCHW arrays.

NaN wins, as in PyTorch: a window holding NaN gives NaN, and its argmax is the last NaN in
row-major window order, so the gradient stays inside the window. Padding counts as -inf;
ties keep the first element. Planes (n, c) are independent: threads take planes. The
float32 2x2 stride-2 pool of the conv nets has a vector path (tgbn_pool2_row) with the same
rule; everything else runs the generic loop, written without branches on the data.
"""
cimport numpy as cnp
import numpy as np
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY

from _arrays cimport float_array, int_tuple
from _openmp cimport tgbn_max_threads
from gemm cimport PAR_MIN_WORK  # work below which one thread wins (window reads here)

cnp.import_array()


ctypedef struct Pool:
    const void* x           # (planes, H, W) input / (planes, OH, OW) grad_out
    void* y                 # (planes, OH, OW) output / (planes, H, W) grad_input
    cnp.int64_t* arg        # (planes, OH, OW) flat argmax h*W + w
    Py_ssize_t planes, H, W, KH, KW, sh, sw, ph, pw, OH, OW
    int nt                  # threads for this call


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* The 2x2 stride-2 unpadded float32 pool (the conv nets' pool), one output row at a time
       on GCC/Clang vector types. The scalar loop mispredicted about once per element on
       random data (1.7 ms for (60, 8, 28, 28)); the vectorizer alone left these short rows
       (7 or 14 outputs) to a scalar tail. Chunks of 8 (or 4) outputs cover the row, the
       last one overlapping the one before: it rewrites the same values. The rule is the
       generic loop's, in window order (0,0) (0,1) (1,0) (1,1): a later element wins when
       greater or NaN, so ties keep the first and the last NaN wins. */
    #if defined(__clang__)
    #define TGBN_SHUF(V, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
    #else
    #define TGBN_SHUF(V, a, b, ...) __builtin_shuffle(a, b, (tgbn_i##V){__VA_ARGS__})
    #endif
    #define TGBN_POOL2_TYPES(V) \
        typedef float tgbn_f##V __attribute__((vector_size(4 * V))); \
        typedef int32_t tgbn_i##V __attribute__((vector_size(4 * V))); \
        typedef int64_t tgbn_l##V __attribute__((vector_size(8 * V)));
    TGBN_POOL2_TYPES(8)
    TGBN_POOL2_TYPES(4)
    /* best, bi take v (at window offset k) where v > best or v is NaN, without a branch */
    #define TGBN_POOL2_TAKE(V, v, k) do { \
        tgbn_i##V m = (v > best) | (v != v); \
        best = (tgbn_f##V)(((tgbn_i##V)v & m) | ((tgbn_i##V)best & ~m)); \
        bi = (((tgbn_i##V){0} + (int32_t)(k)) & m) | (bi & ~m); } while (0)
    #define TGBN_POOL2_CHUNK(V, EVEN, ODD, IOTA2) \
    static inline void tgbn_pool2_chunk##V(const float* r0, const float* r1, Py_ssize_t c, \
            int64_t i0, int32_t W, float* y, int64_t* arg) { \
        tgbn_f##V u0, u1, d0, d1, best, v; \
        tgbn_i##V bi = {0}; \
        memcpy(&u0, r0 + 2 * c, sizeof u0); memcpy(&u1, r0 + 2 * c + V, sizeof u1); \
        memcpy(&d0, r1 + 2 * c, sizeof d0); memcpy(&d1, r1 + 2 * c + V, sizeof d1); \
        best = TGBN_SHUF(V, u0, u1, EVEN); \
        v = TGBN_SHUF(V, u0, u1, ODD); TGBN_POOL2_TAKE(V, v, 1); \
        v = TGBN_SHUF(V, d0, d1, EVEN); TGBN_POOL2_TAKE(V, v, W); \
        v = TGBN_SHUF(V, d0, d1, ODD); TGBN_POOL2_TAKE(V, v, W + 1); \
        tgbn_l##V idx = __builtin_convertvector(bi, tgbn_l##V) + (i0 + 2 * c) \
            + (tgbn_l##V){IOTA2}; \
        memcpy(y + c, &best, sizeof best); memcpy(arg + c, &idx, sizeof idx); }
    #define TGBN_E8 0, 2, 4, 6, 8, 10, 12, 14
    #define TGBN_O8 1, 3, 5, 7, 9, 11, 13, 15
    #define TGBN_E4 0, 2, 4, 6
    #define TGBN_O4 1, 3, 5, 7
    TGBN_POOL2_CHUNK(8, TGBN_E8, TGBN_O8, TGBN_E8)
    TGBN_POOL2_CHUNK(4, TGBN_E4, TGBN_O4, TGBN_E4)

    /* 1 when the row was done here (OW >= 4); 0 leaves it to the caller's scalar loop */
    static inline int tgbn_pool2_row(const float* r0, const float* r1, Py_ssize_t OW,
            int64_t i0, Py_ssize_t W, float* y, int64_t* arg) {
        Py_ssize_t c;
        if (OW >= 8) {
            for (c = 0; c + 8 <= OW; c += 8)
                tgbn_pool2_chunk8(r0, r1, c, i0, (int32_t)W, y, arg);
            if (OW % 8)
                tgbn_pool2_chunk8(r0, r1, OW - 8, i0, (int32_t)W, y, arg);
            return 1;
        }
        if (OW >= 4) {
            tgbn_pool2_chunk4(r0, r1, 0, i0, (int32_t)W, y, arg);
            if (OW > 4)
                tgbn_pool2_chunk4(r0, r1, OW - 4, i0, (int32_t)W, y, arg);
            return 1;
        }
        return 0;
    }
    """
    int tgbn_pool2_row(const float* r0, const float* r1, Py_ssize_t OW, cnp.int64_t i0,
                       Py_ssize_t W, float* y, cnp.int64_t* arg) noexcept nogil


cdef void _pool_forward(floating tag, const Pool* a) noexcept nogil:
    """y[p, oh, ow] = max of the window, arg[p, oh, ow] = its flat index in the plane."""
    cdef const floating* x = <const floating*> a.x
    cdef floating* y = <floating*> a.y
    cdef Py_ssize_t H = a.H, W = a.W, OH = a.OH, OW = a.OW
    cdef Py_ssize_t p, oh, ow, ih, iw, h0, w0, best_i
    cdef floating best, v
    cdef const floating* xp
    cdef bint take
    cdef bint k2s2 = a.KH == 2 and a.KW == 2 and a.sh == 2 and a.sw == 2 and a.ph == 0 \
        and a.pw == 0
    for p in prange(a.planes, schedule='static', num_threads=a.nt,
                    use_threads_if=a.nt > 1 and a.planes * OH * OW * a.KH * a.KW >= PAR_MIN_WORK):
        xp = x + p * H * W
        if floating is float and k2s2 and OW >= 4:
            for oh in range(OH):
                tgbn_pool2_row(xp + 2 * oh * W, xp + (2 * oh + 1) * W, OW, 2 * oh * W, W,
                               y + (p * OH + oh) * OW, a.arg + (p * OH + oh) * OW)
            continue
        for oh in range(OH):
            h0 = oh * a.sh - a.ph
            for ow in range(OW):
                w0 = ow * a.sw - a.pw
                best = -INFINITY
                best_i = max(h0, 0) * W + max(w0, 0)  # in the window even when all is -inf
                for ih in range(max(h0, 0), min(h0 + a.KH, H)):
                    for iw in range(max(w0, 0), min(w0 + a.KW, W)):
                        v = xp[ih * W + iw]
                        take = (v > best) | (v != v)  # NaN wins; no branch to mispredict
                        best = v if take else best
                        best_i = ih * W + iw if take else best_i
                y[(p * OH + oh) * OW + ow] = best
                a.arg[(p * OH + oh) * OW + ow] = best_i


cdef Py_ssize_t _pool_backward(floating tag, const Pool* a) noexcept nogil:
    """dx[p, arg[p, o]] += g[p, o]; one thread per plane, so each plane has one writer.
    Returns how many indices were outside the plane (skipped: a bad index never writes)."""
    cdef const floating* g = <const floating*> a.x
    cdef floating* dx = <floating*> a.y
    cdef Py_ssize_t HW = a.H * a.W, OHW = a.OH * a.OW
    cdef Py_ssize_t p, o, k, bad = 0
    for p in prange(a.planes, schedule='static', num_threads=a.nt,
                    use_threads_if=a.nt > 1 and a.planes * OHW >= PAR_MIN_WORK):
        for o in range(OHW):
            k = a.arg[p * OHW + o]
            if 0 <= k < HW:
                dx[p * HW + k] += g[p * OHW + o]
            else:
                bad += 1
    return bad


def max_pool2d_forward(x, kernel_size, stride, padding):
    """(y, argmax) over x (N, C, H, W) for (kh, kw), (sh, sw), (ph, pw) tuples; argmax is
    int64, the flat index h*W + w in the input plane. Raises TypeError/ValueError."""
    cdef int t = float_array("max_pool2d", "input", x, 4, 4, cnp.NPY_NOTYPE)
    cdef Pool a
    n, c, a.H, a.W = x.shape
    a.KH, a.KW = int_tuple("max_pool2d", "kernel_size", kernel_size, 2)
    a.sh, a.sw = int_tuple("max_pool2d", "stride", stride, 2)
    a.ph, a.pw = int_tuple("max_pool2d", "padding", padding, 2)
    if a.KH < 1 or a.KW < 1 or a.sh < 1 or a.sw < 1 or not (0 <= 2 * a.ph <= a.KH) \
            or not (0 <= 2 * a.pw <= a.KW):
        raise ValueError(f"max_pool2d: expected kernel_size >= 1, stride >= 1 and 0 <= padding "
                         f"<= kernel_size / 2 (got {(a.KH, a.KW)}, {(a.sh, a.sw)}, "
                         f"{(a.ph, a.pw)})")
    a.OH = (a.H + 2 * a.ph - a.KH) // a.sh + 1
    a.OW = (a.W + 2 * a.pw - a.KW) // a.sw + 1
    if a.OH < 1 or a.OW < 1:
        raise ValueError(f"max_pool2d: expected a window that fits the input {(a.H, a.W)} "
                         f"(got kernel_size {(a.KH, a.KW)}, padding {(a.ph, a.pw)})")
    a.planes = n * c
    y = np.empty((n, c, a.OH, a.OW), dtype=x.dtype)
    arg = np.empty((n, c, a.OH, a.OW), dtype=np.int64)
    a.x = cnp.PyArray_DATA(<cnp.ndarray> x)
    a.y = cnp.PyArray_DATA(<cnp.ndarray> y)
    a.arg = <cnp.int64_t*> cnp.PyArray_DATA(<cnp.ndarray> arg)
    a.nt = tgbn_max_threads()
    if a.planes:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                _pool_forward(<float> 0, &a)
            else:
                _pool_forward(<double> 0, &a)
    return y, arg


def max_pool2d_backward(grad_out, argmax, input_shape):
    """dx (input_shape): each output's gradient added at its argmax position; grad_out and
    argmax (N, C, OH, OW), argmax int64. Raises TypeError/ValueError."""
    cdef int t = float_array("max_pool2d_backward", "grad_out", grad_out, 4, 4, cnp.NPY_NOTYPE)
    cdef Pool a
    shape = int_tuple("max_pool2d_backward", "input_shape", input_shape, 4)
    if not isinstance(argmax, np.ndarray) or argmax.dtype != np.dtype(np.int64):
        raise TypeError(f"max_pool2d_backward: argmax: expected native int64 (got "
                        f"{getattr(argmax, 'dtype', type(argmax).__name__)})")
    if not (argmax.flags.c_contiguous and argmax.flags.aligned) \
            or argmax.shape != grad_out.shape:
        raise ValueError(f"max_pool2d_backward: argmax: expected a C-contiguous, aligned array "
                         f"of shape {grad_out.shape} (got {argmax.shape}, strides "
                         f"{argmax.strides})")
    if min(shape) < 0 or shape[:2] != grad_out.shape[:2]:
        raise ValueError(f"max_pool2d_backward: input_shape: expected (N, C, H, W) with N, C of "
                         f"grad_out {grad_out.shape} (got {shape})")
    n, c, a.H, a.W = shape
    a.planes = n * c
    a.OH, a.OW = grad_out.shape[2], grad_out.shape[3]
    dx = np.zeros(shape, dtype=grad_out.dtype)
    a.x = cnp.PyArray_DATA(<cnp.ndarray> grad_out)
    a.y = cnp.PyArray_DATA(<cnp.ndarray> dx)
    a.arg = <cnp.int64_t*> cnp.PyArray_DATA(<cnp.ndarray> argmax)
    a.nt = tgbn_max_threads()
    cdef Py_ssize_t bad = 0
    if a.planes:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                bad = _pool_backward(<float> 0, &a)
            else:
                bad = _pool_backward(<double> 0, &a)
    if bad:  # the range check in the same pass: the door's min() and max() cost 11 us
        raise ValueError(f"max_pool2d_backward: argmax: expected values in [0, {a.H * a.W})")
    return dx
