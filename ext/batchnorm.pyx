"""Batch-norm kernels (Ioffe & Szegedy 2015, Algorithm 1 and its backward), float32/float64.

x is (N, C) or (N, C, L); every channel reduces over N (and L). Both layouts are walked
the same way: as a matrix whose rows are strided and whose columns are contiguous, with
per-column accumulators. The inner loop is then element-wise over contiguous memory, so
it vectorizes without the reassociation a scalar reduction would need (-ffast-math).
  (N, C)    one matrix (N rows, C columns); threads take blocks of columns (channels),
            a block narrow enough to stay in L2 between its two passes.
  (N, C, L) channel c is the (N rows, L columns) matrix x[:, c, :]; threads take channels,
            strips of TILE columns keep the accumulators in L1.
Passes: forward = statistics + normalize; backward = two sums + dx; eval = one affine pass.
running_average updates a running estimate in place (Algorithm 2's moving average).
Statistics are one pass of sums shifted by the channel's first value, accumulated in
double; when that shift lies far from the mean (where shifted sums lose digits) a second
pass redoes them around the mean. float32 does its element arithmetic in float (twice the
SIMD lanes) and only the accumulation in double; see _col_moments and _col_affine.
Every channel is summed in the same order whatever the thread count: results are
bit-identical across runs and thread counts.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cimport numpy as cnp
import numpy as np

from _activations cimport ACT_NONE, MODE_INPLACE, act_code, act_run
from _arrays cimport float_array, mask_bits, same_shape
from _openmp cimport tgbn_max_threads

cnp.import_array()

cdef enum:
    TILE = 512             # columns per strip / block: per-column arrays of 2-4 KiB stay in L1
    MIN_PARALLEL = 32768   # elements; below this waking a second thread costs more than it saves
    L2_BUDGET = 131072     # bytes of input per block, cached between its passes (measured:
                           # 128 KiB beat 64, 256 and 512 KiB on (256, 1024), 1 and 2 threads)


# ---------------------------------------------------------------- column helpers
# A strided matrix: element (r, j) at p[r * stride + j]; j < w is contiguous.

cdef inline void _zero(double* a, Py_ssize_t w) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(w):
        a[j] = 0.0


cdef inline void _fill(double* a, Py_ssize_t w, double v) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(w):
        a[j] = v


cdef inline double _total(const double* a, Py_ssize_t w) noexcept nogil:
    cdef Py_ssize_t j
    cdef double s = 0.0
    for j in range(w):
        s = s + a[j]
    return s


cdef inline void _col_moments(const floating* x, Py_ssize_t rows, Py_ssize_t stride,
                              Py_ssize_t w, double* k, double* s1, double* s2) noexcept nogil:
    """s1[j] += sum_r d, s2[j] += sum_r d^2 with d = x[r, j] - k[j] (k: a shift near the
    mean). Four rows per sweep: the double accumulators are touched once per four rows.

    float32: k is first rounded to float (and written back, so the caller's mean k + s1/m
    uses the shift really applied); d and the four-row partial sums are float, then added
    to the double accumulators. With a shift near the mean each d is exact or one rounding
    off, so this costs about one float ulp of var, and runs twice the lanes of double."""
    cdef Py_ssize_t r = 0, j
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef floating d0, d1, d2, d3
    cdef floating kf[TILE]
    for j in range(w):
        kf[j] = <floating>k[j]
        k[j] = kf[j]
    while r + 4 <= rows:
        x0 = x + r * stride
        x1 = x0 + stride
        x2 = x1 + stride
        x3 = x2 + stride
        for j in range(w):
            d0 = x0[j] - kf[j]
            d1 = x1[j] - kf[j]
            d2 = x2[j] - kf[j]
            d3 = x3[j] - kf[j]
            s1[j] += (d0 + d1) + (d2 + d3)
            s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        r += 4
    while r < rows:
        x0 = x + r * stride
        for j in range(w):
            d0 = x0[j] - kf[j]
            s1[j] += d0
            s2[j] += <double>d0 * d0
        r += 1


cdef inline void _col_affine(const floating* x, floating* y, Py_ssize_t rows, Py_ssize_t stride,
                             Py_ssize_t w, const double* mu, const double* scale,
                             const double* shift) noexcept nogil:
    """y[r, j] = (x[r, j] - mu[j]) * scale[j] + shift[j], w <= TILE.

    float32 runs in float (twice the lanes of double; this pass is compute-bound) with
    mu split into hi + lo floats: x - hi is exact for x near the mean, so a mean far from
    zero costs no accuracy; the result is within a few float ulp of the double formula."""
    cdef Py_ssize_t r, j
    cdef float hi[TILE]
    cdef float lo[TILE]
    cdef float sc[TILE]
    cdef float sh[TILE]
    if floating is float:
        for j in range(w):
            hi[j] = <float>mu[j]
            lo[j] = <float>(mu[j] - hi[j])
            sc[j] = <float>scale[j]
            sh[j] = <float>shift[j]
        for r in range(rows):
            for j in range(w):
                y[r * stride + j] = ((x[r * stride + j] - hi[j]) - lo[j]) * sc[j] + sh[j]
    else:
        for r in range(rows):
            for j in range(w):
                y[r * stride + j] = (x[r * stride + j] - mu[j]) * scale[j] + shift[j]


cdef inline void _col_dot(const floating* dy, const floating* x, Py_ssize_t rows,
                          Py_ssize_t stride, Py_ssize_t w, const floating* mu, double* sdy,
                          double* sdyx) noexcept nogil:
    """sdy[j] += sum_r dy[r, j], sdyx[j] += sum_r dy[r, j] * (x[r, j] - mu[j]); four rows
    per sweep in the input's precision, accumulated in double (as in _col_moments)."""
    cdef Py_ssize_t r = 0, j
    cdef const floating* g0
    cdef const floating* g1
    cdef const floating* g2
    cdef const floating* g3
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    while r + 4 <= rows:
        g0 = dy + r * stride
        g1 = g0 + stride
        g2 = g1 + stride
        g3 = g2 + stride
        x0 = x + r * stride
        x1 = x0 + stride
        x2 = x1 + stride
        x3 = x2 + stride
        for j in range(w):
            sdy[j] += (g0[j] + g1[j]) + (g2[j] + g3[j])
            sdyx[j] += ((g0[j] * (x0[j] - mu[j]) + g1[j] * (x1[j] - mu[j]))
                        + (g2[j] * (x2[j] - mu[j]) + g3[j] * (x3[j] - mu[j])))
        r += 4
    while r < rows:
        g0 = dy + r * stride
        x0 = x + r * stride
        for j in range(w):
            sdy[j] += g0[j]
            sdyx[j] += <double>g0[j] * (x0[j] - mu[j])
        r += 1


cdef inline void _col_dx(const floating* dy, const floating* x, floating* dx, Py_ssize_t rows,
                         Py_ssize_t stride, Py_ssize_t w, const double* mu, const double* a,
                         const double* b, const double* c) noexcept nogil:
    """dx[r, j] = a[j] * dy[r, j] + b[j] * (x[r, j] - mu[j]) + c[j], w <= TILE; float32 in
    float arithmetic (mu is the float32 mean the forward returned, so x - mu is exact-ish)."""
    cdef Py_ssize_t r, j, k
    cdef float fm[TILE]
    cdef float fa[TILE]
    cdef float fb[TILE]
    cdef float fc[TILE]
    if floating is float:
        for j in range(w):
            fm[j] = <float>mu[j]
            fa[j] = <float>a[j]
            fb[j] = <float>b[j]
            fc[j] = <float>c[j]
        for r in range(rows):
            for j in range(w):
                k = r * stride + j
                dx[k] = fa[j] * dy[k] + fb[j] * (x[k] - fm[j]) + fc[j]
    else:
        for r in range(rows):
            for j in range(w):
                k = r * stride + j
                dx[k] = a[j] * dy[k] + b[j] * (x[k] - mu[j]) + c[j]


# ---------------------------------------------------------------- per-channel math

cdef inline double _variance(double s1, double s2, double m) noexcept nogil:
    """Biased variance from the sums of d = x - k for a shift k: (s2 - s1^2/m) / m."""
    cdef double v = (s2 - s1 * s1 / m) / m
    return 0.0 if v < 0.0 else v   # rounding can dip below 0; a NaN stays NaN


cdef inline bint _shift_too_far(double s1, double s2, double m) noexcept nogil:
    """True when the shift k is more than 4 standard deviations from the mean: the
    relative error of (s2 - s1^2/m) grows like (mean - k)^2 / var, so redo the sums with
    k = mean. Rare for k = a sample (a 4-sigma draw); a second pass uses k = mean."""
    cdef double d = s1 / m
    return d * d > 16.0 * _variance(s1, s2, m)


cdef inline void _dx_coefs(double w, double inv, double sdy, double sdyx, double m,
                           double* a, double* b, double* c, floating* dweight,
                           floating* dbias) noexcept nogil:
    """dx = w*inv/m * (m*dy - dbias - xhat*dweight) written as a*dy + b*(x - mean) + c."""
    cdef double dw = sdyx * inv
    dweight[0] = <floating>dw
    dbias[0] = <floating>sdy
    a[0] = w * inv
    b[0] = -w * inv * inv * dw / m
    c[0] = -w * inv * sdy / m


# ---------------------------------------------------------------- (N, C): blocks of columns

cdef Py_ssize_t _block_width(Py_ssize_t n, Py_ssize_t C, Py_ssize_t row_bytes,
                             int nth) noexcept nogil:
    """Channels per block: at most TILE, about C / threads, and few enough that a block's
    rows stay in L2 between passes. Multiples of 16 keep the vector loops whole."""
    cdef Py_ssize_t w = (C + nth - 1) // nth
    cdef Py_ssize_t cap = L2_BUDGET // (n * row_bytes if n * row_bytes > 0 else 1)
    w = (w + 15) // 16 * 16
    cap = cap // 16 * 16
    if cap < 16:
        cap = 16
    if cap > TILE:
        cap = TILE
    return w if w < cap else cap


cdef inline bint _split_columns_pays(Py_ssize_t C, Py_ssize_t item) noexcept nogil:
    """Whether threads may split an (N, C) input into column blocks. Where a row's block
    boundary falls inside a cache line, the two threads write that line in every row
    (false sharing, ~100 ns a row here); that only pays for itself with wide blocks.
    Block widths are multiples of 16 elements, so rows of a whole number of cache lines
    give line-aligned boundaries. (Measured: (100, 330) float32 took 1.6x longer on two
    threads than on one before this rule; (60, 1000) is 1.5x faster on two.)"""
    return (C * item) % 64 == 0 or C >= 512


cdef void _train_cols(const floating* x, floating* y, Py_ssize_t n, Py_ssize_t C, Py_ssize_t w,
                      const floating* weight, const floating* bias, double eps,
                      floating* stats) noexcept nogil:
    """Forward of w <= TILE adjacent channels of an (N, C) input; every pointer is at the
    block's first channel; stats[j], stats[C + j], stats[2C + j] <- mean, var, invstd.
    The accumulators live on this thread's stack: shared ones would false-share."""
    cdef double k[TILE]
    cdef double s1[TILE]
    cdef double s2[TILE]
    cdef double m = <double>n
    cdef Py_ssize_t j
    cdef int far
    # one pass of sums shifted by the first row, a second only if a shift was far off
    for j in range(w):
        k[j] = x[j]
    _zero(s1, w)
    _zero(s2, w)
    _col_moments(x, n, C, w, k, s1, s2)
    far = 0
    for j in range(w):
        far = far + _shift_too_far(s1[j], s2[j], m)
    if far:
        for j in range(w):
            k[j] = k[j] + s1[j] / m
        _zero(s1, w)
        _zero(s2, w)
        _col_moments(x, n, C, w, k, s1, s2)
    for j in range(w):   # stack arrays only, so no aliasing (sqrt stays scalar: errno)
        k[j] = k[j] + s1[j] / m
        s2[j] = _variance(s1[j], s2[j], m)
        s1[j] = 1.0 / sqrt(s2[j] + eps)
    for j in range(w):
        stats[j] = <floating>k[j]
        stats[C + j] = <floating>s2[j]
        stats[2 * C + j] = <floating>s1[j]
        s1[j] = weight[j] * s1[j]
        s2[j] = bias[j]
    _col_affine(x, y, n, C, w, k, s1, s2)


cdef void _backward_cols(const floating* dy, const floating* x, floating* dx, Py_ssize_t n,
                         Py_ssize_t C, Py_ssize_t w, const floating* mean,
                         const floating* invstd, const floating* weight,
                         floating* grads) noexcept nogil:
    """Backward of w <= TILE adjacent channels of an (N, C) input; grads[j], grads[C + j]
    <- dweight, dbias; dx only when it is not NULL."""
    cdef double mu[TILE]
    cdef double a[TILE]
    cdef double b[TILE]
    cdef double c[TILE]
    cdef double m = <double>(n if n > 0 else 1)
    cdef Py_ssize_t j
    for j in range(w):
        mu[j] = mean[j]
    _zero(a, w)
    _zero(b, w)
    _col_dot(dy, x, n, C, w, mean, a, b)
    for j in range(w):
        _dx_coefs(weight[j], invstd[j], a[j], b[j], m, &a[j], &b[j], &c[j],
                  &grads[j], &grads[C + j])
    if dx != NULL:
        _col_dx(dy, x, dx, n, C, w, mu, a, b, c)


# ---------------------------------------------------------------- (N, C, L): one channel

cdef void _channel_sums(const floating* x, Py_ssize_t n, Py_ssize_t L, Py_ssize_t stride,
                        double shift, double* k, double* s1, double* s2,
                        double* t) noexcept nogil:
    """t[0], t[1] <- sums of d and d^2, d = x - shift, over one channel's (n, L) matrix."""
    cdef Py_ssize_t i, l0, w, nstrips = (L + TILE - 1) // TILE
    t[0] = 0.0
    t[1] = 0.0
    _fill(k, TILE, shift)
    for i in range(nstrips):
        l0 = i * TILE
        w = min(<Py_ssize_t>TILE, L - l0)
        _zero(s1, w)
        _zero(s2, w)
        _col_moments(x + l0, n, stride, w, k, s1, s2)
        t[0] += _total(s1, w)
        t[1] += _total(s2, w)


cdef void _train_channel(const floating* x, floating* y, Py_ssize_t n, Py_ssize_t L,
                         Py_ssize_t stride, double weight, double bias, double eps,
                         floating* stats, Py_ssize_t C) noexcept nogil:
    """Forward of the channel whose (n, L) matrix starts at x (rows `stride` apart);
    stats[0], stats[C], stats[2C] <- mean, var, invstd."""
    cdef double k[TILE]
    cdef double s1[TILE]
    cdef double s2[TILE]
    cdef double t[2]
    cdef double m = <double>n * L
    cdef double mean, var, inv
    cdef Py_ssize_t i, l0, w, nstrips = (L + TILE - 1) // TILE
    # sums shifted by the first element; again around the mean if that was far off
    # (k[0] is the shift really applied: _col_moments rounds it for float32)
    _channel_sums(x, n, L, stride, x[0], k, s1, s2, t)
    mean = k[0] + t[0] / m
    if _shift_too_far(t[0], t[1], m):
        _channel_sums(x, n, L, stride, mean, k, s1, s2, t)
        mean = k[0] + t[0] / m
    var = _variance(t[0], t[1], m)
    inv = 1.0 / sqrt(var + eps)
    _fill(k, TILE, mean)
    _fill(s1, TILE, weight * inv)
    _fill(s2, TILE, bias)
    for i in range(nstrips):
        l0 = i * TILE
        w = min(<Py_ssize_t>TILE, L - l0)
        _col_affine(x + l0, y + l0, n, stride, w, k, s1, s2)
    stats[0] = <floating>mean
    stats[C] = <floating>var
    stats[2 * C] = <floating>inv


cdef void _backward_channel(const floating* dy, const floating* x, floating* dx, Py_ssize_t n,
                            Py_ssize_t L, Py_ssize_t stride, double mean, double inv,
                            double weight, floating* grads, Py_ssize_t C) noexcept nogil:
    """Backward of one channel; grads[0], grads[C] <- dweight, dbias; dx unless NULL."""
    cdef double mu[TILE]
    cdef double a[TILE]
    cdef double b[TILE]
    cdef double c[TILE]
    cdef double m = <double>n * L
    cdef floating fmu[TILE]
    cdef double sdy = 0.0, sdyx = 0.0, ca, cb, cc
    cdef Py_ssize_t i, l0, w, nstrips = (L + TILE - 1) // TILE
    if m < 1.0:
        m = 1.0
    _fill(mu, TILE, mean)
    for i in range(TILE):
        fmu[i] = <floating>mean   # exact: mean came from a floating array
    for i in range(nstrips):
        l0 = i * TILE
        w = min(<Py_ssize_t>TILE, L - l0)
        _zero(a, w)
        _zero(b, w)
        _col_dot(dy + l0, x + l0, n, stride, w, fmu, a, b)
        sdy += _total(a, w)
        sdyx += _total(b, w)
    _dx_coefs(weight, inv, sdy, sdyx, m, &ca, &cb, &cc, &grads[0], &grads[C])
    if dx == NULL:
        return
    _fill(a, TILE, ca)
    _fill(b, TILE, cb)
    _fill(c, TILE, cc)
    for i in range(nstrips):
        l0 = i * TILE
        w = min(<Py_ssize_t>TILE, L - l0)
        _col_dx(dy + l0, x + l0, dx + l0, n, stride, w, mu, a, b, c)


cdef inline void _seg_affine(const floating* x, floating* y, Py_ssize_t L, double mu,
                             double scale, double shift) noexcept nogil:
    """y[l] = (x[l] - mu) * scale + shift; float32 in float with mu = hi + lo (see _col_affine)."""
    cdef Py_ssize_t l
    cdef float hi = <float>mu
    cdef float lo = <float>(mu - hi)
    cdef float sc = <float>scale
    cdef float sh = <float>shift
    if floating is float:
        for l in range(L):
            y[l] = ((x[l] - hi) - lo) * sc + sh
    else:
        for l in range(L):
            y[l] = (x[l] - mu) * scale + shift


cdef void _rows_affine(const floating* x, floating* y, Py_ssize_t rows, Py_ssize_t C,
                       const double* mu, const double* scale, const double* shift) noexcept nogil:
    """_col_affine over whole rows of an (N, C) array, TILE columns at a time."""
    cdef Py_ssize_t i, j0
    for i in range((C + TILE - 1) // TILE):
        j0 = i * TILE
        _col_affine(x + j0, y + j0, rows, C, min(<Py_ssize_t>TILE, C - j0), mu + j0, scale + j0,
                    shift + j0)


# ---------------------------------------------------------------- drivers (x viewed as (N, C, L))
# One struct carries a call's pointers (C-contiguous data checked by the def wrappers below;
# per-channel arrays have C elements) and sizes; the float tag picks the specialization.

ctypedef struct BN:
    const void* x           # (n, C, L) input
    const void* dy          # grad_out, same shape (backward)
    const void* weight      # (C,) each, like the three below
    const void* bias
    const void* mean        # batch mean (backward) or running_mean (eval)
    const void* spread      # invstd (backward) or running_var (eval)
    void* y                 # output (forward) or dx (backward; NULL when not asked for)
    void* stats             # forward: mean, var, invstd (3C); backward: dweight, dbias (2C)
    double* params          # eval: 3C doubles of scratch for the per-channel affine map
    double eps
    Py_ssize_t n, C, L
    int nt                  # threads for this call
    int act                 # forward: an activation applied to y (_activations.pxd ACT_*)


cdef void _act_cols(floating* y, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t w,
                   int act) noexcept nogil:
    """y[r, j] = act(y[r, j]) over a strided matrix: the fused activation, run on a block or
    channel the forward has just written (still in cache), with elementwise's own loops."""
    act_run(act, y, <floating*> NULL, <floating*> NULL, 0, rows, w, stride, MODE_INPLACE)


cdef void _forward_train(floating tag, const BN* a) noexcept nogil:
    cdef const floating* xp = <const floating*> a.x
    cdef const floating* weight = <const floating*> a.weight
    cdef const floating* bias = <const floating*> a.bias
    cdef floating* yp = <floating*> a.y
    cdef floating* stats = <floating*> a.stats
    cdef Py_ssize_t n = a.n, C = a.C, L = a.L, c, blk, nblk, width
    cdef int nt = a.nt if n * C * L >= MIN_PARALLEL else 1
    if L == 1:
        if not _split_columns_pays(C, sizeof(floating)):
            nt = 1
        width = _block_width(n, C, sizeof(floating), nt)
        nblk = (C + width - 1) // width
        if nt == 1:  # no OpenMP region: entering one with use_threads_if=False cost ~0.8 us
            for blk in range(nblk):
                _train_cols(xp + blk * width, yp + blk * width, n, C,
                            min(width, C - blk * width), weight + blk * width,
                            bias + blk * width, a.eps, stats + blk * width)
                if a.act != ACT_NONE:
                    _act_cols(yp + blk * width, n, C, min(width, C - blk * width), a.act)
            return
        for blk in prange(nblk, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            _train_cols(xp + blk * width, yp + blk * width, n, C, min(width, C - blk * width),
                        weight + blk * width, bias + blk * width, a.eps, stats + blk * width)
            if a.act != ACT_NONE:
                _act_cols(yp + blk * width, n, C, min(width, C - blk * width), a.act)
    else:
        for c in prange(C, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            _train_channel(xp + c * L, yp + c * L, n, L, C * L, weight[c], bias[c], a.eps,
                           stats + c, C)
            if a.act != ACT_NONE:
                _act_cols(yp + c * L, n, C * L, L, a.act)


cdef void _backward(floating tag, const BN* a) noexcept nogil:
    cdef const floating* dyp = <const floating*> a.dy
    cdef const floating* xp = <const floating*> a.x
    cdef const floating* mean = <const floating*> a.mean
    cdef const floating* invstd = <const floating*> a.spread
    cdef const floating* weight = <const floating*> a.weight
    cdef floating* dxp = <floating*> a.y
    cdef floating* grads = <floating*> a.stats
    cdef Py_ssize_t n = a.n, C = a.C, L = a.L, c, blk, nblk, width, c0
    cdef int nt = a.nt if n * C * L >= MIN_PARALLEL else 1
    if L == 1:
        if not _split_columns_pays(C, sizeof(floating)):
            nt = 1
        width = _block_width(n, C, 2 * sizeof(floating), nt)
        nblk = (C + width - 1) // width
        if nt == 1:  # no OpenMP region (as _forward_train)
            for blk in range(nblk):
                c0 = blk * width
                _backward_cols(dyp + c0, xp + c0, dxp + c0 if dxp != NULL else NULL, n, C,
                               min(width, C - c0), mean + c0, invstd + c0, weight + c0,
                               grads + c0)
            return
        for blk in prange(nblk, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            c0 = blk * width
            _backward_cols(dyp + c0, xp + c0, dxp + c0 if dxp != NULL else NULL, n, C,
                           min(width, C - c0), mean + c0, invstd + c0, weight + c0, grads + c0)
    else:
        for c in prange(C, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            _backward_channel(dyp + c * L, xp + c * L, dxp + c * L if dxp != NULL else NULL,
                              n, L, C * L, mean[c], invstd[c], weight[c], grads + c, C)


cdef void _forward_eval(floating tag, const BN* a) noexcept nogil:
    cdef const floating* xp = <const floating*> a.x
    cdef const floating* running_mean = <const floating*> a.mean
    cdef const floating* running_var = <const floating*> a.spread
    cdef const floating* weight = <const floating*> a.weight
    cdef const floating* bias = <const floating*> a.bias
    cdef floating* yp = <floating*> a.y
    cdef double* mu = a.params
    cdef double* scale = a.params + a.C
    cdef double* shift = a.params + 2 * a.C
    cdef Py_ssize_t n = a.n, C = a.C, L = a.L, c, i, r0, chunk
    cdef int nt = a.nt if n * C * L >= MIN_PARALLEL else 1
    for c in range(C):
        mu[c] = running_mean[c]
        scale[c] = weight[c] / sqrt(<double>running_var[c] + a.eps)
        shift[c] = bias[c]
    if L == 1:
        # no reduction: split rows, each row is one contiguous run over all channels
        chunk = max(1, MIN_PARALLEL // (2 * C))
        for r0 in prange(0, n, chunk, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            _rows_affine(xp + r0 * C, yp + r0 * C, min(chunk, n - r0), C, mu, scale, shift)
    else:
        for i in prange(n * C, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            c = i % C
            _seg_affine(xp + i * L, yp + i * L, L, mu[c], scale[c], shift[c])


# ---------------------------------------------------------------- public kernels
# tinygrad_bn.kernels validates for the user and passes C-contiguous arrays; these wrappers
# check what memory safety depends on (_arrays.pxd: dtype, byte order, ndim, contiguity; plus
# per-channel lengths and equal shapes) and call the kernels with raw pointers (no memoryview
# set-up per call: fused memoryviews measured 2.3 us more per call than this on a small call).

cdef int _setup(str op, BN* a, x) except -1:
    """Check x, fill a's sizes and threads; returns x's type number."""
    cdef int t = float_array(op, "input", x, 2, 3, cnp.NPY_NOTYPE)
    cdef cnp.ndarray xa = <cnp.ndarray> x
    a.n, a.C = cnp.PyArray_DIM(xa, 0), cnp.PyArray_DIM(xa, 1)
    a.L = cnp.PyArray_DIM(xa, 2) if cnp.PyArray_NDIM(xa) == 3 else 1
    a.x = cnp.PyArray_DATA(xa)
    a.dy = a.weight = a.bias = a.mean = a.spread = a.y = a.stats = a.params = NULL
    a.eps = 0.0
    a.act = ACT_NONE
    a.nt = tgbn_max_threads()
    return t


cdef inline cnp.ndarray _empty_like(x):
    cdef cnp.ndarray xa = <cnp.ndarray> x
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.PyArray_TYPE(xa), 0)


cdef inline cnp.ndarray _vector(Py_ssize_t n, int t, bint zero):
    cdef cnp.npy_intp d = n
    return cnp.PyArray_ZEROS(1, &d, t, 0) if zero else cnp.PyArray_EMPTY(1, &d, t, 0)


cdef const void* _per_channel(str op, str arg, v, int t, Py_ssize_t C) except NULL:
    """Data of v after checking it is a (C,) array of type t."""
    float_array(op, arg, v, 1, 1, t)
    if cnp.PyArray_DIM(<cnp.ndarray> v, 0) != C:
        raise ValueError(f"{op}: {arg}: expected shape ({C},) (got {v.shape})")
    return cnp.PyArray_DATA(<cnp.ndarray> v)


def batch_norm_forward_train(x, weight, bias, double eps, activation=None):
    """(y, mean, var, invstd): y = (x - mean) * invstd * weight + bias, var biased, per channel
    of x (N, C) or (N, C, L); with activation ('relu', 'sigmoid', 'tanh') y = activation(that),
    applied to each block of channels as soon as it is normalized (still in cache), bit-identical
    to elementwise.activation_forward of the plain y. Raises TypeError/ValueError."""
    cdef BN a
    cdef int t = _setup("batch_norm", &a, x)
    a.act = act_code("batch_norm", activation)
    a.weight = _per_channel("batch_norm", "weight", weight, t, a.C)
    a.bias = _per_channel("batch_norm", "bias", bias, t, a.C)
    if a.C and a.n * a.L < 1:  # the kernels read each channel's first value
        raise ValueError(f"batch_norm: input: expected at least 1 value per channel "
                         f"(got shape {x.shape})")
    a.eps = eps
    y = _empty_like(x)
    stats = _vector(3 * a.C, t, False)  # the kernels write mean, var, invstd at c, C + c, 2C + c
    a.y = cnp.PyArray_DATA(<cnp.ndarray> y)
    a.stats = cnp.PyArray_DATA(<cnp.ndarray> stats)
    if a.C:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                _forward_train(<float> 0, &a)
            else:
                _forward_train(<double> 0, &a)
    return y, stats[:a.C], stats[a.C:2 * a.C], stats[2 * a.C:]


def batch_norm_backward(grad_out, x, mean, invstd, weight, output_mask=(True, True, True)):
    """(dx, dweight, dbias): dx = weight*invstd/m * (m*dy - dbias - xhat*dweight); output_mask
    (3 booleans) says which to return, the others are None (dweight and dbias come with the
    sums dx needs; only dx costs a pass of its own). Raises TypeError/ValueError."""
    cdef BN a
    cdef int t = _setup("batch_norm_backward", &a, x)
    float_array("batch_norm_backward", "grad_out", grad_out, 2, 3, t)
    same_shape("batch_norm_backward", "grad_out", grad_out, x)
    a.mean = _per_channel("batch_norm_backward", "mean", mean, t, a.C)
    a.spread = _per_channel("batch_norm_backward", "invstd", invstd, t, a.C)
    a.weight = _per_channel("batch_norm_backward", "weight", weight, t, a.C)
    cdef int mask = mask_bits("batch_norm_backward", output_mask)
    dx = _empty_like(x) if mask & 1 else None
    grads = _vector(2 * a.C, t, True)  # dweight, dbias at c, C + c; zero when N * L == 0
    a.dy = cnp.PyArray_DATA(<cnp.ndarray> grad_out)
    a.y = NULL if dx is None else cnp.PyArray_DATA(<cnp.ndarray> dx)
    a.stats = cnp.PyArray_DATA(<cnp.ndarray> grads)
    if a.n * a.C * a.L:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                _backward(<float> 0, &a)
            else:
                _backward(<double> 0, &a)
    return dx, (grads[:a.C] if mask & 2 else None), (grads[a.C:] if mask & 4 else None)


def batch_norm_forward_eval(x, running_mean, running_var, weight, bias, double eps):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, one pass over x (N, C)
    or (N, C, L). Raises TypeError/ValueError."""
    cdef BN a
    cdef int t = _setup("batch_norm", &a, x)
    a.mean = _per_channel("batch_norm", "running_mean", running_mean, t, a.C)
    a.spread = _per_channel("batch_norm", "running_var", running_var, t, a.C)
    a.weight = _per_channel("batch_norm", "weight", weight, t, a.C)
    a.bias = _per_channel("batch_norm", "bias", bias, t, a.C)
    a.eps = eps
    y = _empty_like(x)
    params = _vector(3 * a.C, cnp.NPY_FLOAT64, False)
    a.y = cnp.PyArray_DATA(<cnp.ndarray> y)
    a.params = <double*> cnp.PyArray_DATA(<cnp.ndarray> params)
    if a.n * a.C * a.L:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                _forward_eval(<float> 0, &a)
            else:
                _forward_eval(<double> 0, &a)
    return y


cdef extern from *:
    """
    /* r = r * keep + weight * s, each product rounded as NumPy's `r *= keep; r += weight * s`
       rounds it: the volatile temporaries keep the compiler from contracting them into an
       FMA (-ffp-contract=fast is GCC's default), so the running estimates keep their bits */
    static void tgbn_running_f(float *r, const float *s, Py_ssize_t n, float keep, float w) {
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            volatile float a = r[i] * keep, b = w * s[i];
            r[i] = a + b;
        }
    }
    static void tgbn_running_d(double *r, const double *s, Py_ssize_t n, double keep,
                               double w) {
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            volatile double a = r[i] * keep, b = w * s[i];
            r[i] = a + b;
        }
    }
    """
    void tgbn_running_f(float* r, const float* s, Py_ssize_t n, float keep,
                        float w) noexcept nogil
    void tgbn_running_d(double* r, const double* s, Py_ssize_t n, double keep,
                        double w) noexcept nogil


def running_average(running, stat, double keep, double weight):
    """running = keep * running + weight * stat in place over two 1D arrays of one dtype and
    length (keep and weight rounded to it, each product rounded: the bits of NumPy's
    `running *= keep; running += weight * stat`); returns running. Raises TypeError/ValueError."""
    cdef int t = float_array("running_average", "running", running, 1, 1, cnp.NPY_NOTYPE)
    float_array("running_average", "stat", stat, 1, 1, t)
    same_shape("running_average", "stat", stat, running)
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> running):
        raise ValueError("running_average: running: expected a writeable array (got read-only)")
    cdef Py_ssize_t n = cnp.PyArray_DIM(<cnp.ndarray> running, 0)
    cdef void* rp = cnp.PyArray_DATA(<cnp.ndarray> running)
    cdef const void* sp = cnp.PyArray_DATA(<cnp.ndarray> stat)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            tgbn_running_f(<float*> rp, <const float*> sp, n, <float> keep, <float> weight)
        else:
            tgbn_running_d(<double*> rp, <const double*> sp, n, keep, weight)
    return running
