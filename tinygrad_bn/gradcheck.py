"""Gradient checking: the analytic backward against float64 central differences.

For an output y = fn(*inputs) we draw a fixed random cotangent r and compare, for every
input x that requires a gradient, the backward pass's d<r, y>/dx with the central
difference (<r, fn(x + eps e_i)> - <r, fn(x - eps e_i)>) / (2 eps), element by element.
One random r exercises every entry of the Jacobian with probability one.
"""

import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree; the message names the worst element."""


def _as_float64_leaves(inputs):
    leaves = []
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor):
            leaves.append(Tensor(t.data.astype(np.float64), requires_grad=t.requires_grad))
        elif isinstance(t, np.ndarray) and t.dtype.kind == "f":
            leaves.append(Tensor(t.astype(np.float64)))
        else:
            leaves.append(t)  # ints, shapes, labels … passed through untouched
    return leaves


def _output(fn, args, op):
    out = fn(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"{op}: expected fn to return a Tensor (got {type(out).__name__})")
    return out


def analytic_grads(fn, inputs, cotangent):
    """Backward-pass gradients of <cotangent, fn(*inputs)> for inputs requiring grad."""
    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    out = _output(fn, inputs, "gradcheck")
    if not out.requires_grad:
        raise RuntimeError(
            "gradcheck: expected an output that depends on an input requiring grad (got none)"
        )
    out.backward(cotangent)
    return [
        t.grad.data if t.grad is not None else np.zeros_like(t.data)
        for t in inputs
        if isinstance(t, Tensor) and t.requires_grad
    ]


def numerical_grads(fn, inputs, cotangent, eps):
    """Central-difference gradients of <cotangent, fn(*inputs)>, perturbing in place."""
    grads = []
    with no_grad():
        for t in inputs:
            if not (isinstance(t, Tensor) and t.requires_grad):
                continue
            flat = t.data.reshape(-1)  # a view: perturbing it perturbs the input
            g = np.zeros(flat.shape, dtype=np.float64)
            for i in range(flat.size):
                orig = flat[i]
                flat[i] = orig + eps
                plus = np.sum(fn(*inputs).data * cotangent)
                flat[i] = orig - eps
                minus = np.sum(fn(*inputs).data * cotangent)
                flat[i] = orig
                g[i] = (plus - minus) / (2 * eps)
            grads.append(g.reshape(t.shape))
    return grads


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check fn's backward against central differences in float64.

    `inputs` is a sequence; Tensors (and float arrays) in it are copied to float64, and
    those with requires_grad=True are checked. Returns True, or raises GradcheckError
    naming the input, the index and both values of the worst mismatch, where an element
    fails when |analytic - numerical| > atol + rtol * |numerical|.
    """
    inputs = _as_float64_leaves(list(inputs))
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: expected an input with requires_grad=True (got none)")
    with no_grad():
        out = _output(fn, inputs, "gradcheck")
    cotangent = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = analytic_grads(fn, inputs, cotangent)
    numerical = numerical_grads(fn, inputs, cotangent, eps)
    for pos, a, n in zip(checked, analytic, numerical):
        if a.shape != n.shape:
            raise GradcheckError(
                f"gradcheck: input {pos}: expected a gradient of the input's shape {n.shape} "
                f"(got {a.shape})"
            )
        excess = np.abs(a - n) - (atol + rtol * np.abs(n))
        if excess.size and (np.max(excess) > 0 or not np.all(np.isfinite(a))):
            bad = np.where(np.isfinite(a), excess, np.inf)
            idx = np.unravel_index(int(np.argmax(bad)), a.shape)
            raise GradcheckError(
                f"gradcheck: input {pos} (shape {a.shape}), index {tuple(int(i) for i in idx)}: "
                f"analytic {a[idx]!r} != numerical {n[idx]!r} "
                f"(atol={atol}, rtol={rtol}; {int(np.sum(bad > 0))} of {a.size} elements fail)"
            )
    return True
