"""Compiled conv2d (forward, grad-input, grad-weight) and max_pool2d for NCHW arrays.

conv2d is im2col + the GEMM of gemm.pxd, one image at a time. With at least as many
images as threads, threads take images dynamically (each with its own column buffers);
the weight gradient is summed per fixed run of images and the runs are added in order, so
a given thread count always gives the same bits. With fewer images the GEMM itself is
threaded. im2col for stride 1 with "same" width (k3 p1) is one flat shifted copy per
kernel tap. Arguments are validated by tinygrad_bn.kernels (and re-checked cheaply here);
non-contiguous inputs are copied once (np.ascontiguousarray): measured 0.13 ms for a
channels-last (64, 32, 14, 14) float32 input against 6.3 ms for its forward conv.
"""
import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset
from gemm cimport gemm, tgbn_max_threads, PAR_MIN_WORK

cnp.import_array()


cdef inline Py_ssize_t _out_lo(Py_ssize_t pad, Py_ssize_t j, Py_ssize_t s, Py_ssize_t n_out) noexcept nogil:
    """First output index o with o*s - pad + j >= 0 (clamped to n_out)."""
    cdef Py_ssize_t need = pad - j
    if need <= 0:
        return 0
    return min((need + s - 1) // s, n_out)


cdef inline Py_ssize_t _out_hi(Py_ssize_t pad, Py_ssize_t j, Py_ssize_t s, Py_ssize_t size,
                               Py_ssize_t n_out) noexcept nogil:
    """One past the last output index o with o*s - pad + j <= size - 1 (clamped to n_out)."""
    cdef Py_ssize_t room = size - 1 + pad - j
    if room < 0:
        return 0
    return min(room // s + 1, n_out)


# ---------------------------------------------------------------- im2col / col2im

cdef void im2col(const floating* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                 Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t OH, Py_ssize_t OW,
                 floating* cols) noexcept nogil:
    """cols[(c*KH + i)*KW + j, oh*OW + ow] = xpad[c, oh*sh + i, ow*sw + j] for one image."""
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi, lo_r, hi_r, q, shift
    cdef floating* dst
    cdef const floating* src
    if sh == 1 and sw == 1 and OW == W:
        # stride 1, output rows as long as input rows ("same" padding): a row of cols is the
        # input plane shifted by a constant, so one flat copy, then zeros at the padded edges
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    dst = cols + ((c * KH + i) * KW + j) * OH * OW
                    lo_r = min(max(ph - i, 0), OH)           # output rows whose input row exists
                    hi_r = max(min(H + ph - i, OH), lo_r)
                    lo = _out_lo(pw, j, 1, OW)
                    hi = max(_out_hi(pw, j, 1, W, OW), lo)
                    memset(dst, 0, lo_r * OW * sizeof(floating))
                    memset(dst + hi_r * OW, 0, (OH - hi_r) * OW * sizeof(floating))
                    if hi_r > lo_r and hi > lo:
                        src = x + c * H * W
                        shift = (i - ph) * W + (j - pw)
                        for q in range(lo_r * OW + lo, (hi_r - 1) * OW + hi):
                            dst[q] = src[q + shift]
                    for oh in range(lo_r, hi_r):
                        for ow in range(lo):
                            dst[oh * OW + ow] = 0
                        for ow in range(hi, OW):
                            dst[oh * OW + ow] = 0
        return
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                lo = _out_lo(pw, j, sw, OW)
                hi = max(_out_hi(pw, j, sw, W, OW), lo)
                for oh in range(OH):
                    dst = cols + (((c * KH + i) * KW + j) * OH + oh) * OW
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= H:
                        memset(dst, 0, OW * sizeof(floating))
                        continue
                    src = x + (c * H + ih) * W - pw + j
                    for ow in range(lo):
                        dst[ow] = 0
                    if sw == 1:
                        for ow in range(lo, hi):
                            dst[ow] = src[ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow] = src[ow * sw]
                    for ow in range(hi, OW):
                        dst[ow] = 0


cdef void col2im_add(floating* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t OH, Py_ssize_t OW,
                     floating* dx) noexcept nogil:
    """Adjoint of im2col: dx[c, ih, iw] += cols[...] over every window that covers (ih, iw).

    cols is scratch: its entries for padded positions may be zeroed.
    """
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi, lo_r, hi_r, q, shift
    cdef floating* src
    cdef floating* dst
    if sh == 1 and sw == 1 and OW == W:
        # the flat shift of im2col's fast path; padded entries are zeroed first, so the
        # flat add puts an exact 0 on the neighbouring row's element they alias
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    src = cols + ((c * KH + i) * KW + j) * OH * OW
                    lo_r = min(max(ph - i, 0), OH)
                    hi_r = max(min(H + ph - i, OH), lo_r)
                    lo = _out_lo(pw, j, 1, OW)
                    hi = max(_out_hi(pw, j, 1, W, OW), lo)
                    if hi_r <= lo_r or hi <= lo:
                        continue
                    for oh in range(lo_r, hi_r):
                        for ow in range(lo):
                            src[oh * OW + ow] = 0
                        for ow in range(hi, OW):
                            src[oh * OW + ow] = 0
                    dst = dx + c * H * W
                    shift = (i - ph) * W + (j - pw)
                    for q in range(lo_r * OW + lo, (hi_r - 1) * OW + hi):
                        dst[q + shift] += src[q]
        return
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                lo = _out_lo(pw, j, sw, OW)
                hi = max(_out_hi(pw, j, sw, W, OW), lo)
                for oh in range(OH):
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= H:
                        continue
                    src = cols + (((c * KH + i) * KW + j) * OH + oh) * OW
                    dst = dx + (c * H + ih) * W - pw + j
                    if sw == 1:
                        for ow in range(lo, hi):
                            dst[ow] += src[ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * sw] += src[ow]


# ---------------------------------------------------------------- conv2d

cdef int _conv_forward(const floating* x, const floating* w, floating* y,
                       Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                       Py_ssize_t O, Py_ssize_t KH, Py_ssize_t KW,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """y[n] = W (O, C*KH*KW) @ im2col(x[n]); returns -1 when out of memory."""
    cdef Py_ssize_t CKK = C * KH * KW, P = OH * OW, n
    cdef int nt = tgbn_max_threads()
    cdef bint per_image = nt > 1 and N >= nt and N * O * P * CKK >= PAR_MIN_WORK
    cdef int nbuf = nt if per_image else 1
    cdef int failed = 0
    cdef int* fail = &failed
    cdef floating* buf
    cdef floating* cols = <floating*> malloc(nbuf * CKK * P * sizeof(floating))
    if cols == NULL:
        return -1
    if per_image:
        # dynamic: on a busy machine a descheduled thread does not hold up the others
        for n in prange(N, schedule='dynamic'):
            buf = cols + threadid() * CKK * P
            im2col(x + n * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, buf)
            if gemm(O, P, CKK, w, CKK, 1, buf, P, 1, y + n * O * P, P, False, False) < 0:
                fail[0] = 1
    else:
        for n in range(N):
            im2col(x + n * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, cols)
            if gemm(O, P, CKK, w, CKK, 1, cols, P, 1, y + n * O * P, P, False, True) < 0:
                failed = 1
    free(cols)
    return -1 if failed else 0


cdef inline int _dw_add(bint dw_rows, Py_ssize_t O, Py_ssize_t CKK, Py_ssize_t P,
                        const floating* dy, const floating* cols, floating* part,
                        bint threaded) noexcept nogil:
    """part += dy (O, P) @ cols^T as (O, CKK) when dw_rows, else its transpose (CKK, O)."""
    if dw_rows:
        return gemm(O, CKK, P, dy, P, 1, cols, 1, P, part, CKK, True, threaded)
    return gemm(CKK, O, P, cols, P, 1, dy, 1, P, part, O, True, threaded)


cdef int _conv_backward(const floating* x, const floating* w, const floating* dy,
                        floating* dx, floating* dw,
                        Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t O, Py_ssize_t KH, Py_ssize_t KW,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """dW = sum_n dy[n] @ im2col(x[n]).T and dx[n] = col2im(W.T @ dy[n]); dx must be zeroed."""
    cdef Py_ssize_t CKK = C * KH * KW, P = OH * OW, n, r, o
    cdef int nt = tgbn_max_threads()
    cdef bint per_image = nt > 1 and N >= nt and N * O * P * CKK >= PAR_MIN_WORK
    cdef int nbuf = nt if per_image else 1
    # images go in nchunk fixed runs, each with its own dW partial, summed in run order:
    # runs are handed out dynamically, yet the result depends on the thread count only
    cdef Py_ssize_t nchunk = min(N, 4 * nt) if per_image else 1
    cdef Py_ssize_t ch
    # dW needs one (X, P) operand transposed while packing, the slow kind of packing; pick
    # the orientation that transposes the smaller one: dW = dy @ cols^T or dW^T = cols @ dy^T
    cdef bint dw_rows = CKK < O
    cdef int t, failed = 0
    cdef int* fail = &failed
    cdef floating* cbuf
    cdef floating* dbuf
    cdef floating* s
    # per thread: im2col columns and their gradient; per run: a partial dW (O, CKK) or dW^T (CKK, O)
    cdef floating* cols = <floating*> malloc(nbuf * CKK * P * sizeof(floating))
    cdef floating* dcols = <floating*> malloc(nbuf * CKK * P * sizeof(floating))
    cdef floating* dwt = <floating*> calloc(nchunk * CKK * O, sizeof(floating))
    if cols == NULL or dcols == NULL or dwt == NULL:
        free(cols); free(dcols); free(dwt)
        return -1
    if per_image:
        for ch in prange(nchunk, schedule='dynamic'):
            t = threadid()
            cbuf = cols + t * CKK * P
            dbuf = dcols + t * CKK * P
            for n in range(ch * N // nchunk, (ch + 1) * N // nchunk):
                im2col(x + n * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, cbuf)
                if _dw_add(dw_rows, O, CKK, P, dy + n * O * P, cbuf, dwt + ch * CKK * O, False) < 0:
                    fail[0] = 1
                if gemm(CKK, P, O, w, 1, CKK, dy + n * O * P, P, 1, dbuf, P, False, False) < 0:
                    fail[0] = 1
                col2im_add(dbuf, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dx + n * C * H * W)
    else:
        for n in range(N):
            im2col(x + n * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, cols)
            if _dw_add(dw_rows, O, CKK, P, dy + n * O * P, cols, dwt, True) < 0:
                failed = 1
            if gemm(CKK, P, O, w, 1, CKK, dy + n * O * P, P, 1, dcols, P, False, True) < 0:
                failed = 1
            col2im_add(dcols, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dx + n * C * H * W)
    for o in range(O):
        for r in range(CKK):
            s = dwt + (o * CKK + r if dw_rows else r * O + o)
            dw[o * CKK + r] = s[0]
            for ch in range(1, nchunk):
                dw[o * CKK + r] += s[ch * CKK * O]
    free(cols); free(dcols); free(dwt)
    return -1 if failed else 0


def _window(op, h, w, kh, kw, stride, padding):
    """(sh, sw, ph, pw, OH, OW), re-checked here so a direct call cannot index out of bounds."""
    sh, sw = int(stride[0]), int(stride[1])
    ph, pw = int(padding[0]), int(padding[1])
    oh = (h + 2 * ph - kh) // sh + 1 if sh > 0 else 0
    ow = (w + 2 * pw - kw) // sw + 1 if sw > 0 else 0
    if sh < 1 or sw < 1 or ph < 0 or pw < 0 or kh < 1 or kw < 1 or oh < 1 or ow < 1:
        raise ValueError(f"{op}: window {(kh, kw)} with stride {(sh, sw)} and padding {(ph, pw)} "
                         f"does not fit the input of size {(h, w)}")
    return sh, sw, ph, pw, oh, ow


def _float_arrays(op, *arrays):
    """C-contiguous copies (or the arrays themselves) after checking one float dtype for all."""
    dt = arrays[0].dtype
    if dt not in (np.float32, np.float64) or any(a.dtype != dt for a in arrays):
        raise TypeError(f"{op}: expected float32 or float64 arrays of one dtype, got "
                        f"{', '.join(str(a.dtype) for a in arrays)}")
    return [np.ascontiguousarray(a) for a in arrays]


def _conv_dims(op, x, weight, stride, padding):
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: expected input (N, C, H, W) and weight (O, C, KH, KW), "
                         f"got {x.shape} and {weight.shape}")
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    return (n, c, h, w, o, kh, kw) + _window(op, h, w, kh, kw, stride, padding)


def conv2d_forward(x, weight, stride, padding):
    """y[n, o] = sum_{c,i,j} w[o, c, i, j] * xpad[n, c, s*p + i, s*q + j]: (N, C, H, W) -> (N, O, OH, OW)."""
    x, weight = _float_arrays("conv2d", x, weight)
    cdef Py_ssize_t N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW
    N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW = _conv_dims("conv2d", x, weight, stride, padding)
    cdef cnp.ndarray y = np.empty((N, O, OH, OW), dtype=x.dtype)
    cdef void* px = cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef void* pwt = cnp.PyArray_DATA(<cnp.ndarray> weight)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef int rc = 0
    if y.size == 0 or C * KH * KW == 0:
        y.fill(0)  # an empty sum
        return y
    with nogil:
        if cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT:
            rc = _conv_forward(<float*> px, <float*> pwt, <float*> py,
                               N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW)
        else:
            rc = _conv_forward(<double*> px, <double*> pwt, <double*> py,
                               N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW)
    if rc < 0:
        raise MemoryError(f"conv2d: out of memory for the column buffers of input {x.shape}")
    return y


def conv2d_backward(x, weight, grad_out, stride, padding):
    """(dx, dweight) of conv2d_forward given grad_out (N, O, OH, OW)."""
    x, weight, grad_out = _float_arrays("conv2d_backward", x, weight, grad_out)
    cdef Py_ssize_t N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW
    N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW = _conv_dims("conv2d_backward", x, weight,
                                                               stride, padding)
    if grad_out.shape != (N, O, OH, OW):
        raise ValueError(f"conv2d_backward: expected grad_out of shape {(N, O, OH, OW)}, "
                         f"got {grad_out.shape}")
    cdef cnp.ndarray dx = np.zeros(x.shape, dtype=x.dtype)
    cdef cnp.ndarray dw = np.zeros(weight.shape, dtype=x.dtype)
    cdef void* px = cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef void* pwt = cnp.PyArray_DATA(<cnp.ndarray> weight)
    cdef void* pdy = cnp.PyArray_DATA(<cnp.ndarray> grad_out)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    cdef void* pdw = cnp.PyArray_DATA(dw)
    cdef int rc = 0
    if dw.size == 0 or N * OH * OW == 0:
        return dx, dw
    with nogil:
        if cnp.PyArray_TYPE(dx) == cnp.NPY_FLOAT:
            rc = _conv_backward(<float*> px, <float*> pwt, <float*> pdy, <float*> pdx, <float*> pdw,
                                N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW)
        else:
            rc = _conv_backward(<double*> px, <double*> pwt, <double*> pdy, <double*> pdx,
                                <double*> pdw, N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW)
    if rc < 0:
        raise MemoryError(f"conv2d_backward: out of memory for the column buffers of input {x.shape}")
    return dx, dw


# ---------------------------------------------------------------- max_pool2d

cdef void _pool_forward(const floating* x, floating* y, cnp.int64_t* arg,
                        Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """Window maxima and flat argmax per plane; padding is -inf, ties keep the first (row-major)."""
    cdef Py_ssize_t p, oh, ow, ih, iw, h0, w0, best_i
    cdef floating best, v
    cdef const floating* xp
    for p in prange(planes, schedule='static',
                    use_threads_if=planes * OH * OW * KH * KW >= PAR_MIN_WORK):
        xp = x + p * H * W
        for oh in range(OH):
            h0 = oh * sh - ph
            for ow in range(OW):
                w0 = ow * sw - pw
                best = -INFINITY
                best_i = 0
                for ih in range(max(h0, 0), min(h0 + KH, H)):
                    for iw in range(max(w0, 0), min(w0 + KW, W)):
                        v = xp[ih * W + iw]
                        if v > best:
                            best = v
                            best_i = ih * W + iw
                y[(p * OH + oh) * OW + ow] = best
                arg[(p * OH + oh) * OW + ow] = best_i


cdef void _pool_backward(const floating* g, const cnp.int64_t* arg, floating* dx,
                         Py_ssize_t planes, Py_ssize_t HW, Py_ssize_t OHW) noexcept nogil:
    """dx[p, arg[p, o]] += g[p, o]; one thread per plane, so each plane has one writer."""
    cdef Py_ssize_t p, o, k
    for p in prange(planes, schedule='static', use_threads_if=planes * OHW >= PAR_MIN_WORK):
        for o in range(OHW):
            k = arg[p * OHW + o]
            if 0 <= k < HW:  # validated by the dispatcher; kept so a bad index can never write
                dx[p * HW + k] += g[p * OHW + o]


def max_pool2d_forward(x, kernel_size, stride, padding):
    """(y, argmax) over (N, C, H, W); argmax is int64, the flat index h*W + w in the input plane."""
    (x,) = _float_arrays("max_pool2d", x)
    if x.ndim != 4:
        raise ValueError(f"max_pool2d: expected input (N, C, H, W), got {x.shape}")
    n, c, h, w = x.shape
    cdef Py_ssize_t KH = kernel_size[0], KW = kernel_size[1]
    cdef Py_ssize_t H = h, W = w, sh, sw, ph, pw, OH, OW
    sh, sw, ph, pw, OH, OW = _window("max_pool2d", h, w, KH, KW, stride, padding)
    cdef Py_ssize_t planes = n * c
    cdef cnp.ndarray y = np.empty((n, c, OH, OW), dtype=x.dtype)
    cdef cnp.ndarray arg = np.empty((n, c, OH, OW), dtype=np.int64)
    cdef void* px = cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef cnp.int64_t* pa = <cnp.int64_t*> cnp.PyArray_DATA(arg)
    if y.size == 0:
        return y, arg
    with nogil:
        if cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT:
            _pool_forward(<float*> px, <float*> py, pa, planes, H, W, KH, KW, sh, sw, ph, pw, OH, OW)
        else:
            _pool_forward(<double*> px, <double*> py, pa, planes, H, W, KH, KW, sh, sw, ph, pw, OH, OW)
    return y, arg


def max_pool2d_backward(grad_out, argmax, input_shape):
    """dx (input_shape): each output's gradient added at its argmax position."""
    (grad_out,) = _float_arrays("max_pool2d_backward", grad_out)
    argmax = np.ascontiguousarray(argmax, dtype=np.int64)
    n, c, h, w = (int(s) for s in input_shape)
    if grad_out.ndim != 4 or grad_out.shape[:2] != (n, c) or argmax.shape != grad_out.shape:
        raise ValueError(f"max_pool2d_backward: grad_out {grad_out.shape} and argmax "
                         f"{argmax.shape} do not match input shape {tuple(input_shape)}")
    cdef cnp.ndarray dx = np.zeros((n, c, h, w), dtype=grad_out.dtype)
    cdef Py_ssize_t planes = n * c, HW = h * w
    cdef Py_ssize_t OHW = grad_out.shape[2] * grad_out.shape[3]
    cdef void* pg = cnp.PyArray_DATA(<cnp.ndarray> grad_out)
    cdef cnp.int64_t* pa = <cnp.int64_t*> cnp.PyArray_DATA(<cnp.ndarray> argmax)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    if dx.size == 0 or OHW == 0:
        return dx
    with nogil:
        if cnp.PyArray_TYPE(dx) == cnp.NPY_FLOAT:
            _pool_backward(<float*> pg, pa, <float*> pdx, planes, HW, OHW)
        else:
            _pool_backward(<double*> pg, pa, <double*> pdx, planes, HW, OHW)
    return dx
