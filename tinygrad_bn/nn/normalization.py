"""LayerNorm, GroupNorm and InstanceNorm1d/2d/3d, with PyTorch's names, defaults and
semantics. Unlike BatchNorm they normalize each sample on its own, so training and eval
compute the same thing (InstanceNorm with track_running_stats excepted)."""

import numbers
import warnings

import numpy as np

from .. import functional as F
from ..functional import _integer
from ..tensor import Tensor
from .batchnorm import _NormBase
from .layers import _affine_parameters, _dtype, _reset_affine
from .module import Module


def _eps(eps, name):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"{name}: eps must be a number >= 0 (got {eps!r})")
    return float(eps)


class LayerNorm(Module):
    """Layer normalization (Ba, Kiros & Hinton 2016) over the last dims of (*, *normalized_shape).

    Each sample is normalized with the mean and *biased* variance of its last
    len(normalized_shape) dims, then scaled by ``weight`` (ones) and shifted by ``bias``
    (zeros), both of normalized_shape; ``elementwise_affine=False`` drops both,
    ``bias=False`` only the shift. Raises ValueError for an input whose trailing dims
    differ from normalized_shape.
    """

    def __init__(
        self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *, dtype=np.float32
    ):
        super().__init__()
        shape = (
            (normalized_shape,)
            if isinstance(normalized_shape, (int, np.integer))
            else tuple(normalized_shape)
        )
        self.normalized_shape = tuple(
            _integer(s, "normalized_shape", "LayerNorm", 1) for s in shape
        )
        if not self.normalized_shape:
            raise ValueError("LayerNorm: normalized_shape must not be empty")
        self.eps = _eps(eps, "LayerNorm")
        self.elementwise_affine = bool(elementwise_affine)
        dt = _dtype(dtype, "LayerNorm")
        _affine_parameters(self, self.normalized_shape, self.elementwise_affine, bias, dt)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class GroupNorm(Module):
    """Group normalization (Wu & He 2018) of (N, C, *): channels in num_groups groups,
    each normalized over its channels and spatial dims (biased variance), then a
    per-channel ``weight`` (ones) and ``bias`` (zeros) when ``affine``.

    Raises ValueError when num_channels is not divisible by num_groups.
    """

    def __init__(
        self, num_groups, num_channels, eps=1e-5, affine=True, *, bias=True, dtype=np.float32
    ):
        super().__init__()
        self.num_groups = _integer(num_groups, "num_groups", "GroupNorm", 1)
        self.num_channels = _integer(num_channels, "num_channels", "GroupNorm", 1)
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                f"num_groups ({num_groups})"
            )
        self.eps = _eps(eps, "GroupNorm")
        self.affine = bool(affine)
        dt = _dtype(dtype, "GroupNorm")
        _affine_parameters(self, self.num_channels, self.affine, bias, dt)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, x):
        # without affine PyTorch accepts any channel count divisible by num_groups
        if (
            self.affine
            and isinstance(x, Tensor)
            and x.ndim >= 2
            and x.shape[1] != self.num_channels
        ):
            raise ValueError(
                f"GroupNorm: expected {self.num_channels} channels at dim 1 "
                f"(got input of shape {x.shape})"
            )
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(_NormBase):
    """Instance normalization (Ulyanov, Vedaldi & Lempitsky 2016): each (sample, channel)
    normalized over its spatial dims with the *biased* variance.

    PyTorch's defaults: ``affine=False`` (no weight or bias) and
    ``track_running_stats=False``. With ``track_running_stats=True`` training also updates
    ``running_mean`` / ``running_var`` (the batch average of the instance means and
    *unbiased* variances; ``momentum=None`` means no update, as PyTorch's 0.0) and eval
    normalizes with them. An unbatched input (one dim fewer) is one sample.
    ``num_batches_tracked`` is registered but, as in PyTorch, never counted.

    Raises ValueError for the wrong number of dims, for a channel count other than
    num_features when affine (a warning without affine, as PyTorch), and for a single
    spatial element when using input statistics.
    """

    _no_batch_dims = 0

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=False,
        track_running_stats=False,
        *,
        bias=True,
        dtype=np.float32,
    ):
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, bias=bias, dtype=dtype
        )

    def forward(self, x):
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a Tensor (got {type(x).__name__})")
        nb = self._no_batch_dims
        if x.ndim not in (nb, nb + 1):
            raise ValueError(f"{name}: expected {nb}D or {nb + 1}D input (got {x.ndim}D input)")
        dim = x.ndim - nb
        if x.shape[dim] != self.num_features:
            if self.affine:
                raise ValueError(
                    f"{name}: expected input's size at dim={dim} to match num_features "
                    f"({self.num_features}), but got: {x.shape[dim]}"
                )
            warnings.warn(
                f"{name}: input's size at dim={dim} does not match num_features "
                f"({self.num_features}); it is not used because affine=False",
                UserWarning,
                stacklevel=2,
            )
        unbatched = x.ndim == nb
        if unbatched:
            x = x.reshape(1, *x.shape)
        out = F.instance_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            0.0 if self.momentum is None else self.momentum,
            self.eps,
        )
        return out.reshape(*out.shape[1:]) if unbatched else out


class InstanceNorm1d(_InstanceNorm):
    __doc__ = "Instance normalization of (N, C, L) or (C, L).\n\n" + _InstanceNorm.__doc__
    _no_batch_dims = 2


class InstanceNorm2d(_InstanceNorm):
    __doc__ = "Instance normalization of (N, C, H, W) or (C, H, W).\n\n" + _InstanceNorm.__doc__
    _no_batch_dims = 3


class InstanceNorm3d(_InstanceNorm):
    __doc__ = (
        "Instance normalization of (N, C, D, H, W) or (C, D, H, W).\n\n" + _InstanceNorm.__doc__
    )
    _no_batch_dims = 4
