"""Function: the base class of every differentiable op.

An op subclasses Function with ``forward(self, *arrays, **params)`` directly above
``backward(self, grad)``. ``forward`` works on NumPy arrays and saves on ``self`` what
``backward`` needs; ``backward`` returns one gradient (an array or None) per input.
``Op.apply(*tensors, **params)`` runs forward and records the op in the graph, but only
when a gradient is needed: under ``no_grad`` or with constant inputs nothing is kept.
"""

from . import jit as _jit
from .tensor import Tensor, is_grad_enabled


class Function:
    """An op's node in the graph: ``parents`` are the input Tensors (set only when the graph
    is recorded), ``needs_input_grad`` says which of them require a gradient, and
    ``forward`` keeps on ``self`` whatever else ``backward`` needs."""

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        ctx = cls()
        needs = ctx.needs_input_grad = tuple([t.requires_grad for t in inputs])
        out = ctx.forward(*[t.data for t in inputs], **params)
        if True in needs and is_grad_enabled():
            ctx.parents = inputs
            out = Tensor._from_op(out, ctx)
        else:
            out = Tensor._from_op(out, None)
        if _jit.recorder is not None:  # tg.jit is recording this call
            _jit.recorder.op(cls, inputs, params, out)
        return out


def unbroadcast(grad, shape):
    """Sum grad over the axes NumPy broadcasting added or stretched, back to `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, s in enumerate(shape) if s == 1 and grad.shape[i + extra] != 1
    )
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    return out.reshape(shape) if extra else out
