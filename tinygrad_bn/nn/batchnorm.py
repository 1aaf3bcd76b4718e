"""BatchNorm1d / 2d / 3d: Ioffe & Szegedy 2015, with PyTorch's names and semantics."""

import numbers

import numpy as np

from .. import functional as F
from ..functional import _integer, _positive
from ..jit import replayed
from ..tensor import Tensor
from .layers import _affine_parameters, _dtype, _reset_affine
from .module import Module


class _NormBase(Module):
    """What BatchNorm and InstanceNorm share, as PyTorch's _NormBase: parameters ``weight``
    (ones) and ``bias`` (zeros) of shape (C,) when ``affine``, and the buffers
    ``running_mean``, ``running_var``, ``num_batches_tracked`` when ``track_running_stats``
    (else registered as None)."""

    _fixed_dtype_buffers = ("num_batches_tracked",)

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        *,
        bias=True,
        dtype=np.float32,
    ):
        super().__init__()
        name = type(self).__name__
        self.num_features = _integer(num_features, "num_features", name, 1)
        self.eps = _positive(eps, "eps", name)
        if momentum is not None and (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not 0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"{name}: expected momentum in [0, 1] or None (got {momentum!r})")
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = _dtype(dtype, name)
        c = self.num_features
        _affine_parameters(self, c, self.affine, bias, dt)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(c, dtype=dt)))
            self.register_buffer("running_var", Tensor(np.ones(c, dtype=dt)))
            self.register_buffer("num_batches_tracked", Tensor(np.zeros((), dtype=np.float64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """running_mean <- 0, running_var <- 1, num_batches_tracked <- 0 (in place)."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        """Reset the running statistics, and gamma <- 1, beta <- 0."""
        self.reset_running_stats()
        _reset_affine(self)

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


@replayed  # a tg.jit replay counts every batch too
def _count_batch(count):
    count[()] = float(count) + 1.0  # 10x cheaper than `count += 1` on a 0-d array


class _BatchNorm(_NormBase):
    """Batch Normalization (Ioffe & Szegedy 2015, arXiv 1502.03167).

    Per channel C, statistics over the batch (and the length / spatial axes):
    training normalizes with the batch mean and the *biased* batch variance
    (Algorithm 1: divide by m) and then scales by ``weight`` (gamma) and shifts by ``bias``
    (beta). With ``track_running_stats=True`` it also updates ``running_mean`` and
    ``running_var`` in place, the latter with the *unbiased* batch variance m/(m-1) var_B
    (Algorithm 2):  r <- (1 - momentum) r + momentum * stat. ``momentum=None`` makes this a
    cumulative average (factor 1/num_batches_tracked), the paper's literal Algorithm 2.
    In eval mode the running estimates normalize x and nothing changes; with
    ``track_running_stats=False`` the running buffers are None and batch statistics are
    used in eval mode too. As in PyTorch, the buffers that exist decide: setting
    ``track_running_stats = False`` after construction stops the updates but eval still
    uses the buffers. An empty batch gives an empty output and leaves the statistics alone
    (num_batches_tracked still counts it, as PyTorch's does).

    Parameters ``weight`` (ones) and ``bias`` (zeros) of shape (C,), or None when
    ``affine=False``. Buffers ``running_mean`` (zeros), ``running_var`` (ones), and
    ``num_batches_tracked``: a 0-d float64 Tensor holding an integer count (tinygrad_bn
    tensors are float only; float64 is exact up to 2**53 batches).

    Raises ValueError for eps <= 0 or momentum outside [0, 1] at construction, for the wrong
    number of dims or channels, and for one value per channel in training; TypeError for a
    non-Tensor input.
    """

    _expected_dims = ()
    _dims_text = ""

    # no `bias=` switch (PyTorch 2.13 has one): nn.utils.fold_batchnorm relies on beta
    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        *,
        dtype=np.float32,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype)

    def _check_input(self, x):
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a Tensor (got {type(x).__name__})")
        if x.ndim not in self._expected_dims:
            raise ValueError(f"{name}: expected {self._dims_text} input (got {x.ndim}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}: expected {self.num_features} channels (num_features) at dim 1 "
                f"(got input of shape {x.shape})"
            )

    def forward(self, x):
        self._check_input(x)
        # PyTorch's rule: the buffers that exist decide, not the flag's value at
        # construction. track_running_stats turned off later still normalizes with the
        # buffers in eval; turned on for a layer built without them, batch statistics.
        has_buffers = self.running_mean is not None or self.running_var is not None
        count = self.num_batches_tracked
        update = self.training and self.track_running_stats and count is not None
        factor = 0.0 if self.momentum is None else self.momentum
        if update and self.momentum is None:  # cumulative average: the new batch gets 1/count
            factor = 1.0 / (float(count.data) + 1.0)
        use_buffers = not self.training or self.track_running_stats
        out = F.batch_norm(
            x,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            self.weight,
            self.bias,
            self.training or not has_buffers,
            factor,
            self.eps,
        )
        if update:  # counted once F.batch_norm accepted the batch (an empty one too, as PyTorch)
            _count_batch(count.data)
        return out


class BatchNorm1d(_BatchNorm):
    __doc__ = (
        "Batch normalization over (N, C) or (N, C, L); statistics per channel C.\n\n"
        + _BatchNorm.__doc__
    )
    _expected_dims = (2, 3)
    _dims_text = "2D or 3D"


class BatchNorm2d(_BatchNorm):
    __doc__ = (
        "Batch normalization over (N, C, H, W); statistics per channel C, over N, H, W "
        "(Section 3.2: one gamma/beta per feature map).\n\n" + _BatchNorm.__doc__
    )
    _expected_dims = (4,)
    _dims_text = "4D"


class BatchNorm3d(_BatchNorm):
    __doc__ = (
        "Batch normalization over (N, C, D, H, W); statistics per channel C, over N, D, H, W."
        "\n\n" + _BatchNorm.__doc__
    )
    _expected_dims = (5,)
    _dims_text = "5D"
