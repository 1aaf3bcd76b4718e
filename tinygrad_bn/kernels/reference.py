"""NumPy reference kernels: the fallback when the extension is absent and the oracle in tests.

Each function has exactly the signature of its compiled twin in ``tinygrad_bn._ext``.
Inputs are validated by the dispatcher (``tinygrad_bn.kernels``) before they get here.
Shapes: batch norm takes x as (N, C) or (N, C, L) (a (N, C, H, W) map is passed as
(N, C, H*W)); conv2d and max_pool2d take NCHW; stride and padding are (h, w) pairs.
"""

import math

import numpy as np

# ---------------------------------------------------------------- matmul


def matmul(a, b):
    """C = A @ B for (M, K) @ (K, N), or batched (B, M, K) @ (B, K, N)."""
    return np.matmul(a, b)


# ---------------------------------------------------------------- conv2d


def conv_output_size(size, k, stride, pad):
    """Output length of a convolution or pooling window along one axis."""
    return (size + 2 * pad - k) // stride + 1


def im2col(x, kh, kw, stride, padding):
    """(N, C, H, W) -> columns (N, C*KH*KW, OH*OW) for the given window."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols, x_shape, kh, kw, stride, padding):
    """Adjoint of im2col: scatter-add columns (N, C*KH*KW, OH*OW) back to (N, C, H, W)."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += cols[:, :, i, j]
    return xp[:, :, ph : ph + h, pw : pw + w]


def conv2d_forward(x, weight, stride, padding):
    """y[n, o] = sum_{c,i,j} w[o, c, i, j] * xpad[n, c, s*p + i, s*q + j]; no bias."""
    n, _, h, w = x.shape
    o, c, kh, kw = weight.shape
    oh = conv_output_size(h, kh, stride[0], padding[0])
    ow = conv_output_size(w, kw, stride[1], padding[1])
    cols = im2col(x, kh, kw, stride, padding)
    y = np.matmul(weight.reshape(o, c * kh * kw), cols)
    return np.ascontiguousarray(y.reshape(n, o, oh, ow))


def conv2d_backward(x, weight, grad_out, stride, padding, output_mask=(True, True, True)):
    """(dx, dweight, dbias) of conv2d_forward given dy = grad_out (N, O, OH, OW); only those
    output_mask asks for, the others None."""
    n = x.shape[0]
    o, c, kh, kw = weight.shape
    dy = grad_out.reshape(n, o, grad_out.shape[2] * grad_out.shape[3])
    dx = dweight = dbias = None
    if output_mask[1]:
        cols = im2col(x, kh, kw, stride, padding)
        dweight = np.einsum("nok,nck->oc", dy, cols).reshape(weight.shape).astype(x.dtype)
    if output_mask[0]:
        dcols = np.matmul(weight.reshape(o, c * kh * kw).T, dy)
        dx = np.ascontiguousarray(col2im(dcols, x.shape, kh, kw, stride, padding))
    if output_mask[2]:
        dbias = grad_out.sum(axis=(0, 2, 3))
    return dx, dweight, dbias


# ---------------------------------------------------------------- max_pool2d


def max_pool2d_forward(x, kernel_size, stride, padding):
    """(y, argmax): window maxima and, per output, the flat index h*W + w of the winner.

    Padding counts as -inf; ties go to the first element in row-major window order. NaN
    wins (as PyTorch): a window with NaN gives NaN, its argmax the last NaN of the window.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    rows = np.arange(oh)[:, None] * sh - ph
    colv = np.arange(ow)[None, :] * sw - pw
    # the window's first real element: an all -inf window still points inside itself
    first = np.maximum(rows, 0) * w + np.maximum(colv, 0)
    argmax = np.broadcast_to(first, (n, c, oh, ow)).astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
            better = (v > y) | np.isnan(v)
            y = np.where(better, v, y)
            argmax = np.where(better, (rows + i) * w + (colv + j), argmax)
    return y, argmax


def max_pool2d_backward(grad_out, argmax, input_shape):
    """dx: each output's gradient added at its argmax position."""
    n, c, h, w = input_shape
    dx = np.zeros((n * c, h * w), dtype=grad_out.dtype)
    per_plane = grad_out.shape[2] * grad_out.shape[3]
    flat_idx = argmax.reshape(n * c, per_plane)
    np.add.at(dx, (np.arange(n * c)[:, None], flat_idx), grad_out.reshape(n * c, per_plane))
    return dx.reshape(input_shape)


# ---------------------------------------------------------------- batch norm


def _channel_view(x):
    """Reduction axes and the shape that broadcasts a per-channel vector against x."""
    if x.ndim == 2:
        return (0,), (1, x.shape[1])
    return (0, 2), (1, x.shape[1], 1)


def batch_norm_forward_train(x, weight, bias, eps, activation=None):
    """(y, mean, var, invstd): Algorithm 1 with the biased batch variance, stats in float64;
    y goes through `activation` (None, 'relu', 'sigmoid', 'tanh') when one is given."""
    axes, cshape = _channel_view(x)
    x64 = x.astype(np.float64)
    m = x.size // x.shape[1] if x.shape[1] else 0
    with np.errstate(invalid="ignore", divide="ignore"):  # m == 0: NaN statistics
        mean = x64.sum(axis=axes) / m
        var = ((x64 - mean.reshape(cshape)) ** 2).sum(axis=axes) / m
    invstd = 1.0 / np.sqrt(var + eps)
    scale = (weight * invstd).reshape(cshape)
    y = (x64 - mean.reshape(cshape)) * scale + bias.reshape(cshape)
    dt = x.dtype
    y = y.astype(dt)
    if activation is not None:
        y = activation_forward(y, activation)
    return y, mean.astype(dt), var.astype(dt), invstd.astype(dt)


def batch_norm_backward(grad_out, x, mean, invstd, weight, output_mask=(True, True, True)):
    """(dx, dweight, dbias) of the training forward (PAPER.md, Section 3), in float64; only
    those output_mask asks for, the others None."""
    axes, cshape = _channel_view(x)
    m = x.size // x.shape[1] if x.shape[1] else 0
    dy = grad_out.astype(np.float64)
    xhat = (x.astype(np.float64) - mean.reshape(cshape)) * invstd.reshape(cshape)
    dbias = dy.sum(axis=axes)
    dweight = (dy * xhat).sum(axis=axes)
    dx = None
    if output_mask[0]:
        k = (weight.astype(np.float64) * invstd).reshape(cshape) / max(m, 1)
        dx = (k * (m * dy - dbias.reshape(cshape) - xhat * dweight.reshape(cshape))).astype(x.dtype)
    dt = x.dtype
    return (
        dx,
        dweight.astype(dt) if output_mask[1] else None,
        dbias.astype(dt) if output_mask[2] else None,
    )


def batch_norm_forward_eval(x, running_mean, running_var, weight, bias, eps):
    """y = x * scale + shift with scale = w / sqrt(var + eps), shift = b - mean * scale."""
    _, cshape = _channel_view(x)
    scale = weight.astype(np.float64) / np.sqrt(running_var.astype(np.float64) + eps)
    shift = bias - running_mean * scale
    return (x * scale.reshape(cshape) + shift.reshape(cshape)).astype(x.dtype)


# ---------------------------------------------------------------- softmax cross-entropy


def _checked_labels(op, target, c, ignore_index):
    """target flat; raises the compiled kernel's error for a value outside [0, c)."""
    t = target.reshape(-1)
    counted = t[t != ignore_index]
    if counted.size and (counted.min() < 0 or counted.max() >= c):
        raise ValueError(
            f"{op}: expected target values in [0, {c}) (got [{counted.min()}, {counted.max()}])"
        )
    return t


def cross_entropy_forward(logits, target, weight, ignore_index, reduction):
    """(loss, prob, total_weight): loss[i] = w[t_i] (logsumexp(x_i) - x_i[t_i]), 0 where t_i
    is ignore_index; "none" (M,), "sum" or "mean" (divided by total_weight = the sum of w[t_i]
    over counted rows; nan when 0) as a 0-d array; prob = softmax rows (M, C)."""
    m, c = logits.shape
    t = _checked_labels("cross_entropy", target, c, ignore_index)
    counted = t != ignore_index
    safe = np.where(counted, t, 0)
    w = np.ones(m) if weight is None else weight[safe].astype(np.float64)
    w = np.where(counted, w, 0.0)
    if c == 0:
        prob, losses = np.empty((m, 0), dtype=logits.dtype), np.zeros(m)
    else:
        x = logits.astype(np.float64)
        shifted = x - x.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1)
        prob = (e / s[:, None]).astype(logits.dtype)
        losses = np.where(counted, w * (np.log(s) - shifted[np.arange(m), safe]), 0.0)
    total_weight = float(w.sum())
    if reduction == "none":
        return losses.astype(logits.dtype), prob, total_weight
    total = losses.sum()
    if reduction == "mean":
        total = total / total_weight if total_weight else np.nan
    return np.array(total, dtype=logits.dtype), prob, total_weight


def cross_entropy_backward(grad, prob, target, weight, ignore_index, reduction, total_weight):
    """dx (M, C) = scale_i (prob_i - onehot(t_i)), scale_i = grad (grad_i for "none") *
    w[t_i] (/ total_weight for "mean", 0 when it is 0); 0 for ignored rows."""
    m, c = prob.shape
    t = _checked_labels("cross_entropy_backward", target, c, ignore_index)
    counted = t != ignore_index
    safe = np.where(counted, t, 0)
    scale = np.broadcast_to(grad.reshape(-1).astype(np.float64), (m,))
    if reduction == "mean":
        scale = scale / total_weight if total_weight else np.zeros(m)
    if weight is not None:
        scale = scale * weight[safe]
    scale = np.where(counted, scale, 0.0)
    dx = scale[:, None] * prob
    if c:
        dx[np.arange(m), safe] -= scale
    return dx.astype(prob.dtype)


# ---------------------------------------------------------------- optimizers


def sgd_step(
    params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize
):
    """One SGD step over lists of arrays, in place (torch.optim.SGD's rule); a None in
    momentum_buffers is replaced by a new buffer holding the first step's direction."""
    for k, (p, g) in enumerate(zip(params, grads)):
        d = -g if maximize else g
        if weight_decay != 0:
            d = d + weight_decay * p
        if momentum != 0:
            b = momentum_buffers[k]
            if b is None:
                b = momentum_buffers[k] = np.array(d, dtype=p.dtype)
            else:
                b *= momentum
                b += (1 - dampening) * d
            d = d + momentum * b if nesterov else b
        p -= lr * d


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
    """One Adam / AdamW step over lists of arrays, in place (torch.optim.Adam's rule); steps[i]
    is parameter i's step count after this step."""
    for k, (p, g) in enumerate(zip(params, grads)):
        d = -g if maximize else g
        if weight_decay != 0:
            if decoupled_weight_decay:
                p *= 1 - lr * weight_decay
            else:
                d = d + weight_decay * p
        m, v, t = exp_avgs[k], exp_avg_sqs[k], steps[k]
        m *= beta1
        m += (1 - beta1) * d
        v *= beta2
        v += (1 - beta2) * (d * d)
        if amsgrad:
            v = np.maximum(max_exp_avg_sqs[k], v, out=max_exp_avg_sqs[k])
        denom = np.sqrt(v) / math.sqrt(1 - beta2**t)
        denom += eps
        p -= (lr / (1 - beta1**t)) * (m / denom)


# ---------------------------------------------------------------- activations


def activation_forward(x, activation):
    """activation(x) elementwise: 'relu' (NaN kept, as PyTorch), 'sigmoid', 'tanh'; None: a copy.
    Always an ndarray of x's shape (a 0-d one too: NumPy would return a scalar)."""
    out = np.empty_like(x)
    if activation == "relu":
        np.copyto(out, np.where((x > 0) | np.isnan(x), x, x.dtype.type(0)))
    elif activation == "tanh":
        np.tanh(x, out=out)
    elif activation == "sigmoid":
        # 1 / (1 + exp(-x)): for x << 0 exp overflows to inf and the result is exactly 0
        np.negative(x, out=out)
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)
    else:
        np.copyto(out, x)
    return out


def activation_backward(grad_out, out, activation):
    """dx from the forward's output: sigmoid g * out * (1 - out), tanh g * (1 - out^2), relu
    0 where out <= 0 else g (a select as PyTorch's: 0 even for an inf or NaN g, g where out is
    NaN)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 is NaN, silently (as PyTorch)
        if activation == "sigmoid":
            return np.asarray(grad_out * out * (1 - out))
        if activation == "tanh":
            return np.asarray(grad_out * (1 - out * out))
    if activation == "relu":
        return np.asarray(np.where(out <= 0, grad_out.dtype.type(0), grad_out))
    return grad_out.copy()


def bias_activation(y, bias, activation):
    """y = activation(y + bias[c]) in place over y (N, C) or (N, C, L), bias (C,) or None;
    returns y."""
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    if activation is not None:
        y[...] = activation_forward(y, activation)
    return y


def sum_rows(x):
    """(N,) sums over the rows of x (M, N)."""
    return x.sum(axis=0)


def running_average(running, stat, keep, weight):
    """running <- keep * running + weight * stat, in place."""
    running *= keep
    running += weight * stat
    return running
