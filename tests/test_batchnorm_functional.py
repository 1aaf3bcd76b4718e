"""F.batch_norm: against a version composed from primitives, the paper's identities,
running statistics (Algorithm 2), eval mode and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import arrays

import tinygrad_bn as tg
import tinygrad_bn.functional as F

pytestmark = pytest.mark.usefixtures("each_backend")


def T(a, grad=True):
    return tg.Tensor(a, requires_grad=grad)


def composed_bn(x, weight, bias, eps):
    """Algorithm 1 from mean, var, sqrt and divide: the oracle for the fused op."""
    axes = (0,) + tuple(range(2, x.ndim))
    cshape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) * (x - mean)).mean(axis=axes, keepdims=True)  # biased
    xhat = (x - mean) / (var + eps).sqrt()
    return xhat * weight.reshape(*cshape) + bias.reshape(*cshape)


@st.composite
def bn_input(draw):
    layout = draw(st.sampled_from(["NC", "NCL", "NCHW"]))
    n, c = draw(st.integers(2, 5)), draw(st.integers(1, 4))
    shape = {
        "NC": (n, c),
        "NCL": (n, c, draw(st.integers(1, 3))),
        "NCHW": (n, c, draw(st.integers(1, 3)), draw(st.integers(1, 3))),
    }[layout]
    x = draw(arrays(shape, bound=5.0))
    # keep every channel's variance clear of zero so 1/sqrt(var + eps) is well conditioned
    x = x + np.linspace(-1.0, 1.0, n).reshape((n,) + (1,) * (len(shape) - 1))
    w = draw(arrays((c,), bound=2.0))
    b = draw(arrays((c,), bound=2.0))
    return x, w, b


@given(case=bn_input())
def test_training_matches_composed_version_forward_and_grads(case):
    x, w, b = case
    eps = 1e-5
    fused = [T(x), T(w), T(b)]
    comp = [T(x), T(w), T(b)]
    y1 = F.batch_norm(fused[0], None, None, fused[1], fused[2], training=True, eps=eps)
    y2 = composed_bn(*comp, eps)
    np.testing.assert_allclose(y1.numpy(), y2.numpy(), rtol=1e-9, atol=1e-10)
    g = np.random.default_rng(0).standard_normal(x.shape)
    y1.backward(g)
    y2.backward(g)
    for a, c in zip(fused, comp):
        np.testing.assert_allclose(a.grad.numpy(), c.grad.numpy(), rtol=1e-7, atol=1e-9)


@given(case=bn_input())
@settings(max_examples=20)
def test_training_gradcheck(case):
    x, w, b = case
    assert tg.gradcheck(
        lambda *t: F.batch_norm(t[0], None, None, t[1], t[2], training=True),
        [T(x), T(w), T(b)],
        atol=1e-5,
        rtol=1e-3,
    )


@given(case=bn_input())
@settings(max_examples=20)
def test_eval_gradcheck_and_forward(case):
    x, w, b = case
    c = x.shape[1]
    rm, rv = np.linspace(-1, 1, c), np.linspace(0.5, 2, c)
    y = F.batch_norm(T(x), T(rm, False), T(rv, False), T(w), T(b), training=False, eps=1e-3)
    cshape = (1, -1) + (1,) * (x.ndim - 2)
    ref = (x - rm.reshape(cshape)) / np.sqrt(rv.reshape(cshape) + 1e-3) * w.reshape(
        cshape
    ) + b.reshape(cshape)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert tg.gradcheck(
        lambda *t: F.batch_norm(
            t[0], T(rm, False), T(rv, False), t[1], t[2], training=False, eps=1e-3
        ),
        [T(x), T(w), T(b)],
    )


@given(case=bn_input(), momentum=st.floats(0.05, 1.0))
def test_running_statistics_use_unbiased_variance(case, momentum):
    x, _, _ = case
    c = x.shape[1]
    rm, rv = tg.Tensor(np.full(c, 0.3)), tg.Tensor(np.full(c, 2.0))
    F.batch_norm(T(x), rm, rv, training=True, momentum=momentum)
    axes = (0,) + tuple(range(2, x.ndim))
    scale = 1.0 + np.abs(x).max()  # a mean near 0 is a sum of cancelling terms of this size
    np.testing.assert_allclose(
        rm.numpy(),
        (1 - momentum) * 0.3 + momentum * x.mean(axis=axes),
        rtol=1e-12,
        atol=1e-12 * scale,
    )
    np.testing.assert_allclose(
        rv.numpy(),
        (1 - momentum) * 2.0 + momentum * x.var(axis=axes, ddof=1),
        rtol=1e-10,
        atol=1e-12 * scale**2,
    )


def test_eval_changes_nothing_and_no_grad_training_still_updates():
    x = np.random.default_rng(1).standard_normal((8, 3))
    rm, rv = tg.Tensor(np.zeros(3)), tg.Tensor(np.ones(3))
    F.batch_norm(T(x), rm, rv, training=False)
    np.testing.assert_array_equal(rm.numpy(), 0)
    np.testing.assert_array_equal(rv.numpy(), 1)
    with tg.no_grad():
        F.batch_norm(T(x), rm, rv, training=True, momentum=1.0)
    np.testing.assert_allclose(rm.numpy(), x.mean(0), rtol=1e-12)


def test_training_output_is_normalized_with_biased_variance():
    x = np.random.default_rng(2).standard_normal((16, 4, 3, 3)) * 5 + 7
    y = F.batch_norm(T(x), None, None, training=True, eps=1e-12).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-8)


def test_float32_stays_float32():
    x = tg.randn(6, 3, seed=0, requires_grad=True)
    rm, rv = tg.zeros(3), tg.ones(3)
    y = F.batch_norm(x, rm, rv, tg.ones(3, requires_grad=True), tg.zeros(3), training=True)
    assert y.dtype == np.float32 and rm.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


# ---------------------------------------------------------------- Section 3.3 identities


@given(a=st.floats(0.1, 10.0), seed=st.integers(0, 1000))
@settings(max_examples=25)
def test_bn_is_invariant_to_weight_scale(a, seed):
    """BN(W u) = BN((a W) u), dBN/du unchanged, dBN/d(aW) = (1/a) dBN/dW (eps << var)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((16, 5))
    W = rng.standard_normal((5, 4))
    g = rng.standard_normal((16, 4))
    outs, grads_u, grads_w = [], [], []
    for scale in (1.0, a):
        ut, wt = T(u), T(W * scale)
        y = F.batch_norm(ut @ wt, None, None, training=True, eps=1e-12)
        y.backward(g)
        outs.append(y.numpy())
        grads_u.append(ut.grad.numpy())
        grads_w.append(wt.grad.numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(grads_u[1], grads_u[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads_w[1], grads_w[0] / a, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- bad input


def test_bad_input_messages():
    x = tg.randn(4, 3, seed=0)
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):
        F.batch_norm(tg.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):
        F.batch_norm(tg.randn(1, 3, 1, 1), None, None, training=True)
    with pytest.raises(ValueError, match=r"expected 2D, 3D, 4D or 5D input \(got 6D input\)"):
        F.batch_norm(tg.randn(2, 2, 2, 2, 2, 2), None, None, training=True)
    with pytest.raises(ValueError, match=r"expected weight of shape \(3,\), got \(4,\)"):
        F.batch_norm(x, None, None, weight=tg.ones(4), training=True)
    with pytest.raises(ValueError, match=r"running_mean of shape \(3,\), got \(2,\)"):
        F.batch_norm(x, tg.zeros(2), tg.ones(3), training=True)
    with pytest.raises(ValueError, match="required when training=False"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(TypeError, match="Tensor"):
        F.batch_norm(np.ones((4, 3)), None, None, training=True)
