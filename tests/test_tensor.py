"""The engine: constructors, properties, backward, accumulation, no_grad, detach."""

import warnings

import numpy as np
import pytest

import tinygrad_bn as tg


def test_constructors_and_dtypes():
    assert tg.Tensor([1, 2, 3]).dtype == np.float32  # Python numbers -> float32
    assert tg.Tensor(2.5).shape == () and tg.Tensor(2.5).item() == 2.5
    assert tg.Tensor(np.arange(3.0)).dtype == np.float64  # NumPy floats keep their dtype
    assert tg.Tensor(np.arange(3)).dtype == np.int64  # integer arrays keep an integer dtype
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
    assert r.startswith("Tensor([[") and "dtype=float64" in r and "grad_fn=<MulBackward>" in r
    assert "requires_grad=True" in repr(x)
    with pytest.raises(ValueError, match="one element"):
        x.item()


def test_bad_construction():
    with pytest.raises(TypeError, match="float32, float64, bool, uint8 or int8/16/32/64"):
        tg.Tensor([1], dtype=np.uint16)
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
    with pytest.raises(RuntimeError, match="expected a tensor that requires grad"):
        tg.Tensor([1.0]).sum().backward()
    with pytest.raises(
        ValueError, match=r"backward: expected grad of the tensor.s shape \(2,\) \(got \(3,\)\)"
    ):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="expected a leaf tensor"):
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


# ---------------------------------------------------------------- grad mode: per thread, per entry


def test_no_grad_decorating_a_recursive_function_restores_grad_mode():
    @tg.no_grad()
    def depth(n):
        assert not tg.is_grad_enabled()
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(5) == 5
    assert tg.is_grad_enabled()  # the instance once kept only the innermost `previous`

    @tg.no_grad  # bare, as PyTorch allows
    def bare(t):
        return t * 2

    assert not bare(tg.Tensor([1.0], requires_grad=True)).requires_grad
    assert tg.is_grad_enabled()


def test_one_grad_mode_instance_nested_in_itself():
    off, on = tg.no_grad(), tg.enable_grad()
    with off:
        with on:
            with off:
                assert not tg.is_grad_enabled()
            assert tg.is_grad_enabled()
            with on:
                assert tg.is_grad_enabled()
            assert tg.is_grad_enabled()
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    with pytest.raises(KeyError):  # an exception inside still restores the mode
        with off:
            raise KeyError
    assert tg.is_grad_enabled()


def test_grad_mode_is_per_thread():
    import threading

    shared = tg.no_grad()  # one instance, entered by two threads whose modes differ
    main_inside, worker_inside, main_left = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def worker():
        with tg.no_grad():  # this thread enters `shared` with grad already off
            main_inside.wait()
            with shared:
                worker_inside.set()
                main_left.wait()
            seen["worker_inner_exit"] = tg.is_grad_enabled()
        seen["worker_after"] = tg.is_grad_enabled()

    t = threading.Thread(target=worker)
    t.start()
    with shared:
        main_inside.set()
        worker_inside.wait()  # both threads are inside `shared` now
        x = tg.Tensor([1.0], requires_grad=True)
        seen["main_inside"] = (x * 2).requires_grad
    seen["main_after"] = tg.is_grad_enabled()  # not the worker's saved mode
    main_left.set()
    t.join()

    def other():
        seen["fresh_thread"] = tg.is_grad_enabled()

    with tg.no_grad():  # a new thread starts with grad on, whatever this thread does
        u = threading.Thread(target=other)
        u.start()
        u.join()
    assert seen == {
        "main_inside": False,
        "main_after": True,
        "worker_inner_exit": False,
        "worker_after": True,
        "fresh_thread": True,
    }


# ---------------------------------------------------------------- dtype promotion (PyTorch's rules)

f32, f64 = np.float32, np.float64
PROMOTION = [  # (left operand, right operand, expected dtype)
    ("t32", "t64", f64),  # two tensors promote
    ("t32", "t64_0d", f32),  # a 0-d tensor defers to a dimensioned one ...
    ("t32_0d", "t64_0d", f64),  # ... but not to another 0-d one
    ("t32", "a64", f64),  # a float64 array promotes, as NumPy does (issue 12)
    ("t32", "a64_0d", f64),
    ("t32", "a32", f32),
    ("t32", "a_int64", f64),  # NumPy: int64 with float32 -> float64
    ("t32", "a_bool", f32),
    ("t32", "py_float", f32),  # Python and NumPy scalars keep the tensor's dtype
    ("t32", "py_int", f32),
    ("t32", "np_float64", f32),
    ("t64", "py_float", f64),
]


def _operand(name, lib):
    values = {
        "t32": lambda: tg.Tensor(np.ones(3, f32)),
        "t64": lambda: tg.Tensor(np.ones(3, f64)),
        "t32_0d": lambda: tg.Tensor(np.float32(2.0)),
        "t64_0d": lambda: tg.Tensor(np.float64(2.0)),
        "a64": lambda: np.full(3, 2.0),
        "a64_0d": lambda: np.array(2.0),
        "a32": lambda: np.full(3, 2.0, f32),
        "a_int64": lambda: np.full(3, 2),
        "a_bool": lambda: np.ones(3, bool),
        "py_float": lambda: 2.0,
        "py_int": lambda: 2,
        "np_float64": lambda: np.float64(2.0),
    }[name]()
    if lib == "torch" and isinstance(values, tg.Tensor):
        import torch

        return torch.from_numpy(values.numpy().copy())
    return values


@pytest.mark.parametrize("left, right, want", PROMOTION)
def test_binary_op_dtype_promotion(left, right, want):
    for a, b in ((left, right), (right, left)):
        if a.startswith(("a", "py", "np")) and b.startswith(("a", "py", "np")):
            continue
        out = _operand(a, "tg") * _operand(b, "tg")
        assert isinstance(out, tg.Tensor) and out.dtype == want, (a, b, out.dtype)
    try:
        import torch
    except ImportError:
        return
    # torch itself, for the order it supports (ndarray * torch.Tensor is NumPy's business)
    with warnings.catch_warnings():  # torch hands Tensor * ndarray to NumPy, which warns
        warnings.simplefilter("ignore", DeprecationWarning)
        got = (_operand(left, "torch") * _operand(right, "torch")).dtype
    assert got == getattr(torch, np.dtype(want).name), (left, right, got)


def test_promotion_reaches_matmul_cat_and_linear():
    import tinygrad_bn.functional as F

    x32 = tg.Tensor(np.ones((2, 3), f32), requires_grad=True)
    x64 = tg.Tensor(np.ones((3, 2), f64))
    assert (x32 @ x64).dtype == f64 and (x32 @ np.ones((3, 2))).dtype == f64
    assert (np.ones((4, 2)) @ x32).dtype == f64
    assert tg.cat([x32, tg.Tensor(np.ones((1, 3), f64))]).dtype == f64
    y = F.linear(x32, tg.Tensor(np.ones((4, 3), f64)))
    assert y.dtype == f64
    y.sum().backward()
    assert x32.grad.dtype == f32  # the gradient comes back in the leaf's own dtype


# ---------------------------------------------------------------- engine edge cases (issue 13)


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def test_pow_zero_has_zero_gradient_at_zero():
    x = tg.Tensor([0.0, 1.5, -2.0], dtype=np.float64, requires_grad=True)
    (x**0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])  # was nan at x == 0
    y = tg.Tensor([0.0, 2.0], dtype=np.float64, requires_grad=True)
    ((y**0) * y).sum().backward()  # a nan used to spread upstream through the product
    np.testing.assert_array_equal(y.grad.numpy(), [1.0, 1.0])
    torch = _torch_or_none()
    if torch is not None:
        tx = torch.tensor([0.0, 1.5, -2.0], dtype=torch.float64, requires_grad=True)
        (tx**0).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


@pytest.mark.parametrize("op", ["sum", "mean", "var", "max"])
@pytest.mark.parametrize("dim", [0, -1])
def test_reductions_of_a_0d_tensor_over_dim_0_or_minus_1(op, dim):
    x = tg.Tensor(np.float64(3.0), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # var with one value: no degrees of freedom
        out = getattr(x, op)(dim=dim)
        keep = getattr(x, op)(dim=dim, keepdim=True)
    assert out.shape == () and keep.shape == ()
    torch = _torch_or_none()
    want = {"sum": 3.0, "mean": 3.0, "max": 3.0, "var": np.nan}[op]
    if torch is not None:
        t = torch.tensor(3.0, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = getattr(t, op)(dim=dim)
        want = (r.values if op == "max" else r).item()
    np.testing.assert_array_equal(out.numpy(), want)
    if op != "var":
        out.backward()
        assert x.grad.item() == 1.0
    with pytest.raises(ValueError, match=r"dim: expected a dim in \[-1, 0\] \(got 1"):
        getattr(x, op)(dim=1)


def test_mean_over_an_empty_axis_is_nan():
    x = tg.Tensor(np.zeros((0, 3)))
    assert np.isnan(x.mean(axis=0).numpy()).all() and x.mean(axis=0).shape == (3,)
    assert np.isnan(x.mean().item())
    assert x.mean(axis=1).shape == (0,)
    torch = _torch_or_none()
    if torch is not None:
        np.testing.assert_array_equal(x.mean(axis=0).numpy(), torch.zeros(0, 3).mean(0).numpy())


@pytest.mark.parametrize(
    "data, correction",
    [([1.0], 1), ([1.0, 2.0], 2), ([1.0, 1.0], 2), ([1.0, 2.0, 4.0], 5), ([], 1), ([], 0)],
)
def test_var_without_degrees_of_freedom_is_nan_or_inf(data, correction):
    x = tg.Tensor(np.array(data, dtype=np.float64))
    with pytest.warns(UserWarning, match="degrees of freedom"):
        got = x.var(correction=correction).item()
    total = float(np.sum((np.array(data) - np.mean(data)) ** 2)) if data else 0.0
    want = np.nan if total == 0 else np.inf  # the sum of squares over zero degrees of freedom
    torch = _torch_or_none()
    if torch is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = torch.tensor(data, dtype=torch.float64).var(correction=correction).item()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(  # with degrees of freedom left, the usual N - correction
        tg.Tensor(np.array([1.0, 2.0, 4.0])).var(correction=2).item(), np.var([1, 2, 4]) * 3
    )


def test_max_over_an_empty_axis_is_refused_but_empty_results_are_fine():
    x = tg.Tensor(np.zeros((0, 3)))
    assert x.max(axis=1).shape == (0,)
    with pytest.raises(ValueError, match="max: expected to reduce non-empty dims"):
        x.max(axis=0)


def test_grad_fn_names_do_not_collide_with_nn_layers():
    import tinygrad_bn.functional as F
    from tinygrad_bn import nn

    x = tg.Tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    outputs = {
        "linear": F.linear(x, tg.ones(2, 4, dtype=np.float64)),
        "conv2d": F.conv2d(x, tg.ones(1, 1, 3, 3, dtype=np.float64)),
        "max_pool2d": F.max_pool2d(x, 2),
        "batch_norm": F.batch_norm(x, None, None, training=True),
    }
    for name, y in outputs.items():
        op = type(y._ctx).__name__
        assert op not in nn.__all__, f"{name}'s op {op} shares its name with nn.{op}"
        assert f"grad_fn=<{op}Backward>" in repr(y)
