# Activations element by element, shared by elementwise.pyx and batchnorm.pyx (cimported; no
# module of its own), so a fused pass (bias + activation, batch norm + activation) and the
# activation alone compute every element with the same function: fused and unfused results
# are bit-identical, and so is any split of an array between threads.
#
# exp is written out (libm's expf/exp do not vectorize without -ffast-math): range reduction
# x = n ln2 + r, |r| <= ln2/2, with Cody-Waite's two-part ln2 (n * LN2_HI is exact), then a
# Taylor polynomial one degree past what the precision needs (truncation < 0.1 ulp: degree 7
# for float, 13 for double), then 2^n from the exponent bits. Only exp(x) for x <= 0 is
# needed (sigmoid and tanh use exp(-|x|)): the result is in [0, 1], so it cannot overflow, and
# 2^n is built as 2^(n + K) * 2^-K so that a subnormal result is rounded once. There are no
# branches (selects on values, tgbn_pick), so GCC vectorizes every loop over these functions
# (checked with -fopt-info-vec for -march=native on AVX-512, haswell and x86-64); NaN
# propagates through every comparison as written.
#
# Accuracy against float64 (float) / long double (double), the largest error seen over 1.6
# million points in [-30, 30], [-1, 1], near 0 and out to the underflow edge (x86-64 with
# AVX-512; tests/test_kernels_elementwise.py asserts <= 3 ulp sigmoid, <= 2 ulp tanh):
#   float32: sigmoid 2.7 ulp (x < 0: e * s rounds three times), tanh 1.5 ulp
#   float64: sigmoid 2.7 ulp, tanh 1.5 ulp
# Extremes as the exact function rounds: sigmoid(-inf) = 0, sigmoid(+inf) = 1, sigmoid(x)
# is 0 only where the exact value rounds to 0 (x < -103.3 in float32), tanh(+-inf) = +-1,
# tanh(-0) = -0; relu(NaN) = NaN as PyTorch, and its backward is 0 exactly where out <= 0.
from cython cimport floating

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>

    /* c ? a : b on values both already computed, as bit operations. Written as ?:, GCC
       turns some selects into branches (it sinks an arm only one side uses, or threads the
       constant of exp's clamp through the code after it), and without AVX-512's masked ops
       such a branch kept the loop scalar on AVX2 and SSE2 (gcc 12, -fopt-info-vec) */
    static inline float tgbn_pick_f(int c, float a, float b) {
        uint32_t ua, ub, m = 0u - (uint32_t)c;
        memcpy(&ua, &a, 4);
        memcpy(&ub, &b, 4);
        ua = (ua & m) | (ub & ~m);
        memcpy(&a, &ua, 4);
        return a;
    }

    static inline double tgbn_pick_d(int c, double a, double b) {
        uint64_t ua, ub, m = 0ull - (uint64_t)c;
        memcpy(&ua, &a, 8);
        memcpy(&ub, &b, 8);
        ua = (ua & m) | (ub & ~m);
        memcpy(&a, &ua, 8);
        return a;
    }

    /* exp(x) for x <= 0 or NaN */
    static inline float tgbn_exp_neg_f(float x) {
        const float magic = 12582912.0f;            /* 1.5 * 2^23: + magic rounds to an int */
        float t, n, r, p, s;
        uint32_t bits;
        x = tgbn_pick_f(x < -104.0f, -104.0f, x);     /* exp(-104) rounds to 0; NaN passes */
        t = x * 1.44269504088896341f + magic;
        n = t - magic;                               /* round(x / ln2), in [-150, 0] */
        r = x - n * 0.693359375f;                    /* LN2_HI: 9 bits, so n * LN2_HI is exact */
        r = r - n * -2.12194440054690583e-4f;        /* LN2_LO = ln2 - LN2_HI */
        p = 1.0f / 5040 ;
        p = p * r + 1.0f / 720;
        p = p * r + 1.0f / 120;
        p = p * r + 1.0f / 24;
        p = p * r + 1.0f / 6;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        memcpy(&bits, &t, 4);                        /* low bits of t: n (two's complement) */
        bits = (bits - 0x4B400000u + 191u) << 23;    /* 2^(n + 64): exponent field n + 191 */
        memcpy(&s, &bits, 4);
        return (p * s) * 5.42101086242752217e-20f;   /* * 2^-64: the one rounding */
    }

    static inline double tgbn_exp_neg_d(double x) {
        const double magic = 6755399441055744.0;    /* 1.5 * 2^52 */
        double t, n, r, p, s;
        uint64_t bits;
        x = tgbn_pick_d(x < -746.0, -746.0, x);       /* exp(-746) rounds to 0 */
        t = x * 1.4426950408889634 + magic;
        n = t - magic;                               /* in [-1077, 0] */
        r = x - n * 6.93147180369123816490e-01;      /* fdlibm's LN2_HI: 32 low bits zero */
        r = r - n * 1.90821492927058770002e-10;
        p = 1.0 / 6227020800.0;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        memcpy(&bits, &t, 8);
        bits = (bits - 0x4338000000000000ull + 1623ull) << 52;   /* 2^(n + 600) */
        memcpy(&s, &bits, 8);
        return (p * s) * 0x1p-600;
    }

    /* sigmoid = 1 / (1 + e) for x > 0, e / (1 + e) otherwise, e = exp(-|x|) in [0, 1]: no
       overflow, and no cancellation on either side */
    static inline float tgbn_sigmoid_f(float x) {
        float e = tgbn_exp_neg_f(-fabsf(x));
        float s = 1.0f / (1.0f + e);
        return tgbn_pick_f(x > 0.0f, s, e * s);
    }

    static inline double tgbn_sigmoid_d(double x) {
        double e = tgbn_exp_neg_d(-fabs(x));
        double s = 1.0 / (1.0 + e);
        return tgbn_pick_d(x > 0.0, s, e * s);
    }

    /* tanh: (1 - e) / (1 + e), e = exp(-2|x|), where |x| >= 0.625 (1 - e > 0.7: no
       cancellation); below, x + x^3 P(x^2) with P a Chebyshev fit of (tanh(x)/x - 1)/x^2 on
       [0, 0.625^2] (mpmath.chebyfit; fit error 7e-10 (float) and 2e-18 (double) of tanh) */
    static inline float tgbn_tanh_f(float x) {
        float a = fabsf(x), u = x * x, p, e, big;
        p = 0.0022927448161781423f;
        p = p * u - 0.0083439455158391520f;
        p = p * u + 0.021768918651028210f;
        p = p * u - 0.053959259577204543f;
        p = p * u + 0.13333303556915742f;
        p = p * u - 0.33333333172140362f;
        e = tgbn_exp_neg_f(-2.0f * a);
        big = (1.0f - e) / (1.0f + e);
        return copysignf(tgbn_pick_f(a < 0.625f, a + a * (u * p), big), x);  /* tanh(-0) = -0 */
    }

    static inline double tgbn_tanh_d(double x) {
        double a = fabs(x), u = x * x, p, e, big;
        p = 6.48516348279311315e-6;
        p = p * u - 0.000031201101425797400033;
        p = p * u + 0.000092571161295567682707;
        p = p * u - 0.00023759064960555619551;
        p = p * u + 0.0005896606577757043347;
        p = p * u - 0.0014557754120478055104;
        p = p * u + 0.0035921217511549622695;
        p = p * u - 0.008863235103240877925;
        p = p * u + 0.021869488519008305756;
        p = p * u - 0.05396825396789699169;
        p = p * u + 0.13333333333333041602;
        p = p * u - 0.33333333333333332938;
        e = tgbn_exp_neg_d(-2.0 * a);
        big = (1.0 - e) / (1.0 + e);
        return copysign(tgbn_pick_d(a < 0.625, a + a * (u * p), big), x);
    }

    /* relu: NaN <= 0 is false, so NaN is kept (PyTorch); -0 becomes +0 */
    static inline float tgbn_relu_f(float x) { return x <= 0.0f ? 0.0f : x; }
    static inline double tgbn_relu_d(double x) { return x <= 0.0 ? 0.0 : x; }
    static inline float tgbn_ident_f(float x) { return x; }
    static inline double tgbn_ident_d(double x) { return x; }

    /* The loops, one per activation and mode, so that each is a plain vectorizable loop:
       mode 0: y = f(x) (y, x distinct); 2: y = f(y + b) (n elements); 1: y = f(y) and
       3: y = f(y + bias[i]) over `rows` rows of n elements, `stride` apart (one call for a
       whole (N, C) array or a batch-norm block: a call per row cost 1 us on (60, 100)) */
    #define TGBN_LOOPS(T, S, F)                                                             \
    static void tgbn_loop_##F##_##S(T *restrict y, const T *restrict x,                   \
                                    const T *restrict bias, T b, Py_ssize_t rows,          \
                                    Py_ssize_t n, Py_ssize_t stride, int mode) {           \
        Py_ssize_t i, r;                                                                    \
        T *restrict z;                                                                      \
        if (mode == 0) { for (i = 0; i < n; i++) y[i] = tgbn_##F##_##S(x[i]); }             \
        else if (mode == 2) { for (i = 0; i < n; i++) y[i] = tgbn_##F##_##S(y[i] + b); }    \
        else if (mode == 1) {                                                               \
            for (r = 0; r < rows; r++) {                                                    \
                z = y + r * stride;                                                         \
                for (i = 0; i < n; i++) z[i] = tgbn_##F##_##S(z[i]);                        \
            }                                                                               \
        } else {                                                                            \
            for (r = 0; r < rows; r++) {                                                    \
                z = y + r * stride;                                                         \
                for (i = 0; i < n; i++) z[i] = tgbn_##F##_##S(z[i] + bias[i]);              \
            }                                                                               \
        }                                                                                   \
    }
    TGBN_LOOPS(float, f, ident) TGBN_LOOPS(float, f, relu)
    TGBN_LOOPS(float, f, sigmoid) TGBN_LOOPS(float, f, tanh)
    TGBN_LOOPS(double, d, ident) TGBN_LOOPS(double, d, relu)
    TGBN_LOOPS(double, d, sigmoid) TGBN_LOOPS(double, d, tanh)

    /* dx from the saved output: sigmoid g o (1 - o), tanh g (1 - o^2), relu o <= 0 ? 0 : g
       (a select as PyTorch's threshold_backward: 0 even for an inf or NaN g, g where o is NaN) */
    #define TGBN_BACKWARD(T, S)                                                             \
    static void tgbn_backward_##S(int act, T *restrict dx, const T *restrict g,             \
                                  const T *restrict o, Py_ssize_t n) {                      \
        Py_ssize_t i;                                                                       \
        if (act == 2) { for (i = 0; i < n; i++) dx[i] = g[i] * o[i] * (1 - o[i]); }         \
        else if (act == 3) { for (i = 0; i < n; i++) dx[i] = g[i] * (1 - o[i] * o[i]); }    \
        else if (act == 1) {                                                                \
            for (i = 0; i < n; i++) dx[i] = tgbn_pick_##S(o[i] <= 0, 0, g[i]); }           \
        else { for (i = 0; i < n; i++) dx[i] = g[i]; }                                      \
    }
    TGBN_BACKWARD(float, f) TGBN_BACKWARD(double, d)

    /* act: 0 none (the bias alone), 1 relu, 2 sigmoid, 3 tanh (the ACT_* codes below) */
    #define TGBN_DISPATCH(T, S)                                                             \
    static void tgbn_act_##S(int act, T *y, const T *x, const T *bias, T b, Py_ssize_t rows, \
                             Py_ssize_t n, Py_ssize_t stride, int mode) {                   \
        if (act == 1) tgbn_loop_relu_##S(y, x, bias, b, rows, n, stride, mode);             \
        else if (act == 2) tgbn_loop_sigmoid_##S(y, x, bias, b, rows, n, stride, mode);     \
        else if (act == 3) tgbn_loop_tanh_##S(y, x, bias, b, rows, n, stride, mode);        \
        else tgbn_loop_ident_##S(y, x, bias, b, rows, n, stride, mode);                     \
    }
    TGBN_DISPATCH(float, f) TGBN_DISPATCH(double, d)
    """
    void tgbn_act_f(int act, float* y, const float* x, const float* bias, float b,
                    Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride, int mode) noexcept nogil
    void tgbn_act_d(int act, double* y, const double* x, const double* bias, double b,
                    Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride, int mode) noexcept nogil
    void tgbn_backward_f(int act, float* dx, const float* g, const float* o,
                         Py_ssize_t n) noexcept nogil
    void tgbn_backward_d(int act, double* dx, const double* g, const double* o,
                         Py_ssize_t n) noexcept nogil
    # exp(x) for x <= 0 or NaN, and the bitwise select (also loss.pyx's softmax)
    float tgbn_exp_neg_f(float x) noexcept nogil
    double tgbn_exp_neg_d(double x) noexcept nogil
    float tgbn_pick_f(int c, float a, float b) noexcept nogil
    double tgbn_pick_d(int c, double a, double b) noexcept nogil


cdef enum:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_SIGMOID = 2
    ACT_TANH = 3


cdef inline int act_code(str op, object activation) except -1:
    """The ACT_* code of an activation name (None: ACT_NONE); ValueError for anything else."""
    if activation is None:
        return ACT_NONE
    if activation == "relu":
        return ACT_RELU
    if activation == "sigmoid":
        return ACT_SIGMOID
    if activation == "tanh":
        return ACT_TANH
    raise ValueError(f"{op}: activation: expected None, 'relu', 'sigmoid' or 'tanh' "
                     f"(got {activation!r})")


cdef enum:
    MODE_COPY = 0      # y = act(x), n elements
    MODE_INPLACE = 1   # y = act(y), rows of n elements
    MODE_SCALAR = 2    # y = act(y + b), n elements
    MODE_VECTOR = 3    # y = act(y + bias[i]), rows of n elements


cdef inline void act_run(int act, floating* y, const floating* x, const floating* bias,
                         floating b, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                         int mode) noexcept nogil:
    """One of the four MODE_* loops of activation `act` (see the C above)."""
    if floating is float:
        tgbn_act_f(act, y, x, bias, b, rows, n, stride, mode)
    else:
        tgbn_act_d(act, y, x, bias, b, rows, n, stride, mode)
