"""Stateless ops, as in ``torch.nn.functional``: ``import tinygrad_bn.functional as F``."""

import math
import numbers

import numpy as np

from . import jit as _jit
from . import ops
from .jit import replayed
from .tensor import FLOAT_DTYPES, Tensor, _promote, cat, where

# ---------------------------------------------------------------- argument checks
# The user-facing checks of F and nn, each written once; the ops behind them assume valid input.


def _tensor(x, name, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected {name} to be a Tensor (got {type(x).__name__})")
    return x


def _integer(value, name, op, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{op}: expected {name} to be an integer >= {minimum} (got {value!r})")
    return int(value)


def _pair(value, name, op, minimum):
    """(a, b) from an int or a pair of ints, each >= minimum."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{op}: expected {name} to be an int or a pair of ints (got {value!r})")
    return tuple(_integer(v, name, op, minimum) for v in pair)


def _probability(p, op):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: expected a probability p between 0 and 1 (got {p!r})")
    return float(p)


def _positive(value, name, op):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{op}: expected {name} to be a number > 0 (got {value!r})")
    return float(value)


def _reduction(reduction, op):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none' (got {reduction!r})")
    return reduction


def _window(op, x, kernel_size, stride, padding):
    """Check that the window fits the (N, C, H, W) input: the output is at least 1 x 1."""
    h, w = x.shape[2:]
    oh = (h + 2 * padding[0] - kernel_size[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel_size[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: expected a window {kernel_size} (stride {stride}, padding {padding}) that "
            f"fits the input size {(h, w)} (got output size {(oh, ow)})"
        )


def _dims(x, ndims, op, layout=""):
    if x.ndim not in ndims:
        names = [f"{d}D" for d in ndims]
        want = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise ValueError(f"{op}: expected {want} input{layout} (got {x.ndim}D input)")


# ---------------------------------------------------------------- activations


def relu(x):
    return _tensor(x, "input", "relu").relu()


def sigmoid(x):
    return _tensor(x, "input", "sigmoid").sigmoid()


def tanh(x):
    return _tensor(x, "input", "tanh").tanh()


def softmax(x, dim=-1):
    """exp(x) / sum(exp(x)) along dim (any dim), computed from the stable log_softmax."""
    return _tensor(x, "input", "softmax").softmax(dim)


def log_softmax(x, dim=-1):
    """x - logsumexp(x) along dim (any dim), shifted by the max so exp never overflows."""
    return _tensor(x, "input", "log_softmax").log_softmax(dim)


def _number(value, name, op):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{op}: expected {name} to be a number (got {value!r})")
    return float(value)


def leaky_relu(x, negative_slope=0.01):
    """x for x > 0, else negative_slope * x (the gradient at 0 is negative_slope, as PyTorch)."""
    _tensor(x, "input", "leaky_relu")
    slope = _number(negative_slope, "negative_slope", "leaky_relu")
    return where(x > 0, x, x * slope)


def elu(x, alpha=1.0):
    """x for x > 0, else alpha (exp(x) - 1); exp sees only x <= 0, so it never overflows."""
    _tensor(x, "input", "elu")
    alpha = _number(alpha, "alpha", "elu")
    return where(x > 0, x, (x.clamp(max=0).exp() - 1) * alpha)


def gelu(x, approximate="none"):
    """x Phi(x) with Phi the normal CDF (approximate='none', through erf), or PyTorch's
    tanh approximation (approximate='tanh'). erf runs as a Python loop (math.erf): about
    0.1 us per element."""
    _tensor(x, "input", "gelu")
    if approximate == "none":
        return x * 0.5 * (1 + ops.Erf.apply(x * (1 / math.sqrt(2))))
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
        return x * 0.5 * (1 + inner.tanh())
    raise ValueError(f"gelu: expected approximate 'none' or 'tanh' (got {approximate!r})")


def silu(x):
    """x * sigmoid(x) (swish)."""
    return _tensor(x, "input", "silu") * x.sigmoid()


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold, as PyTorch."""
    _tensor(x, "input", "softplus")
    beta = _positive(beta, "beta", "softplus")
    threshold = _number(threshold, "threshold", "softplus")
    z = (x * beta).clamp(max=threshold)  # exp only sees values that cannot overflow
    return where(x * beta > threshold, x, ops.Log1p.apply(z.exp()) * (1 / beta))


def hardtanh(x, min_val=-1.0, max_val=1.0):
    """x clamped to [min_val, max_val]; the gradient is 0 at and beyond the ends, as PyTorch."""
    _tensor(x, "input", "hardtanh")
    lo, hi = _number(min_val, "min_val", "hardtanh"), _number(max_val, "max_val", "hardtanh")
    if lo > hi:
        raise ValueError(f"hardtanh: expected min_val <= max_val (got {lo} and {hi})")
    return where(x <= lo, lo, where(x >= hi, hi, x))


def log_sigmoid(x):
    """log(sigmoid(x)), stable for large |x|."""
    return ops.LogSigmoid.apply(_tensor(x, "input", "log_sigmoid"))


# ---------------------------------------------------------------- losses


def _reduce(loss, reduction):
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _class_weight(weight, c, dtype, op):
    if weight is None:
        return None
    w = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
    if w.shape != (c,):
        raise ValueError(f"{op}: expected weight of shape ({c},), one per class (got {w.shape})")
    return w.astype(dtype)


def _class_last(x):
    """(N, C, d1, ...) -> (N * d1 * ..., C); (C,) -> (1, C); (N, C) as it is."""
    if x.ndim == 1:
        return x.reshape(1, -1)
    if x.ndim == 2:
        return x
    return x.permute(0, *range(2, x.ndim), 1).reshape(-1, x.shape[1])


def _class_indices(target, input_shape, op):
    """target as flat int64 class indices, after checking that it holds integers in the
    input's shape less its class dim (TypeError, ValueError); the range is not checked."""
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    want = () if len(input_shape) == 1 else (input_shape[0],) + tuple(input_shape[2:])
    if t.dtype.kind == "f":
        if not np.all(np.mod(t, 1) == 0):
            raise TypeError(
                f"{op}: expected target to hold integer class indices (got non-integer floats)"
            )
    elif t.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected target of integer class indices (got dtype {t.dtype})")
    if t.shape != want:
        raise ValueError(f"{op}: expected target of shape {want} (got {t.shape})")
    return t.astype(np.int64).reshape(-1)


@replayed  # a tg.jit replay checks and converts each call's labels again
def _labels(target, input_shape, ignore_index, op):
    """The integer class indices of the input's shape less its class dim, flattened; every
    value but ignore_index must be a class. (NLLLoss masks the ignored ones, so the graph
    does not depend on whether a batch has any: a tg.jit plan holds for every batch.)"""
    t = _class_indices(target, input_shape, op)
    c = input_shape[0 if len(input_shape) == 1 else 1]
    if not t.size:
        return t
    lo, hi = t.min(), t.max()
    if 0 <= lo and hi < c:
        return t  # the usual case, decided without another pass over t
    valid = t[t != ignore_index]
    if valid.size and (valid.min() < 0 or valid.max() >= c):
        raise ValueError(
            f"{op}: expected target values in [0, {c}) (got [{valid.min()}, {valid.max()}])"
        )
    return t


@replayed  # a tg.jit replay converts each call's labels again (the kernel checks their range)
def _converted_labels(target, input_shape, op):
    return _class_indices(target, input_shape, op)


def _own_labels(target, input_shape):
    """target's own array when it is already the kernel's (native int64, C-contiguous, the
    input's shape less its class dim), else None. Passed to the op as it is, it is an argument
    of a tg.jit plan, read afresh on each replay: no host step, and the kernel's range check
    is the only one."""
    t = target.data if isinstance(target, Tensor) else target
    if type(t) is not np.ndarray or t.dtype != np.int64 or not t.flags.c_contiguous:
        return None
    want = () if len(input_shape) == 1 else (input_shape[0],) + tuple(input_shape[2:])
    return t if t.shape == want and t.flags.aligned else None


def _ignore_index(ignore_index, op):
    if (
        isinstance(ignore_index, bool)
        or not isinstance(ignore_index, (int, np.integer))
        or not -(2**63) <= ignore_index < 2**63
    ):
        raise ValueError(f"{op}: expected ignore_index to be an integer (got {ignore_index!r})")
    return int(ignore_index)


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of integer targets under log-probabilities (C,), (N, C) or
    (N, C, d1, ...) with target (), (N,) or (N, d1, ...).

    weight (C,) scales each class; targets equal to ignore_index count for nothing; the mean
    divides by the total weight of the targets counted, as PyTorch (nan when none count).
    """
    _tensor(log_probs, "input", "nll_loss")
    if log_probs.ndim < 1:
        raise ValueError("nll_loss: expected input (C,), (N, C) or (N, C, d1, ...) (got 0D input)")
    _reduction(reduction, "nll_loss")
    ignore_index = _ignore_index(ignore_index, "nll_loss")
    t = _labels(target, log_probs.shape, ignore_index, "nll_loss")
    c = log_probs.shape[0 if log_probs.ndim == 1 else 1]
    w = _class_weight(weight, c, log_probs.dtype, "nll_loss")
    out = ops.NLLLoss.apply(
        _class_last(log_probs),
        target=t,
        class_weight=w,
        ignore_index=ignore_index,
        reduction=reduction,
    )
    if reduction == "none":
        shape = () if log_probs.ndim == 1 else (log_probs.shape[0],) + log_probs.shape[2:]
        return out.reshape(*shape)
    return out


def cross_entropy(
    logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """Softmax cross-entropy of logits (C,), (N, C) or (N, C, d1, ...), with PyTorch's two
    kinds of target: integer class indices (the input's shape less the class dim), or class
    probabilities (the input's shape, float). weight, ignore_index (class indices only) and
    label_smoothing (mixing the target with the uniform distribution) as PyTorch. Class indices
    without label smoothing, the common case, run as one fused op (ops.CrossEntropy)."""
    op = "cross_entropy"
    _tensor(logits, "input", op)
    if logits.ndim < 1:
        raise ValueError(f"{op}: expected input (C,), (N, C) or (N, C, d1, ...) (got 0D input)")
    _reduction(reduction, op)
    eps = label_smoothing
    if not (type(eps) is float and 0.0 <= eps <= 1.0):  # the fast, common case first
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0.0 <= eps <= 1.0:
            raise ValueError(f"{op}: expected label_smoothing between 0 and 1 (got {eps!r})")
    cdim = 0 if logits.ndim == 1 else 1
    c = logits.shape[cdim]
    if not eps and not (isinstance(target, Tensor) and target.dtype.kind == "f"):
        # the common case: class indices, one fused op (ops.CrossEntropy)
        ignore_index = _ignore_index(ignore_index, op)
        t = _own_labels(target, logits.shape)
        if t is None:
            t = _converted_labels(target, logits.shape, op)
        out = ops.CrossEntropy.apply(
            _class_last(logits),
            target=t,
            class_weight=_class_weight(weight, c, logits.dtype, op),
            ignore_index=ignore_index,
            reduction=reduction,
        )
        if reduction == "none":
            return out.reshape(*(() if cdim == 0 else (logits.shape[0],) + logits.shape[2:]))
        return out
    logp = logits.log_softmax(cdim)
    w = _class_weight(weight, c, logits.dtype, op)
    wshape = (c,) + (1,) * (logits.ndim - cdim - 1)
    if isinstance(target, Tensor) and target.dtype.kind == "f" and target.shape == logits.shape:
        t = target if target.dtype == logits.dtype else target.astype(logits.dtype)
        if eps:
            t = t * (1 - eps) + eps / c
        terms = logp * t if w is None else logp * t * Tensor(w.reshape(wshape))
        loss = -terms.sum(axis=cdim)
        if reduction == "mean":
            return loss.sum() * (1.0 / (logits.data.size // c) if logits.data.size else np.nan)
        return loss.sum() if reduction == "sum" else loss
    nll = nll_loss(logp, target, weight, ignore_index, reduction)
    if not eps:
        return nll
    _jit.host_read("cross_entropy with label_smoothing and class-index targets")
    t = _labels(target, logits.shape, ignore_index, op)
    counted = (t != ignore_index).reshape(logp.shape[:cdim] + logp.shape[cdim + 1 :])
    terms = logp if w is None else logp * Tensor(w.reshape(wshape))
    smooth = where(Tensor(counted), -terms.sum(axis=cdim), 0.0)
    if reduction == "mean":
        denom = counted.sum() if w is None else w[t[t != ignore_index]].sum()
        smooth = smooth.sum() * (1.0 / denom if denom else np.nan)
    elif reduction == "sum":
        smooth = smooth.sum()
    return nll * (1 - eps) + smooth * (eps / c)


def _pairwise(input, target, op):
    """(input, target) for an elementwise loss: same shape, as PyTorch (which only warns
    when they broadcast, a common silent bug)."""
    _tensor(input, "input", op)
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=input.dtype))
    if target.shape != input.shape:
        raise ValueError(
            f"{op}: expected target of the input's shape {input.shape} (got {target.shape})"
        )
    return input, target


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum, or none) of (input - target)^2, elementwise."""
    _tensor(input, "input", "mse_loss")
    _reduction(reduction, "mse_loss")
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    """Mean (or sum, or none) of |input - target|, elementwise."""
    _tensor(input, "input", "l1_loss")
    _reduction(reduction, "l1_loss")
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-w (t log x + (1 - t) log(1 - x)) for probabilities x in [0, 1], each log clamped at
    -100 as PyTorch."""
    input, target = _pairwise(input, target, "binary_cross_entropy")
    _reduction(reduction, "binary_cross_entropy")
    x = input.data
    if x.size and not (x.min() >= 0 and x.max() <= 1):
        raise ValueError("binary_cross_entropy: expected input values between 0 and 1")
    w = np.ones((), input.dtype) if weight is None else np.asarray(weight, dtype=input.dtype)
    w = np.broadcast_to(w, input.shape)
    t = target if target.dtype == input.dtype else target.astype(input.dtype)
    return _reduce(ops.BinaryCrossEntropy.apply(input, t, Tensor(w)), reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """binary_cross_entropy(sigmoid(input), target) from logits, stably:
    -(pos_weight t log sigmoid(x) + (1 - t) log sigmoid(-x)), times weight. pos_weight
    broadcasts against the last (class) dim."""
    input, target = _pairwise(input, target, "binary_cross_entropy_with_logits")
    _reduction(reduction, "binary_cross_entropy_with_logits")
    target = target if target.dtype == input.dtype else target.astype(input.dtype)
    pos = target if pos_weight is None else target * pos_weight
    loss = -(pos * ops.LogSigmoid.apply(input) + (1 - target) * ops.LogSigmoid.apply(-input))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def pad(x, pad, mode="constant", value=0.0):
    """Pad the last len(pad) // 2 dims: pad = (left, right) for the last dim, then the one
    before, ... as PyTorch. mode 'constant' (with value) pads any dims; 'reflect' (mirror
    without the edge), 'replicate' (edge) and 'circular' (wrap) need pads that fit in the
    dim (reflect: < size; circular: <= size), as PyTorch. Negative constant pads crop;
    the other modes take pads >= 0 here."""
    _tensor(x, "input", "pad")
    low = None if mode == "constant" else 0  # constant pads < 0 crop, as PyTorch
    pads = [
        _integer(p, "pad", "pad", -(2**62) if low is None else 0)
        for p in (pad if isinstance(pad, (tuple, list)) else [pad])
    ]
    if len(pads) % 2 or len(pads) // 2 > x.ndim:
        raise ValueError(
            f"pad: expected an even number of pads, at most 2 per dim of the {x.ndim}D input "
            f"(got {len(pads)})"
        )
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(
            f"pad: expected mode 'constant', 'reflect', 'replicate' or 'circular' (got {mode!r})"
        )
    width = [(0, 0)] * x.ndim
    for i in range(len(pads) // 2):
        width[x.ndim - 1 - i] = (pads[2 * i], pads[2 * i + 1])
    if mode == "constant":
        if any(a < 0 or b < 0 for a, b in width):
            crop = tuple(slice(-min(a, 0), n + min(b, 0)) for (a, b), n in zip(width, x.shape))
            if any(c.stop < c.start for c in crop):
                raise ValueError(f"pad: expected negative pads that leave a size >= 0 (got {pads})")
            x, width = x[crop], [(max(a, 0), max(b, 0)) for a, b in width]
        return ops.Pad.apply(x, pad_width=tuple(width), value=_number(value, "value", "pad"))
    out = x
    for d, (a, b) in enumerate(width):
        if a == 0 and b == 0:
            continue
        n = x.shape[d]
        limit = n - 1 if mode == "reflect" else n if mode == "circular" else None
        if n == 0 or (limit is not None and max(a, b) > limit):
            raise ValueError(
                f"pad: expected {mode} pads of dim {d} (size {n}) at most {limit} (got {(a, b)})"
            )
        i = np.arange(-a, n + b)
        if mode == "reflect":
            i = np.abs(i)
            i = np.where(i > n - 1, 2 * (n - 1) - i, i)
        elif mode == "replicate":
            i = np.clip(i, 0, n - 1)
        else:
            i = np.mod(i, n)
        out = ops.Take.apply(out, indices=i, axis=d)
    return out


# ---------------------------------------------------------------- layers


def linear(x, weight, bias=None):
    """x @ weight.T + bias over the last axis: (*, in) -> (*, out), weight (out, in)."""
    _tensor(x, "input", "linear")
    _tensor(weight, "weight", "linear")
    if x.ndim < 1 or weight.ndim != 2:
        raise ValueError(
            f"linear: expected input (*, in_features) and 2D weight (out_features, in_features) "
            f"(got {x.shape} and {weight.shape})"
        )
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: expected input's last dim to equal weight's in_features {weight.shape[1]} "
            f"(got {x.shape[-1]})"
        )
    if bias is None:
        return ops.Affine.apply(*_promote(x, weight))
    _tensor(bias, "bias", "linear")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: expected bias of shape ({weight.shape[0]},) (got {bias.shape})")
    return ops.Affine.apply(*_promote(x, weight, bias))


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation over (N, C, H, W) with weight (O, C / groups, KH, KW) ->
    (N, O, OH, OW); padding is an int, a pair, 'valid' (0) or 'same' (stride 1; an odd total
    pads one more at the bottom/right, as PyTorch).

    Every case runs the compiled kernel: dilation > 1 convolves with the weight spread out
    by zeros (exact; it costs the zeros' multiplies, about (d (k - 1) + 1)^2 / k^2 times the
    work), and groups > 1 is one kernel call per group.
    """
    op = "conv2d"
    _tensor(x, "input", op)
    _tensor(weight, "weight", op)
    _dims(x, (4,), op, " (N, C, H, W)")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: expected 4D weight (O, C, KH, KW) (got shape {weight.shape})")
    groups = _integer(groups, "groups", op, 1)
    if x.shape[1] != weight.shape[1] * groups:
        per = f" ({groups} groups)" if groups > 1 else ""
        raise ValueError(
            f"conv2d: expected input with {weight.shape[1] * groups} channels, as weight "
            f"{weight.shape}{per} (got {x.shape[1]} channels)"
        )
    if weight.shape[0] % groups:
        raise ValueError(
            f"conv2d: expected out channels divisible by groups={groups} (got weight "
            f"{weight.shape})"
        )
    stride = _pair(stride, "stride", op, 1)
    dilation = _pair(dilation, "dilation", op, 1)
    k = tuple(d * (s - 1) + 1 for d, s in zip(dilation, weight.shape[2:]))  # dilated size
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' expects stride 1 (got stride {stride})")
        extra = [(s - 1) % 2 for s in k]
        if any(extra):  # the odd one out goes at the end, as PyTorch
            x = pad(x, (0, extra[1], 0, extra[0]))
        padding = ((k[0] - 1) // 2, (k[1] - 1) // 2)
    else:
        if isinstance(padding, str):
            raise ValueError(f"conv2d: expected padding 'valid', 'same' or ints (got {padding!r})")
        padding = _pair(padding, "padding", op, 0)
    _window(op, x, k, stride, padding)
    if bias is not None:
        _tensor(bias, "bias", op)
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"conv2d: expected bias of shape ({weight.shape[0]},) (got {bias.shape})"
            )
    if dilation != (1, 1):
        weight = ops.Dilate.apply(weight, dilation=dilation)
    if groups > 1:
        xs, ws = x.chunk(groups, 1), weight.chunk(groups, 0)
        bs = bias.chunk(groups, 0) if bias is not None else [None] * groups
        return cat([conv2d(a, w, b, stride, padding) for a, w, b in zip(xs, ws, bs)], 1)
    if bias is None:
        return ops.Convolution.apply(*_promote(x, weight), stride=stride, padding=padding)
    return ops.Convolution.apply(*_promote(x, weight, bias), stride=stride, padding=padding)


def _pool_size(size, k, stride, padding, ceil_mode):
    """PyTorch's pooling output size; with ceil_mode the last window must start inside the
    input or its left padding."""
    span = size + 2 * padding - k
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_args(op, x, kernel_size, stride, padding, ceil_mode):
    _tensor(x, "input", op)
    _dims(x, (4,), op, " (N, C, H, W)")
    k = _pair(kernel_size, "kernel_size", op, 1)
    stride = k if stride is None else _pair(stride, "stride", op, 1)
    padding = _pair(padding, "padding", op, 0)
    if padding[0] > k[0] // 2 or padding[1] > k[1] // 2:
        raise ValueError(f"{op}: expected padding at most half the kernel size {k} (got {padding})")
    out = tuple(
        _pool_size(n, kk, s, p, ceil_mode) for n, kk, s, p in zip(x.shape[2:], k, stride, padding)
    )
    if out[0] < 1 or out[1] < 1:
        raise ValueError(
            f"{op}: expected a window {k} (stride {stride}, padding {padding}) that "
            f"fits the input size {x.shape[2:]} (got output size {out})"
        )
    return k, stride, padding, out


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """Max over kernel_size windows of (N, C, H, W); stride defaults to kernel_size.

    Runs the compiled kernel; ceil_mode pads the bottom/right with -inf first. With
    return_indices, also the int64 index h * W + w of each maximum in its (H, W) plane.
    """
    k, stride, padding, out = _pool_args("max_pool2d", x, kernel_size, stride, padding, ceil_mode)
    h, w = x.shape[2:]
    extra = [
        max((o - 1) * s + kk - 2 * p - n, 0)
        for o, s, kk, p, n in zip(out, stride, k, padding, (h, w))
    ]
    xp = pad(x, (0, extra[1], 0, extra[0]), value=-np.inf) if any(extra) else x
    found = [] if return_indices else None
    y = ops.MaxPool2DWithIndices.apply(
        xp, kernel_size=k, stride=stride, padding=padding, indices=found
    )
    if not return_indices:
        return y
    idx = found[0]
    if extra[1]:  # flat indices of the padded plane -> of the input's plane
        idx = idx // (w + extra[1]) * w + idx % (w + extra[1])
    return y, Tensor._from_op(idx, None)


def avg_pool2d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Mean over kernel_size windows of (N, C, H, W), with PyTorch's divisors: the window
    size clipped to the padded input (count_include_pad=True) or the count of real elements
    (False), or divisor_override. NumPy only (kh * kw strided adds; no compiled kernel)."""
    op = "avg_pool2d"
    k, stride, padding, out = _pool_args(op, x, kernel_size, stride, padding, ceil_mode)
    if divisor_override is not None:
        divisor_override = _integer(divisor_override, "divisor_override", op, 1)
    return ops.AvgPool2d.apply(
        x,
        kernel_size=k,
        stride=stride,
        padding=padding,
        out_size=out,
        count_include_pad=bool(count_include_pad),
        divisor_override=divisor_override,
    )


def adaptive_avg_pool2d(x, output_size):
    """Mean over PyTorch's adaptive bins [floor(i H / OH), ceil((i + 1) H / OH)) of
    (N, C, H, W) -> (N, C, OH, OW); an entry None keeps that size. Two matmuls with fixed
    averaging matrices, so it runs the compiled matmul."""
    op = "adaptive_avg_pool2d"
    _tensor(x, "input", op)
    _dims(x, (4,), op, " (N, C, H, W)")
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(sizes) != 2:
        raise ValueError(f"{op}: expected an int or a pair output_size (got {output_size!r})")
    sizes = [
        n if o is None else _integer(o, "output_size", op, 1) for o, n in zip(sizes, x.shape[2:])
    ]
    rows, cols = (_bins(o, n, x.dtype) for o, n in zip(sizes, x.shape[2:]))
    return Tensor(rows) @ (x @ Tensor(cols.T))


def _bins(out, size, dtype):
    """(out, size) matrix averaging PyTorch's adaptive bin i over its inputs."""
    m = np.zeros((out, size), dtype)
    for i in range(out):
        a, b = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def dropout(x, p=0.5, training=True, generator=None):
    """Zero each element with probability p and scale the rest by 1/(1-p) (train only).

    `generator` is an int seed or numpy Generator; the default is tinygrad_bn's own
    (see tinygrad_bn.manual_seed).
    """
    _tensor(x, "input", "dropout")
    p = _probability(p, "dropout")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return ops.Dropout.apply(x, p=p, generator=generator)


def batch_norm(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    """Batch normalization (Ioffe & Szegedy 2015) over (N, C), (N, C, L), (N, C, H, W) or
    (N, C, D, H, W).

    Statistics are per channel C, over N (and L or H, W). In training the batch mean and
    the *biased* batch variance normalize x (Algorithm 1), and, when running_mean /
    running_var are given, they are updated in place with momentum using the *unbiased*
    variance m/(m-1) var_B (Algorithm 2):  r <- (1 - momentum) r + momentum * stat.
    In eval (training=False) the running estimates normalize x and nothing changes.
    An empty input (N = 0, or an empty axis) gives an empty output and changes nothing.

    Raises ValueError for wrong ndim or channel count, for eps <= 0, or for one value per
    channel in training; TypeError for non-Tensor input.
    """
    _tensor(x, "input", "batch_norm")
    _dims(x, (2, 3, 4, 5), "batch_norm")
    eps = _positive(eps, "eps", "batch_norm")
    c = x.shape[1]
    weight = _per_channel(weight, c, x.dtype, 1.0, "weight")
    bias = _per_channel(bias, c, x.dtype, 0.0, "bias")
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and r.shape != (c,):
            raise ValueError(f"batch_norm: expected {name} of shape ({c},) (got {r.shape})")
    if x.data.size == 0:
        # PyTorch: nothing to normalize and no statistic to update; composed from
        # primitives so weight and bias still get their (zero) gradients
        shape = (1, c) + (1,) * (x.ndim - 2)
        return x * weight.reshape(shape) + bias.reshape(shape)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError(
                "batch_norm: expected running_mean and running_var when training=False (got None)"
            )
        return ops.BatchNormEval.apply(
            x, weight, bias, _const(running_mean, x.dtype), _const(running_var, x.dtype), eps=eps
        )
    if c and x.data.size // c <= 1:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training "
            f"(got input size {x.shape})"
        )
    return ops.BatchNormTrain.apply(
        x,
        weight,
        bias,
        eps=eps,
        momentum=momentum,
        running_mean=_buffer(running_mean, "running_mean"),
        running_var=_buffer(running_var, "running_var"),
    )


def _per_channel(t, c, dtype, fill, name):
    if t is None:
        return Tensor(np.full(c, fill, dtype=dtype))
    _tensor(t, name, "batch_norm")
    if t.shape != (c,):
        raise ValueError(f"batch_norm: expected {name} of shape ({c},) (got {t.shape})")
    return t if t.dtype == dtype else t.astype(dtype)


def _const(t, dtype):
    data = t.data if isinstance(t, Tensor) else np.asarray(t)
    return Tensor(data.astype(dtype, copy=False))


def _buffer(t, name):
    """The ndarray a running estimate is updated in (in place), or None."""
    if t is None:
        return None
    data = t.data if isinstance(t, Tensor) else t
    if not isinstance(data, np.ndarray) or data.dtype not in FLOAT_DTYPES:
        raise TypeError(f"batch_norm: expected {name} to be a float Tensor or ndarray (got {t!r})")
    return data


# ---------------------------------------------------------------- normalization over features
# LayerNorm, GroupNorm and InstanceNorm are composed from Tensor ops (mean, arithmetic, pow),
# so their backward comes from autodiff; only batch norm has a fused kernel.


def _float_input(x, op):
    _tensor(x, "input", op)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: expected a float32 or float64 input (got {x.dtype})")
    return x


def _normalize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over `axes`, with the biased variance (divide by m)."""
    centered = x - x.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return centered * (var + eps) ** -0.5


def _affine(y, weight, bias, shape, view, op):
    """y * weight + bias (either may be None), both of `shape`, broadcast as `view`."""
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _tensor(t, name, op)
            if t.shape != shape:
                raise ValueError(f"{op}: expected {name} of shape {shape} (got {t.shape})")
    if weight is not None:
        y = y * weight.reshape(view)
    if bias is not None:
        y = y + bias.reshape(view)
    return y


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalization (Ba et al. 2016) of (*, *normalized_shape) over its last
    len(normalized_shape) dims, with the biased variance; weight and bias have
    normalized_shape. Same in training and eval.

    Raises ValueError when the input's trailing dims are not normalized_shape.
    """
    x = _float_input(input, "layer_norm")
    shape = normalized_shape
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape
    ):
        raise TypeError(
            f"layer_norm: normalized_shape must be an int or a sequence of ints "
            f"(got {normalized_shape!r})"
        )
    shape = tuple(int(s) for s in shape)
    if not shape or x.shape[x.ndim - len(shape) :] != shape or len(shape) > x.ndim:
        raise ValueError(
            f"layer_norm: expected input of shape (*, {', '.join(map(str, shape))}) for "
            f"normalized_shape {shape} (got input of shape {x.shape})"
        )
    y = _normalize(x, tuple(range(x.ndim - len(shape), x.ndim)), eps)
    return _affine(y, weight, bias, shape, shape, "layer_norm")


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization (Wu & He 2018) of (N, C, *): the C channels are split into
    num_groups groups, each normalized over its channels and the spatial dims (biased
    variance); weight and bias are per channel, shape (C,). Same in training and eval.

    Raises ValueError when C is not divisible by num_groups.
    """
    x = _float_input(input, "group_norm")
    if x.ndim < 2:
        raise ValueError(f"group_norm: expected input (N, C, *) (got {x.ndim}D input)")
    n, c = x.shape[:2]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"group_norm: num_groups must be an int (got {num_groups!r})")
    if num_groups < 1 or c % num_groups:
        raise ValueError(
            f"group_norm: expected the number of channels to be divisible by num_groups "
            f"(got input of shape {x.shape} and num_groups={num_groups})"
        )
    per_group = (c // num_groups) * int(np.prod(x.shape[2:], dtype=np.int64))
    y = _normalize(x.reshape(n, int(num_groups), per_group), (2,), eps).reshape(x.shape)
    cshape = (1, c) + (1,) * (x.ndim - 2)
    return _affine(y, weight, bias, (c,), cshape, "group_norm")


def instance_norm(
    input,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    """Instance normalization (Ulyanov et al. 2016) of (N, C, *): each (sample, channel)
    normalized over its spatial dims, biased variance; weight and bias per channel (C,).

    With use_input_stats and running_mean / running_var given, these are updated in
    place, as PyTorch: r <- (1 - momentum) r + momentum * (the mean over N of each
    instance's mean, or of its *unbiased* variance). use_input_stats=False normalizes
    with the running estimates instead.

    Raises ValueError for fewer than 2 spatial elements when using input statistics,
    or when running estimates are missing without them.
    """
    x = _float_input(input, "instance_norm")
    if x.ndim < 2:
        raise ValueError(f"instance_norm: expected input (N, C, *) (got {x.ndim}D input)")
    c = x.shape[1]
    cshape = (1, c) + (1,) * (x.ndim - 2)
    stats = []
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None:
            data = r.data if isinstance(r, Tensor) else r
            if not isinstance(data, np.ndarray) or data.dtype not in FLOAT_DTYPES:
                raise TypeError(f"instance_norm: {name} must be a float Tensor or ndarray")
            if data.shape != (c,):
                raise ValueError(
                    f"instance_norm: expected {name} of shape ({c},) (got {data.shape})"
                )
        stats.append(None if r is None else data)
    if not use_input_stats:
        if stats[0] is None or stats[1] is None:
            raise ValueError(
                "instance_norm: running_mean and running_var are required when "
                "use_input_stats=False"
            )
        mean = Tensor(stats[0].astype(x.dtype).reshape(cshape))
        inv = Tensor((1.0 / np.sqrt(stats[1].astype(np.float64) + eps)).astype(x.dtype))
        y = (x - mean) * inv.reshape(cshape)
        return _affine(y, weight, bias, (c,), cshape, "instance_norm")
    spatial = int(np.prod(x.shape[2:], dtype=np.int64))
    if spatial <= 1:
        raise ValueError(
            f"instance_norm: expected more than 1 spatial element when training "
            f"(got input of shape {x.shape})"
        )
    axes = tuple(range(2, x.ndim))
    if stats[0] is not None and x.shape[0]:
        stats[0] *= 1 - momentum
        stats[0] += momentum * x.data.mean(axis=axes).mean(axis=0)
    if stats[1] is not None and x.shape[0]:
        stats[1] *= 1 - momentum
        stats[1] += momentum * x.data.var(axis=axes, ddof=1).mean(axis=0)
    return _affine(_normalize(x, axes, eps), weight, bias, (c,), cshape, "instance_norm")


# ---------------------------------------------------------------- embedding, conv1d


def _indices(input, op):
    """An integer index array from a Tensor, ndarray or list holding whole numbers."""
    data = input.data if isinstance(input, Tensor) else np.asarray(input)
    if data.dtype.kind == "f":
        if not np.all(np.mod(data, 1) == 0):
            raise TypeError(f"{op}: input must hold integer indices (got non-integer floats)")
    elif data.dtype.kind not in "iu":
        raise TypeError(f"{op}: input must hold integer indices (got dtype {data.dtype})")
    return data.astype(np.int64)


def embedding(
    input,
    weight,
    padding_idx=None,
    max_norm=None,
    norm_type=2.0,
    scale_grad_by_freq=False,
    sparse=False,
):
    """Rows of weight (num_embeddings, embedding_dim) picked by integer indices:
    input (*) -> (*, embedding_dim). The row padding_idx gets no gradient. With max_norm,
    every row looked up whose norm_type-norm exceeds max_norm is first rescaled to it,
    in place (as PyTorch). scale_grad_by_freq and sparse are not supported.

    Raises IndexError for an index outside [0, num_embeddings).
    """
    _tensor(weight, "weight", "embedding")
    if weight.ndim != 2:
        raise ValueError(f"embedding: expected 2D weight (got shape {weight.shape})")
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse are not supported")
    idx = _indices(input, "embedding")
    n = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(
            f"embedding: index out of range: expected indices in [0, {n}) "
            f"(got [{idx.min()}, {idx.max()}])"
        )
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(
                f"embedding: padding_idx must be within [-{n}, {n}) (got {padding_idx})"
            )
        padding_idx %= n
    if max_norm is not None:
        rows = np.unique(idx)
        norms = np.linalg.norm(weight.data[rows], ord=norm_type, axis=1, keepdims=True)
        scale = np.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
        weight.data[rows] *= scale.astype(weight.dtype)
    out = weight[idx]
    if padding_idx is not None and np.any(idx == padding_idx):
        # same values, but the padding positions come from a constant: no gradient there
        keep = Tensor((idx != padding_idx)[..., None].astype(weight.dtype))
        out = out * keep + Tensor(weight.data[padding_idx]) * (1.0 - keep)
    return out


def _single(value, name, op, minimum):
    v = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{op}: {name} must be an integer >= {minimum} (got {value!r})")
    return int(v)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D cross-correlation of (N, C, L) with weight (O, C, K) -> (N, O, OL), run as
    conv2d on a height-1 image. padding is an int, "valid" (0) or "same" (stride 1;
    only where the total padding dilation*(K-1) is even)."""
    _tensor(input, "input", "conv1d")
    _tensor(weight, "weight", "conv1d")
    if input.ndim != 3:
        raise ValueError(f"conv1d: expected 3D input (N, C, L) (got {input.ndim}D input)")
    if weight.ndim != 3:
        raise ValueError(f"conv1d: expected 3D weight (O, C, K) (got shape {weight.shape})")
    stride = _single(stride, "stride", "conv1d", 1)
    dilation = _single(dilation, "dilation", "conv1d", 1)
    if padding == "valid":
        padding = 0
    elif padding == "same":
        if stride != 1:
            raise ValueError("conv1d: padding='same' is not supported for strided convolutions")
        total = dilation * (weight.shape[2] - 1)
        if total % 2:
            raise NotImplementedError(
                "conv1d: padding='same' with an odd total padding needs asymmetric padding"
            )
        padding = total // 2
    padding = _single(padding, "padding", "conv1d", 0)
    n, c, length = input.shape
    if c != weight.shape[1] * groups:
        raise ValueError(
            f"conv1d: input has {c} channels but weight {weight.shape} with groups={groups} "
            f"expects {weight.shape[1] * groups}"
        )
    out = conv2d(
        input.reshape(n, c, 1, length),
        weight.reshape(weight.shape[0], weight.shape[1], 1, weight.shape[2]),
        bias,
        stride=(1, stride),
        padding=(0, padding),
        dilation=(1, dilation),
        groups=groups,
    )
    return out.reshape(n, out.shape[1], out.shape[3])
