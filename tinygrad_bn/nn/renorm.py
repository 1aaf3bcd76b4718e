"""BatchRenorm1d / BatchRenorm2d: Batch Renormalization (Ioffe 2017, arXiv 1702.03275).

Batch Renormalization is the first author's own fix for BatchNorm's dependence on the
mini-batch: training normalizes with the batch statistics, as BatchNorm does, and then
corrects the result towards what the running statistics would give,

    x_hat = (x - mu_B) / sigma_B * r + d,     y = gamma * x_hat + beta,
    r = clip(sigma_B / sigma, 1 / r_max, r_max),   d = clip((mu_B - mu) / sigma, -d_max, d_max),

where r and d are treated as constants (no gradient flows through them). With r = 1 and
d = 0 it is BatchNorm; once the limits are wide enough for r and d not to clip, the training
output equals the inference output on the same batch, so the network learns the function it
is evaluated with.
"""

import numbers

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from .batchnorm import _BatchNorm


class _BatchRenorm(_BatchNorm):
    """Batch Renormalization (Ioffe 2017, arXiv 1702.03275, Algorithm 1).

    Per channel C, as BatchNorm: mu_B and the *biased* batch variance give
    sigma_B = sqrt(var_B + eps); the running estimates give mu = running_mean and
    sigma = sqrt(running_var + eps). Training computes

        y = gamma * ((x - mu_B) / sigma_B * r + d) + beta,
        r = clip(sigma_B / sigma, 1 / r_max, r_max),  d = clip((mu_B - mu) / sigma, -d_max, d_max)

    with r and d held constant in the backward pass (stop-gradient), r and d computed from
    the running estimates *before* this batch updates them. Eval mode is BatchNorm's:
    y = gamma * (x - mu) / sigma + beta.

    Running estimates: ``running_mean`` and ``running_var`` are updated exactly as
    BatchNorm updates them (moving averages with ``momentum``, the *unbiased* batch
    variance; ``momentum=None`` for a cumulative average), so a BatchRenorm state_dict loads
    into a BatchNorm of the same size and ``nn.utils.recompute_batchnorm_stats`` applies.
    (The paper averages sigma itself; averaging the variance is BatchNorm's choice and keeps
    the two layers interchangeable at inference.)

    The limits follow the paper's warm-up schedule, counted in training batches
    (``num_batches_tracked``): r_max = 1 and d_max = 0 (plain BatchNorm) for the first
    ``warmup_steps`` batches, then both rise linearly, reaching ``r_max`` after
    ``r_max_steps`` batches and ``d_max`` after ``d_max_steps`` batches, and stay there.
    The paper used r_max = 3, d_max = 5, warmup_steps = 5000, r_max_steps = 40000,
    d_max_steps = 25000; the defaults (all steps 0) use the final limits from the start.
    ``current_limits()`` returns the (r_max, d_max) the next training batch will use.

    Parameters ``weight`` (ones) and ``bias`` (zeros) of shape (C,), or None when
    ``affine=False``; buffers as BatchNorm's. There is no ``track_running_stats`` argument:
    r and d need the running estimates.

    Raises ValueError for r_max < 1, d_max < 0, negative or inconsistent schedule steps,
    the wrong number of dims or channels, and for one value per channel in training;
    TypeError for a non-Tensor input.
    """

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        *,
        r_max=3.0,
        d_max=5.0,
        warmup_steps=0,
        r_max_steps=0,
        d_max_steps=0,
        dtype=np.float32,
    ):
        super().__init__(num_features, eps, momentum, affine, True, dtype=dtype)
        name = type(self).__name__
        if not isinstance(r_max, numbers.Real) or not 1.0 <= r_max < np.inf:
            raise ValueError(f"{name}: r_max must be a finite number >= 1 (got {r_max!r})")
        if not isinstance(d_max, numbers.Real) or not 0.0 <= d_max < np.inf:
            raise ValueError(f"{name}: d_max must be a finite number >= 0 (got {d_max!r})")
        for key, value in (
            ("warmup_steps", warmup_steps),
            ("r_max_steps", r_max_steps),
            ("d_max_steps", d_max_steps),
        ):
            if not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name}: {key} must be an integer >= 0 (got {value!r})")
        for key, value in (("r_max_steps", r_max_steps), ("d_max_steps", d_max_steps)):
            if value and value < warmup_steps:
                raise ValueError(
                    f"{name}: {key} must be 0 or >= warmup_steps ({warmup_steps}) (got {value})"
                )
        self.r_max, self.d_max = float(r_max), float(d_max)
        self.warmup_steps = int(warmup_steps)
        self.r_max_steps, self.d_max_steps = int(r_max_steps), int(d_max_steps)

    def _ramp(self, final, start, end, step):
        """Linear from `start` (through warmup_steps) to `final` (at `end`), then constant."""
        if step < self.warmup_steps:
            return start
        if end <= self.warmup_steps or step >= end:
            return final
        return start + (final - start) * (step - self.warmup_steps) / (end - self.warmup_steps)

    def current_limits(self):
        """(r_max, d_max) for the next training batch, from the warm-up schedule."""
        step = float(self.num_batches_tracked.data)
        return (
            self._ramp(self.r_max, 1.0, self.r_max_steps, step),
            self._ramp(self.d_max, 0.0, self.d_max_steps, step),
        )

    def forward(self, x):
        self._check_input(x)
        if not self.training or x.data.size == 0:  # eval, or an empty batch: as BatchNorm
            return super().forward(x)
        c = self.num_features
        axes = (0,) + tuple(range(2, x.ndim))
        if x.data.size // max(c, 1) <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.shape}"
            )
        # r and d are constants of the graph: computed on the raw arrays (float64 sums), from
        # the running estimates before F.batch_norm updates them below
        data = x.data.astype(np.float64, copy=False)
        mu_b = data.mean(axis=axes)
        sigma_b = np.sqrt(data.var(axis=axes) + self.eps)
        sigma = np.sqrt(self.running_var.data.astype(np.float64) + self.eps)
        r_max, d_max = self.current_limits()
        r = np.clip(sigma_b / sigma, 1.0 / r_max, r_max).astype(x.dtype)
        d = np.clip((mu_b - self.running_mean.data) / sigma, -d_max, d_max).astype(x.dtype)
        # gamma * (x_hat * r + d) + beta = (gamma * r) * x_hat + (gamma * d + beta): one fused
        # batch-norm kernel with a per-channel affine map; autodiff carries gamma's gradient
        r_t, d_t = Tensor(r), Tensor(d)
        weight = r_t if self.weight is None else self.weight * r_t
        bias = d_t if self.bias is None else self.weight * d_t + self.bias
        factor = (
            self.momentum
            if self.momentum is not None
            else 1.0 / (float(self.num_batches_tracked.data) + 1.0)
        )
        out = F.batch_norm(
            x, self.running_mean, self.running_var, weight, bias, True, factor, self.eps
        )
        count = self.num_batches_tracked.data
        count[()] = float(count) + 1.0
        return out

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, r_max={self.r_max}, d_max={self.d_max}, "
            f"warmup_steps={self.warmup_steps}, r_max_steps={self.r_max_steps}, "
            f"d_max_steps={self.d_max_steps}"
        )


class BatchRenorm1d(_BatchRenorm):
    __doc__ = (
        "Batch renormalization over (N, C) or (N, C, L); statistics per channel C.\n\n"
        + _BatchRenorm.__doc__
    )
    _expected_dims = (2, 3)
    _dims_text = "2D or 3D"


class BatchRenorm2d(_BatchRenorm):
    __doc__ = (
        "Batch renormalization over (N, C, H, W); statistics per channel C, over N, H, W.\n\n"
        + _BatchRenorm.__doc__
    )
    _expected_dims = (4,)
    _dims_text = "4D"
