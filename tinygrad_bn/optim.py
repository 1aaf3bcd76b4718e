"""Optimizers and learning-rate schedulers, as in ``torch.optim``.

Updates work on the parameters' NumPy arrays in place (``p.data``), so they record no
graph and keep each parameter's identity and dtype. Update rules are PyTorch's documented
ones. The plain-SGD path is one ``p.data -= lr * g`` per parameter: the paper's MLP calls
``step()`` 50,000 times.
"""

import copy
import math
import numbers

import numpy as np

from . import jit as _jit
from .tensor import Tensor


def _number(value, name, op, low=0.0, high=None, high_open=False):
    """Validate low <= value (< or <=) high; returns value as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{op}: invalid {name}: expected a number, got {value!r}")
    too_high = high is not None and (value >= high if high_open else value > high)
    if value < low or too_high:
        bound = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ValueError(f"{op}: invalid {name}: expected >= {low}{bound}, got {value}")
    return float(value)


class Optimizer:
    """Base class: holds ``param_groups`` (a list of dicts, each with a ``"params"`` list and
    its hyper-parameters) and per-parameter ``state``.

    `params` is an iterable of Tensors, or of dicts ``{"params": [...], "lr": ...}`` whose
    keys override `defaults` for that group.
    """

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                "Tensors or dicts, but got a Tensor"
            )
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in vars(cls):  # every optimizer's update is re-run by tg.jit replays
            cls.step = _jit.replayed(cls.step)

    def _check_group(self, group):
        """Subclasses validate hyper-parameters here (ValueError)."""

    def add_param_group(self, group):
        """Add a dict {"params": ..., hyper-parameter overrides} to ``param_groups``."""
        if not isinstance(group, dict):
            raise TypeError(
                f"{type(self).__name__}: param group must be a dict, got {type(group).__name__}"
            )
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{type(self).__name__} can only optimize Tensors, got {type(p).__name__}"
                )
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__} can't optimize a non-leaf Tensor")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: a parameter appears twice in one group")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError(
                f"{type(self).__name__}: some parameters appear in more than one parameter group"
            )
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        self._check_group(full)
        self.param_groups.append(full)

    @_jit.replayed
    def zero_grad(self, set_to_none=True):
        """Set every parameter's gradient to None (or to zeros with set_to_none=False)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self, closure=None):
        raise NotImplementedError

    def _all_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}: a deep
        copy, with parameters named by their position across the groups."""
        index = {id(p): i for i, p in enumerate(self._all_params())}
        groups = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [index[id(p)] for p in g["params"]],
            }
            for g in self.param_groups
        ]
        state = {index[id(p)]: copy.deepcopy(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by ``state_dict()`` (deep-copied in).

        Raises ValueError if the number of groups or their sizes differ, or a state
        array's shape does not match its parameter."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"load_state_dict: state_dict has {len(groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"load_state_dict: group {i} has {len(saved['params'])} "
                    f"parameters in state_dict, {len(own['params'])} here"
                )
        params = {}
        for saved, own in zip(groups, self.param_groups):
            params.update(zip((int(i) for i in saved["params"]), own["params"]))
        state = {}
        for key, s in state_dict["state"].items():
            index = int(key)  # ints, or their strings after a round trip through JSON
            if index not in params:
                raise ValueError(
                    f"load_state_dict: state for parameter {key!r}, which no parameter group lists"
                )
            p = params[index]
            s = copy.deepcopy(s)
            for name, v in s.items():
                if isinstance(v, np.ndarray):
                    if v.shape != p.shape:
                        raise ValueError(
                            f"load_state_dict: state {name!r} of parameter {key} "
                            f"has shape {v.shape}, the parameter {p.shape}"
                        )
                    s[name] = v.astype(p.dtype, copy=False)
            state[p] = s
        for saved, own in zip(groups, self.param_groups):
            own.update({k: v for k, v in saved.items() if k != "params"})
        self.state = state

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, weight decay, Nesterov.

    With g = grad + weight_decay * p:  b <- g on the first step, else
    b <- momentum * b + (1 - dampening) * g;  g <- g + momentum * b (nesterov) or b;
    p <- p - lr * g.  (PyTorch's rule.)
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
            ),
        )

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "learning rate", "SGD")
        g["momentum"] = _number(g["momentum"], "momentum value", "SGD")
        g["dampening"] = _number(g["dampening"], "dampening value", "SGD")
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay value", "SGD")
        g["nesterov"] = bool(g["nesterov"])
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError(
                "SGD: nesterov momentum requires a momentum > 0 and zero "
                f"dampening, got momentum={g['momentum']}, "
                f"dampening={g['dampening']}"
            )

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            decay = group["weight_decay"]
            if momentum == 0 and decay == 0:
                for p in group["params"]:  # the hot path: no state, one update
                    if p.grad is not None:
                        p.data -= lr * p.grad.data
                continue
            dampening, nesterov = group["dampening"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if decay != 0:
                    g = g + decay * p.data
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(g, dtype=p.dtype)
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * g
                    g = g + momentum * buf if nesterov else buf
                p.data -= lr * g
        return loss


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, PyTorch's rule:

    g = grad + weight_decay * p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "learning rate", "Adam")
        g["eps"] = _number(g["eps"], "epsilon value", "Adam")
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay value", "Adam")
        betas = g["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair, got {betas!r}")
        g["betas"] = (
            _number(betas[0], "beta parameter at index 0", "Adam", 0.0, 1.0, True),
            _number(betas[1], "beta parameter at index 1", "Adam", 0.0, 1.0, True),
        )

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if decay != 0:
                    g = g + decay * p.data
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {
                        "step": 0,
                        "exp_avg": np.zeros_like(p.data),
                        "exp_avg_sq": np.zeros_like(p.data),
                    }
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * (g * g)
                denom = np.sqrt(v) / math.sqrt(1 - beta2**t)
                denom += eps
                p.data -= (lr / (1 - beta1**t)) * (m / denom)
        return loss


# ================================================================ schedulers


class LRScheduler:
    """Base class: sets each group's lr from ``get_lr()`` at construction and on ``step()``."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: expected an Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(
                    "param 'initial_lr' is not specified in param_groups when resuming an optimizer"
                )
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and write the new learning rates into the optimizer."""
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates the last step() set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything except the optimizer."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(copy.deepcopy(state_dict))


class StepLR(LRScheduler):
    """Multiply each group's lr by gamma every step_size epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if (
            isinstance(step_size, bool)
            or not isinstance(step_size, numbers.Integral)
            or step_size < 1
        ):
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _number(gamma, "gamma", "StepLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [g["lr"] for g in groups]
        return [g["lr"] * self.gamma for g in groups]


class ExponentialLR(LRScheduler):
    """Multiply each group's lr by gamma every epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _number(gamma, "gamma", "ExponentialLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0:
            return [g["lr"] for g in groups]
        return [g["lr"] * self.gamma for g in groups]
