"""Optimizers, as in ``torch.optim``: SGD, Adam (amsgrad, maximize), AdamW, RMSprop.

Updates work on the parameters' NumPy arrays in place (``p.data``), so they record no
graph and keep each parameter's identity and dtype. Update rules are PyTorch's documented
ones. SGD updates a whole group in one compiled call (``kernels.sgd_step``): the paper's
MLP calls ``step()`` 50,000 times.
"""

import copy
import math
import numbers
import warnings

import numpy as np

from .. import jit as _jit
from .. import kernels
from ..tensor import Tensor


def _number(value, name, op, low=0.0, high=None, high_open=False):
    """Validate low <= value (< or <=) high; returns value as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{op}: invalid {name}: expected a number (got {value!r})")
    too_high = high is not None and (value >= high if high_open else value > high)
    if value < low or too_high:
        bound = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ValueError(f"{op}: invalid {name}: expected >= {low}{bound} (got {value})")
    return float(value)


def _flag(value, name, op):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool (got {value!r})")
    return bool(value)


def _betas(betas, op):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{op}: betas must be a pair (got {betas!r})")
    return (
        _number(betas[0], "beta parameter at index 0", op, 0.0, 1.0, True),
        _number(betas[1], "beta parameter at index 1", op, 0.0, 1.0, True),
    )


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
        """Validate and normalize one group's hyper-parameters in place (ValueError,
        TypeError). The one check shared by the constructor, add_param_group and
        load_state_dict; subclasses override it."""

    def add_param_group(self, group):
        """Add a dict {"params": ..., hyper-parameter overrides} to ``param_groups``."""
        if not isinstance(group, dict):
            raise TypeError(
                f"{type(self).__name__}: param group must be a dict (got {type(group).__name__})"
            )
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{type(self).__name__} can only optimize Tensors (got {type(p).__name__})"
                )
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__} can't optimize a non-leaf Tensor")
        if len({id(p) for p in params}) != len(params):
            # PyTorch warns and keeps the duplicate (it is then updated twice per step)
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "in future, this will cause an error",
                UserWarning,
                stacklevel=3,
            )
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

    def _indices(self):
        """id(param) -> the index state_dict() names it by. As PyTorch: a parameter listed
        in several groups gets its first group's index, and within that group (where it
        can appear twice, with a warning) its last position."""
        index, start = {}, 0
        for g in self.param_groups:
            local = {id(p): i for i, p in enumerate(g["params"], start)}
            for key, i in local.items():
                index.setdefault(key, i)
            start += len(g["params"])
        return index

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}: a deep
        copy, with parameters named by their position across the groups."""
        index = self._indices()
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

        The hyper-parameters are validated as the constructor validates them, and nothing
        changes unless every check passes. Raises ValueError if the number of groups or
        their sizes differ, a hyper-parameter is invalid, or a state array's shape does not
        match its parameter; TypeError for a state_dict that is not one."""
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise TypeError(
                "load_state_dict: expected a dict with 'state' and 'param_groups', "
                f"got {type(state_dict).__name__}"
            )
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"load_state_dict: state_dict has {len(groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        merged = []
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise TypeError(f"load_state_dict: group {i} must be a dict with 'params'")
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"load_state_dict: group {i} has {len(saved['params'])} "
                    f"parameters in state_dict, {len(own['params'])} here"
                )
            group = {**own, **{k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}}
            self._check_group(group)
            merged.append(group)
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
        for group, own in zip(merged, self.param_groups):
            own.update(group)
        self.state = state

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, weight decay, Nesterov.

    With g = (-grad if maximize else grad) + weight_decay * p:  b <- g on the first step, else
    b <- momentum * b + (1 - dampening) * g;  g <- g + momentum * b (nesterov) or b;
    p <- p - lr * g.  (PyTorch's rule.) A step updates every parameter of a group in one
    compiled call (kernels.sgd_step, as torch's foreach optimizers).
    """

    def __init__(
        self,
        params,
        lr,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        *,
        maximize=False,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                maximize=maximize,
            ),
        )

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "learning rate", "SGD")
        g["momentum"] = _number(g["momentum"], "momentum value", "SGD")
        g["dampening"] = _number(g["dampening"], "dampening value", "SGD")
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay value", "SGD")
        g["nesterov"] = _flag(g["nesterov"], "nesterov", "SGD")
        g["maximize"] = _flag(g["maximize"], "maximize", "SGD")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError(
                "SGD: nesterov momentum requires a momentum > 0 and zero "
                f"dampening, got momentum={g['momentum']}, "
                f"dampening={g['dampening']}"
            )

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            momentum = group["momentum"]
            bufs = None
            if momentum != 0:
                states = [self.state.setdefault(p, {}) for p in params]
                bufs = [s.get("momentum_buffer") for s in states]
            kernels.sgd_step(
                [p.data for p in params],
                [p.grad.data for p in params],
                bufs,
                group["lr"],
                group["weight_decay"],
                momentum,
                group["dampening"],
                group["nesterov"],
                group["maximize"],
            )
            if bufs is not None:  # the first step's new buffers
                for s, b in zip(states, bufs):
                    s["momentum_buffer"] = b
        return loss


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, PyTorch's rule:

    g = -grad if maximize else grad;  with weight decay, g <- g + weight_decay * p, or,
    decoupled (AdamW), p <- p (1 - lr weight_decay);  m <- b1 m + (1 - b1) g;
    v <- b2 v + (1 - b2) g^2;  with amsgrad v_max <- max(v_max, v) replaces v below;
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    A step updates every parameter of a group in one compiled call (kernels.adam_step).
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        *,
        maximize=False,
        decoupled_weight_decay=False,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _check_group(self, g):
        op = type(self).__name__
        g["lr"] = _number(g["lr"], "learning rate", op)
        g["eps"] = _number(g["eps"], "epsilon value", op)
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay value", op)
        g["betas"] = _betas(g["betas"], op)
        for name in ("amsgrad", "maximize", "decoupled_weight_decay"):
            g[name] = _flag(g[name], name, op)

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            amsgrad = group["amsgrad"]
            params = [p for p in group["params"] if p.grad is not None]
            states = []
            for p in params:
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {
                        "step": 0,
                        "exp_avg": np.zeros_like(p.data),
                        "exp_avg_sq": np.zeros_like(p.data),
                    }
                if amsgrad and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
                state["step"] += 1
                states.append(state)
            kernels.adam_step(
                [p.data for p in params],
                [p.grad.data for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if amsgrad else None,
                [s["step"] for s in states],
                group["lr"],
                *group["betas"],
                group["eps"],
                group["weight_decay"],
                amsgrad,
                group["maximize"],
                group["decoupled_weight_decay"],
            )
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): each step first
    shrinks p by (1 - lr * weight_decay), then takes the Adam step on the raw gradient.
    PyTorch's rule and defaults (weight_decay=0.01)."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), PyTorch's rule:

    g = -grad if maximize else grad, plus weight_decay * p;  s <- alpha s + (1 - alpha) g^2;
    centered: a <- alpha a + (1 - alpha) g and d = sqrt(s - a^2) + eps, else d = sqrt(s) + eps;
    with momentum b <- momentum b + g / d and p <- p - lr b, else p <- p - lr g / d.
    """

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        maximize=False,
    ):
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "learning rate", "RMSprop")
        g["alpha"] = _number(g["alpha"], "alpha value", "RMSprop")
        g["eps"] = _number(g["eps"], "epsilon value", "RMSprop")
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay value", "RMSprop")
        g["momentum"] = _number(g["momentum"], "momentum value", "RMSprop")
        g["centered"] = _flag(g["centered"], "centered", "RMSprop")
        g["maximize"] = _flag(g["maximize"], "maximize", "RMSprop")

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            decay, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad.data if group["maximize"] else p.grad.data
                if decay != 0:
                    g = g + decay * p.data
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": 0, "square_avg": np.zeros_like(p.data)}
                    if momentum > 0:
                        state["momentum_buffer"] = np.zeros_like(p.data)
                    if centered:
                        state["grad_avg"] = np.zeros_like(p.data)
                state["step"] += 1
                square_avg = state["square_avg"]
                square_avg *= alpha
                square_avg += (1 - alpha) * (g * g)
                if centered:
                    grad_avg = state["grad_avg"]
                    grad_avg *= alpha
                    grad_avg += (1 - alpha) * g
                    avg = np.sqrt(square_avg - grad_avg * grad_avg)
                else:
                    avg = np.sqrt(square_avg)
                avg += eps
                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf *= momentum
                    buf += g / avg
                    p.data -= lr * buf
                else:
                    p.data -= lr * (g / avg)
        return loss
