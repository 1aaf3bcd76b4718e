"""Layers built on ``tinygrad_bn.functional``: each forward is one call into it.

Constructors that draw random numbers take ``generator=`` (int seed or numpy Generator;
default: tinygrad_bn's generator, see ``tinygrad_bn.manual_seed``) and ``dtype=``
(float32 by default, or float64).
"""

import math

import numpy as np

from .. import functional as F
from ..functional import _integer, _pair, _probability, _single
from ..tensor import FLOAT_DTYPES, get_rng
from . import init
from .module import Module, Parameter


def _dtype(dtype, layer):
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{layer}: expected dtype float32 or float64 (got {dt})")
    return dt


def _affine_parameters(module, shape, affine, bias, dtype):
    """The learned scale and shift of a normalization layer: ``weight`` (ones) and ``bias``
    (zeros) of `shape` when `affine` (bias only when `bias`), else registered as None."""
    if affine:
        module.weight = Parameter(np.ones(shape, dtype=dtype))
        if bias:
            module.bias = Parameter(np.zeros(shape, dtype=dtype))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def _reset_affine(module):
    """weight <- 1, bias <- 0 for whichever of them the layer has."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


def _fan_in_bias_(bias, fan_in, rng):
    """PyTorch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    init.uniform_(bias, -bound, bound, rng)


class Linear(Module):
    """y = x W^T + b: (*, in_features) -> (*, out_features); W is (out_features, in_features).

    Initialization as PyTorch: W ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
    b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, bias=True, *, generator=None, dtype=np.float32):
        super().__init__()
        self.in_features = _integer(in_features, "in_features", "Linear")
        self.out_features = _integer(out_features, "out_features", "Linear")
        dt = _dtype(dtype, "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dt))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        rng = get_rng(generator)
        if self.weight.data.size:
            init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=rng)
        if self.bias is not None:
            _fan_in_bias_(self.bias, self.in_features, rng)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class _ConvNd(Module):
    """What Conv1d and Conv2d share: PyTorch's constructor, parameters and initialization
    (kaiming_uniform(a=sqrt(5)) weight (out_channels, in_channels / groups, *kernel_size),
    bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels / groups * prod(k))."""

    _dims = 0

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
        generator,
        dtype,
    ):
        super().__init__()
        name, n = type(self).__name__, self._dims
        self.in_channels = _integer(in_channels, "in_channels", name, 1)
        self.out_channels = _integer(out_channels, "out_channels", name, 1)
        self.groups = _integer(groups, "groups", name, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{name}: expected in_channels ({in_channels}) and out_channels "
                f"({out_channels}) divisible by groups (got groups={groups})"
            )
        self.kernel_size = _ntuple(kernel_size, "kernel_size", name, 1, n)
        self.stride = _ntuple(stride, "stride", name, 1, n)
        self.dilation = _ntuple(dilation, "dilation", name, 1, n)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"{name}: expected padding 'same', 'valid' or an int (got {padding!r})"
                )
            if padding == "same" and self.stride != (1,) * n:
                raise ValueError(
                    f"{name}: padding='same' is not supported for strided convolutions"
                )
            self.padding = padding
        else:
            self.padding = _ntuple(padding, "padding", name, 0, n)
        if padding_mode != "zeros":
            raise NotImplementedError(
                f"{name}: only padding_mode='zeros' is supported (got {padding_mode!r})"
            )
        self.padding_mode = padding_mode
        dt = _dtype(dtype, name)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype=dt))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        rng = get_rng(generator)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=rng)
        if self.bias is not None:
            fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
            _fan_in_bias_(self.bias, fan_in, rng)

    def extra_repr(self):
        n = self._dims
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"  # PyTorch prints padding=same, unquoted
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


def _ntuple(value, name, op, minimum, n):
    """An n-tuple of ints >= minimum from an int or a sequence of n ints."""
    return _pair(value, name, op, minimum) if n == 2 else (_single(value, name, op, minimum),)


class Conv2d(_ConvNd):
    """2-D convolution (N, C_in, H, W) -> (N, C_out, OH, OW) with
    OH = (H + 2p - d(k - 1) - 1) // s + 1, PyTorch's signature and initialization.

    Only padding_mode='zeros'. See F.conv2d for which cases run compiled.
    """

    _dims = 2

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        *,
        generator=None,
        dtype=np.float32,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, generator, dtype,
        )  # fmt: skip

    def forward(self, x):
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class Conv1d(_ConvNd):
    """1-D convolution (N, C_in, L) -> (N, C_out, OL), OL = (L + 2p - d(k-1) - 1) // s + 1,
    with PyTorch's signature and initialization.

    Runs as conv2d on a height-1 image. Only padding_mode='zeros'.
    """

    _dims = 1

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        *,
        generator=None,
        dtype=np.float32,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, generator, dtype,
        )  # fmt: skip

    def forward(self, x):
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        return F.conv1d(
            x, self.weight, self.bias, self.stride[0], padding, self.dilation[0], self.groups
        )


class Embedding(Module):
    """A lookup table: integer indices (*) -> rows of ``weight`` (*, embedding_dim).

    ``weight`` (num_embeddings, embedding_dim) ~ N(0, 1), as PyTorch; the row
    ``padding_idx`` (negative counts from the end) starts at zero and gets no gradient.
    ``max_norm`` renormalizes looked-up rows in place. ``_weight`` supplies the table;
    ``_freeze=True`` makes it not require grad. ``from_pretrained`` builds one from a
    table. scale_grad_by_freq and sparse raise NotImplementedError.
    """

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        sparse=False,
        _weight=None,
        _freeze=False,
        *,
        generator=None,
        dtype=np.float32,
    ):
        super().__init__()
        self.num_embeddings = _integer(num_embeddings, "num_embeddings", "Embedding", 0)
        self.embedding_dim = _integer(embedding_dim, "embedding_dim", "Embedding", 0)
        n = self.num_embeddings
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
                raise ValueError(f"Embedding: padding_idx must be an int (got {padding_idx!r})")
            if not -n <= padding_idx < n:
                raise ValueError(
                    f"Embedding: padding_idx must be within num_embeddings (got {padding_idx})"
                )
            padding_idx = int(padding_idx) % n
        if scale_grad_by_freq or sparse:
            raise NotImplementedError("Embedding: scale_grad_by_freq and sparse are not supported")
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq, self.sparse = False, False
        dt = _dtype(dtype, "Embedding")
        if _weight is None:
            self.weight = Parameter(np.empty((n, self.embedding_dim), dtype=dt))
            self.reset_parameters(generator)
        else:
            data = _weight.data if hasattr(_weight, "data") else np.asarray(_weight)
            if data.shape != (n, self.embedding_dim):
                raise ValueError(
                    f"Embedding: _weight must have shape ({n}, {self.embedding_dim}) "
                    f"(got {data.shape})"
                )
            self.weight = Parameter(data, requires_grad=not _freeze)

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze=True,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        sparse=False,
    ):
        """An Embedding whose table is `embeddings` (2D); frozen (no grad) by default."""
        data = embeddings.data if hasattr(embeddings, "data") else np.asarray(embeddings)
        if data.ndim != 2:
            raise ValueError(
                f"Embedding.from_pretrained: expected a 2D table (got shape {data.shape})"
            )
        return cls(
            data.shape[0],
            data.shape[1],
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            _weight=data,
            _freeze=freeze,
        )

    def reset_parameters(self, generator=None):
        init.normal_(self.weight, 0.0, 1.0, generator=get_rng(generator))
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, x):
        return F.embedding(x, self.weight, self.padding_idx, self.max_norm, self.norm_type)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        return s


class MaxPool2d(Module):
    """Max over kernel_size windows of (N, C, H, W); stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        _pair(kernel_size, "kernel_size", "MaxPool2d", 1)
        if stride is not None:
            _pair(stride, "stride", "MaxPool2d", 1)
        _pair(padding, "padding", "MaxPool2d", 0)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Dropout(Module):
    """Zero each element with probability p and scale the rest by 1/(1-p), in training only.

    `generator` (int seed or numpy Generator) fixes the masks' stream; by default each call
    draws from tinygrad_bn's default generator.
    """

    def __init__(self, p=0.5, *, generator=None):
        super().__init__()
        self.p = _probability(p, "Dropout")
        self.generator = None if generator is None else get_rng(generator)

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """Flatten dims start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Identity(Module):
    """Returns its input; constructor arguments are accepted and ignored (as in PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Sequential(Module):
    """Modules applied in order: ``Sequential(Linear(784, 100), Sigmoid(), ...)``.

    Also accepts one dict (name -> module). Supports indexing (int or slice), len(),
    iteration and append().
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _key(self, index):
        n = len(self._modules)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(
                f"Sequential: expected an integer or slice index (got {type(index).__name__})"
            )
        if not -n <= index < n:
            raise IndexError(f"Sequential: expected an index in [{-n}, {n - 1}] (got {index})")
        return list(self._modules)[index % n]

    def __getitem__(self, index):
        if isinstance(index, slice):
            items = list(self._modules.items())[index]
            return Sequential(dict(items))
        return self._modules[self._key(index)]

    def __setitem__(self, index, module):
        setattr(self, self._key(index), module)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self


# ---------------------------------------------------------------- activations (F.<name>)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    def forward(self, x):
        return F.silu(x)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class LogSigmoid(Module):
    def forward(self, x):
        return F.log_sigmoid(x)


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, self.dim)


# ---------------------------------------------------------------- losses (F.<name>)


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = F._reduction(reduction, type(self).__name__)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.weight, self.ignore_index, self.label_smoothing = weight, ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )


class NLLLoss(_Loss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight, self.ignore_index = weight, ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return F.l1_loss(input, target, self.reduction)


class BCELoss(_Loss):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.weight = weight

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.weight, self.pos_weight = weight, pos_weight

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, self.reduction, self.pos_weight
        )


# ---------------------------------------------------------------- pooling (F.<name>)


class AvgPool2d(Module):
    """Mean over kernel_size windows of (N, C, H, W); see F.avg_pool2d."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        super().__init__()
        _pair(kernel_size, "kernel_size", "AvgPool2d", 1)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        return F.avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Mean over adaptive bins to output_size; see F.adaptive_avg_pool2d."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
