"""The primitive ops, one class each, forward directly above backward: read it as a table.

``forward`` gets NumPy arrays that the layer the user called (a Tensor method or a
``functional`` function) has already checked and brought to one dtype, so the ops assume
valid input. It saves on ``self`` what ``backward`` needs; ``backward`` returns one gradient
per input, None where ``self.needs_input_grad`` says none is needed. Composite ops (mean,
var, softmax, sqrt, dropout, cross_entropy ...) are built from these in ``tensor.py`` and
``functional.py`` and need no backward of their own. The heavy ones (matmul, linear,
conv2d, max_pool2d, batch norm, relu/sigmoid/tanh) call ``tinygrad_bn.kernels``.

A new op is one class here and one Tensor method (or ``functional`` function) that checks
its arguments and calls ``Op.apply``.
"""

import math

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


class PowTensor(Function):
    """a ** b elementwise, both tensors; as PyTorch, db is 0 where a == 0 and b >= 0
    (0 * log 0) and da is 0 where b == 0."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = np.power(a, b)
        return self.out

    def backward(self, grad):
        need_a, need_b = self.needs_input_grad
        a, b = self.a, self.b
        da = db = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if need_a:
                local = np.where(b == 0, 0, b * np.power(a, b - 1))
                da = unbroadcast(grad * local, a.shape)
            if need_b:
                local = np.where((a == 0) & (b >= 0), 0, self.out * np.log(a))
                db = unbroadcast(grad * local, b.shape)
        return da, db


class Maximum(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return np.maximum(a, b)

    def backward(self, grad):
        return _pick_grads(self, grad, self.a > self.b)


class Minimum(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return np.minimum(a, b)

    def backward(self, grad):
        return _pick_grads(self, grad, self.a < self.b)


def _pick_grads(op, grad, a_wins):
    """Gradients of an elementwise max/min: to the winner, halved at ties (as PyTorch)."""
    need_a, need_b = op.needs_input_grad
    share = np.where(a_wins, 1.0, np.where(op.a == op.b, 0.5, 0.0)).astype(grad.dtype)
    return (
        unbroadcast(grad * share, op.a.shape) if need_a else None,
        unbroadcast(grad * (1 - share), op.b.shape) if need_b else None,
    )


class Where(Function):
    """condition ? a : b, all three broadcast; condition is a bool constant."""

    def forward(self, condition, a, b):
        self.condition, self.a_shape, self.b_shape = condition, a.shape, b.shape
        return np.where(condition, a, b)

    def backward(self, grad):
        _, need_a, need_b = self.needs_input_grad
        zero = grad.dtype.type(0)
        return (
            None,
            unbroadcast(np.where(self.condition, grad, zero), self.a_shape) if need_a else None,
            unbroadcast(np.where(self.condition, zero, grad), self.b_shape) if need_b else None,
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


class Log1p(Function):
    def forward(self, x):
        self.x = x
        return np.log1p(x)

    def backward(self, grad):
        return (grad / (1 + self.x),)


class LogSigmoid(Function):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): never overflows."""

    def forward(self, x):
        self.x = x
        return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))

    def backward(self, grad):
        with np.errstate(over="ignore"):
            return (grad / (1 + np.exp(self.x)),)  # 1 - sigmoid(x) = sigmoid(-x)


_erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf; math.erf is exact to double


class Erf(Function):
    def forward(self, x):
        self.x = x
        return _erf(x).astype(x.dtype)

    def backward(self, grad):
        return (grad * (2 / math.sqrt(math.pi)) * np.exp(-self.x * self.x),)


class Sign(Function):
    def forward(self, x):
        return np.sign(x)

    def backward(self, grad):
        return (np.zeros_like(grad),)  # piecewise constant, as PyTorch


class _Activation(Function):
    """y = act(x) elementwise in one compiled pass; backward from the saved output alone.

    `out` is all the state an activation keeps, so tg.jit can fuse one into the op that
    produced its input (jit._fuse: Affine, Convolution, BatchNormTrain with activation=...)
    and fill this context from the fused output, bit-identical to running it unfused.
    """

    activation = None  # the kernels' name: "relu", "sigmoid", "tanh"

    def forward(self, x):
        self.out = kernels.activation_forward(x, self.activation)
        return self.out

    def backward(self, grad):
        return (kernels.activation_backward(grad, self.out, self.activation),)


class Relu(_Activation):
    """max(x, 0), NaN kept (PyTorch); integer tensors too (no gradient)."""

    activation = "relu"

    def forward(self, x):
        if x.dtype.kind != "f":
            return np.maximum(x, x.dtype.type(0))
        return super().forward(x)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)): exactly 0 and 1 far out, no overflow (see ext/_activations.pxd)."""

    activation = "sigmoid"


class Tanh(_Activation):
    activation = "tanh"


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
    reduce = staticmethod(np.max)

    def forward(self, x, axis, keepdims):
        self.x, self.axis, self.keepdims = x, axis, keepdims
        self.out = self.reduce(x, axis=axis, keepdims=True)
        return self.out if keepdims else np.squeeze(self.out, axis)

    def backward(self, grad):
        # ties share the gradient equally, so the result is a valid subgradient
        mask = self.x == self.out
        mask = mask / mask.sum(axis=self.axis, keepdims=True)
        return (_expand(grad, self.x.shape, self.axis, self.keepdims) * mask,)


class Min(Max):
    reduce = staticmethod(np.min)


class Prod(Function):
    """Product along one axis; backward from exclusive cumulative products on both sides,
    so zeros in x need no division."""

    def forward(self, x, axis):
        self.x, self.axis = x, axis
        return np.prod(x, axis=axis)

    def backward(self, grad):
        x = np.moveaxis(self.x, self.axis, -1)
        ones = np.ones(x.shape[:-1] + (1,), x.dtype)
        left = np.cumprod(np.concatenate([ones, x[..., :-1]], axis=-1), axis=-1)
        right = np.cumprod(np.concatenate([ones, x[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        dx = np.expand_dims(grad, -1) * left * right
        return (np.moveaxis(dx, -1, self.axis),)


class Norm2(Function):
    """sqrt(sum(x^2)); the gradient x / norm is 0 where the norm is 0, as PyTorch."""

    def forward(self, x, axis, keepdims):
        self.x, self.axis, self.keepdims = x, axis, keepdims
        self.out = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
        return self.out if keepdims else np.squeeze(self.out, axis)

    def backward(self, grad):
        with np.errstate(divide="ignore", invalid="ignore"):
            local = np.where(self.out == 0, 0, self.x / self.out)
        return (_expand(grad, self.x.shape, self.axis, self.keepdims) * local,)


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


class Expand(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        return np.broadcast_to(x, shape)

    def backward(self, grad):
        return (unbroadcast(grad, self.in_shape),)


class Flip(Function):
    def forward(self, x, axes):
        self.axes = axes
        return np.flip(x, axes)

    def backward(self, grad):
        return (np.flip(grad, self.axes),)


class Pad(Function):
    """Constant padding: pad_width as np.pad's ((before, after), ...), one pair per dim."""

    def forward(self, x, pad_width, value):
        self.crop = tuple(slice(a, a + n) for (a, _), n in zip(pad_width, x.shape))
        return np.pad(x, pad_width, constant_values=value)

    def backward(self, grad):
        return (grad[self.crop],)


class Take(Function):
    """x gathered along one axis at integer indices (reflect/replicate/circular padding)."""

    def forward(self, x, indices, axis):
        self.shape, self.indices, self.axis = x.shape, indices, axis
        return np.take(x, indices, axis=axis)

    def backward(self, grad):
        dx = np.zeros(self.shape, grad.dtype)
        g = np.moveaxis(grad, self.axis, 0)
        np.add.at(np.moveaxis(dx, self.axis, 0), self.indices, g)
        return (dx,)


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

    fuses_activation = True  # tg.jit may pass activation=: see _Activation

    def forward(self, x, weight, bias=None, activation=None):
        self.has_bias = bias is not None
        flat = x.ndim == 2  # the common case: no reshapes (0.2 us each, 4 a layer and step)
        self.x2 = x if flat else x.reshape(-1, x.shape[-1])
        self.x_shape, self.weight = x.shape, weight
        y = kernels.matmul(self.x2, weight.T)
        if activation is not None or self.has_bias:  # bias and activation in one pass over y
            y = kernels.bias_activation(y, bias, activation)
        return y if flat else y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        need_x, need_w = self.needs_input_grad[:2]
        flat = len(self.x_shape) == 2
        g2 = grad if flat else grad.reshape(-1, self.weight.shape[0])
        dx = kernels.matmul(g2, self.weight) if need_x else None
        if dx is not None and not flat:
            dx = dx.reshape(self.x_shape)
        dw = kernels.matmul(g2.T, self.x2) if need_w else None
        return (dx, dw, kernels.sum_rows(g2)) if self.has_bias else (dx, dw)


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
    """Sum (or weighted mean, or none) of -w[i] * log_probs[i, target[i]] over rows i of
    (M, C); w[i] = class_weight[target[i]] (all ones when None), 0 where target[i] is
    ignore_index.
    The mean divides by sum(w), so an empty batch or all rows ignored give nan, as PyTorch."""

    def forward(self, log_probs, target, class_weight, ignore_index, reduction):
        # the ignored rows and the class weights are found here, on every call, so the op's
        # place in the graph is the same for every batch (tg.jit replays it)
        ignored = target == ignore_index
        weights = None if class_weight is None else class_weight[np.where(ignored, 0, target)]
        if ignored.any():
            target = np.where(ignored, 0, target)
            weights = (np.ones(len(target)) if weights is None else weights) * ~ignored
        self.shape, self.target, self.reduction = log_probs.shape, target, reduction
        self.rows = np.arange(len(target))
        picked = -log_probs[self.rows, target]
        self.weights = weights = None if weights is None else weights.astype(picked.dtype)
        if weights is not None:
            picked = picked * weights
        if reduction == "none":
            return picked
        total = picked.sum()
        if reduction == "sum":
            return total
        self.denom = len(target) if weights is None else weights.sum()
        return total / self.denom if self.denom else total * np.nan

    def backward(self, grad):
        n = len(self.target)
        dx = np.zeros(self.shape, dtype=grad.dtype)
        scale = grad if self.reduction == "none" else np.broadcast_to(grad, (n,))
        if self.reduction == "mean":  # all rows ignored: nan loss, zero gradient (PyTorch)
            scale = scale / self.denom if self.denom else np.zeros_like(scale)
        if self.weights is not None:
            scale = scale * self.weights
        dx[self.rows, self.target] = -scale
        return (dx,)


class CrossEntropy(Function):
    """Softmax cross-entropy of (M, C) logits with M int64 class indices, fused: forward is
    log-softmax and the loss in one pass (keeping the softmax), backward is (softmax -
    onehot(target)) times each row's scale in one pass. w[i] = class_weight[target[i]] (1
    when None), 0 where target[i] is ignore_index; the mean divides by sum(w): nan loss and
    zero gradient when it is 0, as PyTorch. The kernels check the labels' range."""

    def forward(self, logits, target, class_weight, ignore_index, reduction):
        out, self.prob, self.total_weight = kernels.cross_entropy_forward(
            logits, target, class_weight, ignore_index, reduction
        )
        self.target, self.weight, self.ignore_index = target, class_weight, ignore_index
        self.reduction = reduction
        return out

    def backward(self, grad):
        dx = kernels.cross_entropy_backward(
            np.asarray(grad, dtype=self.prob.dtype),
            self.prob,
            self.target,
            self.weight,
            self.ignore_index,
            self.reduction,
            self.total_weight,
        )
        return (dx,)


class BinaryCrossEntropy(Function):
    """-w (t log x + (1 - t) log(1 - x)) elementwise, each log clamped at -100 as PyTorch;
    dx = w (x - t) / max(x (1 - x), 1e-12) and dt = -w (log x - log(1 - x)), as PyTorch."""

    def forward(self, x, t, w):
        self.x, self.t, self.w = x, t, w
        with np.errstate(divide="ignore"):
            self.log_x = np.maximum(np.log(x), -100)
            self.log_1mx = np.maximum(np.log1p(-x), -100)
        return -w * (t * self.log_x + (1 - t) * self.log_1mx)

    def backward(self, grad):
        need_x, need_t, _ = self.needs_input_grad
        x, gw = self.x, grad * self.w
        dx = gw * (x - self.t) / np.maximum(x * (1 - x), 1e-12) if need_x else None
        dt = -gw * (self.log_x - self.log_1mx) if need_t else None
        return dx, dt, None


# ================================================================ convolution and pooling


class Convolution(Function):
    """F.conv2d's op: cross-correlation of (N, C, H, W) with (O, C, KH, KW), optional bias."""

    fuses_activation = True  # tg.jit may pass activation=: see _Activation

    def forward(self, x, weight, bias=None, *, stride, padding, activation=None):
        self.has_bias = bias is not None
        self.x, self.weight, self.stride, self.padding = x, weight, stride, padding
        out = kernels.conv2d_forward(x, weight, stride, padding)
        if activation is not None:  # the bias and the activation in one pass over out
            n, o, oh, ow = out.shape
            return kernels.bias_activation(out.reshape(n, o, oh * ow), bias, activation).reshape(
                out.shape
            )
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

    def forward(self, x, kernel_size, stride, padding, indices=None):
        self.in_shape = x.shape
        out, self.argmax = kernels.max_pool2d_forward(x, kernel_size, stride, padding)
        if indices is not None:  # return_indices: the caller's list receives the argmax
            indices.append(self.argmax)
        return out

    def backward(self, grad):
        return (
            kernels.max_pool2d_backward(np.ascontiguousarray(grad), self.argmax, self.in_shape),
        )


class AvgPool2d(Function):
    """F.avg_pool2d's op in NumPy: kh * kw strided adds into the output (zero padding),
    divided per window as PyTorch (see F.avg_pool2d)."""

    def forward(
        self, x, kernel_size, stride, padding, out_size, count_include_pad, divisor_override
    ):
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel_size, stride, padding, out_size
        h, w = x.shape[2:]
        self.geometry = (x.shape, kernel_size, stride, padding, out_size)
        # enough zero padding at the end for every window, clipped windows included
        eh, ew = max((oh - 1) * sh + kh - h - ph, 0), max((ow - 1) * sw + kw - w - pw, 0)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, eh), (pw, ew)))
        out = np.zeros(x.shape[:2] + (oh, ow), x.dtype)
        for i in range(kh):
            for j in range(kw):
                out += xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
        self.divisor = _window_divisor(
            h, w, kernel_size, stride, padding, out_size, count_include_pad, divisor_override
        ).astype(x.dtype)
        return out / self.divisor

    def backward(self, grad):
        shape, (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.geometry
        h, w = shape[2:]
        eh, ew = max((oh - 1) * sh + kh - h - ph, 0), max((ow - 1) * sw + kw - w - pw, 0)
        dxp = np.zeros(shape[:2] + (h + ph + eh, w + pw + ew), grad.dtype)
        g = grad / self.divisor
        for i in range(kh):
            for j in range(kw):
                dxp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += g
        return (dxp[:, :, ph : ph + h, pw : pw + w],)


def _window_divisor(h, w, kernel_size, stride, padding, out_size, count_include_pad, override):
    """(OH, OW) divisors of average pooling, PyTorch's rule: the window clipped to the
    padded input (count_include_pad) or to the input itself (not)."""
    if override is not None:
        return np.full(out_size, float(override))
    sizes = []
    for n, k, s, p, o in zip((h, w), kernel_size, stride, padding, out_size):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        sizes.append(end - start)
    return np.outer(sizes[0], sizes[1]).astype(np.float64)


class Dilate(Function):
    """A (O, C, KH, KW) weight spread out by zeros to (O, C, d (KH - 1) + 1, ...): conv2d's
    dilation, run by the ordinary kernel."""

    def forward(self, w, dilation):
        (dh, dw), (kh, kw) = dilation, w.shape[2:]
        self.index = (slice(None), slice(None), slice(None, None, dh), slice(None, None, dw))
        out = np.zeros(w.shape[:2] + (dh * (kh - 1) + 1, dw * (kw - 1) + 1), w.dtype)
        out[self.index] = w
        return out

    def backward(self, grad):
        return (np.ascontiguousarray(grad[self.index]),)


# ================================================================ batch normalization


def _channels_last_dim(x):
    """View (N, C, *spatial) as the kernels' (N, C) or (N, C, L)."""
    return x if x.ndim <= 3 else x.reshape(x.shape[0], x.shape[1], -1)


class BatchNormTrain(Function):
    """Algorithm 1 on batch statistics; updates the running estimates (Algorithm 2) in place.

    running_mean / running_var are ndarrays or None; the new statistic gets weight
    `momentum`, and the variance fed to running_var is the unbiased m/(m-1) var_B.
    """

    fuses_activation = True  # tg.jit may pass activation=: see _Activation

    def forward(
        self,
        x,
        weight,
        bias,
        eps,
        running_mean=None,
        running_var=None,
        momentum=0.1,
        activation=None,
    ):
        self.shape = x.shape
        self.x = _channels_last_dim(x)
        y, mean, var, invstd = kernels.batch_norm_forward_train(
            self.x, weight, bias, eps, activation
        )
        self.weight, self.mean, self.invstd = weight, mean, invstd
        m = x.size // x.shape[1]
        if running_mean is not None:
            kernels.running_average(running_mean, mean, 1 - momentum, momentum)
        if running_var is not None:
            kernels.running_average(running_var, var, 1 - momentum, momentum * m / (m - 1))
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
