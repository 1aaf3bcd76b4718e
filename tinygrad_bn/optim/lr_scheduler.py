"""Learning-rate schedulers, as in ``torch.optim.lr_scheduler``.

Each ``step()`` computes the new rates from the groups' *current* ``lr`` (PyTorch's
chainable form), so several schedulers on one optimizer compose: a LinearLR warm-up and a
MultiStepLR decay stepped together multiply. ``_closed_form_lr()`` gives the rate at
``last_epoch`` from ``base_lrs`` alone; SequentialLR uses it when it hands over.
"""

import bisect
import copy
import math
import numbers
from collections import Counter

from .optimizer import Optimizer, _flag, _number


def _optimizer(optimizer, op):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{op}: expected an Optimizer (got {type(optimizer).__name__})")
    return optimizer


def _int(value, name, op, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{op}: {name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def _per_group(value, name, optimizer, op):
    """One number per parameter group: a list of that length, or one number for all."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{op}: expected {n} values for {name} (got {len(value)})")
        return [_number(v, name, op) for v in value]
    return [_number(value, name, op)] * n


class LRScheduler:
    """Base class: sets each group's lr from ``get_lr()`` at construction and on ``step()``.

    ``last_epoch=-1`` starts a schedule (each group's ``initial_lr`` is set to its lr);
    another value resumes one, and then every group must already hold ``initial_lr``.
    """

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = _optimizer(optimizer, type(self).__name__)
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral):
            raise ValueError(f"{type(self).__name__}: last_epoch must be an integer")
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(
                    f"param 'initial_lr' is not specified in param_groups[{i}] when "
                    "resuming a scheduler with last_epoch >= 0"
                )
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._initial_step()

    def _initial_step(self):
        """The step a constructor takes: last_epoch -1 -> 0, flagged so get_lr() can tell."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        """The next rates, one per group, from the current ones (called by step())."""
        raise NotImplementedError

    def _current(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self):
        """Advance one epoch and write the new learning rates into the optimizer."""
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch=None):
        """Next epoch by get_lr(), or jump to `epoch` by the closed form where there is one."""
        if epoch is None:
            self.last_epoch += 1
            lrs = self.get_lr()
        else:
            self.last_epoch = epoch
            closed = getattr(self, "_closed_form_lr", None)
            lrs = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = self._current()

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
            raise ValueError(f"StepLR: step_size must be a positive integer (got {step_size!r})")
        self.step_size = int(step_size)
        self.gamma = _number(gamma, "gamma", "StepLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current()
        return [lr * self.gamma for lr in self._current()]

    def _closed_form_lr(self):
        return [b * self.gamma ** (self.last_epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply each group's lr by gamma at each milestone epoch (a milestone listed k
    times multiplies by gamma**k)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        try:
            items = list(milestones)
        except TypeError:
            raise ValueError(
                f"MultiStepLR: milestones must be a list of integers (got {milestones!r})"
            ) from None
        self.milestones = Counter(_int(m, "each milestone", "MultiStepLR", 0) for m in items)
        self.gamma = _number(gamma, "gamma", "MultiStepLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._current()
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [lr * factor for lr in self._current()]

    def _closed_form_lr(self):
        passed = bisect.bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [b * self.gamma**passed for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply each group's lr by gamma every epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _number(gamma, "gamma", "ExponentialLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current()
        return [lr * self.gamma for lr in self._current()]

    def _closed_form_lr(self):
        return [b * self.gamma**self.last_epoch for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale each group's lr by a factor that moves linearly from start_factor to
    end_factor over total_iters epochs, then stays (a warm-up with the defaults)."""

    def __init__(
        self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1
    ):
        start = _number(start_factor, "start_factor", "LinearLR", 0.0, 1.0)
        if start == 0:
            raise ValueError("LinearLR: invalid start_factor: expected > 0 and <= 1.0, got 0.0")
        self.start_factor = start
        self.end_factor = _number(end_factor, "end_factor", "LinearLR", 0.0, 1.0)
        self.total_iters = _int(total_iters, "total_iters", "LinearLR", 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current()
        span = self.end_factor - self.start_factor
        ratio = 1.0 + span / (self.total_iters * self.start_factor + (self.last_epoch - 1) * span)
        return [lr * ratio for lr in self._current()]

    def _closed_form_lr(self):
        done = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * done
        return [b * factor for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Anneal each group's lr from its initial value to eta_min along half a cosine over
    T_max epochs (SGDR without restarts); past T_max it rises again, as PyTorch's does."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _int(T_max, "T_max", "CosineAnnealingLR", 1)
        self.eta_min = _number(eta_min, "eta_min", "CosineAnnealingLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current()
        if self._step_count == 1 and t > 0:  # resumed: start from the closed form
            return self._closed_form_lr()
        if (t - 1 - T) % (2 * T) == 0:  # the turn at the bottom, where the ratio is 0/0
            rise = (1 - math.cos(math.pi / T)) / 2
            return [lr + (b - low) * rise for lr, b in zip(self._current(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - low) + low for lr in self._current()]

    def _closed_form_lr(self):
        cos = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (b - self.eta_min) * cos for b in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin 2018), stepped once per *batch*: lr rises from
    max_lr/div_factor to max_lr over the first pct_start of total_steps, then falls to
    initial_lr/final_div_factor (three_phase: back to initial_lr first). With
    cycle_momentum, momentum (SGD) or beta1 (Adam) moves the opposite way between
    max_momentum and base_momentum. Stepping past total_steps raises ValueError.
    """

    def __init__(
        self,
        optimizer,
        max_lr,
        total_steps=None,
        epochs=None,
        steps_per_epoch=None,
        pct_start=0.3,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
        div_factor=25.0,
        final_div_factor=1e4,
        three_phase=False,
        last_epoch=-1,
    ):
        op = "OneCycleLR"
        _optimizer(optimizer, op)
        if total_steps is not None:
            self.total_steps = _int(total_steps, "total_steps", op, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _int(epochs, "epochs", op, 1) * _int(
                steps_per_epoch, "steps_per_epoch", op, 1
            )
        else:
            raise ValueError(
                f"{op}: you must define either total_steps OR (epochs AND steps_per_epoch)"
            )
        pct = _number(pct_start, "pct_start", op, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"{op}: anneal_strategy must be one of 'cos' or 'linear' (got {anneal_strategy!r})"
            )
        self.anneal_strategy = anneal_strategy
        div = _number(div_factor, "div_factor", op)
        final_div = _number(final_div_factor, "final_div_factor", op)
        if div == 0 or final_div == 0:
            raise ValueError(f"{op}: div_factor and final_div_factor must be > 0")
        n = self.total_steps
        # (last step of the phase, lr from, lr to, momentum from, momentum to)
        if three_phase:
            self._phases = [
                (pct * n - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (2 * pct * n - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._phases = [
                (pct * n - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        max_lrs = _per_group(max_lr, "max_lr", optimizer, op)
        if last_epoch == -1:
            for top, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = top / div
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div
        self.cycle_momentum = _flag(cycle_momentum, "cycle_momentum", op)
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(
                    f"{op}: optimizer must support momentum or beta1 with `cycle_momentum` "
                    "option enabled"
                )
            self.use_beta1 = "betas" in optimizer.defaults
            highs = _per_group(max_momentum, "max_momentum", optimizer, op)
            lows = _per_group(base_momentum, "base_momentum", optimizer, op)
            if last_epoch == -1:
                for high, low, group in zip(highs, lows, optimizer.param_groups):
                    self._set_momentum(group, high)
                    group["max_momentum"], group["base_momentum"] = high, low
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(
                f"OneCycleLR: tried to step {t} times; the specified number of total steps "
                f"is {self.total_steps}"
            )
        lrs = []
        for group in self.optimizer.param_groups:
            begin = 0.0
            for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if t <= end or i == len(self._phases) - 1:
                    pct = (t - begin) / (end - begin)
                    lrs.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
                    break
                begin = end
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply each group's lr by factor (not below min_lr) when ``step(metric)`` has not
    improved for more than patience epochs, then wait cooldown epochs.

    mode "min" (a loss) or "max" (an accuracy); an improvement beats the best by
    threshold, relative ("rel") or absolute ("abs"). A change smaller than eps is skipped.
    """

    def __init__(
        self,
        optimizer,
        mode="min",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        threshold_mode="rel",
        cooldown=0,
        min_lr=0,
        eps=1e-8,
    ):
        op = "ReduceLROnPlateau"
        self.optimizer = _optimizer(optimizer, op)
        self.factor = _number(factor, "factor", op, 0.0, 1.0, True)
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group(min_lr, "min_lr", optimizer, op)
        else:
            self.default_min_lr = _number(min_lr, "min_lr", op)
            self.min_lrs = [self.default_min_lr] * len(optimizer.param_groups)
        self.patience = _int(patience, "patience", op, 0)
        self.cooldown = _int(cooldown, "cooldown", op, 0)
        self.eps = _number(eps, "eps", op)
        if mode not in ("min", "max"):
            raise ValueError(f"{op}: mode must be 'min' or 'max' (got {mode!r})")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"{op}: threshold_mode must be 'rel' or 'abs' (got {threshold_mode!r})"
            )
        self.mode, self.threshold_mode = mode, threshold_mode
        self.threshold = _number(threshold, "threshold", op)
        self.last_epoch = 0
        self._last_lr = self._current()
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _is_better(self, a, best):
        if self.mode == "min":
            return a < (
                best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else best - self.threshold
            )
        return a > (
            best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold
        )

    def step(self, metrics):
        """Record this epoch's metric (a number or a one-element Tensor); maybe reduce lr."""
        current = float(metrics.item() if hasattr(metrics, "item") else metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current()

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"ReduceLROnPlateau: the optimizer has {len(groups)} param groups, "
                    f"min_lr has {len(self.min_lrs)} values (a group added later?)"
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, low in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, low)
            if old - new > self.eps:
                group["lr"] = new


def _schedulers(schedulers, optimizer, op):
    schedulers = list(schedulers)
    if not schedulers:
        raise ValueError(f"{op}: expects at least one scheduler")
    optimizer = optimizer if optimizer is not None else getattr(schedulers[0], "optimizer", None)
    for i, s in enumerate(schedulers):
        if not isinstance(s, LRScheduler):
            raise TypeError(f"{op}: scheduler at index {i} is not an LRScheduler")
        if isinstance(s, ReduceLROnPlateau):
            raise ValueError(
                f"{op}: ReduceLROnPlateau (at index {i}) needs a metric in step() and "
                "cannot be chained"
            )
        if s.optimizer is not optimizer:
            raise ValueError(
                f"{op}: all schedulers must belong to the same optimizer (index {i} does not)"
            )
    return schedulers, optimizer


class _Composite(LRScheduler):
    """state_dict of a scheduler made of schedulers: its own fields and theirs."""

    def state_dict(self):
        state = {
            k: copy.deepcopy(v)
            for k, v in self.__dict__.items()
            if k not in ("optimizer", "_schedulers")
        }
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = copy.deepcopy(dict(state_dict))
        inner = state.pop("_schedulers")
        self.__dict__.update(state)
        for s, saved in zip(self._schedulers, inner):
            s.load_state_dict(saved)


class ChainedScheduler(_Composite):
    """Step every scheduler in the list, in order, on each step() (their effects multiply)."""

    def __init__(self, schedulers, optimizer=None):
        self._schedulers, self.optimizer = _schedulers(schedulers, optimizer, "ChainedScheduler")
        self._last_lr = self._current()

    def step(self):
        for s in self._schedulers:
            s.step()
        self._last_lr = self._current()


class SequentialLR(_Composite):
    """Run schedulers one after another: schedulers[i] from milestones[i - 1] on, restarted
    from its closed form at the milestone."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        op = "SequentialLR"
        self._schedulers, self.optimizer = _schedulers(schedulers, _optimizer(optimizer, op), op)
        milestones = [_int(m, "each milestone", op, 0) for m in milestones]
        if len(milestones) != len(self._schedulers) - 1:
            raise ValueError(
                f"{op}: expected {len(self._schedulers) - 1} milestones for "
                f"{len(self._schedulers)} schedulers (got {len(milestones)})"
            )
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        # undo what the schedulers' constructors did, then start the first one again
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in self._schedulers:
            _undo_step(s)
        first = self._schedulers[bisect.bisect_right(milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self):
        self.last_epoch += 1
        i = bisect.bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


def _undo_step(scheduler):
    if isinstance(scheduler, _Composite):
        for s in scheduler._schedulers:
            _undo_step(s)
    else:
        scheduler.last_epoch -= 1
