"""The kernel dispatch as a whole: the build is present, info(), backend switching,
thread control, determinism of every kernel and flat memory over many calls
(bounds, fork safety and per-thread state: test_kernels_threads.py)."""

import numpy as np
import pytest

from tinygrad_bn import kernels as K


def test_compiled_extension_is_built():
    """Fails (never skips) when the Cython kernels are missing: CI must build them."""
    K.require_extension()
    assert K.extension_available()
    assert K.info()["numpy_fallback"] == []


def test_info_fields():
    from tinygrad_bn._ext import _config

    info = K.info()
    assert set(info) >= {
        "backend",
        "num_threads",
        "openmp",
        "compiler_flags",
        "compiled_kernels",
        "numpy_fallback",
        "malloc",
        "import_errors",
    }
    assert info["backend"] in ("cython", "numpy")
    assert info["openmp"] is _config.openmp_enabled()
    assert isinstance(info["compiler_flags"], str) and "-O" in info["compiler_flags"]
    assert ("-fopenmp" in info["compiler_flags"]) == info["openmp"]
    assert sorted(info["compiled_kernels"] + info["numpy_fallback"]) == sorted(K.KERNELS)
    assert info["num_threads"] == K.get_num_threads() >= 1


def test_backend_switching_and_context_manager_restore():
    start = K.get_backend()
    try:
        K.set_backend("numpy")
        with K.backend("cython"):
            assert K.get_backend() == "cython"
            with K.backend("numpy"):
                assert K.get_backend() == "numpy"
            assert K.get_backend() == "cython"
        assert K.get_backend() == "numpy"
        with pytest.raises(KeyError):
            with K.backend("cython"):
                raise KeyError("boom")
        assert K.get_backend() == "numpy"  # restored after an exception too
        with pytest.raises(ValueError, match="expected 'cython' or 'numpy'"):
            K.set_backend("cuda")
        assert K.get_backend() == "numpy"
    finally:
        K.set_backend(start)


def test_backends_route_to_different_implementations():
    """The cython backend really calls compiled code (not the reference under another name)."""
    from tinygrad_bn.kernels import reference

    for name in K.KERNELS:
        with K.backend("cython"):
            impl = K._impl(name)
        with K.backend("numpy"):
            assert K._impl(name) is getattr(reference, name)
        assert impl is not getattr(reference, name), name


def test_set_num_threads_reaches_openmp():
    from tinygrad_bn._ext import _config

    before = K.get_num_threads()
    try:
        for n in (1, 3, 2):
            K.set_num_threads(n)
            assert K.get_num_threads() == n
            assert _config.get_max_threads() == (n if _config.openmp_enabled() else 1)
        K.set_num_threads(np.int64(1))
        assert K.get_num_threads() == 1
    finally:
        K.set_num_threads(before)
    with pytest.raises(ValueError):
        _config.set_num_threads(0)


def _kernel_calls(dtype):
    """One call per kernel on inputs big enough to take the threaded paths."""
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(dtype)
    a, b = r(150, 130), r(130, 170)
    a3, b3 = r(3, 20, 30), r(3, 30, 90)
    x, w = r(4, 3, 17, 19), r(5, 3, 3, 3)
    gy = r(4, 5, 9, 10)
    xp = r(3, 4, 30, 31)
    y, argmax = K.max_pool2d_forward(xp, 2, 2, 0)
    xb, dyb = r(64, 40, 30), r(64, 40, 30)
    x2, dy2 = r(300, 144), r(300, 144)
    c3, c2 = r(40), r(144)
    inv3, inv2 = np.abs(c3) + 0.5, np.abs(c2) + 0.5
    return {
        "matmul": lambda: K.matmul(a, b),
        "matmul_transposed": lambda: K.matmul(b.T, a.T),
        "matmul_batched": lambda: K.matmul(a3, b3),
        "conv2d_forward": lambda: K.conv2d_forward(x, w, 2, 1),
        "conv2d_backward": lambda: K.conv2d_backward(x, w, gy, 2, 1),
        "conv2d_backward_dw_only": lambda: K.conv2d_backward(x, w, gy, 2, 1, (0, 1, 0)),
        "max_pool2d_forward": lambda: K.max_pool2d_forward(xp, 3, 2, 1),
        "max_pool2d_backward": lambda: K.max_pool2d_backward(y, argmax, xp.shape),
        "batch_norm_forward_train_3d": lambda: K.batch_norm_forward_train(xb, c3, c3, 1e-5),
        "batch_norm_forward_train_2d": lambda: K.batch_norm_forward_train(x2, c2, c2, 1e-5),
        "batch_norm_backward_3d": lambda: K.batch_norm_backward(dyb, xb, c3, inv3, c3),
        "batch_norm_backward_2d": lambda: K.batch_norm_backward(dy2, x2, c2, inv2, c2),
        "batch_norm_forward_eval_3d": lambda: K.batch_norm_forward_eval(xb, c3, inv3, c3, c3, 1e-5),
        "batch_norm_forward_eval_2d": lambda: K.batch_norm_forward_eval(x2, c2, inv2, c2, c2, 1e-5),
    }


def _as_tuple(out):
    return tuple(o for o in out if o is not None) if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_kernel_is_deterministic(dtype, threads):
    """Same inputs and thread count: bit-identical outputs (static schedules, fixed sum order)."""
    before = K.get_num_threads()
    try:
        K.set_num_threads(threads)
        with K.backend("cython"):
            for name, call in _kernel_calls(dtype).items():
                first = [o.copy() for o in _as_tuple(call())]
                for _ in range(3):
                    again = _as_tuple(call())
                    assert len(again) == len(first)
                    for f, g in zip(first, again):
                        assert f.dtype == g.dtype and f.shape == g.shape, name
                        assert f.tobytes() == g.tobytes(), f"{name} is not deterministic"
    finally:
        K.set_num_threads(before)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(
    not __import__("os").path.exists("/proc/self/statm"), reason="/proc/self/statm is Linux-only"
)
def test_repeated_kernel_calls_keep_memory_flat():
    """Leaking the outputs of one round (~1 MB over all kernels) would add ~80 MB here."""
    calls = _kernel_calls(np.float32)
    before = K.get_num_threads()
    K.set_num_threads(1)  # leaks do not need threads; a busy machine makes them slow
    try:
        with K.backend("cython"):
            for call in calls.values():  # warm up allocator pools
                call()
            start = _rss_bytes()
            for _ in range(80):
                for call in calls.values():
                    call()
            grown = _rss_bytes() - start
    finally:
        K.set_num_threads(before)
    assert grown < 24 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 80 rounds"
