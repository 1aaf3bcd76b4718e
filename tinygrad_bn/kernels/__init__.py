"""Kernel dispatch: the one module that calls compiled code.

Every heavy op (matmul, conv2d, max_pool2d, batch norm, activations) goes through the
functions here.
This door owns the array contract: float32/float64 of one dtype in native byte order,
C-contiguous where a kernel needs it, and the shapes and tuples it passes on; what the user
passed (eps, batch sizes, ...) is checked once where the user called (nn, F, Tensor).
It then calls the active backend: ``"cython"`` (``tinygrad_bn._ext``, the default when it
is built) or ``"numpy"`` (``tinygrad_bn.kernels.reference``, same signatures).

    >>> from tinygrad_bn import kernels
    >>> kernels.set_backend("numpy")          # or, for one block:
    >>> with kernels.backend("cython"): ...
    >>> kernels.set_num_threads(2); kernels.info()
"""

import contextlib
import contextvars
import importlib
import os
import sys
import warnings

import numpy as np

from .._threads import MAX_THREADS
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
    "cross_entropy_forward",
    "cross_entropy_backward",
    "sgd_step",
    "adam_step",
    "activation_forward",
    "activation_backward",
    "bias_activation",
    "sum_rows",
    "running_average",
)
# compiled module (tinygrad_bn._ext.<name>) -> the kernels it provides
_EXT_MODULES = ("matmul", "conv2d", "pool", "batchnorm", "loss", "optim", "elementwise")


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


def _tune_malloc():
    """Tune glibc's malloc for training steps (ext/_config.pyx tune_malloc says why), unless
    TINYGRAD_BN_MALLOC=default or the user set glibc's own malloc variables."""
    env = os.environ
    if _CONFIG is None or env.get("TINYGRAD_BN_MALLOC") == "default":
        return "default (TINYGRAD_BN_MALLOC=default)" if _CONFIG is not None else "default"
    if any(k.startswith("MALLOC_") for k in env) or "malloc" in env.get("GLIBC_TUNABLES", ""):
        return "default (MALLOC_* or GLIBC_TUNABLES set by the user)"
    if not _CONFIG.tune_malloc():
        return "default (not glibc)"
    return (
        f"tuned (mmap threshold {_CONFIG.MMAP_THRESHOLD >> 20} MiB, trim threshold "
        f"{_CONFIG.TRIM_THRESHOLD >> 20} MiB)"
    )


_MALLOC = _tune_malloc()
_backend = "cython" if _COMPILED else "numpy"  # the process-wide default (set_backend)
# backend(...) blocks override it per thread (and per asyncio task): a context variable
# restores by token, so nesting, recursion and two threads each get their own choice back
_backend_override = contextvars.ContextVar("tinygrad_bn_backend", default=None)


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    try:
        return min(len(os.sched_getaffinity(0)), MAX_THREADS)
    except AttributeError:  # not on Linux
        return min(os.cpu_count() or 1, MAX_THREADS)


_num_threads = _default_threads()  # used only without the extension (nothing runs threaded)


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


def _check_backend(name):
    if name not in ("cython", "numpy"):
        raise ValueError(f"set_backend: expected 'cython' or 'numpy' (got {name!r})")
    if name == "cython" and not _COMPILED:
        require_extension()


def set_backend(name):
    """Select "cython" (compiled kernels) or "numpy" (reference) for every heavy op, in every
    thread; inside a ``backend(...)`` block it also changes that block's choice."""
    global _backend
    _check_backend(name)
    _backend = name
    if _backend_override.get() is not None:
        _backend_override.set(name)


def get_backend():
    """The backend this thread uses now: its innermost backend(...) block, else the default."""
    return _backend_override.get() or _backend


@contextlib.contextmanager
def backend(name):
    """Context manager: use backend `name` in this thread inside the block, then restore
    what was in force before; reentrant, and other threads are not affected."""
    _check_backend(name)
    token = _backend_override.set(name)
    try:
        yield
    finally:
        _backend_override.reset(token)


def set_num_threads(n):
    """Threads every compiled kernel uses from now on, whichever OS thread calls it:
    an integer in [1, MAX_THREADS] (MAX_THREADS = 256; default: the cores available).

    A process forked after threaded kernels ran stays on 1 thread (libgomp is not
    fork-safe: the child would hang); set_num_threads there keeps 1. Raises ValueError,
    before changing anything, for any other value.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: expected an integer in [1, {MAX_THREADS}] (got {n!r})")
    if _CONFIG is not None:
        _CONFIG.set_num_threads(int(n))
    else:
        _num_threads = int(n)


def get_num_threads():
    """The thread count the compiled kernels use (1 in a forked child, see set_num_threads)."""
    return _CONFIG.get_num_threads() if _CONFIG is not None else _num_threads


def info():
    """A dict: backend, threads, whether OpenMP is on, compiler flags, compiled kernels."""
    return {
        "backend": get_backend(),
        "num_threads": get_num_threads(),
        "openmp": bool(_CONFIG.openmp_enabled()) if _CONFIG is not None else False,
        "compiler_flags": _CONFIG.compiler_flags() if _CONFIG is not None else None,
        "compiled_kernels": sorted(_COMPILED),
        # the GEMM's register tile ("avx512", "avx2", "portable": ext/microkernel.pxd.tp) and
        # the x86 features this CPU has (ext/_cpu.pyx; still there when the kernels refused)
        "gemm_path": getattr(sys.modules.get("tinygrad_bn._ext.matmul"), "GEMM_PATH", None),
        "cpu_isa": list(getattr(sys.modules.get("tinygrad_bn._ext._cpu"), "cpu_isa", tuple)()),
        "numpy_fallback": [n for n in KERNELS if n not in _COMPILED],
        "malloc": _MALLOC,
        "import_errors": dict(_IMPORT_ERRORS),
    }


def _impl(name):
    if (_backend_override.get() or _backend) == "cython" and name in _COMPILED:
        return _COMPILED[name]
    return getattr(reference, name)


if _CONFIG is not None:
    _CONFIG.set_num_threads(_num_threads)


# ---------------------------------------------------------------- the array contract

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # native byte order


def _check_float(op, **arrays):
    """Every array an ndarray of one dtype, float32 or float64, native byte order."""
    dtypes = {a.dtype if type(a) is np.ndarray else None for a in arrays.values()}
    if len(dtypes) == 1 and None not in dtypes and dtypes.pop() in _FLOATS:
        return  # the common case, checked cheaply (None is out first: float64 == np.dtype(None))
    dtypes = set()
    for arg, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: {arg}: expected a numpy.ndarray (got {type(a).__name__})")
        if a.dtype not in _FLOATS:
            raise TypeError(
                f"{op}: {arg}: expected float32 or float64 in native byte order (got {a.dtype.str})"
            )
        dtypes.add(a.dtype)
    if len(dtypes) > 1:
        got = ", ".join(f"{k}={v.dtype}" for k, v in arrays.items())
        raise TypeError(f"{op}: expected arrays of one dtype (got {got})")


def _check_ndim(op, arg, a, ndims):
    if a.ndim not in ndims:
        want = " or ".join(f"{d}D" for d in ndims)
        raise ValueError(f"{op}: {arg}: expected {want} (got {a.ndim}D with shape {a.shape})")


def _pair(op, arg, v, minimum):
    t = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(t) != 2 or not all(isinstance(i, (int, np.integer)) and i >= minimum for i in t):
        raise ValueError(f"{op}: {arg}: expected an int >= {minimum} or a pair of them (got {v!r})")
    return int(t[0]), int(t[1])


def _window(op, x_shape, k, stride, padding):
    """Check that a (kh, kw) window with stride/padding fits; return the output (OH, OW)."""
    h, w = x_shape[2], x_shape[3]
    oh = (h + 2 * padding[0] - k[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - k[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: window {k} with stride {stride} and padding {padding} does not fit the "
            f"input of size {(h, w)}: expected an output of at least (1, 1) (got {(oh, ow)})"
        )
    return oh, ow


def _mask(op, output_mask):
    """(dx, dweight, dbias) booleans, passed on as given: the kernels read their truth."""
    if len(output_mask) != 3:
        raise ValueError(f"{op}: output_mask: expected 3 booleans (got {output_mask!r})")
    return output_mask


_c = np.ascontiguousarray  # C-contiguous, no copy when it already is


def _compiled_first(name, *args):
    """The compiled kernel's result when it is in use and takes `args` as they are, else
    None. As matmul: these kernels check in C what they read (_arrays.pxd), so the door's
    checks and copies, 1-4 us a call (a large share of a replayed step's small ops, Zen 5),
    run only when a kernel refuses: they then raise in the door's words, or make the arrays
    plain for a second call."""
    fn = _impl(name)
    if fn is _COMPILED.get(name):
        try:
            return fn(*args)
        except (TypeError, ValueError):
            pass
    return None


# ---------------------------------------------------------------- matmul

_COMPILED_MATMUL = _COMPILED.get("matmul")


def matmul(a, b):
    """C = A @ B: (M, K) @ (K, N) -> (M, N), or batched (B, M, K) @ (B, K, N) -> (B, M, N)."""
    fn = _impl("matmul")
    if fn is _COMPILED_MATMUL:
        # The compiled kernel checks, in C, the same conditions as _check_matmul (what it
        # indexes with); checking them here first cost 0.4 us a call, a sixth of the MLP's
        # smallest products (60x100 @ 100x10: 2.4 us, Zen 5). When it refuses, this door's
        # check raises the error in the door's words.
        try:
            return fn(a, b)
        except (TypeError, ValueError):
            _check_matmul(a, b)
            raise
    _check_matmul(a, b)
    return fn(a, b)


def _check_matmul(a, b):
    _check_float("matmul", a=a, b=b)
    _check_ndim("matmul", "a", a, (2, 3))
    if b.ndim != a.ndim:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: expected operands of one ndim")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: {a.shape} @ {b.shape}: inner dims {a.shape[-1]} != {b.shape[-2]}"
        )
    if a.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: batch sizes {a.shape[0]} != {b.shape[0]}")


# ---------------------------------------------------------------- conv2d


def _check_conv(op, x, weight, stride, padding):
    _check_ndim(op, "input", x, (4,))
    _check_ndim(op, "weight", weight, (4,))
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{op}: weight: expected (O, {x.shape[1]}, KH, KW) for an input of "
            f"{x.shape[1]} channels (got {tuple(weight.shape)})"
        )
    stride = _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    return stride, padding


def conv2d_forward(x, weight, stride=1, padding=0):
    """(N, C, H, W) * (O, C, KH, KW) -> (N, O, OH, OW), cross-correlation, no bias."""
    _check_float("conv2d", input=x, weight=weight)
    stride, padding = _check_conv("conv2d", x, weight, stride, padding)
    _window("conv2d", x.shape, weight.shape[2:], stride, padding)
    return _impl("conv2d_forward")(_c(x), _c(weight), stride, padding)


def conv2d_backward(x, weight, grad_out, stride=1, padding=0, output_mask=(True, True, True)):
    """(dx, dweight, dbias) for conv2d_forward given grad_out (N, O, OH, OW).

    output_mask (as ATen's convolution_backward): which of the three to compute; the others
    come back as None (the first layer never needs dx of its images).
    """
    _check_float("conv2d_backward", input=x, weight=weight, grad_out=grad_out)
    stride, padding = _check_conv("conv2d_backward", x, weight, stride, padding)
    oh, ow = _window("conv2d_backward", x.shape, weight.shape[2:], stride, padding)
    want = (x.shape[0], weight.shape[0], oh, ow)
    if grad_out.shape != want:
        raise ValueError(f"conv2d_backward: grad_out: expected shape {want} (got {grad_out.shape})")
    mask = _mask("conv2d_backward", output_mask)
    return _impl("conv2d_backward")(_c(x), _c(weight), _c(grad_out), stride, padding, mask)


# ---------------------------------------------------------------- max_pool2d


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """(y, argmax) of a max pool over (N, C, H, W); argmax is int64 flat h*W + w.

    NaN wins (as PyTorch): its argmax is the last NaN of the window.
    """
    _check_float("max_pool2d", input=x)
    _check_ndim("max_pool2d", "input", x, (4,))
    k = _pair("max_pool2d", "kernel_size", kernel_size, 1)
    stride = k if stride is None else _pair("max_pool2d", "stride", stride, 1)
    padding = _pair("max_pool2d", "padding", padding, 0)
    if padding[0] > k[0] // 2 or padding[1] > k[1] // 2:
        raise ValueError(
            f"max_pool2d: padding: expected at most half the kernel size {k} (got {padding})"
        )
    _window("max_pool2d", x.shape, k, stride, padding)
    return _impl("max_pool2d_forward")(_c(x), k, stride, padding)


def max_pool2d_backward(grad_out, argmax, input_shape):
    """dx of max_pool2d_forward: grad_out scattered to the argmax positions."""
    _check_float("max_pool2d_backward", grad_out=grad_out)
    input_shape = tuple(int(s) for s in input_shape)
    if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int64:
        got = getattr(argmax, "dtype", type(argmax).__name__)
        raise TypeError(f"max_pool2d_backward: argmax: expected native int64 (got {got})")
    if argmax.shape != grad_out.shape:
        raise ValueError(
            f"max_pool2d_backward: argmax: expected shape {grad_out.shape} (got {argmax.shape})"
        )
    if len(input_shape) != 4 or grad_out.ndim != 4 or grad_out.shape[:2] != input_shape[:2]:
        raise ValueError(
            f"max_pool2d_backward: grad_out: expected (N, C, OH, OW) with N, C of input shape "
            f"{input_shape} (got {grad_out.shape})"
        )
    fn = _impl("max_pool2d_backward")
    hw = input_shape[2] * input_shape[3]
    if fn is not _COMPILED.get("max_pool2d_backward") and argmax.size:
        # the compiled kernel checks the range in its own pass and raises these words
        if argmax.min() < 0 or argmax.max() >= hw:
            raise ValueError(f"max_pool2d_backward: argmax: expected values in [0, {hw})")
    return fn(_c(grad_out), _c(argmax), input_shape)


# ---------------------------------------------------------------- batch norm


def _check_bn(op, x, **per_channel):
    _check_float(op, input=x, **per_channel)
    _check_ndim(op, "input", x, (2, 3))
    c = x.shape[1]
    for arg, v in per_channel.items():
        if v.shape != (c,):
            raise ValueError(f"{op}: {arg}: expected shape ({c},) (got {v.shape})")


def batch_norm_forward_train(x, weight, bias, eps, activation=None):
    """(y, mean, var, invstd) over x (N, C) or (N, C, L); var is the biased batch variance.

    A NaN in a channel gives that channel NaN statistics (as PyTorch). With an activation
    ('relu', 'sigmoid', 'tanh'), y is activation(batch norm) from the same pass, bit-identical
    to activation_forward of the plain y.
    """
    out = _compiled_first("batch_norm_forward_train", x, weight, bias, eps, activation)
    if out is not None:
        return out
    _check_bn("batch_norm", x, weight=weight, bias=bias)
    _check_activation("batch_norm", activation)
    if x.shape[1] and x.size == 0:  # the kernels read each channel's first value
        raise ValueError(
            f"batch_norm: input: expected at least 1 value per channel (got shape {x.shape})"
        )
    return _impl("batch_norm_forward_train")(_c(x), _c(weight), _c(bias), float(eps), activation)


def running_average(running, stat, keep, weight):
    """running <- keep * running + weight * stat in place (Algorithm 2's moving average;
    keep = 1 - momentum), rounded as the NumPy expression ``running *= keep; running +=
    weight * stat``: one compiled call for two arrays of one dtype and shape, 0.3 us instead
    of 1.6 (Zen 5); anything else (a float64 estimate of a float32 batch, a view) takes the
    NumPy expression itself. Returns running."""
    if _compiled_first("running_average", running, stat, keep, weight) is None:
        reference.running_average(running, stat, keep, weight)
    return running


def batch_norm_backward(grad_out, x, mean, invstd, weight, output_mask=(True, True, True)):
    """(dx, dweight, dbias) of batch_norm_forward_train; output_mask says which to return
    (the others are None; only dx costs a pass of its own)."""
    out = _compiled_first("batch_norm_backward", grad_out, x, mean, invstd, weight, output_mask)
    if out is not None:
        return out
    _check_bn("batch_norm_backward", x, mean=mean, invstd=invstd, weight=weight)
    _check_float("batch_norm_backward", input=x, grad_out=grad_out)
    if grad_out.shape != x.shape:
        raise ValueError(
            f"batch_norm_backward: grad_out: expected shape {x.shape} (got {grad_out.shape})"
        )
    mask = _mask("batch_norm_backward", output_mask)
    return _impl("batch_norm_backward")(_c(grad_out), _c(x), _c(mean), _c(invstd), _c(weight), mask)


def batch_norm_forward_eval(x, running_mean, running_var, weight, bias, eps):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, one fused pass."""
    y = _compiled_first("batch_norm_forward_eval", x, running_mean, running_var, weight, bias, eps)
    if y is not None:
        return y
    _check_bn(
        "batch_norm",
        x,
        running_mean=running_mean,
        running_var=running_var,
        weight=weight,
        bias=bias,
    )
    return _impl("batch_norm_forward_eval")(
        _c(x), _c(running_mean), _c(running_var), _c(weight), _c(bias), float(eps)
    )


# ---------------------------------------------------------------- softmax cross-entropy
# The labels' range is checked by the kernels themselves (both backends, one pass over the
# labels before any row is read): F.cross_entropy's fast path has no other check, so a tg.jit
# replay pays no host step for it and still raises for a bad label in a later batch.


def _check_ce(op, x, target, weight):
    if weight is None:
        _check_float(op, input=x)
    else:
        _check_float(op, input=x, weight=weight)
        if weight.shape != (x.shape[1],):
            raise ValueError(f"{op}: weight: expected shape ({x.shape[1]},) (got {weight.shape})")
    _check_ndim(op, "input", x, (2,))
    if type(target) is not np.ndarray or target.dtype != np.int64:
        got = getattr(target, "dtype", type(target).__name__)
        raise TypeError(f"{op}: target: expected native int64 class indices (got {got})")
    if target.size != x.shape[0]:
        raise ValueError(
            f"{op}: target: expected {x.shape[0]} class indices (got shape {target.shape})"
        )


def _check_reduction(op, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none' (got {reduction!r})")


def cross_entropy_forward(logits, target, weight, ignore_index, reduction):
    """(loss, prob, total_weight): softmax cross-entropy of logits (M, C) with M int64 class
    indices (any shape), weight (C,) or None; loss (M,) for "none", else 0-d; prob = softmax
    rows (kept for backward); total_weight = sum of w[target] over rows not ignore_index (the
    "mean" divides by it). Raises ValueError for a target value outside [0, C)."""
    out = _compiled_first("cross_entropy_forward", logits, target, weight, ignore_index, reduction)
    if out is not None:
        return out
    _check_ce("cross_entropy", logits, target, weight)
    _check_reduction("cross_entropy", reduction)
    return _impl("cross_entropy_forward")(
        _c(logits), _c(target), None if weight is None else _c(weight), ignore_index, reduction
    )


def cross_entropy_backward(grad, prob, target, weight, ignore_index, reduction, total_weight):
    """dx (M, C) = scale_i (prob_i - onehot(target_i)) of cross_entropy_forward; grad is (M,)
    for "none", else one value."""
    op = "cross_entropy_backward"
    dx = _compiled_first(op, grad, prob, target, weight, ignore_index, reduction, total_weight)
    if dx is not None:
        return dx
    _check_ce(op, prob, target, weight)
    _check_float(op, grad=grad, prob=prob)
    _check_reduction(op, reduction)
    if grad.size != (prob.shape[0] if reduction == "none" else 1) or grad.ndim > 1:
        raise ValueError(f"{op}: grad: expected the shape of the loss (got {grad.shape})")
    return _impl(op)(
        _c(grad),
        _c(prob),
        _c(target),
        None if weight is None else _c(weight),
        ignore_index,
        reduction,
        float(total_weight),
    )


# ---------------------------------------------------------------- optimizers
# One call per parameter group. The compiled kernels walk flat C-contiguous arrays of their
# parameter's dtype; anything else (a broadcast gradient from Sum's backward, a strided
# parameter, a float64 gradient of a float32 parameter) sends the whole group to the NumPy
# reference, which updates in place just the same.


def _plain_arrays(op, params, *lists):
    """True when every array is an aligned C-contiguous ndarray of its parameter's float
    dtype (None entries, new momentum buffers, pass); ValueError for a list of another length."""
    for lst in lists:
        if lst is None or len(lst) != len(params):
            raise ValueError(
                f"{op}: expected one array per parameter, {len(params)} (got {lst!r:.80})"
            )
    for k, p in enumerate(params):
        if type(p) is not np.ndarray or p.dtype not in _FLOATS:
            return False
        flags = p.flags
        if not (flags.c_contiguous and flags.aligned):
            return False
        for lst in lists:
            a = lst[k]
            if a is None:
                continue
            if type(a) is not np.ndarray or a.dtype != p.dtype:
                return False
            flags = a.flags
            if not (flags.c_contiguous and flags.aligned):
                return False
    return True


_COMPILED_SGD = _COMPILED.get("sgd_step")


def sgd_step(
    params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize
):
    """One SGD step (torch.optim.SGD's rule) over lists of arrays, in place: params[i] updated
    with grads[i]; with momentum, momentum_buffers[i] (None on the first step: the kernel puts
    a new buffer there). One compiled call for the whole list when every array is
    C-contiguous and of its parameter's dtype; the NumPy reference otherwise."""
    args = (float(lr), float(weight_decay), float(momentum), float(dampening))
    args += (bool(nesterov), bool(maximize))
    states = (grads, momentum_buffers) if momentum else (grads,)
    fast = _impl("sgd_step")
    if fast is _COMPILED_SGD:
        # As matmul: the compiled step checks, in C and before any update, every condition
        # _plain_arrays checks; checking them here first cost 0.6 us a parameter (5 us of
        # the MLP's 8-parameter step, Zen 5). When it refuses, arrays that are not plain go
        # to the reference, and an error on plain ones is raised in the kernel's words.
        try:
            return fast(params, grads, momentum_buffers, *args)
        except (TypeError, ValueError):
            if _plain_arrays("sgd_step", params, *states):
                raise
    else:
        _plain_arrays("sgd_step", params, *states)  # for its check of the lists' lengths
    return reference.sgd_step(params, grads, momentum_buffers, *args)


def adam_step(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    steps,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    decoupled_weight_decay,
):
    """One Adam step (torch.optim.Adam's rule; AdamW's with decoupled_weight_decay) over lists
    of arrays, in place; steps[i] is parameter i's step count after this step, and
    max_exp_avg_sqs a list with amsgrad (else None). One compiled call for the whole list
    when every array is plain (see _plain_arrays); the NumPy reference otherwise."""
    states = (grads, exp_avgs, exp_avg_sqs) + ((max_exp_avg_sqs,) if amsgrad else ())
    if len(steps) != len(params):
        raise ValueError(f"adam_step: steps: expected {len(params)} counts (got {len(steps)})")
    plain = _plain_arrays("adam_step", params, *states)
    fast = _impl("adam_step") if plain else reference.adam_step
    return fast(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        [int(t) for t in steps],
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        bool(amsgrad),
        bool(maximize),
        bool(decoupled_weight_decay),
    )


# ---------------------------------------------------------------- activations
# Elementwise: any shape; one element's result never depends on another's, on its position
# or on the thread count, so fused (bias_activation, batch_norm_forward_train(activation=))
# and unfused calls give the same bits.

_ACTIVATIONS = (None, "relu", "sigmoid", "tanh")


def _cn(a):
    """C-contiguous, any ndim (np.ascontiguousarray makes a 0-d array 1-d)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _check_activation(op, activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"{op}: activation: expected None, 'relu', 'sigmoid' or 'tanh' (got {activation!r})"
        )


def activation_forward(x, activation):
    """activation(x) elementwise, a new array: 'relu' (NaN kept), 'sigmoid', 'tanh'."""
    y = _compiled_first("activation_forward", x, activation)
    if y is not None:
        return y
    _check_float("activation_forward", input=x)
    _check_activation("activation_forward", activation)
    return _impl("activation_forward")(_cn(x), activation)


def activation_backward(grad_out, out, activation):
    """dx of activation_forward from its output `out` (sigmoid, tanh) or its sign (relu)."""
    dx = _compiled_first("activation_backward", grad_out, out, activation)
    if dx is not None:
        return dx
    _check_float("activation_backward", grad_out=grad_out, out=out)
    _check_activation("activation_backward", activation)
    if grad_out.shape != out.shape:
        raise ValueError(
            f"activation_backward: grad_out: expected shape {out.shape} (got {grad_out.shape})"
        )
    return _impl("activation_backward")(_cn(grad_out), _cn(out), activation)


def bias_activation(y, bias, activation):
    """activation(y + bias[c]) over y (N, C) or (N, C, L) with bias (C,) or None: in y's own
    memory when y is C-contiguous and writeable (a GEMM's fresh result), else in a copy;
    returns the array holding the result."""
    out = _compiled_first("bias_activation", y, bias, activation)
    if out is not None:
        return out
    if bias is None:
        _check_float("bias_activation", input=y)
    else:
        _check_float("bias_activation", input=y, bias=bias)
    _check_activation("bias_activation", activation)
    _check_ndim("bias_activation", "input", y, (2, 3))
    if bias is not None and bias.shape != (y.shape[1],):
        raise ValueError(
            f"bias_activation: bias: expected shape ({y.shape[1]},) (got {bias.shape})"
        )
    if not (y.flags.c_contiguous and y.flags.writeable):
        y = np.array(y, order="C")
    return _impl("bias_activation")(y, None if bias is None else _c(bias), activation)


def sum_rows(x):
    """(N,) sums over the rows of x (M, N), each column in row order from 0 (NumPy's order
    for a C-contiguous x.sum(axis=0)): a linear layer's bias gradient, 0.3 us instead of
    NumPy's 2 us reduction machinery at (60, 100), Zen 5."""
    out = _compiled_first("sum_rows", x)
    if out is not None:
        return out
    _check_float("sum_rows", input=x)
    _check_ndim("sum_rows", "input", x, (2,))
    return _impl("sum_rows")(_c(x))
