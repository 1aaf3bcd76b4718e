"""Module hooks, as ``torch.utils.hooks``: the handle that removes one, and the two identity
ops through which a full backward hook sees a module's gradients.

A module with a full backward hook runs on *gated* inputs: the Tensor inputs that require
grad are flattened into one array by ``_InputGate`` and sliced back out, so the gate's
backward receives every input gradient at once and can hand them to the hook, which may
replace them, before they flow on. ``_OutputTap`` is an identity on each output that
records its gradient (grad_output). Nothing of this runs unless such a hook is registered.
"""

import itertools
import warnings

import numpy as np

from ..function import Function
from ..tensor import Tensor, is_grad_enabled

_ids = itertools.count()


class RemovableHandle:
    """Returned by ``register_*_hook``: ``handle.remove()`` unregisters the hook (idempotent);
    also a context manager that removes it on exit."""

    def __init__(self, hooks_dict, on_change=None):
        self.id = next(_ids)
        self._hooks = hooks_dict
        self._on_change = on_change

    def remove(self):
        if self._hooks.pop(self.id, None) is not None and self._on_change is not None:
            self._on_change()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class _BackwardState:
    """One module call's bookkeeping: grad_output as it arrives, then the hooks' turn."""

    def __init__(self, module, hooks, n_inputs, n_args):
        self.module, self.hooks = module, hooks
        self.n_inputs, self.n_args = n_inputs, n_args  # inputs needing grad; all positional
        self.grad_output, self.pending_outputs = [], 0

    def run_hooks(self, grad_input):
        grad_output = tuple(
            None if g is None else Tensor._from_op(g, None) for g in self.grad_output
        )
        grads = tuple(None if g is None else Tensor._from_op(g, None) for g in grad_input)
        for hook in self.hooks:
            result = hook(self.module, grads, grad_output)
            if result is None:
                continue
            result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            if len(result) != len(grads):
                raise RuntimeError(
                    f"backward hook returned {len(result)} gradients, expected {len(grads)}"
                )
            grads = result
        return [None if g is None else (g.data if isinstance(g, Tensor) else g) for g in grads]


class _OutputTap(Function):
    def forward(self, y, state, index):
        self.state, self.index = state, index
        return y

    def backward(self, grad):
        state = self.state
        state.grad_output[self.index] = grad
        state.pending_outputs -= 1
        if state.n_inputs == 0 and state.pending_outputs == 0:
            warnings.warn(
                "Full backward hook is firing when gradients are computed with respect to "
                "module outputs since no inputs require gradients",
                UserWarning,
                stacklevel=2,
            )
            state.run_hooks((None,) * state.n_args)  # no input needs a gradient: hook now
        return (grad,)


class _InputGate(Function):
    """Identity on several inputs at once: forward packs them into one flat array."""

    def forward(self, *arrays, state, positions, constants, n_args):
        self.state, self.positions, self.n_args = state, positions, n_args
        self.constants = constants  # (position, shape, dtype) of Tensor inputs without grad
        self.shapes = [a.shape for a in arrays]
        self.splits = np.cumsum([a.size for a in arrays])[:-1]
        return np.concatenate([a.reshape(-1) for a in arrays])

    def backward(self, grad):
        parts = [p.reshape(s) for p, s in zip(np.split(grad, self.splits), self.shapes)]
        grad_input = [None] * self.n_args
        for pos, shape, dtype in self.constants:  # PyTorch hands these hooks zeros
            grad_input[pos] = np.zeros(shape, dtype=dtype)
        for pos, part in zip(self.positions, parts):
            grad_input[pos] = part
        new = self.state.run_hooks(grad_input)
        return tuple(
            None if new[pos] is None else np.asarray(new[pos], dtype=grad.dtype).reshape(s)
            for pos, s in zip(self.positions, self.shapes)
        )


def gate_inputs(module, hooks, args):
    """(args with the grad-requiring Tensors gated, the call's state) or (args, None)."""
    if not is_grad_enabled():
        return args, None
    positions = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    state = _BackwardState(module, hooks, len(positions), len(args))
    if not positions:
        return args, state
    tensors = [args[i] for i in positions]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise RuntimeError(
            f"register_full_backward_hook: inputs of several dtypes ({sorted(map(str, dtypes))}) "
            "are not supported"
        )
    constants = [
        (i, a.shape, a.dtype)
        for i, a in enumerate(args)
        if isinstance(a, Tensor) and not a.requires_grad
    ]
    flat = _InputGate.apply(
        *tensors, state=state, positions=positions, constants=constants, n_args=len(args)
    )
    args = list(args)
    start = 0
    for i, t in zip(positions, tensors):
        args[i] = flat[start : start + t.data.size].reshape(t.shape)
        start += t.data.size
    return tuple(args), state


def tap_outputs(state, output):
    """Route each Tensor output (a Tensor, or a tuple/list of them) through _OutputTap."""
    if state is None:
        return output
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    slots = [i for i, o in enumerate(outputs) if isinstance(o, Tensor) and o.requires_grad]
    state.grad_output = [None] * len(outputs)
    state.pending_outputs = len(slots)
    tapped = list(outputs)
    for i in slots:
        tapped[i] = _OutputTap.apply(outputs[i], state=state, index=i)
    if not isinstance(output, (tuple, list)):
        return tapped[0]
    return type(output)(tapped)
