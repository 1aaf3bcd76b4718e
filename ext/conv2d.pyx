"""Compiled conv2d (forward, and a backward that computes only the gradients asked for)
for NCHW arrays.

The forward and dx are im2col + a matrix product, one image at a time: for few output rows
(the claims net's 8 and 16 channels, dx's 72 im2col rows) the register-blocked tgbn_nn,
else the packed GEMM of gemm.pxd. dW (and db) is its own kernel (tgbn_dw_nt): O x CKK dot
products of dy rows with im2col rows, which both run along the summed axis, while their
vector sums fit DW_ACC; bigger layers take the GEMM per image. With at least
two runs of images and enough work, threads take runs dynamically (each with its own column
buffers); dW is summed per fixed run of images and the runs are added in order, so the bits
do not depend on the thread count. Otherwise the GEMM itself is threaded. im2col for stride
1 with "same" width (k3 p1) is one flat shifted copy per kernel tap. tinygrad_bn.kernels
validates for the user and passes C-contiguous arrays (a channels-last (64, 32, 14, 14)
float32 copy measured 0.13 ms against 6.3 ms for its forward conv); the wrappers here check
what memory safety needs (_arrays.pxd).
"""
cimport numpy as cnp
import numpy as np
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

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
                    if lo_r > 0:
                        memset(dst, 0, lo_r * OW * sizeof(floating))
                    if hi_r < OH:
                        memset(dst + hi_r * OW, 0, (OH - hi_r) * OW * sizeof(floating))
                    if hi_r > lo_r and hi > lo:
                        src = x + c * H * W
                        shift = (i - ph) * W + (j - pw)
                        for q in range(lo_r * OW + lo, (hi_r - 1) * OW + hi):
                            dst[q] = src[q + shift]
                    # the padded columns, a column at a time: a loop per row cost more than
                    # the copy (k3 p1 has one such column per tap, OW of them per row pass)
                    for ow in range(lo):
                        for oh in range(lo_r, hi_r):
                            dst[oh * OW + ow] = 0
                    for ow in range(hi, OW):
                        for oh in range(lo_r, hi_r):
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
                    for ow in range(lo):  # a column at a time, as im2col
                        for oh in range(lo_r, hi_r):
                            src[oh * OW + ow] = 0
                    for ow in range(hi, OW):
                        for oh in range(lo_r, hi_r):
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


# ---------------------------------------------------------------- the weight gradient

cdef extern from *:
    """
    /* dW of a small conv is O x CKK dot products of length P (dy rows with im2col rows,
       both contiguous): a GEMM whose operands both run along K. Through gemm.pxd one of
       them had to be packed transposed into 32-wide panels, mostly zeros for O = 8
       (conv1's dW ran 0.7 ms for 3.4M multiply-adds). Here a 4 x 3 block of dot products
       keeps 12 vector sums in registers; each k step loads 7 vectors for 12 FMAs. The
       sums stay vectors (lanes apart) across a run of images and the caller adds the lanes
       up in order, so the result does not depend on the thread count. Plain C on GCC/Clang
       vector types, the width from the target (AVX-512, AVX, else 16 bytes). */
    #if defined(__AVX512F__)
    #define TGBN_CV_VBYTES 64
    #elif defined(__AVX__)
    #define TGBN_CV_VBYTES 32
    #else
    #define TGBN_CV_VBYTES 16
    #endif
    static inline Py_ssize_t tgbn_cv_lanes(size_t elem) { return TGBN_CV_VBYTES / elem; }
    /* GCC folds each use of a loaded vector into its FMA as a memory operand: 12 loads
       instead of 4 per step, and the loads, not the FMAs, bound the loop. An empty asm
       that "changes" the values pins them in registers. */
    #if defined(__GNUC__) && defined(__x86_64__)
    #define TGBN_IN_REGISTERS(v, n) \
        for (int i_ = 0; i_ < (n); i_++) __asm__("" : "+v"(v[i_]))
    #elif defined(__GNUC__) && defined(__aarch64__)
    #define TGBN_IN_REGISTERS(v, n) \
        for (int i_ = 0; i_ < (n); i_++) __asm__("" : "+w"(v[i_]))
    #else
    #define TGBN_IN_REGISTERS(v, n) ((void)0)
    #endif
    enum { TGBN_DW_L1 = 24 * 1024 };  /* bytes of dy per pass: half of a 48 KiB L1 */
    #define TGBN_DW_NT(T, IT) \
    typedef T tgbn_cv_##T __attribute__((vector_size(TGBN_CV_VBYTES), aligned(1), may_alias)); \
    typedef IT tgbn_cvi_##T __attribute__((vector_size(TGBN_CV_VBYTES), aligned(1), may_alias)); \
    /* the ragged end of a row: the vector of row[end - L : end] with its first L - rem \
       lanes zeroed (counted already), one load when the row has L elements (whole), else \
       through a copy (rows shorter than a vector: 1x1 to 4x4 maps) */ \
    static inline tgbn_cv_##T tgbn_cv_tail_##T(const T* end, Py_ssize_t rem, int whole, \
            tgbn_cvi_##T keep) { \
        enum { L = TGBN_CV_VBYTES / sizeof(T) }; \
        T t[TGBN_CV_VBYTES / sizeof(T)] = {0}; \
        if (whole) \
            return (tgbn_cv_##T)(*(const tgbn_cvi_##T*)(end - L) & keep); \
        memcpy(t + L - rem, end - rem, rem * sizeof(T)); \
        return *(const tgbn_cv_##T*)t; \
    } \
    /* acc[o*R + r] (vectors) += sum over nimg images k of dy_k[o, :] * cols_k[r, :], lane- \
       wise; image k's rows start at dy + k*sdy and cols + k*scol, P long, ldd / ldc apart. \
       With acc NULL each sum's lanes are added up (in lane order) into out[o*R + r]. */ \
    static void tgbn_dw_nt_##T(Py_ssize_t O, Py_ssize_t R, Py_ssize_t P, Py_ssize_t nimg, \
            const T* dy, Py_ssize_t ldd, Py_ssize_t sdy, const T* cols, Py_ssize_t ldc, \
            Py_ssize_t scol, T* acc, T* out) { \
        enum { L = TGBN_CV_VBYTES / sizeof(T) }; \
        tgbn_cv_##T* av = (tgbn_cv_##T*)acc; \
        tgbn_cvi_##T keep; \
        int whole = P >= L; \
        for (int l = 0; l < L; l++) keep[l] = l >= L - P % L ? -1 : 0; \
        /* dy's rows of a pass (O x pb vectors, all images) stay in L1 while the columns \
           stream by once: r blocks outside, o blocks inside */ \
        Py_ssize_t pb = TGBN_DW_L1 / (O * nimg * TGBN_CV_VBYTES); \
        pb = pb < 1 ? L : pb * L; \
        for (Py_ssize_t p0 = 0; p0 < P; p0 += pb) { \
            Py_ssize_t np = P - p0 < pb ? P - p0 : pb; \
            Py_ssize_t nv = np / L, rem = np % L; \
            for (Py_ssize_t r0 = 0; r0 < R; r0 += 3) { \
                for (Py_ssize_t o0 = 0; o0 < O; o0 += 4) { \
                    tgbn_cv_##T s[4][3]; \
                    for (int i = 0; i < 4; i++) \
                        for (int j = 0; j < 3; j++) s[i][j] = (tgbn_cv_##T){0}; \
                    for (Py_ssize_t k = 0; k < nimg; k++) { \
                        const T* d[4]; /* rows past O or R re-read the last row; their */ \
                        const T* c[3]; /* sums are not kept */ \
                        tgbn_cv_##T dv[4], cv[3]; \
                        for (int i = 0; i < 4; i++) \
                            d[i] = dy + k * sdy + (o0 + i < O ? o0 + i : O - 1) * ldd + p0; \
                        for (int j = 0; j < 3; j++) \
                            c[j] = cols + k * scol + (r0 + j < R ? r0 + j : R - 1) * ldc + p0; \
                        for (Py_ssize_t p = 0; p < nv; p++) { \
                            for (int i = 0; i < 4; i++) dv[i] = *(const tgbn_cv_##T*)(d[i] + p * L); \
                            for (int j = 0; j < 3; j++) cv[j] = *(const tgbn_cv_##T*)(c[j] + p * L); \
                            TGBN_IN_REGISTERS(dv, 4); TGBN_IN_REGISTERS(cv, 3); \
                            for (int i = 0; i < 4; i++) \
                                for (int j = 0; j < 3; j++) s[i][j] += dv[i] * cv[j]; \
                        } \
                        if (rem) { \
                            for (int i = 0; i < 4; i++) dv[i] = tgbn_cv_tail_##T(d[i] + np, rem, whole, keep); \
                            for (int j = 0; j < 3; j++) cv[j] = tgbn_cv_tail_##T(c[j] + np, rem, whole, keep); \
                            for (int i = 0; i < 4; i++) \
                                for (int j = 0; j < 3; j++) s[i][j] += dv[i] * cv[j]; \
                        } \
                    } \
                    for (int i = 0; i < 4 && o0 + i < O; i++) \
                        for (int j = 0; j < 3 && r0 + j < R; j++) \
                            if (av) av[(o0 + i) * R + r0 + j] += s[i][j]; \
                            else { \
                                T sum = s[i][j][0]; \
                                for (int l = 1; l < L; l++) sum += s[i][j][l]; \
                                out[(o0 + i) * R + r0 + j] += sum; \
                            } \
                } \
            } \
        } \
    }
    TGBN_DW_NT(float, int32_t)
    TGBN_DW_NT(double, int64_t)

    /* c (M, N) = a (M, K) @ b (K, N) for few rows (the claims net's 8 or 16 output channels,
       or dx's 72 im2col rows over K = 16): 4 rows x 3 vectors of c per block, 12 sums in
       registers over all of K, each k step 3 loads of b and 4 broadcasts of a for 12 FMAs.
       The 6-row GEMM tile of gemm.pxd did 12 rows' work for M = 8 and re-stored its tile
       every KC. The last block of a row overlaps the one before (N >= 3 L): it stores the
       same values again. a is read through element strides (W^T for dx). */
    #define TGBN_NN(T) \
    static void tgbn_nn_##T(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const T* a, \
            Py_ssize_t sa0, Py_ssize_t sa1, const T* b, Py_ssize_t ldb, T* c, Py_ssize_t ldc) { \
        enum { L = TGBN_CV_VBYTES / sizeof(T) }; \
        for (Py_ssize_t i0 = 0; i0 < M; i0 += 4) { \
            const T* ar[4]; /* rows past M re-read row M-1; they are not stored */ \
            for (int i = 0; i < 4; i++) ar[i] = a + (i0 + i < M ? i0 + i : M - 1) * sa0; \
            for (Py_ssize_t q = 0; q < N; q += 3 * L) { \
                Py_ssize_t q0 = q + 3 * L <= N ? q : N - 3 * L; \
                tgbn_cv_##T s[4][3], bv[3], av[4]; \
                for (int i = 0; i < 4; i++) \
                    for (int j = 0; j < 3; j++) s[i][j] = (tgbn_cv_##T){0}; \
                for (Py_ssize_t k = 0; k < K; k++) { \
                    for (int j = 0; j < 3; j++) \
                        bv[j] = *(const tgbn_cv_##T*)(b + k * ldb + q0 + j * L); \
                    for (int i = 0; i < 4; i++) av[i] = (tgbn_cv_##T){0} + ar[i][k * sa1]; \
                    TGBN_IN_REGISTERS(bv, 3); \
                    for (int i = 0; i < 4; i++) \
                        for (int j = 0; j < 3; j++) s[i][j] += av[i] * bv[j]; \
                } \
                for (int i = 0; i < 4 && i0 + i < M; i++) \
                    for (int j = 0; j < 3; j++) \
                        *(tgbn_cv_##T*)(c + (i0 + i) * ldc + q0 + j * L) = s[i][j]; \
            } \
        } \
    }
    TGBN_NN(float)
    TGBN_NN(double)
    """
    Py_ssize_t tgbn_cv_lanes(size_t elem) noexcept nogil
    void tgbn_nn_float(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a, Py_ssize_t sa0,
                       Py_ssize_t sa1, const float* b, Py_ssize_t ldb, float* c,
                       Py_ssize_t ldc) noexcept nogil
    void tgbn_nn_double(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* a,
                        Py_ssize_t sa0, Py_ssize_t sa1, const double* b, Py_ssize_t ldb,
                        double* c, Py_ssize_t ldc) noexcept nogil
    void tgbn_dw_nt_float(Py_ssize_t O, Py_ssize_t R, Py_ssize_t P, Py_ssize_t nimg,
                          const float* dy, Py_ssize_t ldd, Py_ssize_t sdy, const float* cols,
                          Py_ssize_t ldc, Py_ssize_t scol, float* acc, float* out) noexcept nogil
    void tgbn_dw_nt_double(Py_ssize_t O, Py_ssize_t R, Py_ssize_t P, Py_ssize_t nimg,
                           const double* dy, Py_ssize_t ldd, Py_ssize_t sdy, const double* cols,
                           Py_ssize_t ldc, Py_ssize_t scol, double* acc,
                           double* out) noexcept nogil

cdef enum:
    DW_RUNS = 8   # fixed runs of images for dW (its partials are summed in run order)
    DW_DY = 24 * 1024   # bytes of dy per dW call: several images at once while they fit L1
    DW_ACC = 1 << 20    # bytes of vector sums per thread kept across a run (L lanes per sum);
                        # bigger dW (512x512x3x3: 150 MB) add up their lanes after each call


cdef inline bint few_rows(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, size_t elem) noexcept nogil:
    """Whether tgbn_nn suits c (M, N) = a (M, K) @ b: rows as wide as its block (3 vectors)
    and a block's K x 3 vectors of b in L2 (256 KiB); else gemm.pxd's packed GEMM."""
    cdef Py_ssize_t L = tgbn_cv_lanes(elem)
    return N >= 3 * L and M <= 128 and K * 3 * L * <Py_ssize_t> elem <= 256 * 1024


cdef inline void nn(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a,
                    Py_ssize_t sa0, Py_ssize_t sa1, const floating* b, floating* c) noexcept nogil:
    """c (M, N) = a (M, K) @ b (K, N), b and c contiguous, a through strides."""
    if floating is float:
        tgbn_nn_float(M, N, K, a, sa0, sa1, b, N, c, N)
    else:
        tgbn_nn_double(M, N, K, a, sa0, sa1, b, N, c, N)


cdef inline void dw_nt(Py_ssize_t O, Py_ssize_t R, Py_ssize_t P, Py_ssize_t nimg,
                       const floating* dy, const floating* cols, floating* acc,
                       floating* out) noexcept nogil:
    """acc (O*R vectors) += the lane-wise dW sums of nimg images (dy (nimg, O, P) and their
    im2col columns (nimg, R, P), contiguous); without acc, out (O*R) += the sums."""
    if floating is float:
        tgbn_dw_nt_float(O, R, P, nimg, dy, P, O * P, cols, P, R * P, acc, out)
    else:
        tgbn_dw_nt_double(O, R, P, nimg, dy, P, O * P, cols, P, R * P, acc, out)


# ---------------------------------------------------------------- conv2d

ctypedef struct Conv:
    const void* x           # (N, C, H, W)
    const void* w           # (O, C, KH, KW)
    const void* dy          # (N, O, OH, OW): grad_out (backward)
    void* y                 # (N, O, OH, OW): the output (forward)
    void* dx                # (N, C, H, W), zeroed; NULL when not asked for
    void* dw                # (O, C, KH, KW); NULL when not asked for
    void* db                # (O,); NULL when not asked for
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
    # one thread per image (or one thread in all): the few-rows kernel; else the threaded GEMM
    cdef bint small = (per_image or nt == 1) and few_rows(O, P, CKK, sizeof(floating))
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
            if small:
                nn(O, P, CKK, w, CKK, 1, buf, y + n * O * P)
            elif gemm(O, P, CKK, w, CKK, 1, buf, P, 1, y + n * O * P, P, False, False) < 0:
                fail[0] = 1
    else:
        for n in range(N):
            im2col(x + n * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, cols)
            if small:
                nn(O, P, CKK, w, CKK, 1, cols, y + n * O * P)
            elif gemm(O, P, CKK, w, CKK, 1, cols, P, 1, y + n * O * P, P, False, True) < 0:
                failed = 1
    free(cols)
    return -1 if failed else 0


cdef int _conv_backward(floating tag, const Conv* a) noexcept nogil:
    """dW = sum_n dy[n] @ im2col(x[n]).T, db = sum_n dy[n] @ ones and dx[n] =
    col2im(W.T @ dy[n]), each only when its pointer is set (dx zeroed). Returns -1 when out
    of memory."""
    cdef const floating* x = <const floating*> a.x
    cdef const floating* w = <const floating*> a.w
    cdef const floating* dy = <const floating*> a.dy
    cdef floating* dx = <floating*> a.dx
    cdef floating* dw = <floating*> a.dw
    cdef floating* db = <floating*> a.db
    cdef Py_ssize_t N = a.N, C = a.C, H = a.H, W = a.W, O = a.O, KH = a.KH, KW = a.KW
    cdef Py_ssize_t sh = a.sh, sw = a.sw, ph = a.ph, pw = a.pw, OH = a.OH, OW = a.OW
    cdef Py_ssize_t CKK = C * KH * KW, P = OH * OW, n, n0, n1, k, r, q
    cdef Py_ssize_t L = tgbn_cv_lanes(sizeof(floating))
    # dW and db are one product: db's column row is all ones, after the im2col rows
    cdef bint sums = dw != NULL or db != NULL
    cdef Py_ssize_t R = (CKK if dw != NULL else 0) + (1 if db != NULL else 0)
    cdef int nt = a.nt
    # images go in nchunk fixed runs, each with its own partial sums, added in run order:
    # runs are handed out dynamically, yet the bits do not depend on the thread count
    cdef Py_ssize_t nchunk = min(N, <Py_ssize_t> DW_RUNS)
    # within a run, the dW kernel takes the columns of up to `group` images per call
    cdef Py_ssize_t group = min(max(<Py_ssize_t> (DW_DY // (O * P * sizeof(floating))), 1),
                                (N + nchunk - 1) // nchunk)
    cdef bint per_image = nt > 1 and nchunk > 1 and N * O * P * CKK >= PAR_MIN_WORK
    cdef int nbuf = nt if per_image else 1
    cdef bint small = (per_image or nt == 1) and few_rows(CKK, P, O, sizeof(floating))
    # the sums stay vectors through a run when they fit DW_ACC (bits depend on the shape only);
    # bigger layers take gemm.pxd's register-blocked GEMM per image instead: the dot-product
    # kernel's lane sums, added after every call, ran 2.5x slower than the GEMM on 32->64
    # channels 14x14 (Zen 5), while the claims net's 8 and 16 channels gain from them
    cdef bint vec = O * R * L * <Py_ssize_t> sizeof(floating) <= DW_ACC
    # the GEMM transposes one (X, P) operand while packing: the smaller one (dW or dW^T)
    cdef bint dw_rows = R < O
    cdef Py_ssize_t ch
    cdef int t, failed = 0
    cdef int* fail = &failed
    cdef floating* cbuf
    cdef floating* dbuf
    cdef floating* abuf
    cdef floating* pp
    # per thread: im2col columns of a group and the vector sums (for dW, db), the columns'
    # gradient (for dx); per run: partial sums. Only what is asked for is allocated.
    cdef floating* cols = NULL
    cdef floating* acc = NULL
    cdef floating* dcols = NULL
    cdef floating* part = NULL
    if not sums and dx == NULL:
        return 0
    if sums:
        cols = <floating*> malloc(nbuf * group * R * P * sizeof(floating))
        acc = <floating*> malloc(nbuf * O * R * L * sizeof(floating)) if vec else NULL
        part = <floating*> malloc(nchunk * O * R * sizeof(floating))
    if dx != NULL:
        dcols = <floating*> malloc(nbuf * CKK * P * sizeof(floating))
    if (sums and (cols == NULL or (vec and acc == NULL) or part == NULL)) \
            or (dx != NULL and dcols == NULL):
        free(cols); free(acc); free(part); free(dcols)
        return -1
    if db != NULL:
        for k in range(nbuf * group):
            cbuf = cols + (k * R + R - 1) * P
            for q in range(P):
                cbuf[q] = 1
    for ch in prange(nchunk, schedule='dynamic', num_threads=nt, use_threads_if=per_image):
        t = threadid() if per_image else 0
        n1 = ch * N // nchunk
        if sums:
            cbuf = cols + t * group * R * P
            abuf = acc + t * O * R * L if vec else NULL
            pp = part + ch * O * R
            if vec:
                memset(abuf, 0, O * R * L * sizeof(floating))
            else:
                memset(pp, 0, O * R * sizeof(floating))
            while n1 < (ch + 1) * N // nchunk:
                n0 = n1
                n1 = min(n0 + group, (ch + 1) * N // nchunk)
                if dw != NULL:
                    for k in range(n1 - n0):
                        im2col(x + (n0 + k) * C * H * W, C, H, W, KH, KW, sh, sw, ph, pw,
                               OH, OW, cbuf + k * R * P)
                if vec:
                    dw_nt(O, R, P, n1 - n0, dy + n0 * O * P, cbuf, abuf, pp)
                    continue
                for k in range(n1 - n0):  # pp (O, R), or (R, O) when dw_rows is off, +=
                    if dw_rows:
                        if gemm(O, R, P, dy + (n0 + k) * O * P, P, 1, cbuf + k * R * P, 1, P,
                                pp, R, True, not per_image) < 0:
                            fail[0] = 1
                    elif gemm(R, O, P, cbuf + k * R * P, P, 1, dy + (n0 + k) * O * P, 1, P,
                              pp, O, True, not per_image) < 0:
                        fail[0] = 1
            for r in range(O * R if vec else 0):  # each sum's lanes, in lane order
                pp[r] = abuf[r * L]
                for q in range(1, L):
                    pp[r] = pp[r] + abuf[r * L + q]
        if dx != NULL:
            dbuf = dcols + t * CKK * P
            for n in range(ch * N // nchunk, (ch + 1) * N // nchunk):
                if small:
                    nn(CKK, P, O, w, 1, CKK, dy + n * O * P, dbuf)
                elif gemm(CKK, P, O, w, 1, CKK, dy + n * O * P, P, 1, dbuf, P, False,
                          not per_image) < 0:
                    fail[0] = 1
                col2im_add(dbuf, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dx + n * C * H * W)
    if sums:
        for k in range(O):
            for r in range(R):
                pp = part + (k * R + r if vec or dw_rows else r * O + k)
                for ch in range(1, nchunk):
                    pp[0] += pp[ch * O * R]
                if dw != NULL and r < CKK:
                    dw[k * CKK + r] = pp[0]
                else:
                    db[k] = pp[0]
    free(cols); free(acc); free(part); free(dcols)
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
    a.dy = a.y = a.dx = a.dw = a.db = NULL
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
    db = np.zeros(a.O, dtype=x.dtype) if mask & 4 else None
    if a.N * a.OH * a.OW == 0 or a.O == 0 or not mask:
        return dx, dw, db  # empty sums
    a.dy = cnp.PyArray_DATA(<cnp.ndarray> grad_out)
    cdef bint taps = a.C * a.KH * a.KW > 0  # else dx and dW are empty sums too
    a.dx = cnp.PyArray_DATA(<cnp.ndarray> dx) if dx is not None and taps else NULL
    a.dw = cnp.PyArray_DATA(<cnp.ndarray> dw) if dw is not None and taps else NULL
    a.db = NULL if db is None else cnp.PyArray_DATA(<cnp.ndarray> db)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            rc = _conv_backward(<float> 0, &a)
        else:
            rc = _conv_backward(<double> 0, &a)
    if rc < 0:
        raise MemoryError(f"conv2d_backward: out of memory for the column buffers of input "
                          f"{x.shape}")
    return dx, dw, db
