"""Multi-tensor optimizer updates: every parameter of a group in one call, float32/float64.

As torch's foreach/fused optimizers: the Python loop over parameters (one NumPy temporary
and ufunc call per operation and parameter) becomes one call that walks each array once,
element by element, in place. The update rules are PyTorch's (torch.optim.SGD, Adam); the
arithmetic runs in the parameter's dtype, as PyTorch's does. Serial: an optimizer step is
memory-bound and small next to the step's GEMMs.
"""
from cython cimport floating
from libc.math cimport sqrt

cimport numpy as cnp
import numpy as np

from _arrays cimport float_array, same_shape

cnp.import_array()


ctypedef struct SGDArgs:
    double lr, weight_decay, momentum, dampening
    int nesterov, maximize


cdef void _sgd(floating tag, floating* p, const floating* g, floating* b, Py_ssize_t n,
               int fresh, const SGDArgs* a) noexcept nogil:
    """PyTorch's SGD on one array: d = (-)g + wd p; b = d (fresh) or mu b + (1 - damp) d;
    d = d + mu b (nesterov) or b; p -= lr d. b is NULL without momentum."""
    cdef Py_ssize_t i
    cdef floating lr = <floating> a.lr, wd = <floating> a.weight_decay
    cdef floating mu = <floating> a.momentum, keep = <floating> (1.0 - a.dampening)
    cdef floating d
    if b == NULL and wd == 0:  # plain SGD, the paper's: one fused pass
        if a.maximize:
            for i in range(n):
                p[i] = p[i] + lr * g[i]
        else:
            for i in range(n):
                p[i] = p[i] - lr * g[i]
        return
    for i in range(n):
        d = -g[i] if a.maximize else g[i]
        if wd != 0:
            d = d + wd * p[i]
        if b != NULL:
            if fresh:
                b[i] = d
            else:
                b[i] = mu * b[i] + keep * d
            d = d + mu * b[i] if a.nesterov else b[i]
        p[i] = p[i] - lr * d


cdef void* _data(object a):
    return cnp.PyArray_DATA(<cnp.ndarray> a)


cdef inline int _array(str op, str name, Py_ssize_t k, object a, int typenum) except -1:
    """float_array(op, f"{name}[{k}]", a, 0, 32, typenum), the name formatted only when the
    check fails: this runs for every array of every step, and formatting two names per
    parameter was most of a step's overhead (0.2 us a parameter)."""
    cdef cnp.ndarray x
    cdef int t
    if cnp.PyArray_Check(a):
        x = <cnp.ndarray> a
        t = cnp.PyArray_TYPE(x)
        if (t == typenum or (typenum == cnp.NPY_NOTYPE
                             and (t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64))) \
                and cnp.PyArray_ISNOTSWAPPED(x) and cnp.PyArray_NDIM(x) <= 32 \
                and cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_ISALIGNED(x):
            return t
    return float_array(op, f"{name}[{k}]", a, 0, 32, typenum)


cdef inline int _same_shape(str op, str name, Py_ssize_t k, object a, object like) except -1:
    """same_shape(op, f"{name}[{k}]", a, like), the name formatted only when it fails."""
    cdef cnp.ndarray x = <cnp.ndarray> a
    cdef cnp.ndarray y = <cnp.ndarray> like
    cdef int d
    if cnp.PyArray_NDIM(x) == cnp.PyArray_NDIM(y):
        for d in range(cnp.PyArray_NDIM(x)):
            if cnp.PyArray_DIM(x, d) != cnp.PyArray_DIM(y, d):
                break
        else:
            return 0
    return same_shape(op, f"{name}[{k}]", a, like)


def sgd_step(list params, list grads, list momentum_buffers, double lr, double weight_decay,
             double momentum, double dampening, bint nesterov, bint maximize):
    """One SGD step over lists of arrays, in place (torch.optim.SGD's rule). params[i] and
    grads[i] are C-contiguous, of one dtype and shape; with momentum != 0, momentum_buffers
    (a list as long as params) holds each buffer or None, and a None is replaced by a new
    buffer (set to the first step's direction, as PyTorch); without momentum it may be None.
    Raises TypeError/ValueError before anything is updated."""
    cdef Py_ssize_t k, n = len(params)
    cdef SGDArgs a
    a.lr, a.weight_decay, a.momentum, a.dampening = lr, weight_decay, momentum, dampening
    a.nesterov, a.maximize = nesterov, maximize
    if len(grads) != n:
        raise ValueError(f"sgd_step: grads: expected {n} arrays, one per parameter "
                         f"(got {len(grads)})")
    use_buf = momentum != 0
    if use_buf and (momentum_buffers is None or len(momentum_buffers) != n):
        raise ValueError(f"sgd_step: momentum_buffers: expected a list of {n} arrays or None "
                         f"(got {momentum_buffers!r:.60})")
    cdef list types = []
    cdef list fresh = []
    for k in range(n):  # every check before the first update: an error changes nothing
        p = params[k]
        t = _array("sgd_step", "params", k, p, cnp.NPY_NOTYPE)
        _array("sgd_step", "grads", k, grads[k], t)
        _same_shape("sgd_step", "grads", k, grads[k], p)
        types.append(t)
        if use_buf:
            b = momentum_buffers[k]
            fresh.append(b is None)
            if b is not None:
                _array("sgd_step", "momentum_buffers", k, b, t)
                _same_shape("sgd_step", "momentum_buffers", k, b, p)
    if use_buf:
        for k in range(n):
            if fresh[k]:
                momentum_buffers[k] = np.empty_like(params[k])
    cdef void* pp
    cdef void* gp
    cdef void* bp
    cdef Py_ssize_t size
    cdef int f, typ
    for k in range(n):
        pp, gp = _data(params[k]), _data(grads[k])
        bp = _data(momentum_buffers[k]) if use_buf else NULL
        size = params[k].size
        f = fresh[k] if use_buf else 0
        typ = types[k]
        with nogil:
            if typ == cnp.NPY_FLOAT32:
                _sgd(<float> 0, <float*> pp, <const float*> gp, <float*> bp, size, f, &a)
            else:
                _sgd(<double> 0, <double*> pp, <const double*> gp, <double*> bp, size, f, &a)


ctypedef struct AdamArgs:
    double lr, beta1, beta2, eps, weight_decay
    double step_size, bc2_sqrt    # lr / (1 - beta1^t), sqrt(1 - beta2^t) of this parameter
    int amsgrad, maximize, decoupled


cdef void _adam(floating tag, floating* p, const floating* g, floating* m, floating* v,
                floating* vmax, Py_ssize_t n, const AdamArgs* a) noexcept nogil:
    """PyTorch's Adam/AdamW on one array (vmax is NULL without amsgrad)."""
    cdef Py_ssize_t i
    cdef floating wd = <floating> a.weight_decay, shrink = <floating> (1.0 - a.lr * a.weight_decay)
    cdef floating b1 = <floating> a.beta1, b2 = <floating> a.beta2
    cdef floating c1 = <floating> (1.0 - a.beta1), c2 = <floating> (1.0 - a.beta2)
    cdef floating eps = <floating> a.eps, step = <floating> a.step_size
    cdef floating bc2 = <floating> a.bc2_sqrt
    cdef floating d, vv
    for i in range(n):
        d = -g[i] if a.maximize else g[i]
        if wd != 0:
            if a.decoupled:
                p[i] = p[i] * shrink
            else:
                d = d + wd * p[i]
        m[i] = b1 * m[i] + c1 * d
        v[i] = b2 * v[i] + c2 * (d * d)
        vv = v[i]
        if vmax != NULL:
            if vv > vmax[i] or vv != vv:  # NaN propagates, as torch.maximum
                vmax[i] = vv
            vv = vmax[i]
        p[i] = p[i] - step * (m[i] / (sqrt(vv) / bc2 + eps))


def adam_step(list params, list grads, list exp_avgs, list exp_avg_sqs, list max_exp_avg_sqs,
              list steps, double lr, double beta1, double beta2, double eps,
              double weight_decay, bint amsgrad, bint maximize, bint decoupled_weight_decay):
    """One Adam (AdamW with decoupled_weight_decay) step over lists of arrays, in place
    (torch.optim.Adam's rule); steps[i] is parameter i's step count t after this step (bias
    corrections 1 - beta^t); max_exp_avg_sqs is a list with amsgrad, else may be None.
    Raises TypeError/ValueError before anything is updated."""
    cdef Py_ssize_t k, n = len(params)
    cdef AdamArgs a
    a.lr, a.beta1, a.beta2, a.eps, a.weight_decay = lr, beta1, beta2, eps, weight_decay
    a.amsgrad, a.maximize, a.decoupled = amsgrad, maximize, decoupled_weight_decay
    lists = {"grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs, "steps": steps}
    if amsgrad:
        lists["max_exp_avg_sqs"] = max_exp_avg_sqs
    for name, lst in lists.items():
        if lst is None or len(lst) != n:
            raise ValueError(f"adam_step: {name}: expected a list of {n}, one per parameter "
                             f"(got {lst!r:.60})")
    cdef list types = []
    for k in range(n):  # every check before the first update: an error changes nothing
        p = params[k]
        t = _array("adam_step", "params", k, p, cnp.NPY_NOTYPE)
        types.append(t)
        for name, lst in lists.items():
            if name != "steps":
                _array("adam_step", name, k, lst[k], t)
                _same_shape("adam_step", name, k, lst[k], p)
        if not isinstance(steps[k], int) or steps[k] < 1:
            raise ValueError(f"adam_step: steps[{k}]: expected an int >= 1 (got {steps[k]!r})")
    cdef void* pp
    cdef void* gp
    cdef void* mp
    cdef void* vp
    cdef void* xp
    cdef Py_ssize_t size
    cdef int typ
    for k in range(n):
        a.step_size = lr / (1.0 - beta1 ** steps[k])
        a.bc2_sqrt = sqrt(1.0 - beta2 ** steps[k])
        pp, gp = _data(params[k]), _data(grads[k])
        mp, vp = _data(exp_avgs[k]), _data(exp_avg_sqs[k])
        xp = _data(max_exp_avg_sqs[k]) if amsgrad else NULL
        size = params[k].size
        typ = types[k]
        with nogil:
            if typ == cnp.NPY_FLOAT32:
                _adam(<float> 0, <float*> pp, <const float*> gp, <float*> mp, <float*> vp,
                      <float*> xp, size, &a)
            else:
                _adam(<double> 0, <double*> pp, <const double*> gp, <double*> mp, <double*> vp,
                      <double*> xp, size, &a)
