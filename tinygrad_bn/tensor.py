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
# Data-only dtypes, as PyTorch's bool/uint8/int*: they hold masks, labels and indices and
# never require a gradient.
DATA_DTYPES = tuple(
    np.dtype(d) for d in (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64)
)


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
    """NumPy array for Tensor(data): NumPy arrays keep a float/int/bool dtype, Python
    numbers and lists become float32 (the project's convention; PyTorch gives int64 for
    lists of ints)."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES and dtype not in DATA_DTYPES:
            raise TypeError(
                f"Tensor: expected dtype float32, float64, bool, uint8 or int8/16/32/64 "
                f"(got {dtype})"
            )
        return np.asarray(data, dtype=dtype)
    arr = np.asarray(data)
    if isinstance(data, (np.ndarray, np.generic)):
        if arr.dtype in FLOAT_DTYPES or arr.dtype in DATA_DTYPES:
            return arr  # NumPy data keeps its dtype
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float32)
    raise TypeError(f"Tensor: expected numbers (bool, int or float) (got dtype {arr.dtype})")


def _check_grad_dtype(dtype, op):
    if dtype.kind != "f":
        raise RuntimeError(
            f"{op}: only Tensors of floating point dtype can require gradients (got {dtype})"
        )


class Tensor:
    """An n-dimensional array that can record how it was computed: float32/float64, or
    bool/int data (masks, labels, indices), which never requires a gradient.

    >>> x = Tensor([[1.0, 2.0]], requires_grad=True)
    >>> (x * x).sum().backward(); x.grad
    Tensor([[2., 4.]], dtype=float32)
    """

    __slots__ = ("data", "requires_grad", "grad", "_ctx", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor calls Tensor's reflected op

    def __init__(self, data, dtype=None, requires_grad=False):
        self.data = _to_array(data, dtype)
        if requires_grad:
            _check_grad_dtype(self.data.dtype, "Tensor")
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
        """A Tensor sharing memory with the array if its dtype is one a Tensor holds
        (float32/64, bool, uint8, int8-64); other integer dtypes are copied to int64."""
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
        if requires_grad:
            _check_grad_dtype(self.data.dtype, "requires_grad_")
        self.requires_grad = bool(requires_grad)
        return self

    def astype(self, dtype):
        """Cast, differentiably between float32 and float64; a cast to bool or an integer
        dtype is data only (no gradient), as in PyTorch."""
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES and dtype not in DATA_DTYPES:
            raise TypeError(
                f"astype: expected float32, float64, bool, uint8 or int8/16/32/64 (got {dtype})"
            )
        if dtype == self.dtype:
            return self
        if dtype.kind != "f":
            return Tensor._from_op(self.data.astype(dtype), None)
        return _ops.Cast.apply(self, dtype=dtype)

    def to(self, dtype):
        return self.astype(dtype)

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def long(self):
        return self.astype(np.int64)

    def int(self):
        return self.astype(np.int32)

    def bool(self):
        return self.astype(np.bool_)

    def is_floating_point(self):
        return self.data.dtype.kind == "f"

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
        dtype = self.data.dtype
        if g.dtype != dtype:
            g = g.astype(dtype)
        if self.grad is not None:
            self.grad = Tensor._from_op(self.grad.data + g, None)
            return
        base = g.base
        if base is None:
            base = g
        flags = g.flags  # one flags object: this runs per leaf per backward
        if id(base) in claimed or not (flags.writeable and flags.c_contiguous):
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
        return _ops.Div.apply(*_true_div_operands(*_broadcasted("div", self, other)))

    def __rtruediv__(self, other):
        return _ops.Div.apply(*_true_div_operands(*_broadcasted("div", other, self)))

    def __neg__(self):
        return _ops.Neg.apply(self)

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        t, other = _with_operand("matmul", self, other)
        return other.matmul(t)

    def __pow__(self, exponent):
        if isinstance(exponent, (Tensor, np.ndarray)):
            return _ops.PowTensor.apply(*_broadcasted("pow", self, exponent))
        if not np.isscalar(exponent) or np.asarray(exponent).dtype.kind not in "biuf":
            raise TypeError(
                f"pow: expected a number, array or Tensor exponent (got {type(exponent).__name__})"
            )
        x = self
        if x.dtype.kind != "f" and (exponent < 0 or float(exponent) != int(exponent)):
            x = x.astype(np.float32)  # a fractional or negative power of an integer is float
        return _ops.Pow.apply(x, exponent=float(exponent))

    def __rpow__(self, base):
        return _ops.PowTensor.apply(*_broadcasted("pow", base, self))

    # method spellings of the operators, as PyTorch
    def add(self, other, *, alpha=1):
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other, *, alpha=1):
        return self - (other if alpha == 1 else other * alpha)

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def neg(self):
        return -self

    def pow(self, exponent):
        return self**exponent

    # ------------------------------------------------------------ comparisons
    # Data only (bool results, no gradient), as in PyTorch. Tensors still hash by identity:
    # the graph and the optimizers key dicts and sets by Tensor.
    __hash__ = object.__hash__

    def _compare(self, other, ufunc, op):
        if not isinstance(other, Tensor) and np.asarray(other).dtype.kind not in "biuf":
            return NotImplemented  # t == None or t == "a" is False, as in PyTorch
        a, b = _broadcasted(op, self, other)
        return Tensor._from_op(ufunc(a.data, b.data), None)

    def __eq__(self, other):
        return self._compare(other, np.equal, "eq")

    def __ne__(self, other):
        return self._compare(other, np.not_equal, "ne")

    def __lt__(self, other):
        return self._compare(other, np.less, "lt")

    def __le__(self, other):
        return self._compare(other, np.less_equal, "le")

    def __gt__(self, other):
        return self._compare(other, np.greater, "gt")

    def __ge__(self, other):
        return self._compare(other, np.greater_equal, "ge")

    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    def __invert__(self):
        if self.dtype.kind not in "biu":
            raise TypeError(f"invert: expected a bool or integer tensor (got {self.dtype})")
        return Tensor._from_op(~self.data, None)

    def logical_not(self):
        return Tensor._from_op(np.logical_not(self.data), None)

    def __and__(self, other):
        return self._logical(other, np.bitwise_and, "and")

    def __or__(self, other):
        return self._logical(other, np.bitwise_or, "or")

    def __xor__(self, other):
        return self._logical(other, np.bitwise_xor, "xor")

    def _logical(self, other, ufunc, op):
        a, b = _broadcasted(op, self, other)
        if a.dtype.kind not in "biu":
            raise TypeError(f"{op}: expected bool or integer tensors (got {a.dtype})")
        return Tensor._from_op(ufunc(a.data, b.data), None)

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(
                f"bool: expected a tensor with one element (got shape {self.shape}): "
                f"the truth value of several values is ambiguous"
            )
        return bool(self.data.item())

    def any(self):
        return Tensor._from_op(np.any(self.data), None)

    def all(self):
        return Tensor._from_op(np.all(self.data), None)

    # ------------------------------------------------------------ selection
    def where(self, condition, other):
        """self where condition is True, else other (x.where(c, y) == tg.where(c, x, y))."""
        return where(condition, self, other)

    def masked_fill(self, mask, value):
        """self with `value` (a number or 0-d tensor) where the bool `mask` is True."""
        mask = _mask(mask, "masked_fill")
        if isinstance(value, Tensor):
            if value.ndim:
                raise ValueError(
                    f"masked_fill: expected a number or a 0-d tensor value (got shape "
                    f"{value.shape})"
                )
        elif not np.isscalar(value) or np.asarray(value).dtype.kind not in "biuf":
            raise TypeError(f"masked_fill: expected a number value (got {type(value).__name__})")
        else:
            value = Tensor._from_op(np.asarray(value, dtype=self.dtype), None)
        if _broadcast_shape(mask.shape, self.shape) != self.shape:
            raise ValueError(
                f"masked_fill: expected a mask that broadcasts to {self.shape} (got {mask.shape})"
            )
        return _ops.Where.apply(mask, value.astype(self.dtype), self)

    def clamp(self, min=None, max=None):
        """min(max(self, min), max); min and max are numbers or tensors (either may be None).

        The gradient flows to self where min <= self <= max, as PyTorch; with min > max the
        result is max.
        """
        if min is None and max is None:
            raise ValueError("clamp: expected at least one of min and max (got neither)")
        out = self
        if min is not None:
            out = where(out < min, min, out)
        if max is not None:
            out = where(out > max, max, out)
        return out

    def clip(self, min=None, max=None):
        return self.clamp(min, max)

    def maximum(self, other):
        """Elementwise maximum; at ties each input gets half the gradient, as PyTorch."""
        return _ops.Maximum.apply(*_broadcasted("maximum", self, other))

    def minimum(self, other):
        """Elementwise minimum; at ties each input gets half the gradient, as PyTorch."""
        return _ops.Minimum.apply(*_broadcasted("minimum", self, other))

    def sign(self):
        return _ops.Sign.apply(self)

    def exp(self):
        return _ops.Exp.apply(_floating(self))

    def log(self):
        return _ops.Log.apply(_floating(self))

    def sqrt(self):
        return _ops.Pow.apply(_floating(self), exponent=0.5)

    def abs(self):
        return _ops.Abs.apply(self)

    def relu(self):
        return _ops.Relu.apply(self)

    def sigmoid(self):
        return _ops.Sigmoid.apply(_floating(self))

    def tanh(self):
        return _ops.Tanh.apply(_floating(self))

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

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Minimum (values only, as max); the gradient is split evenly between ties."""
        axis, keepdims = _reduce_args(self, axis, dim, keepdims, keepdim)
        if self.data.size == 0 and _count(self.shape, axis) == 0:
            raise ValueError(f"min: expected to reduce non-empty dims (got shape {self.shape})")
        return _ops.Min.apply(self, axis=axis, keepdims=keepdims)

    def argmax(self, dim=None, keepdim=False):
        """int64 index of the first maximum along dim (of the flattened tensor if None)."""
        return self._arg(np.argmax, "argmax", dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        """int64 index of the first minimum along dim (of the flattened tensor if None)."""
        return self._arg(np.argmin, "argmin", dim, keepdim)

    def _arg(self, fn, op, dim, keepdim):
        if dim is None:
            if self.data.size == 0:
                raise ValueError(f"{op}: expected a non-empty tensor (got shape {self.shape})")
            out = np.asarray(fn(self.data))
            return Tensor._from_op(out.reshape((1,) * self.ndim) if keepdim else out, None)
        ax = _axis(dim, self.ndim)
        if self.ndim == 0:
            return Tensor._from_op(np.zeros((), np.int64), None)
        if self.shape[ax] == 0:
            raise ValueError(f"{op}: expected a non-empty dim {dim} (got shape {self.shape})")
        return Tensor._from_op(fn(self.data, axis=ax, keepdims=bool(keepdim)), None)

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
        """Basic and advanced indexing with PyTorch's rules: an int Tensor (or array, or
        list) indexes, a bool Tensor is a mask, a float Tensor is an IndexError; ints are
        applied first, so x[0, :, [0, 1]] is x[0][:, [0, 1]] (NumPy would move the list's
        dim to the front)."""
        steps = _index_steps(_index_arg(index), self.ndim)
        out = self
        for step in steps:
            try:  # index a zero-stride stand-in: checks the index without touching the data
                np.broadcast_to(np.empty((), np.bool_), out.shape)[step]
            except IndexError as e:
                raise IndexError(
                    f"index: expected an index valid for shape {self.shape} (got {index!r}: {e})"
                ) from None
            out = _ops.GetItem.apply(out, index=step)
        return out

    def unsqueeze(self, dim):
        """A new size-1 dim at position dim (in [-ndim - 1, ndim])."""
        d = _axis(dim, self.ndim + 1)
        return self.reshape(*self.shape[:d], 1, *self.shape[d:])

    def squeeze(self, dim=None):
        """Drop size-1 dims (all of them, or those of dim, an int or a tuple); other
        dims named are kept, as PyTorch."""
        if dim is None:
            drop = {i for i, s in enumerate(self.shape) if s == 1}
        else:
            dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
            drop = {
                a
                for a in (_axis(int(d), self.ndim) for d in dims)
                if self.ndim and self.shape[a] == 1
            }
        return self.reshape(*(s for i, s in enumerate(self.shape) if i not in drop))

    def expand(self, *sizes):
        """A broadcast view of size-1 dims to `sizes` (-1 keeps a dim; new dims go first)."""
        sizes = _shape_arg(sizes)
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ValueError(
                f"expand: expected at least {self.ndim} sizes (got {sizes} for shape {self.shape})"
            )
        shape = tuple(
            s if s != -1 or i < lead else self.shape[i - lead] for i, s in enumerate(sizes)
        )
        if any(s < 0 for s in shape) or _broadcast_shape(self.shape, shape) != shape:
            raise ValueError(f"expand: expected sizes {self.shape} can expand to (got {sizes})")
        return _ops.Expand.apply(self, shape=shape)

    def expand_as(self, other):
        return self.expand(*other.shape)

    def flip(self, *dims):
        """Reverse the order of elements along dims."""
        dims = _shape_arg(dims)
        axes = tuple(sorted({_axis(d, self.ndim) for d in dims})) if self.ndim else ()
        if len(axes) != len(dims) and self.ndim:
            raise ValueError(f"flip: expected distinct dims (got {dims})")
        return _ops.Flip.apply(self, axes=axes)

    def split(self, split_size_or_sections, dim=0):
        """Pieces along dim: of split_size each (the last may be smaller), or of the sizes
        in a list, which must sum to the dim's size."""
        d = _axis(dim, self.ndim)
        n = self.shape[d] if self.ndim else 1
        s = split_size_or_sections
        if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            if s <= 0 and not (s == 0 and n == 0):
                raise ValueError(f"split: expected split_size > 0 (got {s})")
            sizes = [min(s, n - i) for i in range(0, n, s)] if n else [0]
        else:
            sizes = [int(v) for v in s]
            if sum(sizes) != n or any(v < 0 for v in sizes):
                raise ValueError(
                    f"split: expected sections that sum to the dim's size {n} (got {list(s)})"
                )
        lead = (slice(None),) * d
        starts = np.cumsum([0] + sizes[:-1])
        return tuple(self[lead + (slice(int(a), int(a) + v),)] for a, v in zip(starts, sizes))

    def chunk(self, chunks, dim=0):
        """At most `chunks` pieces of ceil(size / chunks) along dim, as PyTorch."""
        if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
            raise ValueError(f"chunk: expected chunks to be an integer >= 1 (got {chunks!r})")
        n = self.shape[_axis(dim, self.ndim)] if self.ndim else 1
        return self.split(max(-(-n // chunks), 1), dim)

    # ------------------------------------------------------------ more reductions
    def std(self, axis=None, keepdims=False, *, dim=None, keepdim=None, correction=1, ddof=None):
        """Standard deviation: sqrt of var (same arguments, unbiased by default)."""
        axes, keep = _reduce_args(self, axis, dim, keepdims, keepdim)
        dof = _count(self.shape, axes) - (correction if ddof is None else ddof)
        if dof <= 0:  # nan or inf, with var's warning
            return self.var(
                axis, keepdims, dim=dim, keepdim=keepdim, correction=correction, ddof=ddof
            ).sqrt()
        # the 2-norm of the centered values: its gradient is 0, not nan, where std is 0
        axis, keepdims = axes, keep
        centered = self - self.mean(axis=axis, keepdims=True)
        return _ops.Norm2.apply(centered, axis=axis, keepdims=keepdims) * (1.0 / np.sqrt(dof))

    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(x))) along dim, shifted by the max (a constant) so exp never overflows."""
        axis, keepdims = _reduce_args(self, None, dim, False, keepdim)
        m = np.max(self.data, axis=axis, keepdims=True) if self.data.size else 0.0
        m = np.where(np.isfinite(m), m, 0).astype(self.dtype)  # all -inf: the result is -inf
        with np.errstate(divide="ignore"):
            out = (self - m).exp().sum(axis=axis, keepdims=True).log() + m
        return out if keepdims else out.reshape(*_reduced_shape(self.shape, axis))

    def prod(self, dim=None, keepdim=False):
        """Product over dim (all elements if None); the gradient is exact at zeros."""
        axis, keepdims = _reduce_args(self, None, dim, False, keepdim)
        if axis is not None and len(axis) == 0:
            return self * 1
        if axis is None:
            out = _ops.Prod.apply(self.reshape(-1), axis=0)
            return out.reshape(*(1,) * self.ndim) if keepdims else out
        out = _ops.Prod.apply(self, axis=axis[0])
        return out.unsqueeze(axis[0]) if keepdims else out

    def norm(self, p="fro", dim=None, keepdim=False):
        """Vector p-norm over dim (all elements if None): p = 'fro' or 2, 1, inf, -inf or any
        other number > 0 (sum |x|^p)^(1/p). The 2-norm's gradient at 0 is 0, as PyTorch."""
        axis, keepdims = _reduce_args(self, None, dim, False, keepdim)
        if p in ("fro", 2):
            return _ops.Norm2.apply(self, axis=axis, keepdims=keepdims)
        a = self.abs()
        if p == float("inf"):
            return a.max(axis, keepdims)
        if p == -float("inf"):
            return a.min(axis, keepdims)
        if p == 1:
            return a.sum(axis, keepdims)
        if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not p > 0:
            raise ValueError(f"norm: expected p 'fro', inf, -inf or a number > 0 (got {p!r})")
        return (a ** float(p)).sum(axis, keepdims) ** (1.0 / p)

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


def _category(dtype):
    """PyTorch's dtype categories: bool < integer < float."""
    return {"b": 0, "i": 1, "u": 1, "f": 2}[dtype.kind]


def _result_dtype(dtypes, ndims):
    """PyTorch's rule for tensors: the highest category wins (an int tensor times a float
    tensor is float); within it, 0-d tensors count only when no dimensioned one is there."""
    top = max(_category(d) for d in dtypes)
    cands = [(d, n) for d, n in zip(dtypes, ndims) if _category(d) == top]
    sized = [d for d, n in cands if n] or [d for d, _ in cands]
    return np.result_type(*sized)


def _promote(*tensors):
    """The tensors cast to one dtype, PyTorch's rule for tensors (see _result_dtype):
    x32 * Tensor(2.0, float64) stays float32, int64 * float32 is float32.
    The one place dtypes are promoted: binary ops, matmul, cat, linear and conv2d use it."""
    first = tensors[0].data.dtype
    if all(t.data.dtype == first for t in tensors):
        return tensors
    dtype = _result_dtype([t.dtype for t in tensors], [t.ndim for t in tensors])
    return tuple(t.astype(dtype) for t in tensors)


def _broadcasted(op, a, b):
    """(a, b), one of them a Tensor, as Tensors of one dtype whose shapes broadcast.

    The other operand's dtype counts as in PyTorch: a Python or NumPy scalar (or a list)
    takes the tensor's dtype unless it is of a higher category (int tensor * 0.5 is
    float32), so ``2 * x`` stays float32; an ndarray promotes as NumPy does (float32 tensor
    + float64 array -> float64); a Tensor as in ``_promote``.
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


_DEFAULT = {1: np.dtype(np.int64), 2: np.dtype(np.float32)}  # a scalar's dtype by category


def _with_operand(op, t, x):
    """(t, x) for Tensor t and a non-Tensor operand x, as Tensors of one dtype."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: expected a Tensor, array or number (got {type(x).__name__})")
    if isinstance(x, np.ndarray):
        dtype = np.promote_types(arr.dtype, t.dtype)
        if dtype not in FLOAT_DTYPES and dtype not in DATA_DTYPES:
            dtype = np.dtype(np.int64 if dtype.kind in "iu" else np.float64)
        t = t.astype(dtype)
    elif _category(arr.dtype) > _category(t.dtype):
        t = t.astype(_DEFAULT[_category(arr.dtype)])
    return t, Tensor._from_op(arr.astype(t.dtype, copy=False), None)


def _floating(t):
    """Float math on integer or bool data gives float32, as PyTorch."""
    return t if t.data.dtype.kind == "f" else t.astype(np.float32)


def _true_div_operands(a, b):
    """/ of two integer or bool tensors is float32, as PyTorch's true division."""
    if a.dtype.kind != "f":
        return a.astype(np.float32), b.astype(np.float32)
    return a, b


def _broadcast_shape(*shapes):
    """The broadcast shape, or None when the shapes do not broadcast."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def _mask(mask, op):
    if not isinstance(mask, Tensor):
        mask = Tensor(np.asarray(mask))
    if mask.dtype != np.bool_:
        raise TypeError(f"{op}: expected a bool mask (got dtype {mask.dtype})")
    return mask


def where(condition, input, other):
    """input where the bool condition is True, else other; input and other are tensors or
    numbers, all three broadcast. The gradient goes to the side each element came from."""
    condition = _mask(condition, "where")
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input = Tensor(input)
    a, b = _broadcasted("where", input, other)
    try:
        np.broadcast_shapes(condition.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"where: expected shapes that broadcast (got condition {condition.shape}, "
            f"{a.shape} and {b.shape})"
        ) from None
    return _ops.Where.apply(condition, a, b)


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


def _reduced_shape(shape, axis):
    return () if axis is None else tuple(s for i, s in enumerate(shape) if i not in axis)


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dim (torch.stack)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors (got an empty one)")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"stack: expected a sequence of Tensors (got a {type(t).__name__})")
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"stack: expected each tensor of shape {tensors[0].shape} (got {t.shape} "
                f"for tensor {i})"
            )
    d = _axis(dim, tensors[0].ndim + 1)
    return cat([t.unsqueeze(d) for t in tensors], dim=d)


def _count(shape, axis):
    if axis is None:
        return int(np.prod(shape, dtype=np.int64))
    return int(np.prod([shape[a] for a in axis], dtype=np.int64))


def _index_item(i):
    """One index item as NumPy takes it: Tensors and lists become arrays; only integer
    and bool ones may index, as PyTorch."""
    if isinstance(i, (Tensor, list)):
        arr = i.data if isinstance(i, Tensor) else np.asarray(i)
        if arr.dtype.kind not in "biu" and not (isinstance(i, list) and arr.size == 0):
            raise IndexError(
                f"index: tensors used as indices must be long, int, byte or bool tensors "
                f"(got dtype {arr.dtype})"
            )
        return arr.astype(np.int64) if arr.dtype.kind in "iu" or arr.size == 0 else arr
    if isinstance(i, np.ndarray) and i.dtype.kind == "f":
        raise IndexError(f"index: arrays used as indices must be integer or bool (got {i.dtype})")
    return i


def _index_arg(index):
    """The index as a tuple of items NumPy takes (see _index_item)."""
    items = index if isinstance(index, tuple) else (index,)
    return tuple(_index_item(i) for i in items)


def _is_int(i):
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


def _index_steps(items, ndim):
    """PyTorch applies ints before advanced indices: with both present, index in two steps,
    first the ints (each other item a full slice), then the rest. NumPy's one-step rule
    would count the ints as advanced indices and could move the result's dims."""
    arrays = any(isinstance(i, np.ndarray) and i.ndim > 0 for i in items)
    if not arrays or not any(_is_int(i) for i in items):
        return [items]
    consumed = sum(
        i.ndim if isinstance(i, np.ndarray) and i.dtype == np.bool_ else 1
        for i in items
        if i is not None and i is not Ellipsis
    )
    full = []
    for i in items:  # spell the Ellipsis out, so that both steps line up with the dims
        if i is Ellipsis:
            full.extend([slice(None)] * max(ndim - consumed, 0))
        else:
            full.append(i)
    first = []
    for i in full:
        if i is None:
            continue
        width = i.ndim if isinstance(i, np.ndarray) and i.dtype == np.bool_ else 1
        first.extend([i] if _is_int(i) else [slice(None)] * width)
    return [tuple(first), tuple(i for i in full if not _is_int(i))]


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
