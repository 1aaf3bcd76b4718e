"""tinygrad_bn.optim.lr_scheduler against torch.optim.lr_scheduler, step by step."""

import math

import numpy as np
import pytest

from tinygrad_bn import nn, optim
from tinygrad_bn.optim import lr_scheduler

torch = pytest.importorskip("torch")


def _pair(opt_name="SGD", **kwargs):
    """Our optimizer and torch's, on two parameter groups with different lrs."""
    ours = [nn.Parameter(np.ones(2)), nn.Parameter(np.ones(1))]
    theirs = [torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)]

    def groups(ps):
        return [{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.1}]

    kwargs = {"lr": 0.5, **kwargs}
    return (
        getattr(optim, opt_name)(groups(ours), **kwargs),
        getattr(torch.optim, opt_name)(groups(theirs), **kwargs),
    )


def _assert_same(opt, topt, sched, tsched):
    np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12, atol=1e-15)
    for g, tg_ in zip(opt.param_groups, topt.param_groups):
        for key in ("lr", "momentum", "betas"):
            if key in g:
                np.testing.assert_allclose(g[key], tg_[key], rtol=1e-12, atol=1e-15)


def _run(make, steps, opt_name="SGD", metrics=None, **opt_kwargs):
    """Build ours and torch's with make(module, optimizer); step both `steps` times."""
    opt, topt = _pair(opt_name, **opt_kwargs)
    sched, tsched = make(optim, opt), make(torch.optim, topt)
    _assert_same(opt, topt, sched, tsched)
    for t in range(steps):
        opt.step()
        topt.step()
        if metrics is None:
            sched.step()
            tsched.step()
        else:
            sched.step(metrics[t])
            tsched.step(metrics[t])
        _assert_same(opt, topt, sched, tsched)
    return sched, opt


CASES = {
    "multistep": lambda m, o: m.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 5], gamma=0.5),
    "cosine": lambda m, o: m.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.01),
    "linear": lambda m, o: m.lr_scheduler.LinearLR(o, 0.25, 0.9, total_iters=4),
    "linear_default": lambda m, o: m.lr_scheduler.LinearLR(o),
    "step": lambda m, o: m.lr_scheduler.StepLR(o, 3, gamma=0.5),
    "onecycle": lambda m, o: m.lr_scheduler.OneCycleLR(o, max_lr=[1.0, 0.3], total_steps=13),
    "onecycle_3phase_linear": lambda m, o: m.lr_scheduler.OneCycleLR(
        o,
        max_lr=0.8,
        epochs=3,
        steps_per_epoch=4,
        pct_start=0.25,
        anneal_strategy="linear",
        three_phase=True,
        div_factor=10.0,
        final_div_factor=100.0,
    ),
    "onecycle_no_momentum": lambda m, o: m.lr_scheduler.OneCycleLR(
        o, max_lr=0.8, total_steps=12, cycle_momentum=False
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch(name):
    steps = 12 if name.startswith("onecycle") else 14
    _run(CASES[name], steps, momentum=0.9)


def test_onecycle_cycles_adams_beta1_and_refuses_extra_steps():
    sched, opt = _run(
        lambda m, o: m.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=6), 5, "Adam"
    )
    assert opt.param_groups[0]["betas"][1] == 0.999  # only beta1 cycles
    sched.step()
    with pytest.raises(ValueError, match="total steps is 6"):
        sched.step()
    with pytest.raises(ValueError, match="momentum or beta1"):
        plain = optim.Optimizer(opt.param_groups[0]["params"], {"lr": 0.1})
        optim.lr_scheduler.OneCycleLR(plain, 0.1, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(mode="max", factor=0.5, patience=1, threshold=0.1, threshold_mode="abs"),
        dict(patience=0, cooldown=2, min_lr=[0.2, 0.05]),
        dict(factor=0.5, patience=1, threshold_mode="abs", threshold=0.0, min_lr=0.01),
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs):
    metrics = [3.0, 2.0, 2.0, 2.5, 1.999, 1.999, 3.0, 0.5, 0.5, 0.5, 0.5, 0.6] * 2
    _run(lambda m, o: m.lr_scheduler.ReduceLROnPlateau(o, **kwargs), len(metrics), metrics=metrics)


CHAINS = {
    # two schedulers stepped side by side on one optimizer: their effects multiply
    "warmup_and_decay": lambda m, o: [
        m.lr_scheduler.LinearLR(o, 0.1, total_iters=3),
        m.lr_scheduler.MultiStepLR(o, [4, 6], gamma=0.3),
    ],
    "exp_and_cosine": lambda m, o: [
        m.lr_scheduler.ExponentialLR(o, 0.9),
        m.lr_scheduler.CosineAnnealingLR(o, T_max=5),
    ],
}


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("how", ["side_by_side", "ChainedScheduler"])
def test_chained_schedulers_compose_as_torch(name, how):
    opt, topt = _pair(momentum=0.9)
    ours, theirs = CHAINS[name](optim, opt), CHAINS[name](torch.optim, topt)
    if how == "ChainedScheduler":
        ours = [optim.lr_scheduler.ChainedScheduler(ours)]
        theirs = [torch.optim.lr_scheduler.ChainedScheduler(theirs)]
    for _ in range(10):
        opt.step()
        topt.step()
        for s, ts in zip(ours, theirs):
            s.step()
            ts.step()
        _assert_same(opt, topt, ours[-1], theirs[-1])


def test_sequential_lr_matches_torch():
    def make(m, o):
        warm = m.lr_scheduler.LinearLR(o, 0.2, total_iters=3)
        cos = m.lr_scheduler.CosineAnnealingLR(o, T_max=6, eta_min=0.001)
        step = m.lr_scheduler.StepLR(o, 2, 0.5)
        return m.lr_scheduler.SequentialLR(o, [warm, cos, step], milestones=[3, 8])

    _run(make, 14)


def test_state_dict_round_trip_continues_the_schedule():
    for make in (
        CASES["cosine"],
        CASES["onecycle"],
        lambda m, o: m.lr_scheduler.ChainedScheduler(CHAINS["warmup_and_decay"](m, o)),
        lambda m, o: m.lr_scheduler.ReduceLROnPlateau(o, patience=0),
    ):
        plateau = "Plateau" in type(make(optim, _pair()[0])).__name__
        a_opt, _ = _pair(momentum=0.9)
        a = make(optim, a_opt)
        for _ in range(4):
            a.step(1.0) if plateau else a.step()
        saved_opt, saved = a_opt.state_dict(), a.state_dict()
        assert "optimizer" not in saved
        b_opt, _ = _pair(momentum=0.9)
        b = make(optim, b_opt)
        b_opt.load_state_dict(saved_opt)
        b.load_state_dict(saved)
        for _ in range(4):
            for s in (a, b):
                s.step(1.0) if plateau else s.step()
            assert b.get_last_lr() == a.get_last_lr()


def test_cosine_resumed_with_last_epoch():
    def make(m, o):
        for g in o.param_groups:
            g["initial_lr"] = g["lr"]
        return m.lr_scheduler.CosineAnnealingLR(o, T_max=10, last_epoch=3)

    _run(make, 5)
    with pytest.raises(KeyError, match="initial_lr"):
        optim.lr_scheduler.CosineAnnealingLR(_pair()[0], T_max=10, last_epoch=3)


def test_closed_forms_agree_with_the_recursive_forms():
    """_closed_form_lr (used where SequentialLR hands over) equals stepping from the start."""
    for name in ("multistep", "cosine", "linear", "step"):
        opt, _ = _pair()
        sched = CASES[name](optim, opt)
        for t in range(1, 9):
            sched.step()
            np.testing.assert_allclose(sched._closed_form_lr(), sched.get_last_lr(), rtol=1e-12)
    opt, _ = _pair()
    sched = optim.ExponentialLR(opt, 0.5)
    sched.step()
    assert sched._closed_form_lr() == pytest.approx(sched.get_last_lr())


def test_argument_errors():
    opt = _pair()[0]
    S = lr_scheduler
    cases = [
        (lambda: S.MultiStepLR(opt, milestones=[1.5]), ValueError, "milestone"),
        (lambda: S.MultiStepLR(opt, milestones=3), ValueError, "milestones"),
        (lambda: S.CosineAnnealingLR(opt, T_max=0), ValueError, "T_max"),
        (lambda: S.LinearLR(opt, start_factor=0), ValueError, "start_factor"),
        (lambda: S.LinearLR(opt, end_factor=1.5), ValueError, "end_factor"),
        (lambda: S.LinearLR(opt, total_iters=0), ValueError, "total_iters"),
        (lambda: S.OneCycleLR(opt, 0.1), ValueError, "total_steps OR"),
        (lambda: S.OneCycleLR(opt, [0.1], total_steps=3), ValueError, "2 values for max_lr"),
        (lambda: S.OneCycleLR(opt, 0.1, 3, pct_start=1.5), ValueError, "pct_start"),
        (lambda: S.OneCycleLR(opt, 0.1, 3, anneal_strategy="exp"), ValueError, "anneal"),
        (lambda: S.ReduceLROnPlateau(opt, factor=1.0), ValueError, "factor"),
        (lambda: S.ReduceLROnPlateau(opt, mode="best"), ValueError, "mode"),
        (lambda: S.ReduceLROnPlateau(opt, patience=-1), ValueError, "patience"),
        (lambda: S.ReduceLROnPlateau("opt"), TypeError, "Optimizer"),
        (lambda: S.ChainedScheduler([]), ValueError, "at least one"),
        (lambda: S.ChainedScheduler([S.ReduceLROnPlateau(opt)]), ValueError, "Plateau"),
        (
            lambda: S.ChainedScheduler([S.StepLR(opt, 2), S.StepLR(_pair()[0], 2)]),
            ValueError,
            "same optimizer",
        ),
        (lambda: S.SequentialLR(opt, [S.StepLR(opt, 2)], [3]), ValueError, "milestones"),
    ]
    for make, exc, match in cases:
        with pytest.raises(exc, match=match):
            make()


def test_schedulers_are_reexported_from_optim():
    assert optim.MultiStepLR is lr_scheduler.MultiStepLR
    assert math.isclose(optim.CosineAnnealingLR(_pair()[0], 2).get_last_lr()[0], 0.5)
