"""Stateless ops, as in ``torch.nn.functional``: ``import tinygrad_bn.functional as F``."""

import numpy as np

from . import ops
from .tensor import FLOAT_DTYPES, Tensor, get_rng


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
    keep = get_rng(generator).random(x.shape) >= p
    return x * Tensor(keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p)))


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

    Raises ValueError for wrong ndim or channel count, or for one value per channel in
    training; TypeError for non-float inputs.
    """
    _tensor(x, "input", "batch_norm")
    if x.ndim not in (2, 3, 4, 5):
        raise ValueError(f"batch_norm: expected 2D, 3D, 4D or 5D input (got {x.ndim}D input)")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"batch_norm: input must be float32 or float64, got {x.dtype}")
    c = x.shape[1]
    weight = _per_channel(weight, c, x.dtype, 1.0, "weight")
    bias = _per_channel(bias, c, x.dtype, 0.0, "bias")
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and r.shape != (c,):
            raise ValueError(f"batch_norm: expected {name} of shape ({c},), got {r.shape}")
    if x.data.size == 0:
        # PyTorch: nothing to normalize and no statistic to update; composed from
        # primitives so weight and bias still get their (zero) gradients
        shape = (1, c) + (1,) * (x.ndim - 2)
        return x * weight.reshape(shape) + bias.reshape(shape)
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


# ---------------------------------------------------------------- normalization over features
# LayerNorm, GroupNorm and InstanceNorm are composed from Tensor ops (mean, arithmetic, pow),
# so their backward comes from autodiff; only batch norm has a fused kernel.


def _float_input(x, op):
    _tensor(x, "input", op)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: input must be float32 or float64, got {x.dtype}")
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
