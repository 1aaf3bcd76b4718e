"""Fused softmax cross-entropy for class-index targets, float32/float64.

logits are (M, C) rows, target holds M int64 class indices (any shape, read flat), weight is
None or (C,). Forward is one pass per row: the row max m, e_j = exp(x_j - m) summed in
double, prob = e / sum (kept for backward) and loss = w[t] * (log(sum) - (x_t - m)); the
shift by the row max keeps every exponent <= 0. Backward is one pass: dx = scale_i * (prob -
onehot(t_i)), scale_i = grad_i * w[t_i] (divided by the total weight for "mean"). Rows whose
target is ignore_index count for nothing and get a zero gradient.

The labels are checked here, in one pass over target before any row is read: this is the
only range check on the fast path of F.cross_entropy, so a tg.jit replay still raises for a
bad label in a later batch without a host step of its own. Serial: M * C is small next to
the GEMMs of any model this loss ends, and the loss is summed in one fixed order.
"""
from cython cimport floating
from libc.math cimport log, NAN

cimport numpy as cnp
import numpy as np

from _activations cimport tgbn_exp_neg_d, tgbn_exp_neg_f, tgbn_pick_d, tgbn_pick_f
from _arrays cimport float_array

cnp.import_array()


ctypedef struct CE:
    const void* x             # (M, C) logits / (M, C) prob in backward
    void* y                   # (M, C) prob in forward / dx in backward
    const cnp.int64_t* t      # (M,) class indices
    const void* w             # (C,) class weights or NULL
    void* loss                # (M,) per-row losses (forward)
    const void* g             # grad: (M,) for "none", else one value (backward)
    Py_ssize_t M, C, ignore
    int none                  # reduction "none": grad is per row
    double scale              # backward: 1 / total weight for "mean" (0 when it is 0), else 1


cdef int _reduction(str op, object reduction) except -1:
    """0 none, 1 mean, 2 sum."""
    if reduction == "none":
        return 0
    if reduction == "mean":
        return 1
    if reduction == "sum":
        return 2
    raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none' (got {reduction!r})")


cdef int _setup(str op, CE* a, object x, object target, object weight, object ignore_index) \
        except -1:
    """Check what memory safety needs (x (M, C), target M int64, weight (C,) or None) and the
    labels' range; fill a. Returns x's type number."""
    cdef int t = float_array(op, "input", x, 2, 2, cnp.NPY_NOTYPE)
    a.M, a.C = x.shape[0], x.shape[1]
    if not cnp.PyArray_Check(target) or not cnp.PyArray_ISSIGNED(<cnp.ndarray> target) \
            or cnp.PyArray_ITEMSIZE(<cnp.ndarray> target) != 8 \
            or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray> target):  # int64 (long or long long)
        raise TypeError(f"{op}: target: expected native int64 class indices (got "
                        f"{getattr(target, 'dtype', type(target).__name__)})")
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> target) \
            or not cnp.PyArray_ISALIGNED(<cnp.ndarray> target) \
            or cnp.PyArray_SIZE(<cnp.ndarray> target) != a.M:
        raise ValueError(f"{op}: target: expected a C-contiguous, aligned array of {a.M} "
                         f"class indices (got shape {target.shape}, strides {target.strides})")
    a.t = <const cnp.int64_t*> cnp.PyArray_DATA(<cnp.ndarray> target)
    a.w = NULL
    if weight is not None:
        float_array(op, "weight", weight, 1, 1, t)
        if weight.shape[0] != a.C:
            raise ValueError(f"{op}: weight: expected shape ({a.C},) (got {weight.shape})")
        a.w = cnp.PyArray_DATA(<cnp.ndarray> weight)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)) \
            or not -2**63 <= ignore_index < 2**63:
        raise ValueError(f"{op}: ignore_index: expected an int64 (got {ignore_index!r})")
    cdef Py_ssize_t ignore = ignore_index
    a.ignore = ignore
    cdef cnp.int64_t lo = 0, hi = 0
    cdef bint any_counted = False
    cdef Py_ssize_t i
    cdef cnp.int64_t k
    with nogil:
        for i in range(a.M):
            k = a.t[i]
            if k == ignore:
                continue
            if not any_counted:
                lo = hi = k
                any_counted = True
            elif k < lo:
                lo = k
            elif k > hi:
                hi = k
    if any_counted and (lo < 0 or hi >= a.C):
        raise ValueError(f"{op}: expected target values in [0, {a.C}) (got [{lo}, {hi}])")
    return t


cdef void _forward(floating tag, const CE* a) noexcept nogil:
    """prob rows and per-row losses (0 for ignored rows)."""
    cdef const floating* x = <const floating*> a.x
    cdef floating* p = <floating*> a.y
    cdef const floating* w = <const floating*> a.w
    cdef floating* loss = <floating*> a.loss
    cdef Py_ssize_t i, j, C = a.C
    cdef cnp.int64_t k
    cdef floating m, d
    cdef double s, inv
    cdef const floating* xr
    cdef floating* pr
    # 1. each row's max m (kept in loss[i] until pass 3) and x - m in the row's place in p
    for i in range(a.M):
        xr = x + i * C
        pr = p + i * C
        m = xr[0]
        for j in range(1, C):
            if xr[j] > m:
                m = xr[j]
        loss[i] = m
        for j in range(C):
            pr[j] = xr[j] - m
    # 2. exp over the whole (M, C) block in one loop: the activations' branch-free exp
    # (_activations.pxd) vectorizes, where libm's expf took 1.6 of a (60, 10) forward's
    # 6 us (Zen 5), and a loop per row of 10 left a vector's worth to the scalar epilogue.
    # The softmax is as accurate (tests/test_kernels_loss.py). An exponent below
    # log(smallest normal) gives 0, not a subnormal: a subnormal costs a microcode assist
    # per operation (2x the row's time at |x| ~ 100), and the probability it stands for
    # (< 1.2e-38 in float) is lost in any sum anyway.
    for j in range(a.M * C):
        d = p[j]
        if floating is float:
            p[j] = tgbn_pick_f(d > -87.33, tgbn_exp_neg_f(d), 0)
        else:
            p[j] = tgbn_pick_d(d > -708.39, tgbn_exp_neg_d(d), 0)
    # 3. per row: the sum in double, in order; prob = e / sum; the loss
    for i in range(a.M):
        xr = x + i * C
        pr = p + i * C
        m = loss[i]
        s = 0.0
        for j in range(C):
            s = s + pr[j]
        inv = 1.0 / s
        for j in range(C):
            pr[j] = <floating> (pr[j] * inv)
        k = a.t[i]
        if k == a.ignore:
            loss[i] = 0
        else:
            loss[i] = <floating> ((1.0 if w == NULL else <double> w[k])
                                  * (log(s) - (<double> xr[k] - m)))


cdef void _backward(floating tag, const CE* a) noexcept nogil:
    """dx rows = scale_i * (prob - onehot(t_i)); zero for ignored rows."""
    cdef const floating* p = <const floating*> a.x
    cdef floating* dx = <floating*> a.y
    cdef const floating* w = <const floating*> a.w
    cdef const floating* g = <const floating*> a.g
    cdef Py_ssize_t i, j, C = a.C
    cdef cnp.int64_t k
    cdef floating sc
    cdef const floating* pr
    cdef floating* dr
    for i in range(a.M):
        pr = p + i * C
        dr = dx + i * C
        k = a.t[i]
        if k == a.ignore:
            for j in range(C):
                dr[j] = 0
            continue
        sc = <floating> ((<double> g[i if a.none else 0]) * a.scale
                         * (1.0 if w == NULL else <double> w[k]))
        for j in range(C):
            dr[j] = sc * pr[j]
        dr[k] -= sc


def cross_entropy_forward(logits, target, weight, ignore_index, reduction):
    """(loss, prob, total_weight) of softmax cross-entropy over logits (M, C) with M int64
    class indices: loss[i] = w[t_i] (logsumexp(x_i) - x_i[t_i]), 0 where t_i is ignore_index,
    returned as is ("none", (M,)), summed ("sum", 0-d) or divided by total_weight, the sum of
    w[t_i] over the counted rows ("mean", 0-d; nan when it is 0). prob = softmax(x) rows (M, C).
    Raises TypeError/ValueError (a target value outside [0, C) and not ignore_index)."""
    cdef CE a
    cdef int red = _reduction("cross_entropy", reduction)
    cdef int t = _setup("cross_entropy", &a, logits, target, weight, ignore_index)
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = a.M, a.C
    prob = cnp.PyArray_EMPTY(2, dims, t, 0)  # not np.empty(...): 0.2 us a call each
    losses = cnp.PyArray_EMPTY(1, dims, t, 0)
    a.x = cnp.PyArray_DATA(<cnp.ndarray> logits)
    a.y = cnp.PyArray_DATA(<cnp.ndarray> prob)
    a.loss = cnp.PyArray_DATA(<cnp.ndarray> losses)
    if a.C:  # C == 0 reaches here only with every row ignored (their loss is 0)
        with nogil:
            if t == cnp.NPY_FLOAT32:
                _forward(<float> 0, &a)
            else:
                _forward(<double> 0, &a)
    else:
        losses[...] = 0
    cdef double total = 0.0, wsum = 0.0
    cdef Py_ssize_t i
    cdef cnp.int64_t k
    cdef const float* lf = <const float*> a.loss
    cdef const double* ld = <const double*> a.loss
    with nogil:  # in row order, in double: the same sum whatever the batch
        for i in range(a.M):
            k = a.t[i]
            if k == a.ignore:
                continue
            total = total + (lf[i] if t == cnp.NPY_FLOAT32 else ld[i])
            if a.w == NULL:
                wsum = wsum + 1.0
            elif t == cnp.NPY_FLOAT32:
                wsum = wsum + (<const float*> a.w)[k]
            else:
                wsum = wsum + (<const double*> a.w)[k]
    if red == 0:
        return losses, prob, wsum
    if red == 1:
        total = total / wsum if wsum != 0 else NAN
    out = cnp.PyArray_EMPTY(0, dims, t, 0)  # the 0-d loss, as np.array(total, dtype)
    if t == cnp.NPY_FLOAT32:
        (<float*> cnp.PyArray_DATA(<cnp.ndarray> out))[0] = <float> total
    else:
        (<double*> cnp.PyArray_DATA(<cnp.ndarray> out))[0] = total
    return out, prob, wsum


def cross_entropy_backward(grad, prob, target, weight, ignore_index, reduction,
                           double total_weight):
    """dx (M, C) of cross_entropy_forward: scale_i * (prob_i - onehot(t_i)), scale_i =
    grad_i w[t_i] ("none": grad (M,)), grad w[t_i] ("sum": grad one value), grad w[t_i] /
    total_weight ("mean"; 0 when total_weight is 0, as PyTorch); 0 for ignored rows.
    Raises TypeError/ValueError."""
    cdef CE a
    cdef int red = _reduction("cross_entropy_backward", reduction)
    cdef int t = _setup("cross_entropy_backward", &a, prob, target, weight, ignore_index)
    float_array("cross_entropy_backward", "grad", grad, 0, 1, t)
    want = a.M if red == 0 else 1
    if grad.size != want:
        raise ValueError(f"cross_entropy_backward: grad: expected {want} values (got shape "
                         f"{grad.shape})")
    a.none = red == 0
    a.scale = 1.0
    if red == 1:
        a.scale = 1.0 / total_weight if total_weight != 0 else 0.0
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = a.M, a.C
    dx = cnp.PyArray_EMPTY(2, dims, t, 0)
    a.x = cnp.PyArray_DATA(<cnp.ndarray> prob)
    a.y = cnp.PyArray_DATA(<cnp.ndarray> dx)
    a.g = cnp.PyArray_DATA(<cnp.ndarray> grad)
    if a.C:
        with nogil:
            if t == cnp.NPY_FLOAT32:
                _backward(<float> 0, &a)
            else:
                _backward(<double> 0, &a)
    return dx
