"""Compiled conv2d (forward, and a backward that computes only the gradients asked for)
for NCHW arrays.

conv2d is im2col + the GEMM of gemm.pxd, one image at a time. With at least as many
images as threads, threads take images dynamically (each with its own column buffers);
the weight gradient is summed per fixed run of images and the runs are added in order, so
a given thread count always gives the same bits. With fewer images the GEMM itself is
threaded. im2col for stride 1 with "same" width (k3 p1) is one flat shifted copy per
kernel tap. tinygrad_bn.kernels validates for the user and passes C-contiguous arrays
(a channels-last (64, 32, 14, 14) float32 copy measured 0.13 ms against 6.3 ms for its
forward conv); the wrappers here check what memory safety needs (_arrays.pxd).
"""
cimport numpy as cnp
import numpy as np
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset

from _arrays cimport float_array, int_tuple, mask_bits
from _openmp cimport tgbn_max_threads
from gemm cimport gemm, PAR_MIN_WORK

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

ctypedef struct Conv:
    const void* x           # (N, C, H, W)
    const void* w           # (O, C, KH, KW)
    const void* dy          # (N, O, OH, OW): grad_out (backward)
    void* y                 # (N, O, OH, OW): the output (forward)
    void* dx                # (N, C, H, W), zeroed; NULL when not asked for
    void* dw                # (O, C, KH, KW); NULL when not asked for
    Py_ssize_t N, C, H, W, O, KH, KW, sh, sw, ph, pw, OH, OW
    int nt                  # threads for this call


cdef int _conv_forward(floating tag, const Conv* a) noexcept nogil:
    """y[n] = W (O, C*KH*KW) @ im2col(x[n]); returns -1 when out of memory."""
    cdef const floating* x = <const floating*> a.x
    cdef const floating* w = <const floating*> a.w
    cdef floating* y = <floating*> a.y
    cdef Py_ssize_t N = a.N, C = a.C, H = a.H, W = a.W, O = a.O, KH = a.KH, KW = a.KW
    cdef Py_ssize_t sh = a.sh, sw = a.sw, ph = a.ph, pw = a.pw, OH = a.OH, OW = a.OW
    cdef Py_ssize_t CKK = C * KH * KW, P = OH * OW, n
    cdef int nt = a.nt
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
        for n in prange(N, schedule='dynamic', num_threads=nt):
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


cdef int _conv_backward(floating tag, const Conv* a) noexcept nogil:
    """dW = sum_n dy[n] @ im2col(x[n]).T and dx[n] = col2im(W.T @ dy[n]), each only when its
    pointer is set (dx zeroed). Returns -1 when out of memory."""
    cdef const floating* x = <const floating*> a.x
    cdef const floating* w = <const floating*> a.w
    cdef const floating* dy = <const floating*> a.dy
    cdef floating* dx = <floating*> a.dx
    cdef floating* dw = <floating*> a.dw
    cdef Py_ssize_t N = a.N, C = a.C, H = a.H, W = a.W, O = a.O, KH = a.KH, KW = a.KW
    cdef Py_ssize_t sh = a.sh, sw = a.sw, ph = a.ph, pw = a.pw, OH = a.OH, OW = a.OW
    cdef Py_ssize_t CKK = C * KH * KW, P = OH * OW, n, r, o
    cdef int nt = a.nt
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
    cdef floating* part
    # per thread: im2col columns (for dW) and their gradient (for dx); per run: a partial dW
    # (O, CKK) or dW^T (CKK, O). Only what the asked-for gradients need is allocated.
    cdef floating* cols = NULL
    cdef floating* dcols = NULL
    cdef floating* dwt = NULL
    if dw != NULL:
        cols = <floating*> malloc(nbuf * CKK * P * sizeof(floating))
        dwt = <floating*> calloc(nchunk * CKK * O, sizeof(floating))
    if dx != NULL:
        dcols = <floating*> malloc(nbuf * CKK * P * sizeof(floating))
    if (dw != NULL and (cols == NULL or dwt == NULL)) or (dx != NULL and dcols == NULL):
        free(cols); free(dcols); free(dwt)
        return -1
    if dw == NULL and dx == NULL:
        return 0
    if per_image:
        for ch in prange(nchunk, schedule='dynamic', num_threads=nt):
            t = threadid()
            for n in range(ch * N // nchunk, (ch + 1) * N // nchunk):
                if dw != NULL:
                    cbuf = cols + t * CKK * P
                    part = dwt + ch * CKK * O
                    im2col(x + n * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, cbuf)
                    if _dw_add(dw_rows, O, CKK, P, dy + n * O * P, cbuf, part, False) < 0:
                        fail[0] = 1
                if dx != NULL:
                    dbuf = dcols + t * CKK * P
                    if gemm(CKK, P, O, w, 1, CKK, dy + n * O * P, P, 1, dbuf, P, False, False) < 0:
                        fail[0] = 1
                    col2im_add(dbuf, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dx + n * C * H * W)
    else:
        for n in range(N):
            if dw != NULL:
                im2col(x + n * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, cols)
                if _dw_add(dw_rows, O, CKK, P, dy + n * O * P, cols, dwt, True) < 0:
                    failed = 1
            if dx != NULL:
                if gemm(CKK, P, O, w, 1, CKK, dy + n * O * P, P, 1, dcols, P, False, True) < 0:
                    failed = 1
                col2im_add(dcols, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dx + n * C * H * W)
    if dw != NULL:
        for o in range(O):
            for r in range(CKK):
                part = dwt + (o * CKK + r if dw_rows else r * O + o)
                dw[o * CKK + r] = part[0]
                for ch in range(1, nchunk):
                    dw[o * CKK + r] += part[ch * CKK * O]
    free(cols); free(dcols); free(dwt)
    return -1 if failed else 0


cdef int _setup(str op, Conv* a, x, weight, stride, padding) except -1:
    """Check the arrays and tuples (memory safety) and fill a's pointers and sizes; returns
    the dtype's type number."""
    cdef int t = float_array(op, "input", x, 4, 4, cnp.NPY_NOTYPE)
    float_array(op, "weight", weight, 4, 4, t)
    a.N, a.C, a.H, a.W = x.shape
    a.O, c, a.KH, a.KW = weight.shape
    a.sh, a.sw = int_tuple(op, "stride", stride, 2)
    a.ph, a.pw = int_tuple(op, "padding", padding, 2)
    if c != a.C or a.sh < 1 or a.sw < 1 or a.ph < 0 or a.pw < 0:
        raise ValueError(f"{op}: expected weight (O, {a.C}, KH, KW), stride >= 1 and padding "
                         f">= 0 (got {weight.shape}, {(a.sh, a.sw)}, {(a.ph, a.pw)})")
    a.OH = (a.H + 2 * a.ph - a.KH) // a.sh + 1
    a.OW = (a.W + 2 * a.pw - a.KW) // a.sw + 1
    if a.OH < 1 or a.OW < 1:
        raise ValueError(f"{op}: expected a window that fits the input {(a.H, a.W)} (got "
                         f"kernel {(a.KH, a.KW)}, stride {(a.sh, a.sw)}, padding {(a.ph, a.pw)})")
    a.x = cnp.PyArray_DATA(<cnp.ndarray> x)
    a.w = cnp.PyArray_DATA(<cnp.ndarray> weight)
    a.dy = a.y = a.dx = a.dw = NULL
    a.nt = tgbn_max_threads()
    return t


def conv2d_forward(x, weight, stride, padding):
    """y[n, o] = sum_{c,i,j} w[o, c, i, j] * xpad[n, c, s*p + i, s*q + j]: (N, C, H, W) and
    (O, C, KH, KW) -> (N, O, OH, OW); stride, padding (h, w) tuples. Raises TypeError/ValueError."""
    cdef Conv a
    cdef int t = _setup("conv2d", &a, x, weight, stride, padding)
    cdef int rc = 0
    y = np.empty((a.N, a.O, a.OH, a.OW), dtype=x.dtype)
    if y.size == 0 or a.C * a.KH * a.KW == 0:
        y.fill(0)  # an empty sum
        return y
    a.y = cnp.PyArray_DATA(<cnp.ndarray> y)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            rc = _conv_forward(<float> 0, &a)
        else:
            rc = _conv_forward(<double> 0, &a)
    if rc < 0:
        raise MemoryError(f"conv2d: out of memory for the column buffers of input {x.shape}")
    return y


def conv2d_backward(x, weight, grad_out, stride, padding, output_mask=(True, True, True)):
    """(dx, dweight, dbias) of conv2d_forward given grad_out (N, O, OH, OW); output_mask
    (3 booleans, as ATen's convolution_backward) says which to compute, the others are None."""
    cdef Conv a
    cdef int t = _setup("conv2d_backward", &a, x, weight, stride, padding)
    cdef int rc = 0
    float_array("conv2d_backward", "grad_out", grad_out, 4, 4, t)
    if grad_out.shape != (a.N, a.O, a.OH, a.OW):
        raise ValueError(f"conv2d_backward: grad_out: expected shape {(a.N, a.O, a.OH, a.OW)} "
                         f"(got {grad_out.shape})")
    cdef int mask = mask_bits("conv2d_backward", output_mask)
    dx = np.zeros(x.shape, dtype=x.dtype) if mask & 1 else None
    dw = np.zeros(weight.shape, dtype=x.dtype) if mask & 2 else None
    db = grad_out.sum(axis=(0, 2, 3)) if mask & 4 else None  # NumPy's pairwise sum vectorizes
    if a.N * a.OH * a.OW == 0 or a.O == 0 or a.C * a.KH * a.KW == 0 or not mask & 3:
        return dx, dw, db
    a.dy = cnp.PyArray_DATA(<cnp.ndarray> grad_out)
    a.dx = NULL if dx is None else cnp.PyArray_DATA(<cnp.ndarray> dx)
    a.dw = NULL if dw is None else cnp.PyArray_DATA(<cnp.ndarray> dw)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            rc = _conv_backward(<float> 0, &a)
        else:
            rc = _conv_backward(<double> 0, &a)
    if rc < 0:
        raise MemoryError(f"conv2d_backward: out of memory for the column buffers of input "
                          f"{x.shape}")
    return dx, dw, db
