"""nn.BatchRenorm1d / 2d against BatchNorm, a float64 NumPy model of the paper, gradcheck."""

import numpy as np
import pytest
from test_nn import module_gradcheck

import tinygrad_bn as tg
from tinygrad_bn import nn

# ---------------------------------------------------------------- NumPy reference


class NumpyBatchRenorm:
    """Algorithm 1 of Ioffe 2017 (arXiv 1702.03275) in float64, forward and backward written out.

    Running estimates as BatchNorm's (mean and unbiased variance, moving averages); the limits
    follow the warm-up schedule: (1, 0) for `warmup` batches, then linear to (r_max, d_max).
    """

    def __init__(self, c, r_max, d_max, warmup=0, r_steps=0, d_steps=0, eps=1e-5, momentum=0.1):
        self.mean, self.var, self.count = np.zeros(c), np.ones(c), 0
        self.r_max, self.d_max, self.eps, self.momentum = r_max, d_max, eps, momentum
        self.warmup, self.r_steps, self.d_steps = warmup, r_steps, d_steps

    def limits(self):
        def ramp(final, start, end):
            if self.count < self.warmup:
                return start
            if end <= self.warmup or self.count >= end:
                return final
            return start + (final - start) * (self.count - self.warmup) / (end - self.warmup)

        return ramp(self.r_max, 1.0, self.r_steps), ramp(self.d_max, 0.0, self.d_steps)

    @staticmethod
    def _axes(x):
        return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)

    def train_step(self, x, gamma, beta, dy):
        """Returns y, dx, dgamma, dbeta, r, d; updates the running estimates."""
        axes, shape = self._axes(x)
        m = x.size // x.shape[1]
        mu_b = x.mean(axis=axes)
        sigma_b = np.sqrt(((x - mu_b.reshape(shape)) ** 2).mean(axis=axes) + self.eps)
        sigma = np.sqrt(self.var + self.eps)
        r_max, d_max = self.limits()
        r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
        d = np.clip((mu_b - self.mean) / sigma, -d_max, d_max)
        xc = x - mu_b.reshape(shape)
        xhat = xc / sigma_b.reshape(shape) * r.reshape(shape) + d.reshape(shape)
        y = gamma.reshape(shape) * xhat + beta.reshape(shape)
        # the paper's backward pass (Algorithm 1, with r and d constants)
        g = dy * gamma.reshape(shape)  # dL/dx_hat
        sb, rr = sigma_b.reshape(shape), r.reshape(shape)
        d_sigma_b = (g * xc * (-rr / sb**2)).sum(axis=axes).reshape(shape)
        d_mu_b = (g * (-rr / sb)).sum(axis=axes).reshape(shape)
        dx = g * rr / sb + d_sigma_b * xc / (m * sb) + d_mu_b / m
        dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
        self.count += 1
        f = self.momentum
        self.mean = (1 - f) * self.mean + f * mu_b
        self.var = (1 - f) * self.var + f * (sigma_b**2 - self.eps) * m / (m - 1)
        return y, dx, dgamma, dbeta, r, d

    def eval(self, x, gamma, beta):
        _, shape = self._axes(x)
        sigma = np.sqrt(self.var + self.eps).reshape(shape)
        return gamma.reshape(shape) * (x - self.mean.reshape(shape)) / sigma + beta.reshape(shape)


SHAPES = {
    nn.BatchRenorm1d: [(6, 3), (4, 3, 5)],
    nn.BatchRenorm2d: [(3, 3, 4, 2)],
}
CASES = [(cls, s) for cls, shapes in SHAPES.items() for s in shapes]
BN_OF = {nn.BatchRenorm1d: nn.BatchNorm1d, nn.BatchRenorm2d: nn.BatchNorm2d}


def _data(shape, seed, scale=2.0, shift=1.5):
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


def _affine(*mods, seed=1):
    c = mods[0].num_features
    rng = np.random.default_rng(seed)
    gamma, beta = rng.uniform(0.5, 2, c), rng.standard_normal(c)
    for m in mods:
        m.weight.data[...] = gamma
        m.bias.data[...] = beta


def _step(mod, x, dy):
    xt = tg.Tensor(x, requires_grad=True)
    mod.zero_grad()
    out = mod(xt)
    out.backward(tg.Tensor(dy))
    return out.data, xt.grad.data, mod.weight.grad.data, mod.bias.grad.data


@pytest.mark.parametrize("cls,shape", CASES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_equals_batchnorm_when_r_max_1_d_max_0(cls, shape, dtype, tol):
    c = shape[1]
    renorm = cls(c, momentum=0.3, r_max=1.0, d_max=0.0, dtype=dtype)
    bn = BN_OF[cls](c, momentum=0.3, dtype=dtype)
    _affine(renorm, bn)
    for step in range(4):
        x = _data(shape, step).astype(dtype)
        dy = _data(shape, 50 + step, 1.0, 0.0).astype(dtype)
        for a, b in zip(_step(renorm, x, dy), _step(bn, x, dy)):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        np.testing.assert_allclose(renorm.running_mean.data, bn.running_mean.data, rtol=tol)
        np.testing.assert_allclose(renorm.running_var.data, bn.running_var.data, rtol=tol)
    assert float(renorm.num_batches_tracked.data) == float(bn.num_batches_tracked.data) == 4
    renorm.eval(), bn.eval()
    x = tg.Tensor(_data(shape, 9).astype(dtype))
    np.testing.assert_allclose(renorm(x).data, bn(x).data, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls,shape", CASES)
@pytest.mark.parametrize(
    "limits",
    [
        dict(r_max=3.0, d_max=5.0),  # wide: r and d mostly unclipped
        dict(r_max=1.2, d_max=0.1),  # tight: r and d clip
        dict(r_max=3.0, d_max=5.0, warmup_steps=2, r_max_steps=5, d_max_steps=3),
    ],
    ids=["wide", "tight", "schedule"],
)
def test_matches_numpy_reference(cls, shape, limits):
    c = shape[1]
    mod = cls(c, momentum=0.4, dtype=np.float64, **limits)
    _affine(mod)
    ref = NumpyBatchRenorm(
        c,
        limits["r_max"],
        limits["d_max"],
        limits.get("warmup_steps", 0),
        limits.get("r_max_steps", 0),
        limits.get("d_max_steps", 0),
        momentum=0.4,
    )
    clipped = False
    for step in range(7):
        # batches drift in mean and scale, so the running estimates lag and r, d matter
        x = _data(shape, step, scale=1.0 + step, shift=0.7 * step)
        dy = _data(shape, 50 + step, 1.0, 0.0)
        assert mod.current_limits() == pytest.approx(ref.limits())
        y, dx, dgamma, dbeta, r, d = ref.train_step(x, mod.weight.data, mod.bias.data, dy)
        clipped |= bool(np.any(r != np.clip(r, 1.01 / ref.r_max, ref.r_max / 1.01)))
        for got, want in zip(_step(mod, x, dy), (y, dx, dgamma, dbeta)):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(mod.running_mean.data, ref.mean, rtol=1e-12)
        np.testing.assert_allclose(mod.running_var.data, ref.var, rtol=1e-12)
    if limits["r_max"] < 2:
        assert clipped  # the tight case exercises the clip
    mod.eval()
    x = _data(shape, 99)
    np.testing.assert_allclose(mod(tg.Tensor(x)).data, ref.eval(x, mod.weight.data, mod.bias.data))


def test_r_and_d_are_not_differentiated():
    """With r, d unclipped the output is the inference output, but dx is not its gradient."""
    mod = nn.BatchRenorm1d(3, momentum=0.0, r_max=1e6, d_max=1e6, dtype=np.float64)
    mod.running_mean.data[...] = [0.5, -1.0, 2.0]
    mod.running_var.data[...] = [4.0, 0.5, 2.0]
    x = _data((8, 3), 0)
    y_train = mod(tg.Tensor(x)).data
    mod.eval()
    np.testing.assert_allclose(y_train, mod(tg.Tensor(x)).data, rtol=1e-10)
    mod.train()
    xt = tg.Tensor(x, requires_grad=True)
    mod(xt).sum().backward()
    # through x_hat only, sum over the batch of a normalized channel has zero gradient
    np.testing.assert_allclose(xt.grad.data, 0.0, atol=1e-10)


@pytest.mark.parametrize("cls,shape", CASES)
@pytest.mark.parametrize("limits", [(1.0, 0.0), (1.5, 0.5)], ids=["bn", "clipped"])
def test_gradcheck(cls, shape, limits):
    # momentum 0 freezes the running estimates between gradcheck's calls; with sigma far above
    # sigma_B and mu far below mu_B, r and d sit on their clip bounds, so they are locally
    # constant and central differences see the same function autodiff does
    mod = cls(shape[1], momentum=0.0, r_max=limits[0], d_max=limits[1], dtype=np.float64)
    mod.running_var.data[...] = 400.0
    mod.running_mean.data[...] = -30.0
    _affine(mod)
    x = tg.Tensor(_data(shape, 3), requires_grad=True)
    assert module_gradcheck(mod, x)


def test_schedule_follows_the_paper():
    mod = nn.BatchRenorm1d(
        2, r_max=3.0, d_max=5.0, warmup_steps=5000, r_max_steps=40000, d_max_steps=25000
    )
    at = {}
    for step in (0, 4999, 5000, 15000, 25000, 40000, 90000):
        mod.num_batches_tracked.data[()] = step
        at[step] = mod.current_limits()
    assert at[0] == at[4999] == (1.0, 0.0)
    assert at[5000] == (1.0, 0.0)
    assert at[15000] == pytest.approx((1 + 2 * 10 / 35, 5 * 10 / 20))
    assert at[25000] == pytest.approx((1 + 2 * 20 / 35, 5.0))
    assert at[40000] == at[90000] == (3.0, 5.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(r_max=0.5), "r_max must be a finite number >= 1"),
        (dict(d_max=-1.0), "d_max must be a finite number >= 0"),
        (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0"),
        (dict(warmup_steps=10, r_max_steps=5), "r_max_steps must be 0 or >= warmup_steps"),
        (dict(d_max_steps=1.5), "d_max_steps must be an integer >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.BatchRenorm1d(3, **kwargs)


def test_bad_input():
    with pytest.raises(ValueError, match=r"BatchRenorm2d: expected 4D input \(got 2D input\)"):
        nn.BatchRenorm2d(3)(tg.Tensor(np.zeros((4, 3), np.float32)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchRenorm1d(3)(tg.Tensor(np.zeros((1, 3), np.float32)))


def test_population_stats_and_state_dict_are_batchnorms():
    """recompute_batchnorm_stats applies, and the state loads into a BatchNorm of the same size."""
    mod = nn.BatchRenorm1d(3, momentum=0.1)
    batches = [_data((5, 3), s).astype(np.float32) for s in range(4)]
    nn.utils.recompute_batchnorm_stats(nn.Sequential(mod), batches)
    allx = np.stack(batches)
    np.testing.assert_allclose(mod.running_mean.data, allx.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        mod.running_var.data, allx.var(axis=1, ddof=1).mean(axis=0), rtol=1e-5
    )
    bn = nn.BatchNorm1d(3)
    bn.load_state_dict(mod.state_dict())
    mod.eval(), bn.eval()
    x = tg.Tensor(batches[0])
    np.testing.assert_array_equal(mod(x).data, bn(x).data)
