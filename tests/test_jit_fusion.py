"""tg.jit's fusion pass (jit._fuse): an activation fused into the op before it gives the bits of
the unfused ops, and only a pair whose intermediate nothing else reads is fused."""

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn, optim

STEPS = 4
ACTS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def _fused(step):
    """(producer, activation) class names of the fused steps in the step's latest plan."""
    plan = step.plans[0][1]
    return [tuple(c.__name__ for c in s.fused) for s in plan.steps if hasattr(s, "fused")]


def _net(kind, act, dtype):
    rng = np.random.default_rng(0)
    tg.manual_seed(0)
    a = ACTS[act]
    if kind == "linear":
        layers = [nn.Linear(12, 9), a(), nn.Linear(9, 10)]
    elif kind == "linear-nobias":
        layers = [nn.Linear(12, 9, bias=False), a(), nn.Linear(9, 10)]
    elif kind == "bn1d":
        layers = [nn.Linear(12, 9, bias=False), nn.BatchNorm1d(9), a(), nn.Linear(9, 10)]
    elif kind == "conv":
        layers = [nn.Conv2d(1, 3, 3, padding=1), a(), nn.Flatten(), nn.Linear(3 * 25, 10)]
    else:  # conv-bn
        layers = [nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), a()]
        layers += [nn.Flatten(), nn.Linear(3 * 25, 10)]
    model = nn.Sequential(*layers)
    for p in model.parameters():  # the same draw for both copies, whatever the layer's init
        p.data[...] = rng.standard_normal(p.shape)
    return model


def _train(kind, act, dtype, compiled, body=None):
    model = _net(kind, act, dtype)
    if dtype == np.float64:
        model = model.double()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        loss = F.cross_entropy(model(tg.Tensor(x)), y) if body is None else body(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    step = tg.jit(step) if compiled else step
    rng = np.random.default_rng(1)
    shape = (6, 1, 5, 5) if kind.startswith("conv") else (6, 12)
    losses = []
    for _ in range(STEPS):
        x = (rng.standard_normal(shape) * 2).astype(dtype)
        losses.append(step(x, rng.integers(0, 10, 6)).numpy())
    return losses, [p.data.copy() for p in model.parameters()], model, step


def _assert_bitwise(eager, jitted):
    for a, b in zip(eager[0] + eager[1], jitted[0] + jitted[1]):
        assert np.array_equal(a, b, equal_nan=True)
    for (_, a), (_, b) in zip(eager[2].named_buffers(), jitted[2].named_buffers()):
        assert np.array_equal(a.data, b.data)


PRODUCER = {
    "linear": "Affine",
    "linear-nobias": "Affine",
    "bn1d": "BatchNormTrain",
    "conv": "Convolution",
    "conv-bn": "BatchNormTrain",
}


@pytest.mark.parametrize("kind", sorted(PRODUCER))
@pytest.mark.parametrize("act", sorted(ACTS))
def test_fused_plan_is_bit_identical_to_eager(kind, act):
    eager = _train(kind, act, np.float32, False)
    jitted = _train(kind, act, np.float32, True)
    assert _fused(jitted[3]) == [(PRODUCER[kind], {"relu": "Relu"}.get(act, act.title()))]
    _assert_bitwise(eager, jitted)


@pytest.mark.parametrize("kind", ["linear", "bn1d", "conv-bn"])
def test_fused_plan_is_bit_identical_to_eager_float64(kind):
    _assert_bitwise(
        _train(kind, "sigmoid", np.float64, False), _train(kind, "sigmoid", np.float64, True)
    )


def _reuse_pre_activation(model, x, y):
    h = model[0](tg.Tensor(x))  # the Linear's output is read twice: by sigmoid and by the sum
    return F.cross_entropy(model[2](model[1](h)), y) + 0.01 * h.sum()


def _reuse_as_input(model, x, y):
    h = model[0](tg.Tensor(x))
    return F.cross_entropy(model[2](model[1](h) * h), y)


@pytest.mark.parametrize("body", [_reuse_pre_activation, _reuse_as_input])
def test_an_intermediate_read_elsewhere_is_not_fused(body):
    eager = _train("linear", "sigmoid", np.float32, False, body)
    jitted = _train("linear", "sigmoid", np.float32, True, body)
    assert _fused(jitted[3]) == []
    _assert_bitwise(eager, jitted)


def test_an_intermediate_returned_is_not_fused():
    model = _net("linear", "sigmoid", np.float32)

    @tg.jit
    def forward(x):
        h = model[0](tg.Tensor(x))
        return model[1](h), h

    x = np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32)
    for _ in range(3):
        s, h = forward(x)
    assert _fused(forward) == []
    np.testing.assert_array_equal(
        h.numpy(), F.linear(tg.Tensor(x), model[0].weight, model[0].bias).numpy()
    )
    np.testing.assert_array_equal(s.numpy(), F.sigmoid(h).numpy())


def test_no_grad_evaluation_is_fused_too():
    model = _net("linear", "tanh", np.float32)

    @tg.jit
    def evaluate(x):
        with tg.no_grad():
            return model(tg.Tensor(x))

    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
    want = model(tg.Tensor(x)).numpy()
    for _ in range(3):
        got = evaluate(x).numpy()
    assert _fused(evaluate) == [("Affine", "Tanh")]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "kind, act", [("linear", "tanh"), ("bn1d", "sigmoid"), ("conv", "relu"), ("conv-bn", "sigmoid")]
)
def test_fused_replay_gradients_match_central_differences(kind, act):
    """float64: the input gradient of a replayed (fused) plan against central differences of
    the replayed loss."""
    model = _net(kind, act, np.float64).double()

    @tg.jit
    def loss_and_grad(x):
        loss = (model(x) ** 2).sum()
        loss.backward()
        return loss

    rng = np.random.default_rng(4)
    x0 = rng.standard_normal((6, 1, 5, 5) if kind.startswith("conv") else (6, 12))
    for _ in range(2):  # record, then replay
        x = tg.Tensor(x0, requires_grad=True)
        loss_and_grad(x)
    assert _fused(loss_and_grad)
    eps = 1e-6
    for i in rng.choice(x0.size, 8, replace=False):
        d = np.zeros(x0.size)
        d[i] = eps
        d = d.reshape(x0.shape)
        up = loss_and_grad(tg.Tensor(x0 + d, requires_grad=True)).item()
        down = loss_and_grad(tg.Tensor(x0 - d, requires_grad=True)).item()
        np.testing.assert_allclose(
            x.grad.numpy().flat[i], (up - down) / (2 * eps), rtol=1e-5, atol=1e-7
        )
