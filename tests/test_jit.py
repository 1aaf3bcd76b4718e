"""tg.jit: a replayed training step equals eager bit for bit, and what it cannot capture
runs eagerly with one warning."""

import warnings

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn, optim
from tinygrad_bn.experiments import models

STEPS = 20


def _batches(shape, n=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.random(shape, dtype=np.float32), rng.integers(0, 10, shape[0])) for _ in range(n)]


def _trainer(build, opt_fn, compiled, sched=None):
    """(model, opt, step, scheduler): one SGD step that returns the loss, jitted or not."""
    tg.manual_seed(0)
    model = build()
    opt = opt_fn(model.parameters())
    scheduler = sched(opt) if sched else None

    def step(x, y):
        loss = F.cross_entropy(model(tg.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return model, opt, (tg.jit(step) if compiled else step), scheduler


def _state(model, opt):
    params = {k: v.data.copy() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.data.copy() for p in model.parameters()]
    moments = [np.asarray(v) for s in opt.state.values() for v in s.values()]  # buffers, steps
    return params, grads, moments


def _assert_same(a, b):
    (pa, ga, ma), (pb, gb, mb) = a, b
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    assert len(ga) == len(gb) and all(np.array_equal(x, y) for x, y in zip(ga, gb))
    assert len(ma) == len(mb) and all(np.array_equal(x, y) for x, y in zip(ma, mb))


def _run_both(build, opt_fn, batches, sched=None, between=None):
    """Train eagerly and with tg.jit on the same batches; return both histories."""
    out = []
    for compiled in (False, True):
        model, opt, step, scheduler = _trainer(build, opt_fn, compiled, sched)
        losses = []
        for i, (x, y) in enumerate(batches):
            losses.append(step(x, y).item())
            if scheduler is not None:
                scheduler.step()
            if between is not None:
                between(i, model, step)
        out.append((losses, _state(model, opt), step))
    return out


def _fig1(bn):
    return lambda: models.fig1_mlp(bn, 0.1, np.random.default_rng(0), hidden=(32, 32, 32))


def _sgd(lr=0.5, **kw):
    return lambda params: optim.SGD(params, lr=lr, **kw)


@pytest.mark.parametrize("bn", [False, True])
def test_fig1_mlp_matches_eager_bit_for_bit(bn):
    (l0, s0, _), (l1, s1, step) = _run_both(_fig1(bn), _sgd(), _batches((16, 784)))
    assert l0 == l1
    _assert_same(s0, s1)
    assert len(step.plans) == 1 and not step.eager


def test_claims_convnet_with_dropout_bn_and_momentum_matches_eager():
    def build():
        return models.claims_convnet(
            True, "relu", 0.25, np.random.default_rng(0), np.random.default_rng(7), channels=(2, 4)
        )

    batches = _batches((6, 1, 28, 28), n=6)
    (l0, s0, _), (l1, s1, step) = _run_both(build, _sgd(0.05, momentum=0.9), batches)
    assert l0 == l1
    _assert_same(s0, s1)
    assert len(step.plans) == 1


def test_dropout_draws_fresh_masks_on_replay_from_the_default_generator():
    x = tg.Tensor(np.ones((4, 50), dtype=np.float32))
    f = tg.jit(lambda t: F.dropout(t, 0.5))
    tg.manual_seed(3)
    outs = [f(x).numpy().copy() for _ in range(3)]
    assert not np.array_equal(outs[1], outs[2])
    tg.manual_seed(3)  # a new default generator object: the replay draws from it, as eager
    eager = [F.dropout(x, 0.5).numpy() for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(outs, eager))


def test_batchnorm_running_stats_and_counter_advance_on_every_replay():
    (_, s0, _), (_, s1, _) = _run_both(_fig1(True), _sgd(), _batches((16, 784), n=5))
    _assert_same(s0, s1)
    assert s1[0]["1.num_batches_tracked"] == 5
    assert not np.array_equal(s1[0]["1.running_mean"], np.zeros(32))


def test_scheduler_lr_changes_reach_the_replayed_optimizer_step():
    def sched(opt):
        return optim.StepLR(opt, step_size=2, gamma=0.5)

    (l0, s0, _), (l1, s1, _) = _run_both(_fig1(False), _sgd(), _batches((16, 784), n=8), sched)
    assert l0 == l1
    _assert_same(s0, s1)


def test_no_grad_evaluation_gets_its_own_plan():
    model, opt, step, _ = _trainer(_fig1(True), _sgd(), True)
    forward = tg.jit(lambda x: model(tg.Tensor(x)))
    x, y = _batches((16, 784), n=1)[0]
    step(x, y)
    model.eval()
    with tg.no_grad():
        a = forward(x)
        b = forward(x)
    c = forward(x)  # grad mode on: another signature, another plan
    assert not a.requires_grad and np.array_equal(a.numpy(), b.numpy())
    assert np.array_equal(c.numpy(), a.numpy()) and len(forward.plans) == 2
    with tg.no_grad():
        assert np.array_equal(model(tg.Tensor(x)).numpy(), b.numpy())


def test_new_signature_records_a_new_plan_and_the_cache_is_bounded():
    w = tg.Tensor(np.ones((3, 2), dtype=np.float32), requires_grad=True)
    f = tg.jit(lambda x: (x @ w).sum(), cache_size=2)
    for n in (1, 2, 1, 3, 4):
        out = f(tg.Tensor(np.ones((n, 3), dtype=np.float32)))
        assert out.item() == 6 * n
    assert len(f.plans) == 2
    assert [k[2][0] for k, _ in f.plans] == [(4, 3), (3, 3)]


def test_module_train_eval_switch_uses_a_plan_per_mode():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    f = tg.jit(lambda x: model(tg.Tensor(x)))
    x = np.random.default_rng(0).random((8, 5), dtype=np.float32)
    train = [f(x).numpy().copy() for _ in range(2)]
    model.eval()
    evals = [f(x).numpy().copy() for _ in range(2)]
    with tg.no_grad():
        assert np.array_equal(evals[1], model(tg.Tensor(x)).numpy())
    assert not np.array_equal(train[0], train[1])  # fresh dropout, new batch statistics
    assert len(f.plans) == 2
    model.train()
    f(x)
    assert len(f.plans) == 2  # the training plan again


def test_arguments_are_read_anew_and_argument_gradients_land_on_the_new_tensor():
    f = tg.jit(lambda a: (a * a).sum())
    for v in (1.0, 2.0, 3.0):
        a = tg.Tensor(np.full(3, v, dtype=np.float32), requires_grad=True)
        assert f(a).item() == 3 * v * v
    g = tg.jit(lambda a: (a * a).sum().backward())
    a = tg.Tensor(np.full(3, 2.0, dtype=np.float32), requires_grad=True)
    for _ in range(3):
        a.grad = None
        g(a)
        assert np.array_equal(a.grad.numpy(), np.full(3, 4.0, dtype=np.float32))


def test_gradient_accumulation_without_zero_grad_matches_eager():
    def run(compiled):
        w = tg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)

        def f(x):
            (w * tg.Tensor(x)).sum().backward()

        f = tg.jit(f) if compiled else f
        for i in range(4):
            f(np.full(3, float(i), dtype=np.float32))
        return w.grad.numpy()

    assert np.array_equal(run(False), run(True))


@pytest.mark.parametrize(
    "body, why",
    [
        (lambda x: x * float((x * 2).sum().item()), "item()"),
        (lambda x: x * (x * 2).numpy()[0], "numpy()"),
        (lambda x: (x * 2).sum().backward(tg.Tensor(np.float32(1.0))), "backward(grad=...)"),
        (lambda x: [x.sum().backward(), (x * 2).sum().backward()][0], "backward() twice"),
        (lambda x: float(x.sum().data), "returns a float"),
    ],
)
def test_what_cannot_be_captured_runs_eagerly_with_one_warning(body, why):
    f = tg.jit(body)
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            x = tg.Tensor(np.arange(1.0, 4.0, dtype=np.float32), requires_grad=True)
            r = body(tg.Tensor(x.data.copy(), requires_grad=True))
            results.append((f(x), r))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and why in messages[0], messages
    assert not f.plans and len(f.eager) == 1
    for got, want in results:
        if isinstance(want, tg.Tensor):
            assert np.array_equal(got.numpy(), want.numpy())
        else:
            assert got == want


def test_an_argument_converted_on_the_way_in_runs_eagerly():
    f = tg.jit(lambda x: tg.Tensor(x).sum())
    with pytest.warns(RuntimeWarning, match="argument 0"):
        f(np.ones(3, dtype=np.float16))
    assert f(np.full(3, 2, dtype=np.float16)).item() == 6


def test_batchnorm_cumulative_average_runs_eagerly():
    bn = nn.BatchNorm1d(3, momentum=None)
    f = tg.jit(lambda x: bn(tg.Tensor(x)))
    x = np.random.default_rng(0).random((4, 3), dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="momentum=None"):
        f(x)
    f(x)
    assert bn.num_batches_tracked.item() == 2


def test_bad_labels_on_replay_still_raise():
    model, _, step, _ = _trainer(_fig1(False), _sgd(), True)
    x, y = _batches((16, 784), n=1)[0]
    step(x, y)
    step(x, y)
    with pytest.raises(ValueError, match=r"expected target values in"):
        step(x, np.full(16, 10))


def test_a_parameter_whose_data_is_replaced_records_anew():
    lin = nn.Linear(3, 2)
    f = tg.jit(lambda x: lin(tg.Tensor(x)))
    x = np.ones((1, 3), dtype=np.float32)
    f(x)
    f(x)
    lin.double()
    out = f(x)
    assert out.dtype == np.float64 and len(f.plans) == 2


def test_jit_rejects_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        tg.jit(3)
    with pytest.raises(ValueError, match="cache_size"):
        tg.jit(cache_size=0)(lambda: None)


@pytest.mark.parametrize("experiment", ["fig1", "claims"])
def test_experiments_give_the_same_curves_with_and_without_jit(experiment, tmp_path):
    from tinygrad_bn.experiments import claims, common, fig1

    module, config = {
        "fig1": (fig1, {"steps": 30, "eval_every": 15, "eval_samples": 100}),
        "claims": (
            claims,
            {
                "steps": 8,
                "eval_every": 4,
                "eval_samples": 50,
                "channels": [2, 4],
                "variants": ["BN-Baseline+Dropout"],
            },
        ),
    }[experiment]
    curves = []
    for eager in (True, False):
        out = module.run(
            config, str(tmp_path / str(eager)), download=False, threads=1, log=str, eager=eager
        )
        curves.append(common.json_safe([r["curve"] for r in out["runs"]]))
    assert curves[0] == curves[1]


def test_errors_of_the_eager_engine_are_raised_while_recording():
    f = tg.jit(lambda x: (x * 2).backward())
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        f(tg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True))
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        f(tg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True))


def test_a_jitted_method_gets_a_plan_per_instance():
    class Scaler:
        def __init__(self, k):
            self.w = tg.Tensor(np.full(2, k, dtype=np.float32))

        @tg.jit
        def __call__(self, x):
            return x * self.w

    a, b = Scaler(2.0), Scaler(3.0)
    x = tg.Tensor(np.ones(2, dtype=np.float32))
    for _ in range(2):
        assert a(x).tolist() == [2.0, 2.0] and b(x).tolist() == [3.0, 3.0]
    assert len(Scaler.__call__.plans) == 2


def test_adam_and_in_place_zero_grad_match_eager():
    def build():
        return models.fig1_mlp(True, 0.1, np.random.default_rng(0), hidden=(8,))

    def adam(params):
        opt = optim.Adam(params, lr=0.01)
        plain = opt.zero_grad
        opt.zero_grad = lambda: plain(set_to_none=False)  # grads zeroed in place, then summed
        return opt

    (l0, s0, _), (l1, s1, _) = _run_both(build, adam, _batches((8, 784), n=5))
    assert l0 == l1
    _assert_same(s0, s1)


def test_each_replay_seeds_backward_with_a_fresh_array():
    """The seed of a leaf root becomes its .grad: a replay must not hand out one array
    twice, or writing into one step's .grad would change the next step's seed."""
    w = tg.Tensor(np.float32(2.0), requires_grad=True)

    def f():
        w.grad = None  # not replayed: the caller does it below
        w.backward()

    f = tg.jit(f)
    grads = []
    for _ in range(3):
        w.grad = None
        f()
        grads.append(w.grad)
        w.grad.data[...] = 7.0  # the user scales a gradient in place
    assert len({id(g.data) for g in grads}) == 3
    w.grad = None
    f()
    assert w.grad.item() == 1.0


def test_consecutive_leaves_are_one_step_with_eagers_gradients():
    """Consecutive leaves (the parameters) get their gradients from one joined step, in the
    eager walk's order; an argument Tensor used twice gets the sum, as eager."""
    lin = nn.Linear(3, 2)

    def f(a):
        loss = (lin(a) * a.sum()).sum()
        loss.backward()
        return loss

    jf = tg.jit(f)
    for i in range(3):
        x = np.full((4, 3), 0.5 + i, dtype=np.float32)
        a0 = tg.Tensor(x, requires_grad=True)
        lin.zero_grad()
        f(a0)
        want = [a0.grad.numpy()] + [p.grad.numpy() for p in lin.parameters()]
        a1 = tg.Tensor(x, requires_grad=True)
        lin.zero_grad()
        jf(a1)
        got = [a1.grad.numpy()] + [p.grad.numpy() for p in lin.parameters()]
        assert all(np.array_equal(u, v) for u, v in zip(want, got))
    joined = [len(s.leaves) for s in jf.plans[0][1].steps if hasattr(s, "leaves")]
    assert sum(joined) == 3 and max(joined) == 2  # the parameters, then the argument
