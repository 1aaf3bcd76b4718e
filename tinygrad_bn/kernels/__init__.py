"""Kernel dispatch: the one module that calls compiled code.

Every heavy op (matmul, conv2d, max_pool2d, batch norm) goes through the functions here.
Each validates its arguments in Python (so a compiled kernel never sees a bad shape),
then calls the active backend: ``"cython"`` (``tinygrad_bn._ext``, the default when it
is built) or ``"numpy"`` (``tinygrad_bn.kernels.reference``, same signatures).

    >>> from tinygrad_bn import kernels
    >>> kernels.set_backend("numpy")          # or, for one block:
    >>> with kernels.backend("cython"): ...
    >>> kernels.set_num_threads(2); kernels.info()
"""

import contextlib
import importlib
import os
import sys
import warnings

import numpy as np

from . import reference

KERNELS = (
    "matmul",
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "batch_norm_forward_train",
    "batch_norm_backward",
    "batch_norm_forward_eval",
)
# compiled module (tinygrad_bn._ext.<name>) -> the kernels it provides
_EXT_MODULES = ("matmul", "conv2d", "batchnorm")


def _load_extension():
    """Import the compiled kernels; returns ({name: fn}, config module or None, errors)."""
    found, errors, config = {}, {}, None
    try:
        config = importlib.import_module("tinygrad_bn._ext._config")
    except ImportError as e:
        errors["_config"] = str(e)
    for mod_name in _EXT_MODULES:
        try:
            mod = importlib.import_module(f"tinygrad_bn._ext.{mod_name}")
        except ImportError as e:
            errors[mod_name] = str(e)
            continue
        for name in KERNELS:
            if hasattr(mod, name):
                found[name] = getattr(mod, name)
    return found, config, errors


_COMPILED, _CONFIG, _IMPORT_ERRORS = _load_extension()


def _warn_if_missing():
    """Warn (once: at import) when kernels fall back to NumPy, saying why and how to fix it.

    The common cause is an unbuilt source tree: run from a clone's root, its tinygrad_bn/
    shadows an installed copy, and nothing else would say that the ops now run on NumPy.
    """
    missing = [n for n in KERNELS if n not in _COMPILED] + (["_config"] if _CONFIG is None else [])
    if not missing:
        return
    what = "all of them" if not _COMPILED else ", ".join(missing)
    tree = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isfile(os.path.join(tree, "setup.py")):
        why = f"tinygrad_bn was imported from the unbuilt source tree {tree}"
        fix = "build it with `pip install -e .` or `python setup.py build_ext --inplace`"
    else:
        why = "this installation has no working compiled kernels"
        fix = "reinstall it with a C compiler (`pip install --force-reinstall --no-cache-dir .`)"
    first_error = next(iter(_IMPORT_ERRORS.values()), "not built")
    warnings.warn(
        f"tinygrad_bn: compiled kernels missing ({what}; {first_error}), so the "
        f"slower NumPy reference kernels run instead: {why}; {fix}. "
        "tinygrad_bn.kernels.info() lists which kernels fell back.",
        RuntimeWarning,
        stacklevel=2,
    )


_warn_if_missing()
_backend = "cython" if _COMPILED else "numpy"


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_num_threads = _default_threads()


# ---------------------------------------------------------------- configuration


def extension_available():
    """True when every kernel has a compiled implementation."""
    return all(name in _COMPILED for name in KERNELS)


def require_extension():
    """Raise ImportError naming what is missing unless all compiled kernels imported."""
    missing = [n for n in KERNELS if n not in _COMPILED]
    if missing or _CONFIG is None:
        raise ImportError(
            "tinygrad_bn: compiled kernels missing: %s (import errors: %s). "
            "Build them with `pip install .` (needs a C compiler and Cython >= 3)."
            % (", ".join(missing) or "none", _IMPORT_ERRORS or "none")
        )


def set_backend(name):
    """Select "cython" (compiled kernels) or "numpy" (reference) for every heavy op."""
    global _backend
    if name not in ("cython", "numpy"):
        raise ValueError(f"set_backend: expected 'cython' or 'numpy', got {name!r}")
    if name == "cython" and not _COMPILED:
        require_extension()
    _backend = name


def get_backend():
    return _backend


@contextlib.contextmanager
def backend(name):
    """Context manager: use backend `name` inside the block, restore the previous after."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def set_num_threads(n):
    """Number of OpenMP threads the compiled kernels use (default: cores available)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: expected an integer >= 1, got {n!r}")
    _num_threads = int(n)
    if _CONFIG is not None:
        _CONFIG.set_num_threads(_num_threads)


def get_num_threads():
    return _num_threads


def info():
    """A dict: backend, threads, whether OpenMP is on, compiler flags, compiled kernels."""
    return {
        "backend": _backend,
        "num_threads": _num_threads,
        "openmp": bool(_CONFIG.openmp_enabled()) if _CONFIG is not None else False,
        "compiler_flags": _CONFIG.compiler_flags() if _CONFIG is not None else None,
        "compiled_kernels": sorted(_COMPILED),
        # the GEMM's register tile ("avx512", "avx2", "portable": ext/microkernel.pxd.tp) and
        # the x86 features this CPU has (ext/_cpu.pyx; still there when the kernels refused)
        "gemm_path": getattr(sys.modules.get("tinygrad_bn._ext.matmul"), "GEMM_PATH", None),
        "cpu_isa": list(getattr(sys.modules.get("tinygrad_bn._ext._cpu"), "cpu_isa", tuple)()),
        "numpy_fallback": [n for n in KERNELS if n not in _COMPILED],
        "import_errors": dict(_IMPORT_ERRORS),
    }


def _impl(name):
    if _backend == "cython" and name in _COMPILED:
        return _COMPILED[name]
    return getattr(reference, name)


if _CONFIG is not None:
    _CONFIG.set_num_threads(_num_threads)


# ---------------------------------------------------------------- validation

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_float(op, **arrays):
    dtypes = {a.dtype if type(a) is np.ndarray else None for a in arrays.values()}
    if len(dtypes) == 1 and dtypes.pop() in _FLOATS:
        return  # the common case, checked cheaply: this runs on every kernel call
    dtypes = set()
    for arg, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: {arg} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype not in _FLOATS:
            raise TypeError(f"{op}: {arg} must be float32 or float64, got {a.dtype}")
        dtypes.add(a.dtype)
    if len(dtypes) > 1:
        got = ", ".join(f"{k}={v.dtype}" for k, v in arrays.items())
        raise TypeError(f"{op}: all arrays must share one dtype, got {got}")


def _check_ndim(op, arg, a, ndims):
    if a.ndim not in ndims:
        want = " or ".join(f"{d}D" for d in ndims)
        raise ValueError(f"{op}: expected {arg} to be {want}, got {a.ndim}D with shape {a.shape}")


def _pair(op, arg, v, minimum):
    t = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(t) != 2 or not all(isinstance(i, (int, np.integer)) and i >= minimum for i in t):
        raise ValueError(f"{op}: {arg} must be an int >= {minimum} or a pair of them, got {v!r}")
    return int(t[0]), int(t[1])


def _window(op, x_shape, k, stride, padding):
    """Check that a (kh, kw) window with stride/padding fits; return the output (OH, OW)."""
    h, w = x_shape[2], x_shape[3]
    oh = (h + 2 * padding[0] - k[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - k[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: window {k} with stride {stride} and padding {padding} does not fit the "
            f"input of size {(h, w)}: output would be {(oh, ow)}"
        )
    return oh, ow


# ---------------------------------------------------------------- matmul


def matmul(a, b):
    """C = A @ B: (M, K) @ (K, N) -> (M, N), or batched (B, M, K) @ (B, K, N) -> (B, M, N)."""
    _check_float("matmul", a=a, b=b)
    _check_ndim("matmul", "a", a, (2, 3))
    if b.ndim != a.ndim:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: operands must have the same ndim")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: {a.shape} @ {b.shape}: inner dims {a.shape[-1]} != {b.shape[-2]}"
        )
    if a.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: batch sizes {a.shape[0]} != {b.shape[0]}")
    return _impl("matmul")(a, b)


# ---------------------------------------------------------------- conv2d


def _check_conv(op, x, weight, stride, padding):
    _check_ndim(op, "input", x, (4,))
    _check_ndim(op, "weight", weight, (4,))
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{op}: input has {x.shape[1]} channels, weight {tuple(weight.shape)} "
            f"expects {weight.shape[1]}"
        )
    stride = _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    return stride, padding


def conv2d_forward(x, weight, stride=1, padding=0):
    """(N, C, H, W) * (O, C, KH, KW) -> (N, O, OH, OW), cross-correlation, no bias."""
    _check_float("conv2d", input=x, weight=weight)
    stride, padding = _check_conv("conv2d", x, weight, stride, padding)
    _window("conv2d", x.shape, weight.shape[2:], stride, padding)
    return _impl("conv2d_forward")(x, weight, stride, padding)


def conv2d_backward(x, weight, grad_out, stride=1, padding=0):
    """(dx, dweight) for conv2d_forward given grad_out (N, O, OH, OW)."""
    _check_float("conv2d_backward", input=x, weight=weight, grad_out=grad_out)
    stride, padding = _check_conv("conv2d_backward", x, weight, stride, padding)
    oh, ow = _window("conv2d_backward", x.shape, weight.shape[2:], stride, padding)
    want = (x.shape[0], weight.shape[0], oh, ow)
    if grad_out.shape != want:
        raise ValueError(
            f"conv2d_backward: expected grad_out of shape {want}, got {grad_out.shape}"
        )
    return _impl("conv2d_backward")(x, weight, grad_out, stride, padding)


# ---------------------------------------------------------------- max_pool2d


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """(y, argmax) of a max pool over (N, C, H, W); argmax is int64 flat h*W + w."""
    _check_float("max_pool2d", input=x)
    _check_ndim("max_pool2d", "input", x, (4,))
    k = _pair("max_pool2d", "kernel_size", kernel_size, 1)
    stride = k if stride is None else _pair("max_pool2d", "stride", stride, 1)
    padding = _pair("max_pool2d", "padding", padding, 0)
    if padding[0] > k[0] // 2 or padding[1] > k[1] // 2:
        raise ValueError(f"max_pool2d: padding {padding} must be at most half the kernel size {k}")
    _window("max_pool2d", x.shape, k, stride, padding)
    return _impl("max_pool2d_forward")(x, k, stride, padding)


def max_pool2d_backward(grad_out, argmax, input_shape):
    """dx of max_pool2d_forward: grad_out scattered to the argmax positions."""
    _check_float("max_pool2d_backward", grad_out=grad_out)
    input_shape = tuple(int(s) for s in input_shape)
    if argmax.dtype != np.int64 or argmax.shape != grad_out.shape:
        raise ValueError(
            f"max_pool2d_backward: argmax must be int64 of shape "
            f"{grad_out.shape}, got {argmax.dtype} {argmax.shape}"
        )
    if len(input_shape) != 4 or grad_out.ndim != 4 or grad_out.shape[:2] != input_shape[:2]:
        raise ValueError(
            f"max_pool2d_backward: grad_out {grad_out.shape} does not match "
            f"input shape {input_shape}"
        )
    hw = input_shape[2] * input_shape[3]
    if argmax.size and (argmax.min() < 0 or argmax.max() >= hw):
        raise ValueError(f"max_pool2d_backward: argmax values must lie in [0, {hw})")
    return _impl("max_pool2d_backward")(grad_out, argmax, input_shape)


# ---------------------------------------------------------------- batch norm


def _check_bn(op, x, **per_channel):
    _check_float(op, input=x, **per_channel)
    _check_ndim(op, "input", x, (2, 3))
    c = x.shape[1]
    for arg, v in per_channel.items():
        if v.shape != (c,):
            raise ValueError(f"{op}: expected {arg} of shape ({c},), got {v.shape}")


def batch_norm_forward_train(x, weight, bias, eps):
    """(y, mean, var, invstd) over x (N, C) or (N, C, L); var is the biased batch variance."""
    _check_bn("batch_norm", x, weight=weight, bias=bias)
    if x.shape[1] and x.size // x.shape[1] < 2:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when "
            f"training, got input size {x.shape}"
        )
    if not eps > 0:
        raise ValueError(f"batch_norm: eps must be > 0, got {eps}")
    return _impl("batch_norm_forward_train")(x, weight, bias, float(eps))


def batch_norm_backward(grad_out, x, mean, invstd, weight):
    """(dx, dweight, dbias) of batch_norm_forward_train."""
    _check_bn("batch_norm_backward", x, mean=mean, invstd=invstd, weight=weight)
    _check_float("batch_norm_backward", input=x, grad_out=grad_out)
    if grad_out.shape != x.shape:
        raise ValueError(f"batch_norm_backward: grad_out {grad_out.shape} != input {x.shape}")
    return _impl("batch_norm_backward")(grad_out, x, mean, invstd, weight)


def batch_norm_forward_eval(x, running_mean, running_var, weight, bias, eps):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, one fused pass."""
    _check_bn(
        "batch_norm",
        x,
        running_mean=running_mean,
        running_var=running_var,
        weight=weight,
        bias=bias,
    )
    if not eps > 0:
        raise ValueError(f"batch_norm: eps must be > 0, got {eps}")
    return _impl("batch_norm_forward_eval")(x, running_mean, running_var, weight, bias, float(eps))
