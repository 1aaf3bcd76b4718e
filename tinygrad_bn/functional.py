"""Stateless ops, as in ``torch.nn.functional``: ``import tinygrad_bn.functional as F``."""

import numpy as np

from . import ops
from .jit import replayed
from .tensor import FLOAT_DTYPES, Tensor


def _tensor(x, name, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected {name} to be a Tensor, got {type(x).__name__}")
    return x


# ---------------------------------------------------------------- activations


def relu(x):
    return _tensor(x, "input", "relu").relu()


def sigmoid(x):
    return _tensor(x, "input", "sigmoid").sigmoid()


def tanh(x):
    return _tensor(x, "input", "tanh").tanh()


def softmax(x, dim=-1):
    """exp(x) / sum(exp(x)) along dim, computed from the stable log_softmax."""
    return _tensor(x, "input", "softmax").softmax(dim)


def log_softmax(x, dim=-1):
    """x - logsumexp(x) along dim, shifted by the max so exp never overflows."""
    return _tensor(x, "input", "log_softmax").log_softmax(dim)


# ---------------------------------------------------------------- losses


@replayed  # a tg.jit replay checks and converts each call's labels again
def _labels(target, n, num_classes, op):
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind == "f":
        if not np.all(np.mod(t, 1) == 0):
            raise TypeError(f"{op}: target must hold integer class indices, got non-integer floats")
    elif t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must be integer class indices, got dtype {t.dtype}")
    if t.shape != (n,):
        raise ValueError(f"{op}: expected target of shape ({n},), got {t.shape}")
    t = t.astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(
            f"{op}: target values must lie in [0, {num_classes}), got [{t.min()}, {t.max()}]"
        )
    return t


def nll_loss(log_probs, target, reduction="mean"):
    """Negative log-likelihood of integer targets under (N, C) log-probabilities."""
    _tensor(log_probs, "input", "nll_loss")
    if log_probs.ndim != 2:
        raise ValueError(
            f"nll_loss: expected 2D input (N, C), got {log_probs.ndim}D input "
            f"of shape {log_probs.shape}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"nll_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    t = _labels(target, log_probs.shape[0], log_probs.shape[1], "nll_loss")
    return ops.NLLLoss.apply(log_probs, target=t, reduction=reduction)


def cross_entropy(logits, target, reduction="mean"):
    """Softmax cross-entropy of (N, C) logits against (N,) integer class indices."""
    _tensor(logits, "input", "cross_entropy")
    if logits.ndim != 2:
        raise ValueError(
            f"cross_entropy: expected 2D input (N, C), got {logits.ndim}D input "
            f"of shape {logits.shape}"
        )
    return nll_loss(logits.log_softmax(1), target, reduction)


def mse_loss(input, target, reduction="mean"):
    diff = input - target
    sq = diff * diff
    return sq.mean() if reduction == "mean" else sq.sum() if reduction == "sum" else sq


# ---------------------------------------------------------------- layers


def linear(x, weight, bias=None):
    """x @ weight.T + bias over the last axis: (*, in) -> (*, out), weight (out, in)."""
    _tensor(x, "input", "linear")
    _tensor(weight, "weight", "linear")
    if x.ndim < 1 or weight.ndim != 2:
        raise ValueError(
            f"linear: expected input (*, in) and 2D weight (out, in), got "
            f"{x.shape} and {weight.shape}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: expected bias of shape ({weight.shape[0]},), got {bias.shape}")
    args = (x, weight) if bias is None else (x, weight, bias)
    if len({t.dtype for t in args}) > 1:
        args = tuple(t.astype(np.float64) for t in args)
    return ops.Linear.apply(*args)


def _conv_check(x, weight, bias):
    _tensor(x, "input", "conv2d")
    _tensor(weight, "weight", "conv2d")
    if x.ndim != 4:
        raise ValueError(
            f"conv2d: expected 4D input (N, C, H, W), got {x.ndim}D input of shape {x.shape}"
        )
    if weight.ndim != 4:
        raise ValueError(f"conv2d: expected 4D weight (O, C, KH, KW), got shape {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels but weight {weight.shape} "
            f"expects {weight.shape[1]}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"conv2d: expected bias of shape ({weight.shape[0]},), got {bias.shape}")
    for name, t in (("input", x), ("weight", weight)):
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"conv2d: {name} must be float32 or float64, got {t.dtype}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation over (N, C, H, W) with weight (O, C, KH, KW) -> (N, O, OH, OW).

    Only dilation=1 and groups=1 are supported; anything else raises NotImplementedError.
    """
    if dilation not in (1, (1, 1)) or groups != 1:
        raise NotImplementedError("conv2d: only dilation=1 and groups=1 are supported")
    _conv_check(x, weight, bias)
    dtypes = {x.dtype, weight.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dtypes) > 1:
        x, weight = x.astype(np.float64), weight.astype(np.float64)
        bias = bias.astype(np.float64) if bias is not None else None
    args = (x, weight) if bias is None else (x, weight, bias)
    return ops.Conv2d.apply(*args, stride=stride, padding=padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over kernel_size windows of (N, C, H, W); stride defaults to kernel_size."""
    _tensor(x, "input", "max_pool2d")
    if x.ndim != 4:
        raise ValueError(
            f"max_pool2d: expected 4D input (N, C, H, W), got {x.ndim}D input of shape {x.shape}"
        )
    return ops.MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


def dropout(x, p=0.5, training=True, generator=None):
    """Zero each element with probability p and scale the rest by 1/(1-p) (train only).

    `generator` is an int seed or numpy Generator; the default is tinygrad_bn's own
    (see tinygrad_bn.manual_seed).
    """
    _tensor(x, "input", "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return ops.Dropout.apply(x, p=p, generator=generator)


def batch_norm(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    """Batch normalization (Ioffe & Szegedy 2015) over (N, C), (N, C, L) or (N, C, H, W).

    Statistics are per channel C, over N (and L or H, W). In training the batch mean and
    the *biased* batch variance normalize x (Algorithm 1), and, when running_mean /
    running_var are given, they are updated in place with momentum using the *unbiased*
    variance m/(m-1) var_B (Algorithm 2):  r <- (1 - momentum) r + momentum * stat.
    In eval (training=False) the running estimates normalize x and nothing changes.

    Raises ValueError for wrong ndim or channel count, or for one value per channel in
    training; TypeError for non-float inputs.
    """
    _tensor(x, "input", "batch_norm")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"batch_norm: expected 2D, 3D or 4D input (got {x.ndim}D input)")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"batch_norm: input must be float32 or float64, got {x.dtype}")
    c = x.shape[1]
    weight = _per_channel(weight, c, x.dtype, 1.0, "weight")
    bias = _per_channel(bias, c, x.dtype, 0.0, "bias")
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and r.shape != (c,):
            raise ValueError(f"batch_norm: expected {name} of shape ({c},), got {r.shape}")
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError(
                "batch_norm: running_mean and running_var are required when training=False"
            )
        return ops.BatchNormEval.apply(
            x, weight, bias, _const(running_mean, x.dtype), _const(running_var, x.dtype), eps=eps
        )
    m = x.data.size // c if c else 0
    if m <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )
    return ops.BatchNormTrain.apply(
        x,
        weight,
        bias,
        eps=eps,
        momentum=momentum,
        running_mean=_buffer(running_mean, x.dtype, "running_mean"),
        running_var=_buffer(running_var, x.dtype, "running_var"),
    )


def _per_channel(t, c, dtype, fill, name):
    if t is None:
        return Tensor(np.full(c, fill, dtype=dtype))
    if t.shape != (c,):
        raise ValueError(f"batch_norm: expected {name} of shape ({c},), got {t.shape}")
    return t if t.dtype == dtype else t.astype(dtype)


def _const(t, dtype):
    data = t.data if isinstance(t, Tensor) else np.asarray(t)
    return Tensor(data.astype(dtype, copy=False))


def _buffer(t, dtype, name):
    """The ndarray a running estimate is updated in (in place), or None."""
    if t is None:
        return None
    data = t.data if isinstance(t, Tensor) else t
    if not isinstance(data, np.ndarray) or data.dtype not in FLOAT_DTYPES:
        raise TypeError(f"batch_norm: {name} must be a float Tensor or ndarray")
    return data
