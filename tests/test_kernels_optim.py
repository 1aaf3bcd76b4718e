"""The multi-tensor SGD and Adam steps (ext/optim.pyx) against the NumPy reference and
torch.optim, the door's fallback for arrays the kernel cannot take, and direct calls of the
compiled functions past the door (in a child process): bad arguments raise before anything
changes."""

import direct_calls
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn as tg
from tinygrad_bn import kernels as K
from tinygrad_bn import nn, optim
from tinygrad_bn.testing import tolerance

K.require_extension()

SHAPES = [(), (1,), (5,), (3, 4), (2, 3, 5), (0, 3), (37,)]


@st.composite
def sgd_case(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=0, max_size=5))
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    nesterov = momentum > 0 and draw(st.booleans())
    hyper = dict(
        lr=draw(st.sampled_from([1.0, 0.1, 1e-3])),
        weight_decay=draw(st.sampled_from([0.0, 1e-2])),
        momentum=momentum,
        dampening=0.0 if nesterov else draw(st.sampled_from([0.0, 0.3])),
        nesterov=nesterov,
        maximize=draw(st.booleans()),
    )
    return dtype, shapes, hyper, draw(st.integers(0, 2**16))


def _run(backend, dtype, shapes, hyper, seed, steps=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    bufs = [None] * len(params) if hyper["momentum"] else None
    with K.backend(backend):
        for _ in range(steps):
            grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
            before = [g.copy() for g in grads]
            K.sgd_step(params, grads, bufs, **hyper)
            assert all((g == b).all() for g, b in zip(grads, before))  # grads are not written
    return params, bufs


@settings(max_examples=60, deadline=None)
@given(case=sgd_case())
def test_kernel_matches_reference(case):
    dtype, shapes, hyper, seed = case
    got, got_bufs = _run("cython", dtype, shapes, hyper, seed)
    want, want_bufs = _run("numpy", dtype, shapes, hyper, seed)
    for a, b in zip(got, want):
        assert a.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, **tolerance(dtype))
    for a, b in zip(got_bufs or (), want_bufs or ()):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, **tolerance(dtype))


SGD_OPTIONS = [
    dict(lr=1.0),
    dict(lr=0.1, maximize=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01, maximize=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.001),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_OPTIONS)
def test_sgd_matches_torch_in_both_dtypes(dtype, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s).astype(dtype) for s in [(4, 3), (3,), (7,)]]
    ours = [nn.Parameter(s.copy()) for s in start]
    theirs = [torch.tensor(s.copy(), requires_grad=True) for s in start]
    opt, topt = optim.SGD(ours, **kwargs), torch.optim.SGD(theirs, **kwargs)
    for _ in range(6):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad, tp.grad = tg.Tensor(g), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **tolerance(dtype))
    if kwargs.get("momentum"):
        for p, tp in zip(ours, theirs):
            want = topt.state[tp]["momentum_buffer"].numpy()
            np.testing.assert_allclose(opt.state[p]["momentum_buffer"], want, **tolerance(dtype))


def test_door_falls_back_for_arrays_the_kernel_cannot_take():
    """Strided or broadcast grads (Sum's backward hands on stride-0 views), a strided
    parameter, a float64 gradient of a float32 parameter: the reference runs, same result."""
    rng = np.random.default_rng(1)
    cases = [
        (rng.standard_normal((3, 4)), np.broadcast_to(0.5, (3, 4))),
        (rng.standard_normal((3, 8))[:, ::2], rng.standard_normal((3, 4))),
        (rng.standard_normal(5).astype(np.float32), rng.standard_normal(5)),
    ]
    for p, g in cases:
        want = p - 0.1 * g
        bufs = [None]
        K.sgd_step([p], [g], bufs, 0.1, 0.0, 0.9, 0.0, False, False)
        np.testing.assert_allclose(p, want.astype(p.dtype), rtol=1e-6)
        np.testing.assert_array_equal(bufs[0], g.astype(p.dtype))


def test_door_runs_the_compiled_step_for_plain_arrays(monkeypatch):
    from tinygrad_bn.kernels import reference

    def no(*args):
        raise AssertionError("the NumPy reference ran")

    monkeypatch.setattr(reference, "sgd_step", no)
    monkeypatch.setattr(reference, "adam_step", no)
    p, g = [np.ones((3, 2), np.float32), np.ones(2)], [np.ones((3, 2), np.float32), np.ones(2)]
    K.sgd_step(p, g, [None, None], 0.5, 0.0, 0.9, 0.0, False, False)
    m, v, vmax = ([np.zeros_like(a) for a in p] for _ in range(3))
    K.adam_step(p, g, m, v, vmax, [1, 1], 0.1, 0.9, 0.99, 1e-8, 0.0, True, False, False)
    assert (p[0] < 0.5).all() and (p[1] < 0.5).all()


def test_door_checks_the_lists_lengths():
    p = [np.ones(3), np.ones(2)]
    with pytest.raises(ValueError, match=r"sgd_step: expected one array per parameter, 2"):
        K.sgd_step(p, [np.ones(3)], None, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match=r"sgd_step: expected one array per parameter, 2"):
        K.sgd_step(p, [np.ones(3), np.ones(2)], [None], 0.1, 0.0, 0.9, 0.0, False, False)
    m = [np.zeros(3), np.zeros(2)]
    with pytest.raises(ValueError, match=r"adam_step: steps: expected 2 counts"):
        K.adam_step(p, p, m, m, None, [1], 0.1, 0.9, 0.99, 1e-8, 0.0, False, False, False)
    assert (p[0] == 1).all() and (p[1] == 1).all()


def test_an_error_updates_nothing():
    from tinygrad_bn._ext import optim as ext

    p1, p2 = np.ones(3), np.ones(4)
    with pytest.raises(ValueError, match=r"grads\[1\]"):
        ext.sgd_step([p1, p2], [np.ones(3), np.ones(5)], None, 1.0, 0.0, 0.0, 0.0, False, False)
    assert (p1 == 1).all() and (p2 == 1).all()


def test_door_raises_the_kernels_error_for_plain_arrays_and_updates_nothing():
    """The door lets the compiled step check first; a refusal of plain arrays (a gradient
    of another shape) is an error, not a fall-back to the reference (which would broadcast)."""
    p1, p2 = np.ones(3, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"sgd_step: grads\[1\]: expected shape \(4,\)"):
        K.sgd_step([p1, p2], [p1.copy(), np.ones(1, np.float32)], None, 1.0, 0, 0, 0, 0, 0)
    assert (p1 == 1).all() and (p2 == 1).all()


def test_jit_replays_the_compiled_step_bit_identically():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    models = [nn.Linear(4, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True) for m in models]

    def step(model, opt, x):
        loss = (model(tg.Tensor(x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    compiled = tg.jit(step)
    for _ in range(4):
        assert step(models[0], opts[0], x).item() == compiled(models[1], opts[1], x).item()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_array_equal(a.data, b.data)


@st.composite
def adam_case(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=0, max_size=4))
    hyper = dict(
        lr=draw(st.sampled_from([1e-3, 0.1])),
        beta1=draw(st.sampled_from([0.9, 0.5])),
        beta2=draw(st.sampled_from([0.999, 0.9])),
        eps=draw(st.sampled_from([1e-8, 1e-3])),
        weight_decay=draw(st.sampled_from([0.0, 0.05])),
        amsgrad=draw(st.booleans()),
        maximize=draw(st.booleans()),
        decoupled_weight_decay=draw(st.booleans()),
    )
    return dtype, shapes, hyper, draw(st.integers(0, 2**16))


def _run_adam(backend, dtype, shapes, hyper, seed, steps=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    m, v, vmax = ([np.zeros(s, dtype) for s in shapes] for _ in range(3))
    with K.backend(backend):
        for t in range(1, steps + 1):
            grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
            K.adam_step(params, grads, m, v, vmax if hyper["amsgrad"] else None,
                        [t] * len(shapes), **hyper)  # fmt: skip
    return params + m + v + (vmax if hyper["amsgrad"] else [])


@settings(max_examples=60, deadline=None)
@given(case=adam_case())
def test_adam_kernel_matches_reference(case):
    dtype, shapes, hyper, seed = case
    got = _run_adam("cython", dtype, shapes, hyper, seed)
    want = _run_adam("numpy", dtype, shapes, hyper, seed)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7)


ADAM_OPTIONS = [
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.5, 0.99), eps=1e-6, weight_decay=0.05, maximize=True)),
    ("Adam", dict(lr=0.02, weight_decay=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.05, maximize=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs", ADAM_OPTIONS)
def test_adam_matches_torch_in_both_dtypes(dtype, name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(s).astype(dtype) for s in [(4, 3), (3,)]]
    ours = [nn.Parameter(s.copy()) for s in start]
    theirs = [torch.tensor(s.copy(), requires_grad=True) for s in start]
    opt, topt = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    for step in range(6):
        for i, (p, tp) in enumerate(zip(ours, theirs)):
            if step == 2 and i == 1:  # a parameter without a gradient keeps its own step count
                p.grad, tp.grad = None, None
                continue
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad, tp.grad = tg.Tensor(g), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=rtol, atol=rtol)
        assert opt.state[p]["step"] == int(topt.state[tp]["step"])


# ---------------------------------------------------------------- direct calls


def _cases():
    """name -> a direct call of tinygrad_bn._ext.optim that must raise."""
    from tinygrad_bn._ext import optim as ext

    p, g = np.ones((3, 4), np.float32), np.ones((3, 4), np.float32)

    def sgd(params, grads, bufs=None, momentum=0.0):
        return ext.sgd_step(params, grads, bufs, 0.1, 0.0, momentum, 0.0, False, False)

    def adam(params, grads, m, v, vmax, steps, amsgrad=False):
        return ext.adam_step(
            params, grads, m, v, vmax, steps, 0.1, 0.9, 0.99, 1e-8, 0.0, amsgrad, False, False
        )

    return {
        "fewer grads": lambda: sgd([p, p], [g]),
        "grad shape": lambda: sgd([p], [g[:2].copy()]),
        "grad size, other shape": lambda: sgd([p], [g.reshape(4, 3)]),
        "grad dtype": lambda: sgd([p], [g.astype(np.float64)]),
        "strided grad": lambda: sgd([p], [np.ones((3, 8), np.float32)[:, ::2]]),
        "broadcast grad": lambda: sgd([p], [np.broadcast_to(np.float32(1), (3, 4))]),
        "strided param": lambda: sgd([np.ones((3, 8), np.float32)[:, ::2]], [g]),
        "big-endian param": lambda: sgd([p.astype(">f4")], [g.astype(">f4")]),
        "int param": lambda: sgd([np.ones(3, np.int64)], [np.ones(3, np.int64)]),
        "list param": lambda: sgd([[1.0, 2.0]], [g]),
        "params not a list": lambda: sgd((p,), [g]),
        "no buffers with momentum": lambda: sgd([p], [g], None, 0.9),
        "short buffers": lambda: sgd([p, p], [g, g], [None], 0.9),
        "buffer shape": lambda: sgd([p], [g], [np.ones(12, np.float32)], 0.9),
        "buffer dtype": lambda: sgd([p], [g], [np.ones((3, 4))], 0.9),
        "strided buffer": lambda: sgd([p], [g], [np.ones((3, 8), np.float32)[:, ::2]], 0.9),
        "adam short state": lambda: adam([p, p], [g, g], [p], [p], None, [1, 1]),
        "adam short steps": lambda: adam([p], [g], [p.copy()], [p.copy()], None, []),
        "adam step 0": lambda: adam([p], [g], [p.copy()], [p.copy()], None, [0]),
        "adam step float": lambda: adam([p], [g], [p.copy()], [p.copy()], None, [1.5]),
        "adam state shape": lambda: adam(
            [p], [g], [np.ones(12, np.float32)], [p.copy()], None, [1]
        ),
        "adam state dtype": lambda: adam([p], [g], [p.copy()], [np.ones((3, 4))], None, [1]),
        "adam no max with amsgrad": lambda: adam([p], [g], [p.copy()], [p.copy()], None, [1], True),
        "adam strided max": lambda: adam(
            [p], [g], [p.copy()], [p.copy()], [np.ones((3, 8), np.float32)[:, ::2]], [1], True
        ),
        "adam grad shape": lambda: adam([p], [g[:1].copy()], [p.copy()], [p.copy()], None, [1]),
    }


def test_direct_calls_raise_never_crash():
    got = direct_calls.run(__file__)
    assert not direct_calls.not_raised_cleanly(got), got
    assert len(got) == len(_cases())


if __name__ == "__main__":
    direct_calls.report(_cases())
