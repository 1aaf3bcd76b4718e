"""Tensor: a NumPy array plus the graph that reverse-mode autodiff walks.

An op (``tinygrad_bn.ops``) builds its output Tensor and, when a gradient is needed,
records itself as the output's ``_ctx``. ``backward()`` sorts that graph topologically
(iteratively, so a chain of 10,000 ops is fine) and runs each op's backward once, in
reverse order, summing the gradients of a node that is used several times.
"""

import contextlib
import threading

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_state = threading.local()


def is_grad_enabled():
    """False inside ``no_grad()``: ops then record no graph."""
    return getattr(_state, "grad_enabled", True)


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.previous = is_grad_enabled()
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        _state.grad_enabled = self.previous
        return False


def no_grad():
    """Context manager (or decorator) under which no graph is recorded."""
    return _GradMode(False)


def enable_grad():
    """Context manager (or decorator) that turns graph recording back on."""
    return _GradMode(True)


# The default random generator for factories, init and dropout; see manual_seed().
_default_rng = np.random.default_rng()


def manual_seed(seed):
    """Reseed the default generator used when no seed or Generator is given."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)
    return _default_rng


def get_rng(seed=None):
    """A numpy Generator: the one given, a new one from an int seed, or the default."""
    if seed is None:
        return _default_rng
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _to_array(data, dtype):
    """NumPy array for Tensor(data): NumPy float arrays keep their dtype, the rest float32."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"Tensor: dtype must be float32 or float64, got {dtype}")
        return np.asarray(data, dtype=dtype)
    arr = np.asarray(data)
    if arr.dtype in FLOAT_DTYPES and isinstance(data, (np.ndarray, np.generic)):
        return arr  # NumPy float data keeps its dtype; Python numbers and lists are float32
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float32)
    raise TypeError(f"Tensor: expected numbers (bool, int or float), got dtype {arr.dtype}")


class Tensor:
    """An n-dimensional float32/float64 array that can record how it was computed.

    >>> x = Tensor([[1.0, 2.0]], requires_grad=True)
    >>> (x * x).sum().backward(); x.grad
    Tensor([[2., 4.]], dtype=float32)
    """

    __slots__ = ("data", "requires_grad", "grad", "_ctx", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor calls Tensor's reflected op

    def __init__(self, data, dtype=None, requires_grad=False):
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"Tensor: only float tensors can require grad, got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None

    @classmethod
    def _from_op(cls, data, ctx):
        """An op's output: `data` is already a NumPy result; ctx is the op or None."""
        t = cls.__new__(cls)
        t.data = data if type(data) is np.ndarray else np.asarray(data)
        t.requires_grad = ctx is not None
        t.grad = None
        t._ctx = ctx
        return t

    # ------------------------------------------------------------ constructors
    @staticmethod
    def zeros(*shape, dtype=np.float32, requires_grad=False):
        return Tensor(np.zeros(_shape_arg(shape), dtype=dtype), requires_grad=requires_grad)

    @staticmethod
    def ones(*shape, dtype=np.float32, requires_grad=False):
        return Tensor(np.ones(_shape_arg(shape), dtype=dtype), requires_grad=requires_grad)

    @staticmethod
    def randn(*shape, seed=None, dtype=np.float32, requires_grad=False):
        """Standard normal values; `seed` is an int or a numpy Generator."""
        data = get_rng(seed).standard_normal(_shape_arg(shape)).astype(dtype)
        return Tensor(data, requires_grad=requires_grad)

    @staticmethod
    def rand(*shape, seed=None, dtype=np.float32, requires_grad=False):
        """Uniform values in [0, 1); `seed` is an int or a numpy Generator."""
        data = get_rng(seed).random(_shape_arg(shape)).astype(dtype)
        return Tensor(data, requires_grad=requires_grad)

    @staticmethod
    def from_numpy(array):
        """A Tensor sharing memory with a float32/float64 array (other dtypes are copied)."""
        return Tensor(array)

    # ------------------------------------------------------------ properties
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def is_leaf(self):
        return self._ctx is None

    def numel(self):
        return self.data.size

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def numpy(self):
        """The underlying ndarray, without copying: a detached view even if requires_grad."""
        _jit.host_read("numpy()")
        return self.data

    def __array__(self, dtype=None, copy=None):
        _jit.host_read("np.asarray(tensor)")
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: expected a tensor with one element, got shape {self.shape}")
        _jit.host_read("item()")
        return self.data.item()

    def tolist(self):
        _jit.host_read("tolist()")
        return self.data.tolist()

    def detach(self):
        """A Tensor with the same data and no graph: gradients stop here."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_: only leaf tensors can be set to require grad")
        self.requires_grad = bool(requires_grad)
        return self

    def astype(self, dtype):
        """Cast to float32 or float64, differentiably."""
        from .ops import Cast

        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"astype: expected float32 or float64, got {dtype}")
        return self if dtype == self.dtype else Cast.apply(self, dtype=dtype)

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def zero_grad(self):
        self.grad = None

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="Tensor(", threshold=200)
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._ctx is not None:
            extra += f", grad_fn={type(self._ctx).__name__}"
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    # ------------------------------------------------------------ autodiff
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires a gradient.

        `grad` (same shape as self) is required unless self has exactly one element.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no graph "
                "(was it computed under no_grad, or from tensors without "
                "requires_grad=True?)"
            )
        if _jit.recorder is not None and _jit.recorder.backward(self, grad):
            return  # tg.jit recorded (and ran) this backward
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for scalar "
                    f"outputs, got shape {self.shape}; pass grad="
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.array(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad shape {grad.shape} != tensor shape {self.shape}")
        grads = {self: grad}
        claimed = set()  # arrays already adopted as some leaf's .grad in this pass
        for node in reversed(_topological_order(self)):
            g = grads.pop(node, None)
            if g is None:
                continue
            if node._ctx is None:
                node._accumulate(g, claimed)
                continue
            ctx = node._ctx
            for parent, pg in zip(ctx.parents, ctx.backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                grads[parent] = pg if parent not in grads else grads[parent] + pg

    def _accumulate(self, g, claimed):
        """Add g to .grad. A fresh C-ordered array from backward is adopted without a
        copy; read-only broadcasts, other layouts and arrays another leaf already holds
        are copied, so every .grad owns its memory."""
        if g.dtype != self.dtype:
            g = g.astype(self.dtype)
        if self.grad is not None:
            self.grad = Tensor._from_op(self.grad.data + g, None)
            return
        base = g if g.base is None else g.base
        if id(base) in claimed or not g.flags.writeable or not g.flags.c_contiguous:
            g = np.array(g, order="C")
            base = g
        claimed.add(id(base))
        self.grad = Tensor._from_op(g, None)

    # ------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return _ops.Add.apply(*_pair(self, other))

    def __radd__(self, other):
        return _ops.Add.apply(*_pair(other, self))

    def __sub__(self, other):
        return _ops.Sub.apply(*_pair(self, other))

    def __rsub__(self, other):
        return _ops.Sub.apply(*_pair(other, self))

    def __mul__(self, other):
        return _ops.Mul.apply(*_pair(self, other))

    def __rmul__(self, other):
        return _ops.Mul.apply(*_pair(other, self))

    def __truediv__(self, other):
        return _ops.Div.apply(*_pair(self, other))

    def __rtruediv__(self, other):
        return _ops.Div.apply(*_pair(other, self))

    def __neg__(self):
        return _ops.Neg.apply(self)

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        return _as_tensor(other, self.dtype).matmul(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor) or not np.isscalar(exponent):
            raise TypeError(
                f"pow: the exponent must be a Python/NumPy scalar, got {type(exponent).__name__}"
            )
        return _ops.Pow.apply(self, exponent=float(exponent))

    def pow(self, exponent):
        return self**exponent

    def exp(self):
        return _ops.Exp.apply(self)

    def log(self):
        return _ops.Log.apply(self)

    def sqrt(self):
        return _ops.Pow.apply(self, exponent=0.5)

    def abs(self):
        return _ops.Abs.apply(self)

    def relu(self):
        return _ops.Relu.apply(self)

    def sigmoid(self):
        return _ops.Sigmoid.apply(self)

    def tanh(self):
        return _ops.Tanh.apply(self)

    def matmul(self, other):
        return _ops.matmul(self, _as_tensor(other, self.dtype))

    # ------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        return _ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        count = _count(self.shape, axis)
        return _ops.Sum.apply(self, axis=axis, keepdims=keepdims) * (1.0 / max(count, 1))

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        if self.data.size == 0:
            raise ValueError(f"max: cannot reduce an empty tensor of shape {self.shape}")
        return _ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=None, correction=1, ddof=None):
        """Variance; like PyTorch, unbiased by default (correction=1); ddof is an alias."""
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        correction = correction if ddof is None else ddof
        count = _count(self.shape, axis)
        centered = self - self.mean(axis=axis, keepdims=True)
        total = (centered * centered).sum(axis=axis, keepdims=keepdims)
        return total * (1.0 / max(count - correction, 1))

    # ------------------------------------------------------------ shape
    def reshape(self, *shape):
        return _ops.Reshape.apply(self, shape=_shape_arg(shape))

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _axis(start_dim, self.ndim), _axis(end_dim, self.ndim)
        return self.reshape(*self.shape[:s], -1, *self.shape[e + 1 :])

    def permute(self, *dims):
        dims = _shape_arg(dims)
        if sorted(_axis(d, self.ndim) for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute: expected a permutation of {self.ndim} dims, got {dims}")
        return _ops.Permute.apply(self, order=tuple(_axis(d, self.ndim) for d in dims))

    def transpose(self, dim0=-2, dim1=-1):
        order = list(range(self.ndim))
        a, b = _axis(dim0, self.ndim), _axis(dim1, self.ndim)
        order[a], order[b] = order[b], order[a]
        return self.permute(*order)

    def __getitem__(self, index):
        return _ops.GetItem.apply(self, index=_index_arg(index))

    # ------------------------------------------------------------ composites
    def softmax(self, axis=-1, *, dim=None):
        return _ops.LogSoftmax.apply(self, axis=_axis(_pick(axis, dim), self.ndim)).exp()

    def log_softmax(self, axis=-1, *, dim=None):
        return _ops.LogSoftmax.apply(self, axis=_axis(_pick(axis, dim), self.ndim))


# -------------------------------------------------------------------- helpers


def _as_tensor(x, dtype):
    """A Tensor for x: itself if it is one, else a constant of the given dtype."""
    if isinstance(x, Tensor):
        return x
    return Tensor(np.asarray(x, dtype=dtype))


def _pair(a, b):
    """Both operands as Tensors, promoted to one dtype (float64 wins, as in NumPy)."""
    like = a if isinstance(a, Tensor) else b
    a, b = _as_tensor(a, like.dtype), _as_tensor(b, like.dtype)
    if a.dtype != b.dtype:
        a, b = a.astype(np.float64), b.astype(np.float64)
    return a, b


def _shape_arg(shape):
    """Accept f(2, 3) and f((2, 3)) alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _axis(a, ndim):
    n = max(ndim, 1)
    if not -n <= a < n:
        raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dims")
    return a % n


def _pick(axis, dim):
    return axis if dim is None else dim


def _reduce_args(t, axis, dim, keepdims, keepdim):
    """Normalise NumPy's (axis, keepdims) and PyTorch's (dim, keepdim) to (tuple|None, bool)."""
    if axis is not None and dim is not None:
        raise TypeError("pass either axis= or dim=, not both")
    axis = _pick(axis, dim)
    keepdims = bool(keepdims if keepdim is None else keepdim)
    if axis is None:
        return None, keepdims
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(sorted({_axis(int(a), t.ndim) for a in axes}))
    return axes, keepdims


def _count(shape, axis):
    if axis is None:
        return int(np.prod(shape, dtype=np.int64))
    return int(np.prod([shape[a] for a in axis], dtype=np.int64))


def _index_arg(index):
    """Tensors inside an index become integer arrays."""
    if isinstance(index, Tensor):
        return index.data.astype(np.int64)
    if isinstance(index, tuple):
        return tuple(i.data.astype(np.int64) if isinstance(i, Tensor) else i for i in index)
    return index


def _topological_order(root):
    """Nodes that require grad, each after all of its inputs; iterative DFS, no recursion.

    Tensors hash by identity (Tensor defines no __eq__), so they key the set directly.
    """
    order, seen = [], set()
    stack = [(root, False)]
    pop, push, visit = stack.pop, stack.append, seen.add
    while stack:
        node, expanded = pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        visit(node)
        push((node, True))
        if node._ctx is not None:
            for p in node._ctx.parents:
                if p.requires_grad and p not in seen:
                    push((p, False))
    return order


from . import jit as _jit  # noqa: E402  (both need the Tensor class defined above)
from . import ops as _ops  # noqa: E402
