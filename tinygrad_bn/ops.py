"""The primitive ops, one class each, forward directly above backward: read it as a table.

``forward`` gets NumPy arrays that the layer the user called (a Tensor method or a
``functional`` function) has already checked and brought to one dtype, so the ops assume
valid input. It saves on ``self`` what ``backward`` needs; ``backward`` returns one gradient
per input, None where ``self.needs_input_grad`` says none is needed. Composite ops (mean,
var, softmax, sqrt, dropout, cross_entropy ...) are built from these in ``tensor.py`` and
``functional.py`` and need no backward of their own. The heavy ones (matmul, linear,
conv2d, max_pool2d, batch norm) call ``tinygrad_bn.kernels``.

A new op is one class here and one Tensor method (or ``functional`` function) that checks
its arguments and calls ``Op.apply``.
"""

import numpy as np

from . import kernels
from .function import Function, unbroadcast
from .tensor import get_rng

# ================================================================ elementwise binary
# Inputs broadcast against each other; unbroadcast sums each gradient back to its input.


class Add(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, grad):
        need_a, need_b = self.needs_input_grad
        return (
            unbroadcast(grad, self.a_shape) if need_a else None,
            unbroadcast(grad, self.b_shape) if need_b else None,
        )


class Sub(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, grad):
        need_a, need_b = self.needs_input_grad
        return (
            unbroadcast(grad, self.a_shape) if need_a else None,
            unbroadcast(-grad, self.b_shape) if need_b else None,
        )


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        need_a, need_b = self.needs_input_grad
        return (
            unbroadcast(grad * self.b, self.a.shape) if need_a else None,
            unbroadcast(grad * self.a, self.b.shape) if need_b else None,
        )


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        need_a, need_b = self.needs_input_grad
        return (
            unbroadcast(grad / self.b, self.a.shape) if need_a else None,
            unbroadcast(-grad * self.a / (self.b * self.b), self.b.shape) if need_b else None,
        )


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
    """x ** p for a constant p."""

    def forward(self, x, exponent):
        self.x, self.exponent = x, exponent
        return np.power(x, x.dtype.type(exponent))

    def backward(self, grad):
        p = self.exponent
        if p == 0:  # d/dx x**0 = 0 everywhere, also at x = 0 where p * x**(p-1) is 0 * inf
            return (np.zeros_like(grad),)
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
# axis: a tuple of dims (possibly empty) or None for all dims.


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
        self.x, self.axis, self.keepdims = x, axis, keepdims
        self.out = np.max(x, axis=axis, keepdims=True)
        return self.out if keepdims else np.squeeze(self.out, axis)

    def backward(self, grad):
        # ties share the gradient equally, so the result is a valid subgradient
        mask = self.x == self.out
        mask = mask / mask.sum(axis=self.axis, keepdims=True)
        return (_expand(grad, self.x.shape, self.axis, self.keepdims) * mask,)


# ================================================================ movement


class Reshape(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        return x.reshape(shape)

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
        return x[index]

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


# ================================================================ matmul and linear


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
    """a @ b for ndim >= 2; the dims before the last two broadcast."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return _batched_matmul(a, b)

    def backward(self, grad):
        need_a, need_b = self.needs_input_grad
        bt, at = np.swapaxes(self.b, -1, -2), np.swapaxes(self.a, -1, -2)  # views, no copy
        return (
            unbroadcast(_matmul_into_layout(grad, bt, self.a), self.a.shape) if need_a else None,
            unbroadcast(_matmul_into_layout(at, grad, self.b), self.b.shape) if need_b else None,
        )


class Affine(Function):
    """y = x @ W^T + b over the last axis of x (*, in); W is (out, in) as in PyTorch.

    F.linear's op, fused so a layer is one graph node and dW = dy^T @ x comes out in W's
    own layout. The bias is optional: ``apply(x, weight)`` or ``apply(x, weight, bias)``.
    """

    def forward(self, x, weight, bias=None):
        self.has_bias = bias is not None
        self.x2 = x.reshape(-1, x.shape[-1])
        self.x_shape, self.weight = x.shape, weight
        y = kernels.matmul(self.x2, weight.T)
        if self.has_bias:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        need_x, need_w = self.needs_input_grad[:2]
        g2 = grad.reshape(-1, self.weight.shape[0])
        dx = kernels.matmul(g2, self.weight).reshape(self.x_shape) if need_x else None
        dw = kernels.matmul(g2.T, self.x2) if need_w else None
        return (dx, dw, g2.sum(axis=0)) if self.has_bias else (dx, dw)


# ================================================================ losses


class Dropout(Function):
    """x * mask, mask = (U[0, 1) >= p) / (1 - p), drawn in forward so that a tg.jit replay
    draws a fresh one from the generator's state at the time (`generator`: see get_rng)."""

    def forward(self, x, p, generator):
        keep = get_rng(generator).random(x.shape) >= p
        self.mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
        return x * self.mask

    def backward(self, grad):
        return (grad * self.mask,)


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
    """Mean (or sum, or none) of -log_probs[i, target[i]] over the batch; the mean of an
    empty batch is nan, as in PyTorch."""

    def forward(self, log_probs, target, reduction):
        self.shape, self.target, self.reduction = log_probs.shape, target, reduction
        picked = -log_probs[np.arange(len(target)), target]
        if reduction == "none":
            return picked
        total, n = picked.sum(), len(target)
        if reduction == "sum":
            return total
        return total / n if n else total * np.nan

    def backward(self, grad):
        n = len(self.target)
        dx = np.zeros(self.shape, dtype=grad.dtype)
        scale = grad if self.reduction == "none" else np.broadcast_to(grad, (n,))
        if self.reduction == "mean":
            scale = scale / n
        dx[np.arange(n), self.target] = -scale
        return (dx,)


# ================================================================ convolution and pooling


class Convolution(Function):
    """F.conv2d's op: cross-correlation of (N, C, H, W) with (O, C, KH, KW), optional bias."""

    def forward(self, x, weight, bias=None, *, stride, padding):
        self.has_bias = bias is not None
        self.x, self.weight, self.stride, self.padding = x, weight, stride, padding
        out = kernels.conv2d_forward(x, weight, stride, padding)
        if self.has_bias:
            out += bias.reshape(1, -1, 1, 1)
        return out

    def backward(self, grad):
        need = self.needs_input_grad
        mask = (need[0], need[1], self.has_bias and need[2])  # only the gradients asked for
        dx, dw, db = kernels.conv2d_backward(
            self.x, self.weight, grad, self.stride, self.padding, mask
        )
        return (dx, dw, db) if self.has_bias else (dx, dw)


class MaxPool2DWithIndices(Function):
    """F.max_pool2d's op; keeps the argmax of each window for backward."""

    def forward(self, x, kernel_size, stride, padding):
        self.in_shape = x.shape
        out, self.argmax = kernels.max_pool2d_forward(x, kernel_size, stride, padding)
        return out

    def backward(self, grad):
        return (
            kernels.max_pool2d_backward(np.ascontiguousarray(grad), self.argmax, self.in_shape),
        )


# ================================================================ batch normalization


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
