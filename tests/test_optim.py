"""tinygrad_bn.optim: SGD, Adam, AdamW, RMSprop against hand-computed updates and torch.optim."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn as tg
from tinygrad_bn import nn, optim


def _param(values):
    return nn.Parameter(np.asarray(values, dtype=np.float64))


def _set_grad(p, g):
    p.grad = tg.Tensor(np.asarray(g, dtype=p.dtype))


GRADS = [np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([-1.0, 3.0])]


def test_plain_sgd_by_hand():
    p = _param([1.0, 2.0])
    opt = optim.SGD([p], lr=0.1)
    data = p.data
    _set_grad(p, [1.0, -2.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.9, 2.2], rtol=1e-15)
    assert p.data is data  # in place
    assert opt.state == {}  # plain SGD keeps no state


def test_sgd_momentum_dampening_decay_by_hand():
    p = _param([1.0, 2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01)
    x, buf = np.array([1.0, 2.0]), None
    for g in GRADS:
        _set_grad(p, g)
        opt.step()
        d = g + 0.01 * x
        buf = d.copy() if buf is None else 0.9 * buf + 0.5 * d  # first buffer = first grad
        x = x - 0.1 * buf
        np.testing.assert_allclose(p.data, x, rtol=1e-14)


def test_sgd_nesterov_by_hand():
    p = _param([1.0, 2.0])
    opt = optim.SGD([p], lr=0.05, momentum=0.8, nesterov=True)
    x, buf = np.array([1.0, 2.0]), None
    for g in GRADS:
        _set_grad(p, g)
        opt.step()
        buf = g.copy() if buf is None else 0.8 * buf + g
        x = x - 0.05 * (g + 0.8 * buf)
        np.testing.assert_allclose(p.data, x, rtol=1e-14)


def test_adam_by_hand():
    p = _param([1.0, 2.0])
    opt = optim.Adam([p], lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)
    x, m, v = np.array([1.0, 2.0]), np.zeros(2), np.zeros(2)
    for t, g in enumerate(GRADS, start=1):
        _set_grad(p, g)
        opt.step()
        d = g + 0.1 * x
        m = 0.8 * m + 0.2 * d
        v = 0.9 * v + 0.1 * d * d
        mhat, vhat = m / (1 - 0.8**t), v / (1 - 0.9**t)
        x = x - 0.01 * mhat / (np.sqrt(vhat) + 1e-6)
        np.testing.assert_allclose(p.data, x, rtol=1e-12)
    assert opt.state[p]["step"] == 3


def test_params_without_grad_are_skipped_and_zero_grad():
    a, b = _param([1.0]), _param([2.0])
    for opt in (optim.SGD([a, b], lr=1.0, momentum=0.5), optim.Adam([a, b])):
        _set_grad(a, [1.0])
        b.grad = None
        before = b.data.copy()
        opt.step()
        assert np.array_equal(b.data, before) and b not in opt.state
        opt.zero_grad(set_to_none=False)
        assert a.grad.data[0] == 0
        opt.zero_grad()
        assert a.grad is None


def test_param_groups_and_float32():
    model = nn.Sequential(nn.Linear(3, 2, generator=0), nn.Linear(2, 1, generator=1))
    opt = optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.5}],
        lr=0.1,
        momentum=0.9,
    )
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["momentum"] == 0.9
    w0, w1 = model[0].weight.data.copy(), model[1].weight.data.copy()
    for p in model.parameters():
        _set_grad(p, np.ones(p.shape))
    opt.step()
    np.testing.assert_allclose(model[0].weight.data, w0 - 0.1, rtol=1e-6)
    np.testing.assert_allclose(model[1].weight.data, w1 - 0.5, rtol=1e-6)
    assert model[0].weight.dtype == np.float32
    assert opt.state[model[0].weight]["momentum_buffer"].dtype == np.float32
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [model[0].weight]})


def test_argument_validation():
    p = [_param([1.0])]
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(p, lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="beta parameter at index 0"):
        optim.Adam(p, betas=(-0.1, 0.9))
    with pytest.raises(ValueError, match="epsilon"):
        optim.Adam(p, eps=-1.0)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="Tensors"):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(p[0], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p[0] * 2.0], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr="fast")


def test_state_dict_round_trip():
    def run(opt, params, grads):
        for g in grads:
            for p in params:
                _set_grad(p, g)
            opt.step()

    for make in (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.Adam(ps, lr=0.01),
    ):
        a = [_param([1.0, 2.0]), _param([3.0, 4.0])]
        opt_a = make(a)
        run(opt_a, a, GRADS[:2])
        sd = opt_a.state_dict()
        assert sorted(sd["state"]) == [0, 1] and sd["param_groups"][0]["params"] == [0, 1]
        b = [_param(p.data.copy()) for p in a]
        opt_b = make(b)
        opt_b.param_groups[0]["lr"] = 123.0
        opt_b.load_state_dict(sd)
        assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]
        run(opt_a, a, GRADS[2:])
        run(opt_b, b, GRADS[2:])
        for pa, pb in zip(a, b):
            np.testing.assert_array_equal(pa.data, pb.data)
        bad = {"state": {7: {}}, "param_groups": sd["param_groups"]}
        with pytest.raises(ValueError, match="no parameter group lists"):
            make([_param([1.0, 2.0]), _param([3.0, 4.0])]).load_state_dict(bad)
        with pytest.raises(ValueError, match="parameters in state_dict"):
            make([_param([1.0, 2.0])]).load_state_dict(sd)


def test_step_closure_returns_loss():
    p = _param([3.0])
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0 and p.data[0] == 3.0 - 0.25 * 6.0


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.1)),
        ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
        ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.001)),
        ("Adam", dict(lr=0.01)),
        ("Adam", dict(lr=0.02, betas=(0.5, 0.99), eps=1e-6, weight_decay=0.05)),
        ("Adam", dict(lr=0.02, weight_decay=0.05, amsgrad=True)),
        ("Adam", dict(lr=0.02, weight_decay=0.05, maximize=True)),
        ("Adam", dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True)),
        ("AdamW", dict()),
        ("AdamW", dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.3, amsgrad=True)),
        ("AdamW", dict(lr=0.05, maximize=True)),
        ("RMSprop", dict()),
        ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.1)),
        ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, maximize=True)),
        ("RMSprop", dict(lr=0.01, centered=True, weight_decay=0.01)),
    ],
)
def test_matches_torch_optim(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    ours = [_param(s.copy()) for s in start]
    theirs = [torch.tensor(s.copy(), requires_grad=True) for s in start]
    opt, topt = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    for step in range(8):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            _set_grad(p, g)
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@settings(deadline=None, max_examples=15)
@given(lr=st.floats(0, 1), momentum=st.floats(0, 0.99), g=st.floats(-10, 10))
def test_sgd_first_step_is_plain_gradient_step(lr, momentum, g):
    """Momentum's buffer starts as the first gradient, so step one equals plain SGD."""
    p, q = _param([1.0]), _param([1.0])
    _set_grad(p, [g])
    _set_grad(q, [g])
    optim.SGD([p], lr=lr, momentum=momentum).step()
    optim.SGD([q], lr=lr).step()
    assert p.data[0] == q.data[0]


def test_state_keys_and_float32_match_torch_names():
    torch = pytest.importorskip("torch")
    for name, kwargs in (
        ("Adam", dict(amsgrad=True)),
        ("RMSprop", dict(momentum=0.9, centered=True)),
    ):
        p, tp = nn.Parameter(np.ones(3, dtype=np.float32)), torch.ones(3, requires_grad=True)
        opt, topt = getattr(optim, name)([p], **kwargs), getattr(torch.optim, name)([tp], **kwargs)
        p.grad, tp.grad = tg.ones(3), torch.ones(3)
        opt.step()
        topt.step()
        assert set(opt.state[p]) == set(topt.state[tp])
        assert all(v.dtype == np.float32 for v in opt.state[p].values() if hasattr(v, "dtype"))
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6)
        assert set(opt.param_groups[0]) <= set(topt.param_groups[0])


def test_new_optimizer_validation():
    p = [_param([1.0])]
    with pytest.raises(ValueError, match="weight_decay"):
        optim.AdamW(p, weight_decay=-1.0)
    with pytest.raises(TypeError, match="amsgrad must be a bool"):
        optim.Adam(p, amsgrad="yes")
    with pytest.raises(ValueError, match="alpha"):
        optim.RMSprop(p, alpha=-0.5)
    with pytest.raises(ValueError, match="momentum"):
        optim.RMSprop(p, momentum=float("nan"))
    with pytest.raises(TypeError, match="centered must be a bool"):
        optim.RMSprop(p, centered=1)
    assert optim.AdamW(p).param_groups[0]["weight_decay"] == 0.01  # PyTorch's default


def test_parameter_in_two_groups_is_numbered_by_its_first_group():
    """PyTorch's numbering: the first group a parameter appears in names it (before the
    fix: the last). Within one group, as PyTorch, its last position."""
    a, b = _param([1.0]), _param([2.0])
    opt = optim.SGD([a], lr=0.1)
    opt.param_groups.append({**opt.param_groups[0], "params": [b, a]})
    assert [g["params"] for g in opt.state_dict()["param_groups"]] == [[0], [1, 0]]
    with pytest.warns(UserWarning, match="duplicate parameters"):
        dup = optim.SGD([a, b, a], lr=0.1)
    assert dup.state_dict()["param_groups"][0]["params"] == [2, 1, 2]


def test_duplicate_parameter_in_one_group_warns_as_torch():
    """Before the fix: ValueError. PyTorch warns, keeps it, and steps it twice."""
    torch = pytest.importorskip("torch")
    p, tp = _param([1.0, 2.0]), torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = optim.SGD([p, p], lr=0.1)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        topt = torch.optim.SGD([tp, tp], lr=0.1)
    _set_grad(p, [1.0, 1.0])
    tp.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    topt.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy())
    assert (
        opt.state_dict()["param_groups"][0]["params"]
        == (topt.state_dict()["param_groups"][0]["params"])
    )


@pytest.mark.parametrize(
    "make,key,value",
    [
        (lambda ps: optim.SGD(ps, lr=0.1), "lr", "fast"),
        (lambda ps: optim.SGD(ps, lr=0.1), "lr", float("nan")),
        (lambda ps: optim.SGD(ps, lr=0.1), "momentum", -1.0),
        (lambda ps: optim.Adam(ps), "betas", (0.9, 1.5)),
        (lambda ps: optim.Adam(ps), "amsgrad", "no"),
        (lambda ps: optim.RMSprop(ps), "alpha", float("nan")),
    ],
)
def test_load_state_dict_validates_as_the_constructor(make, key, value):
    """Issue 12: load_state_dict accepted lr="fast" and lr=nan. The same check as the
    constructor's now runs, and a refused state_dict changes nothing."""
    p = _param([1.0, 2.0])
    opt = make([p])
    _set_grad(p, [1.0, 1.0])
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0][key] = value
    before = opt.state_dict()
    with pytest.raises((ValueError, TypeError)):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert repr(after) == repr(before)
    with pytest.raises(TypeError, match="expected a dict"):
        opt.load_state_dict([1, 2])


# ---------------------------------------------------------------- schedulers


def test_step_lr():
    opt = optim.SGD([_param([1.0])], lr=1.0)
    sched = optim.StepLR(opt, step_size=3, gamma=0.5)
    lrs = []
    for _ in range(7):
        lrs.append(sched.get_last_lr()[0])
        assert opt.param_groups[0]["lr"] == lrs[-1]
        sched.step()
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, step_size=0)


def test_exponential_lr_groups_and_state_dict():
    a, b = _param([1.0]), _param([2.0])
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.2}], lr=0.1)
    sched = optim.ExponentialLR(opt, gamma=0.9)
    for _ in range(4):
        sched.step()
    assert sched.get_last_lr() == pytest.approx([0.1 * 0.9**4, 0.2 * 0.9**4])
    sd = sched.state_dict()
    assert "optimizer" not in sd and sd["last_epoch"] == 4 and sd["base_lrs"] == [0.1, 0.2]
    opt2 = optim.SGD([{"params": [_param([1.0])]}, {"params": [_param([2.0])], "lr": 0.2}], lr=0.1)
    sched2 = optim.ExponentialLR(opt2, gamma=0.9)
    sched2.load_state_dict(sd)
    assert sched2.last_epoch == 4 and sched2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(TypeError, match="Optimizer"):
        optim.ExponentialLR("opt", 0.5)


def test_schedulers_match_torch():
    torch = pytest.importorskip("torch")
    for ours_cls, kwargs in (
        (optim.StepLR, dict(step_size=2, gamma=0.3)),
        (optim.ExponentialLR, dict(gamma=0.7)),
    ):
        opt = optim.SGD([_param([1.0])], lr=0.5)
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        s = ours_cls(opt, **kwargs)
        ts = getattr(torch.optim.lr_scheduler, ours_cls.__name__)(topt, **kwargs)
        for _ in range(6):
            assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-12)
            opt.step()
            topt.step()
            s.step()
            ts.step()


def test_training_reduces_loss():
    """SGD with momentum and Adam both fit a small regression (an end-to-end sanity check)."""
    rng = np.random.default_rng(0)
    x = tg.Tensor(rng.standard_normal((32, 4)))
    y = x.data @ np.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    for make in (
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
        lambda ps: optim.Adam(ps, lr=0.05),
    ):
        model = nn.Linear(4, 1, generator=0, dtype=np.float64)
        opt = make(model.parameters())
        first = None
        for _ in range(100):
            loss = ((model(x) - tg.Tensor(y)) ** 2).mean()
            first = loss.item() if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 1e-2 * first and math.isfinite(loss.item())
