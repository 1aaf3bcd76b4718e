"""Tensor: a NumPy array plus the graph that reverse-mode autodiff walks.

An op (``tinygrad_bn.ops``) builds its output Tensor and, when a gradient is needed,
records itself as the output's ``_ctx``. ``backward()`` sorts that graph topologically
(iteratively, so a chain of 10,000 ops is fine) and runs each op's backward once, in
reverse order, summing the gradients of a node that is used several times.
"""

import contextlib
import threading
import warnings

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _GradState(threading.local):
    """Grad mode per OS thread, as in PyTorch, and the modes the open blocks will restore."""

    def __init__(self):
        self.enabled = True
        self.saved = []  # one entry per no_grad/enable_grad block entered, innermost last


_grad = _GradState()


def is_grad_enabled():
    """False inside ``no_grad()``: ops then record no graph."""
    return _grad.enabled


class _GradMode(contextlib.ContextDecorator):
    """Set grad mode inside a block. The previous mode goes on the thread's stack, not on the
    instance, so one instance can be nested in itself, decorate a recursive function, or be
    used by several threads at once."""

    enabled = True

    def __new__(cls, orig_func=None):
        self = super().__new__(cls)
        return self if orig_func is None else self(orig_func)  # bare @no_grad, as PyTorch

    def __enter__(self):
        _grad.saved.append(_grad.enabled)
        _grad.enabled = self.enabled

    def __exit__(self, *exc):
        _grad.enabled = _grad.saved.pop()
        return False


class no_grad(_GradMode):
    """Context manager (or decorator) under which no graph is recorded."""

    enabled = False


class enable_grad(_GradMode):
    """Context manager (or decorator) that turns graph recording back on."""

    enabled = True


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
            raise TypeError(f"Tensor: expected dtype float32 or float64 (got {dtype})")
        return np.asarray(data, dtype=dtype)
    arr = np.asarray(data)
    if arr.dtype in FLOAT_DTYPES and isinstance(data, (np.ndarray, np.generic)):
        return arr  # NumPy float data keeps its dtype; Python numbers and lists are float32
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float32)
    raise TypeError(f"Tensor: expected numbers (bool, int or float) (got dtype {arr.dtype})")


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
            raise TypeError("len: expected a tensor with at least 1 dim (got a 0-d tensor)")
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
            raise ValueError(f"item: expected a tensor with one element (got shape {self.shape})")
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
            raise RuntimeError("requires_grad_: expected a leaf tensor (got an op's output)")
        self.requires_grad = bool(requires_grad)
        return self

    def astype(self, dtype):
        """Cast to float32 or float64, differentiably."""
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"astype: expected float32 or float64 (got {dtype})")
        return self if dtype == self.dtype else _ops.Cast.apply(self, dtype=dtype)

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
            extra += f", grad_fn=<{type(self._ctx).__name__}Backward>"
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    # ------------------------------------------------------------ autodiff
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires a gradient.

        `grad` (same shape as self) is required unless self has exactly one element.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: expected a tensor that requires grad (got one with no graph: was it "
                "computed under no_grad, or from tensors without requires_grad=True?)"
            )
        if _jit.recorder is not None and _jit.recorder.backward(self, grad):
            return  # tg.jit recorded (and ran) this backward
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for scalar outputs: "
                    f"expected grad= for a tensor of shape {self.shape}"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.array(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward: expected grad of the tensor's shape {self.shape} (got {grad.shape})"
                )
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
        return _ops.Add.apply(*_broadcasted("add", self, other))

    def __radd__(self, other):
        return _ops.Add.apply(*_broadcasted("add", other, self))

    def __sub__(self, other):
        return _ops.Sub.apply(*_broadcasted("sub", self, other))

    def __rsub__(self, other):
        return _ops.Sub.apply(*_broadcasted("sub", other, self))

    def __mul__(self, other):
        return _ops.Mul.apply(*_broadcasted("mul", self, other))

    def __rmul__(self, other):
        return _ops.Mul.apply(*_broadcasted("mul", other, self))

    def __truediv__(self, other):
        return _ops.Div.apply(*_broadcasted("div", self, other))

    def __rtruediv__(self, other):
        return _ops.Div.apply(*_broadcasted("div", other, self))

    def __neg__(self):
        return _ops.Neg.apply(self)

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        t, other = _with_operand("matmul", self, other)
        return other.matmul(t)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor) or not np.isscalar(exponent):
            raise TypeError(
                f"pow: expected a Python or NumPy scalar exponent (got {type(exponent).__name__})"
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
        """self @ other with NumPy's rules: a 1-D operand becomes a matrix (a row on the
        left, a column on the right) and that axis is dropped from the result; the dims
        before the last two broadcast."""
        if isinstance(other, Tensor):
            a, b = _promote(self, other)
        else:
            a, b = _with_operand("matmul", self, other)
        shapes = f"{a.shape} @ {b.shape}"
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: expected operands with at least 1 dim (got {shapes})")
        vec_a, vec_b = a.ndim == 1, b.ndim == 1
        if vec_a:
            a = a.reshape(1, -1)
        if vec_b:
            b = b.reshape(-1, 1)
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: expected inner dims to match (got {shapes})")
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: expected batch dims that broadcast (got {shapes})") from None
        out = _ops.MatMul.apply(a, b)
        if vec_a and vec_b:
            return out.reshape(())
        if vec_a:
            return out.reshape(*out.shape[:-2], out.shape[-1])
        if vec_b:
            return out.reshape(*out.shape[:-1])
        return out

    # ------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        return _ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Mean; over an empty axis it is nan, as in PyTorch (0 / 0)."""
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        count = _count(self.shape, axis)
        total = _ops.Sum.apply(self, axis=axis, keepdims=keepdims)
        return total * (1.0 / count if count else np.nan)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        if self.data.size == 0 and _count(self.shape, axis) == 0:
            raise ValueError(f"max: expected to reduce non-empty dims (got shape {self.shape})")
        return _ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=None, correction=1, ddof=None):
        """Variance; like PyTorch, unbiased by default (correction=1); ddof is an alias.

        Divides by max(N - correction, 0), as PyTorch: with no degrees of freedom left the
        result is nan (a zero sum) or inf, and a UserWarning says so, as in PyTorch.
        """
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        correction = correction if ddof is None else ddof
        dof = max(_count(self.shape, axis) - correction, 0)
        centered = self - self.mean(axis=axis, keepdims=True)
        total = (centered * centered).sum(axis=axis, keepdims=keepdims)
        if dof > 0:
            return total * (1.0 / dof)
        warnings.warn("var: degrees of freedom is <= 0 (result is nan or inf)", stacklevel=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            return total / 0.0

    # ------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        if not _fits(self.data.size, shape):
            raise ValueError(
                f"reshape: expected a shape with {self.data.size} elements "
                f"(got {shape} for a tensor of shape {self.shape})"
            )
        return _ops.Reshape.apply(self, shape=shape)

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
            raise ValueError(
                f"permute: expected a permutation of the {self.ndim} dims (got {dims})"
            )
        return _ops.Permute.apply(self, order=tuple(_axis(d, self.ndim) for d in dims))

    def transpose(self, dim0=-2, dim1=-1):
        order = list(range(self.ndim))
        a, b = _axis(dim0, self.ndim), _axis(dim1, self.ndim)
        order[a], order[b] = order[b], order[a]
        return self.permute(*order)

    def __getitem__(self, index):
        index = _index_arg(index)
        try:  # index a zero-stride stand-in: checks the index without touching the data
            np.broadcast_to(np.empty((), np.bool_), self.shape)[index]
        except IndexError as e:
            raise IndexError(
                f"index: expected an index valid for shape {self.shape} (got {index!r}: {e})"
            ) from None
        return _ops.GetItem.apply(self, index=index)

    # ------------------------------------------------------------ composites
    def softmax(self, axis=-1, *, dim=None):
        return _ops.LogSoftmax.apply(self, axis=_axis(_pick(axis, dim), self.ndim)).exp()

    def log_softmax(self, axis=-1, *, dim=None):
        return _ops.LogSoftmax.apply(self, axis=_axis(_pick(axis, dim), self.ndim))


def cat(tensors, dim=0, *, axis=None):
    """Concatenate tensors along an existing axis (torch.cat / numpy.concatenate)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors (got an empty one)")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"cat: expected a sequence of Tensors (got a {type(t).__name__})")
    axis = dim if axis is None else axis
    ref = tensors[0]
    if ref.ndim == 0:
        raise ValueError("cat: expected tensors with at least 1 dim (got a 0-d tensor)")
    ax = _axis(axis, ref.ndim)
    rest = ref.shape[:ax] + ref.shape[ax + 1 :]
    for i, t in enumerate(tensors):
        if t.ndim != ref.ndim or t.shape[:ax] + t.shape[ax + 1 :] != rest:
            raise ValueError(
                f"cat: expected shapes equal to {ref.shape} except along axis {ax} "
                f"(got {t.shape} for tensor {i})"
            )
    return _ops.Cat.apply(*_promote(*tensors), axis=ax)


# -------------------------------------------------------------------- helpers


def _promote(*tensors):
    """The tensors cast to one dtype, PyTorch's rule for tensors: float64 wins, but 0-d
    tensors count only when every tensor is 0-d (x32 * Tensor(2.0, float64) stays float32).
    The one place dtypes are promoted: binary ops, matmul, cat, linear and conv2d use it."""
    first = tensors[0].data.dtype
    if all(t.data.dtype == first for t in tensors):
        return tensors
    sized = [t.dtype for t in tensors if t.ndim] or [t.dtype for t in tensors]
    dtype = np.result_type(*sized)
    return tuple(t.astype(dtype) for t in tensors)


def _broadcasted(op, a, b):
    """(a, b), one of them a Tensor, as Tensors of one dtype whose shapes broadcast.

    The other operand's dtype counts as in PyTorch: a Python or NumPy scalar (or a list)
    takes the tensor's dtype, so ``2 * x`` stays float32; an ndarray promotes as NumPy does
    (float32 tensor + float64 array -> float64); a Tensor as in ``_promote``.
    """
    if not isinstance(b, Tensor):
        a, b = _with_operand(op, a, b)
    elif not isinstance(a, Tensor):
        b, a = _with_operand(op, b, a)
    elif a.data.dtype != b.data.dtype:
        a, b = _promote(a, b)
    if a.data.shape != b.data.shape:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(
                f"{op}: expected shapes that broadcast (got {a.shape} and {b.shape})"
            ) from None
    return a, b


def _with_operand(op, t, x):
    """(t, x) for Tensor t and a non-Tensor operand x, as Tensors of one dtype."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: expected a Tensor, array or number (got {type(x).__name__})")
    if isinstance(x, np.ndarray):
        dtype = np.promote_types(arr.dtype, t.dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: expected a float32 or float64 result (got {dtype})")
        t = t.astype(dtype)
    return t, Tensor._from_op(arr.astype(t.dtype, copy=False), None)


def _fits(size, shape):
    """Whether `size` elements fill `shape`, in which one -1 stands for the rest."""
    known = [s for s in shape if s != -1]
    if len(shape) - len(known) > 1 or any(s < 0 for s in known):
        return False
    n = int(np.prod(known, dtype=np.int64))
    return n == size if len(known) == len(shape) else n > 0 and size % n == 0


def _shape_arg(shape):
    """Accept f(2, 3) and f((2, 3)) alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _axis(a, ndim):
    n = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1, as in PyTorch
    if not -n <= a < n:
        raise ValueError(f"dim: expected a dim in [{-n}, {n - 1}] (got {a} for {ndim} dims)")
    return a % n


def _pick(axis, dim):
    return axis if dim is None else dim


def _reduce_args(t, axis, dim, keepdims, keepdim):
    """Normalise NumPy's (axis, keepdims) and PyTorch's (dim, keepdim) to (tuple|None, bool).

    A 0-d tensor reduced over dim 0 or -1 reduces nothing (axes ()), as in PyTorch.
    """
    if axis is not None and dim is not None:
        raise TypeError("reduce: expected axis= or dim=, not both (got both)")
    axis = _pick(axis, dim)
    keepdims = bool(keepdims if keepdim is None else keepdim)
    if axis is None:
        return None, keepdims
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(sorted({_axis(int(a), t.ndim) for a in axes}))
    return (axes if t.ndim else ()), keepdims


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
