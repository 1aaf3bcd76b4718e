"""The primitive ops. Each is a Function with forward directly above backward.

Composite ops (mean, var, softmax, sqrt, dropout, cross_entropy …) are built from these in
``tensor.py`` / ``functional.py`` and need no backward of their own. The heavy ones
(matmul, conv2d, max_pool2d, batch norm) call ``tinygrad_bn.kernels``.
"""

import numpy as np

from . import kernels
from .function import Function, unbroadcast
from .tensor import Tensor

# ================================================================ elementwise binary


class _Binary(Function):
    """Broadcasting binary op: checks shapes once, undoes broadcasting in backward."""

    name = "binary"

    def forward(self, a, b):
        if a.shape != b.shape:
            try:
                np.broadcast_shapes(a.shape, b.shape)
            except ValueError:
                raise ValueError(
                    f"{self.name}: shapes {a.shape} and {b.shape} are not broadcastable"
                ) from None
        self.a_shape, self.b_shape = a.shape, b.shape
        return self.compute(a, b)

    def grads(self, grad):
        da, db = self.local_grads(grad)
        return (
            unbroadcast(da, self.a_shape) if da is not None else None,
            unbroadcast(db, self.b_shape) if db is not None else None,
        )


class Add(_Binary):
    name = "add"

    def compute(self, a, b):
        return a + b

    def backward(self, grad):
        return self.grads(grad)

    def local_grads(self, grad):
        return grad, grad


class Sub(_Binary):
    name = "sub"

    def compute(self, a, b):
        return a - b

    def backward(self, grad):
        return self.grads(grad)

    def local_grads(self, grad):
        return grad, (-grad if self.needs_input_grad[1] else None)


class Mul(_Binary):
    name = "mul"

    def compute(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        return self.grads(grad)

    def local_grads(self, grad):
        need_a, need_b = self.needs_input_grad
        return (grad * self.b if need_a else None), (grad * self.a if need_b else None)


class Div(_Binary):
    name = "div"

    def compute(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        return self.grads(grad)

    def local_grads(self, grad):
        need_a, need_b = self.needs_input_grad
        da = grad / self.b if need_a else None
        db = -grad * self.a / (self.b * self.b) if need_b else None
        return da, db


# ================================================================ elementwise unary


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, grad):
        return (-grad,)


class Cast(Function):
    def forward(self, x, dtype):
        self.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, grad):
        return (grad.astype(self.in_dtype),)


class Pow(Function):
    def forward(self, x, exponent):
        self.x, self.exponent = x, exponent
        return np.power(x, x.dtype.type(exponent))

    def backward(self, grad):
        p = self.exponent
        return (grad * (p * np.power(self.x, self.x.dtype.type(p - 1))),)


class Exp(Function):
    def forward(self, x):
        self.out = np.exp(x)
        return self.out

    def backward(self, grad):
        return (grad * self.out,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, grad):
        return (grad / self.x,)


class Abs(Function):
    def forward(self, x):
        self.sign = np.sign(x)
        return np.abs(x)

    def backward(self, grad):
        return (grad * self.sign,)


class Relu(Function):
    def forward(self, x):
        self.mask = x > 0
        return np.where(self.mask, x, x.dtype.type(0))

    def backward(self, grad):
        return (grad * self.mask,)


class Sigmoid(Function):
    def forward(self, x):
        # 1 / (1 + exp(-x)): for x << 0 exp overflows to inf and the result is exactly 0,
        # the correctly rounded value, so the overflow warning is noise
        out = np.negative(x, out=np.empty_like(x))
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        out += 1
        self.out = np.reciprocal(out, out=out)
        return self.out

    def backward(self, grad):
        return (grad * self.out * (1 - self.out),)


class Tanh(Function):
    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, grad):
        return (grad * (1 - self.out * self.out),)


# ================================================================ reductions


def _expand(grad, shape, axis, keepdims):
    """Broadcast a reduced gradient back over the reduced axes."""
    if axis is not None and not keepdims:
        grad = np.expand_dims(grad, axis)
    return np.broadcast_to(grad, shape)


class Sum(Function):
    def forward(self, x, axis, keepdims):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return np.sum(x, axis=axis, keepdims=keepdims)

    def backward(self, grad):
        return (_expand(grad, self.shape, self.axis, self.keepdims),)


class Max(Function):
    def forward(self, x, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims
        self.x = x
        self.out = np.max(x, axis=axis, keepdims=True)
        return self.out if keepdims else np.max(x, axis=axis, keepdims=False)

    def backward(self, grad):
        # ties share the gradient equally, so the result is a valid subgradient
        mask = self.x == self.out
        mask = mask / mask.sum(axis=self.axis, keepdims=True)
        return (_expand(grad, self.x.shape, self.axis, self.keepdims) * mask,)


# ================================================================ movement


class Reshape(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape {x.shape} ({x.size} elements) into {shape}"
            ) from None

    def backward(self, grad):
        return (grad.reshape(self.in_shape),)


class Permute(Function):
    def forward(self, x, order):
        self.inverse = tuple(np.argsort(order))
        return x.transpose(order)

    def backward(self, grad):
        return (grad.transpose(self.inverse),)


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)


class GetItem(Function):
    def forward(self, x, index):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        try:
            return x[index]
        except IndexError as e:
            raise IndexError(
                f"index {index!r} is invalid for a tensor of shape {x.shape}: {e}"
            ) from None

    def backward(self, grad):
        dx = np.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            dx[self.index] = grad  # basic indexing selects each element at most once
        else:
            np.add.at(dx, self.index, grad)  # integer arrays may repeat an element
        return (dx,)


class Cat(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        self.splits = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    def backward(self, grad):
        return tuple(np.split(grad, self.splits, axis=self.axis))


def cat(tensors, dim=0, *, axis=None):
    """Concatenate tensors along an existing axis (torch.cat / numpy.concatenate)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError("cat: expected a sequence of Tensors")
    axis = dim if axis is None else axis
    ref = tensors[0]
    if ref.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated")
    ax = axis % ref.ndim if -ref.ndim <= axis < ref.ndim else None
    if ax is None:
        raise ValueError(f"cat: axis {axis} out of range for {ref.ndim} dims")
    for i, t in enumerate(tensors):
        if (
            t.ndim != ref.ndim
            or t.shape[:ax] + t.shape[ax + 1 :] != ref.shape[:ax] + ref.shape[ax + 1 :]
        ):
            raise ValueError(
                f"cat: tensor {i} has shape {t.shape}, expected {ref.shape} except along axis {ax}"
            )
    if len({t.dtype for t in tensors}) > 1:
        tensors = [t.astype(np.float64) for t in tensors]
    return Cat.apply(*tensors, axis=ax)


# ================================================================ matmul


def _batched_matmul(a, b):
    """a @ b for ndim >= 2 through the kernel: 2-D directly, else flattened batch dims."""
    if a.ndim == 2 and b.ndim == 2:
        return kernels.matmul(a, b)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a3 = np.broadcast_to(a, batch + a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b3 = np.broadcast_to(b, batch + b.shape[-2:]).reshape(-1, *b.shape[-2:])
    return kernels.matmul(a3, b3).reshape(batch + (a.shape[-2], b.shape[-1]))


def _matmul_into_layout(x, y, like):
    """x @ y, computed as (y^T @ x^T)^T when `like` is a transposed 2-D view, so that the
    result has like's memory order (a gradient laid out as its parameter)."""
    if like.ndim == 2 and not like.flags.c_contiguous and like.flags.f_contiguous:
        return kernels.matmul(y.T, x.T).T
    return _batched_matmul(x, y)


class MatMul(Function):
    def forward(self, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"matmul: {a.shape} @ {b.shape}: inner dims {a.shape[-1]} != {b.shape[-2]}"
            )
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(
                f"matmul: {a.shape} @ {b.shape}: batch dims are not broadcastable"
            ) from None
        self.a, self.b = a, b
        return _batched_matmul(a, b)

    def backward(self, grad):
        need_a, need_b = self.needs_input_grad
        da = db = None
        bt, at = np.swapaxes(self.b, -1, -2), np.swapaxes(self.a, -1, -2)  # views, no copy
        if need_a:  # dA = dC @ B^T
            da = unbroadcast(_matmul_into_layout(grad, bt, self.a), self.a.shape)
        if need_b:  # dB = A^T @ dC
            db = unbroadcast(_matmul_into_layout(at, grad, self.b), self.b.shape)
        return da, db


class Linear(Function):
    """y = x @ W^T + b over the last axis of x (*, in); W is (out, in) as in PyTorch.

    Fused so a layer is one graph node and dW = dy^T @ x comes out in W's own layout.
    """

    def forward(self, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input {x.shape} has {x.shape[-1]} features, weight "
                f"{weight.shape} expects {weight.shape[1]}"
            )
        self.x2 = x.reshape(-1, x.shape[-1])
        self.x_shape, self.weight = x.shape, weight
        y = kernels.matmul(self.x2, weight.T)
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        g2 = grad.reshape(-1, self.weight.shape[0])
        dx = (
            kernels.matmul(g2, self.weight).reshape(self.x_shape)
            if self.needs_input_grad[0]
            else None
        )
        dw = kernels.matmul(g2.T, self.x2) if self.needs_input_grad[1] else None
        if len(self.needs_input_grad) == 2:
            return dx, dw
        return dx, dw, g2.sum(axis=0)


def matmul(a, b):
    """a @ b with NumPy's rules: 1-D operands are promoted to matrices and squeezed after."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}"
        )
    if a.dtype != b.dtype:
        a, b = a.astype(np.float64), b.astype(np.float64)
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    if vec_a:
        a = a.reshape(1, -1)
    if vec_b:
        b = b.reshape(-1, 1)
    out = MatMul.apply(a, b)
    if vec_a and vec_b:
        return out.reshape(())
    if vec_a:
        return out.reshape(*out.shape[:-2], out.shape[-1])
    if vec_b:
        return out.reshape(*out.shape[:-1])
    return out


# ================================================================ neural-net primitives


class LogSoftmax(Function):
    def forward(self, x, axis):
        self.axis = axis
        shifted = x - np.max(x, axis=axis, keepdims=True)  # largest exponent is exp(0)
        self.out = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        return self.out

    def backward(self, grad):
        softmax = np.exp(self.out)
        return (grad - softmax * np.sum(grad, axis=self.axis, keepdims=True),)


class NLLLoss(Function):
    """Mean (or sum, or none) of -log_probs[i, target[i]] over the batch."""

    def forward(self, log_probs, target, reduction):
        self.shape, self.target, self.reduction = log_probs.shape, target, reduction
        picked = -log_probs[np.arange(len(target)), target]
        if reduction == "none":
            return picked
        total = picked.sum()
        return total / max(len(target), 1) if reduction == "mean" else total

    def backward(self, grad):
        n = len(self.target)
        dx = np.zeros(self.shape, dtype=grad.dtype)
        scale = grad if self.reduction == "none" else np.broadcast_to(grad, (n,))
        if self.reduction == "mean":
            scale = scale / max(n, 1)
        dx[np.arange(n), self.target] = -scale
        return (dx,)


class Conv2d(Function):
    def forward(self, x, weight, bias=None, *, stride, padding):
        self.x, self.weight, self.stride, self.padding = x, weight, stride, padding
        out = kernels.conv2d_forward(x, weight, stride, padding)
        if bias is not None:
            out += bias.reshape(1, -1, 1, 1)
        return out

    def backward(self, grad):
        need = tuple(self.needs_input_grad) + (False,) * (3 - len(self.needs_input_grad))
        grads = kernels.conv2d_backward(self.x, self.weight, grad, self.stride, self.padding, need)
        return grads[: len(self.needs_input_grad)]


class MaxPool2d(Function):
    def forward(self, x, kernel_size, stride, padding):
        self.in_shape = x.shape
        out, self.argmax = kernels.max_pool2d_forward(x, kernel_size, stride, padding)
        return out

    def backward(self, grad):
        return (
            kernels.max_pool2d_backward(np.ascontiguousarray(grad), self.argmax, self.in_shape),
        )


def _channels_last_dim(x):
    """View (N, C, *spatial) as the kernels' (N, C) or (N, C, L)."""
    return x if x.ndim <= 3 else x.reshape(x.shape[0], x.shape[1], -1)


class BatchNormTrain(Function):
    """Algorithm 1 on batch statistics; updates the running estimates (Algorithm 2) in place.

    running_mean / running_var are ndarrays or None; the new statistic gets weight
    `momentum`, and the variance fed to running_var is the unbiased m/(m-1) var_B.
    """

    def forward(self, x, weight, bias, eps, running_mean=None, running_var=None, momentum=0.1):
        self.shape = x.shape
        self.x = _channels_last_dim(x)
        y, mean, var, invstd = kernels.batch_norm_forward_train(self.x, weight, bias, eps)
        self.weight, self.mean, self.invstd = weight, mean, invstd
        m = x.size // x.shape[1]
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += (momentum * m / (m - 1)) * var
        return y.reshape(self.shape)

    def backward(self, grad):
        dy = _channels_last_dim(np.ascontiguousarray(grad))
        dx, dweight, dbias = kernels.batch_norm_backward(
            dy, self.x, self.mean, self.invstd, self.weight, self.needs_input_grad[:3]
        )
        return (None if dx is None else dx.reshape(self.shape)), dweight, dbias


class BatchNormEval(Function):
    """Algorithm 2's inference transform: one fixed affine map per channel."""

    def forward(self, x, weight, bias, running_mean, running_var, eps):
        self.shape = x.shape
        x3 = _channels_last_dim(x)
        self.invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        self.x, self.weight, self.mean = x3, weight, running_mean
        y = kernels.batch_norm_forward_eval(x3, running_mean, running_var, weight, bias, eps)
        return y.reshape(self.shape)

    def backward(self, grad):
        g = _channels_last_dim(grad)
        axes = (0,) if g.ndim == 2 else (0, 2)
        cshape = (1, -1) if g.ndim == 2 else (1, -1, 1)
        invstd = self.invstd.astype(grad.dtype)
        dx = g * (self.weight * invstd).reshape(cshape)
        xhat = (self.x - self.mean.reshape(cshape)) * invstd.reshape(cshape)
        return dx.reshape(self.shape), (g * xhat).sum(axis=axes), g.sum(axis=axes), None, None
