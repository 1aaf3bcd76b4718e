"""The engine: constructors, properties, backward, accumulation, no_grad, detach."""

import numpy as np
import pytest

import tinygrad_bn as tg


def test_constructors_and_dtypes():
    assert tg.Tensor([1, 2, 3]).dtype == np.float32  # Python numbers -> float32
    assert tg.Tensor(2.5).shape == () and tg.Tensor(2.5).item() == 2.5
    assert tg.Tensor(np.arange(3.0)).dtype == np.float64  # NumPy floats keep their dtype
    assert tg.Tensor(np.arange(3)).dtype == np.float32  # integer arrays become float32
    assert tg.Tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert tg.zeros(2, 3).shape == (2, 3) and tg.ones((2, 3)).numpy().sum() == 6
    assert tg.zeros(2, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(tg.randn(3, 4, seed=1).numpy(), tg.randn(3, 4, seed=1).numpy())
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(tg.rand(4, seed=g1).numpy(), tg.rand(4, seed=g2).numpy())
    r = tg.rand(1000, seed=0).numpy()
    assert r.min() >= 0 and r.max() < 1
    tg.manual_seed(3)
    a = tg.randn(5).numpy()
    tg.manual_seed(3)
    np.testing.assert_array_equal(a, tg.randn(5).numpy())


def test_properties_and_repr():
    x = tg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.dtype == np.float64 and len(x) == 2
    assert x.T.shape == (3, 2) and x.numel() == 6 and x.is_leaf
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]
    r = repr(x * 2)
    assert r.startswith("Tensor([[") and "dtype=float64" in r and "grad_fn=Mul" in r
    assert "requires_grad=True" in repr(x)
    with pytest.raises(ValueError, match="one element"):
        x.item()


def test_bad_construction():
    with pytest.raises(TypeError, match="float32 or float64"):
        tg.Tensor([1], dtype=np.int32)
    with pytest.raises(TypeError, match="dtype"):
        tg.Tensor(np.array(["a"]))


def test_backward_scalar_and_explicit_grad():
    x = tg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 4, 6])
    x.grad = None
    (x * 3).backward(np.array([1.0, 0.0, 2.0], np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), [3, 0, 6])


def test_backward_errors():
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.Tensor([1.0]).sum().backward()
    with pytest.raises(ValueError, match="grad shape"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="leaf"):
        (x * 2).requires_grad_()


def test_gradients_accumulate_until_zeroed():
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3):
        (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6, 12])
    x.zero_grad()
    assert x.grad is None


def test_reused_node_gets_sum_of_gradients():
    x = tg.Tensor([3.0], requires_grad=True)
    y = x * 2
    z = y * y + y + x  # dz/dx = 2*y*2 + 2 + 1 = 8x + 3
    z.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [27.0])


def test_diamond_graph():
    x = tg.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    a, b = x.exp(), x.sigmoid()
    ((a * b) + (a / (b + 1))).sum().backward()
    e, s = np.exp(x.numpy()), 1 / (1 + np.exp(-x.numpy()))
    ds = s * (1 - s)
    expected = e * s + e * ds + e / (s + 1) - e * ds / (s + 1) ** 2
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_deep_chain_has_no_recursion_limit():
    x = tg.Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**10_000], rtol=1e-10)


def test_no_grad_records_nothing():
    x = tg.Tensor([1.0], requires_grad=True)
    with tg.no_grad():
        y = x * 2
        assert not tg.is_grad_enabled()
        with tg.enable_grad():
            assert (x * 2).requires_grad
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None

    @tg.no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad


def test_constants_record_nothing():
    y = tg.Tensor([1.0]) * tg.Tensor([2.0])
    assert not y.requires_grad and y._ctx is None


def test_detach_stops_gradients():
    x = tg.Tensor([2.0], requires_grad=True)
    y = x * x
    z = y.detach() * x + y
    z.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0 + 4.0])  # d/dx (c*x + x^2), c = 4
    assert not y.detach().requires_grad
    assert np.shares_memory(y.detach().numpy(), y.numpy())


def test_only_inputs_needing_grad_get_one():
    a = tg.Tensor([1.0, 2.0], requires_grad=True)
    b = tg.Tensor([3.0, 4.0])
    (a * b).sum().backward()
    assert b.grad is None
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, 4.0])


def test_grad_is_an_owned_writeable_array():
    x = tg.Tensor(np.ones((2, 3)), requires_grad=True)
    x.sum().backward()  # backward of sum is a read-only broadcast
    assert x.grad.numpy().flags.writeable and x.grad.numpy().flags.owndata


def test_leaves_never_share_gradient_memory():
    x = tg.Tensor(np.ones(3), requires_grad=True)
    y = tg.Tensor(np.ones(3), requires_grad=True)
    g = np.array([1.0, 2.0, 3.0])
    (x + y).backward(g)  # add hands the same array to both inputs
    assert not np.shares_memory(x.grad.numpy(), y.grad.numpy())
    assert not np.shares_memory(x.grad.numpy(), g)
    x.grad.numpy()[...] = 0
    np.testing.assert_array_equal(y.grad.numpy(), g)


def test_linear_weight_gradient_is_c_ordered():
    import tinygrad_bn.functional as F

    w = tg.Tensor(np.ones((4, 3)), requires_grad=True)
    F.linear(tg.ones(5, 3, dtype=np.float64), w).sum().backward()
    assert w.grad.numpy().flags.c_contiguous
    v = tg.Tensor(np.ones((4, 3)), requires_grad=True)
    (tg.ones(5, 3, dtype=np.float64) @ v.T).sum().backward()
    assert v.grad.numpy().flags.c_contiguous


def test_astype_is_differentiable():
    x = tg.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = x.double() * 3
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_numpy_interop_basics():
    a = np.arange(4.0)
    t = tg.from_numpy(a)
    assert np.shares_memory(t.numpy(), a)
    assert np.asarray(t) is t.numpy()
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
