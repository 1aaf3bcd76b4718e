"""Module forward pre-hooks, forward hooks and full backward hooks, against torch.nn."""

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import nn


def _linear_pair(torch):
    ours = nn.Linear(3, 2, generator=0, dtype=np.float64)
    theirs = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    return ours, theirs


X = np.random.default_rng(0).standard_normal((4, 3))


def test_forward_hooks_record_replace_and_remove():
    calls = []
    m = nn.Sequential(nn.Linear(3, 2, generator=0), nn.Sigmoid())
    handle = m[0].register_forward_hook(lambda mod, args, out: calls.append((mod, args, out)))
    out = m(tg.Tensor(X))
    ((mod, args, seen),) = calls
    assert mod is m[0] and args[0].shape == (4, 3) and seen.shape == (4, 2)
    np.testing.assert_allclose(out.data, 1 / (1 + np.exp(-seen.data)), rtol=1e-6)
    handle.remove()
    handle.remove()  # idempotent
    m(tg.Tensor(X))
    assert len(calls) == 1
    assert not m[0]._has_hooks  # the fast path is back
    with m[1].register_forward_hook(lambda mod, args, out: out * 0.0):
        assert np.all(m(tg.Tensor(X)).data == 0)
    assert np.all(m(tg.Tensor(X)).data > 0)  # removed on leaving the with block


def test_pre_hook_replaces_input_single_value_or_tuple_and_kwargs():
    m = nn.Identity()
    h = m.register_forward_pre_hook(lambda mod, args: args[0] * 2.0)  # a single value
    assert m(tg.Tensor([1.0])).item() == 2.0
    h.remove()
    h = m.register_forward_pre_hook(lambda mod, args: (args[0] + 1.0,))
    assert m(tg.Tensor([1.0])).item() == 2.0
    h.remove()

    class Scale(nn.Module):
        def forward(self, x, factor=1.0):
            return x * factor

    s = Scale()
    s.register_forward_pre_hook(lambda mod, args, kwargs: (args, {"factor": 3.0}), with_kwargs=True)
    seen = []
    s.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs), with_kwargs=True)
    assert s(tg.Tensor([2.0])).item() == 6.0 and seen == [{"factor": 3.0}]
    bad = nn.Identity()
    bad.register_forward_pre_hook(lambda mod, args, kwargs: 5, with_kwargs=True)
    with pytest.raises(RuntimeError, match="new_args, new_kwargs"):
        bad(tg.Tensor([1.0]))
    with pytest.raises(TypeError, match="callable"):
        bad.register_forward_hook("not a function")


def test_hook_order_prepend_and_always_call():
    order = []
    m = nn.Identity()
    m.register_forward_hook(lambda *a: order.append("a"))
    m.register_forward_hook(lambda *a: order.append("b"))
    m.register_forward_hook(lambda *a: order.append("first"), prepend=True)
    m(tg.Tensor([1.0]))
    assert order == ["first", "a", "b"]

    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    b, seen = Boom(), []
    b.register_forward_hook(lambda mod, args, out: seen.append(out), always_call=True)
    b.register_forward_hook(lambda mod, args, out: seen.append("never"))
    with pytest.raises(ValueError, match="boom"):
        b(tg.Tensor([1.0]))
    assert seen == [None]


def test_forward_hooks_match_torch_on_a_recorded_layer():
    torch = pytest.importorskip("torch")
    ours, theirs = _linear_pair(torch)
    rec, trec = [], []
    ours.register_forward_pre_hook(lambda m, args: rec.append(args[0].numpy().copy()))
    theirs.register_forward_pre_hook(lambda m, args: trec.append(args[0].detach().numpy().copy()))
    ours.register_forward_hook(lambda m, args, out: out * 2.0)
    theirs.register_forward_hook(lambda m, args, out: out * 2.0)
    np.testing.assert_allclose(
        ours(tg.Tensor(X)).data, theirs(torch.from_numpy(X)).detach().numpy(), rtol=1e-12
    )
    np.testing.assert_array_equal(rec[0], trec[0])


@pytest.mark.parametrize("replace", [False, True])
def test_full_backward_hook_matches_torch(replace):
    torch = pytest.importorskip("torch")
    ours, theirs = _linear_pair(torch)
    got, tgot = [], []

    def hook(record, double):
        def fn(module, grad_input, grad_output):
            record.append((grad_input, grad_output))
            if double:
                return tuple(None if g is None else g * 2.0 for g in grad_input)

        return fn

    ours.register_full_backward_hook(hook(got, replace))
    theirs.register_full_backward_hook(hook(tgot, replace))
    x, tx = tg.Tensor(X, requires_grad=True), torch.tensor(X, requires_grad=True)
    dy = np.random.default_rng(1).standard_normal((4, 2))
    (ours(x).tanh() * tg.Tensor(dy)).sum().backward()
    (theirs(tx).tanh() * torch.from_numpy(dy)).sum().backward()
    ((gi, go),) = got
    ((tgi, tgo),) = tgot
    assert len(gi) == len(tgi) == 1 and len(go) == len(tgo) == 1
    np.testing.assert_allclose(gi[0].data, tgi[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(go[0].data, tgo[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-12)


def test_full_backward_hook_with_two_inputs_and_a_constant_one():
    torch = pytest.importorskip("torch")

    class Mul(nn.Module):
        def forward(self, a, b, c):
            return a * b * c

    class TMul(torch.nn.Module):
        def forward(self, a, b, c):
            return a * b * c

    rng = np.random.default_rng(2)
    a, b, c = (rng.standard_normal(3) for _ in range(3))
    got, tgot = [], []
    m, tm = Mul(), TMul()
    m.register_full_backward_hook(lambda mod, gi, go: got.append(gi) or (gi[0], gi[1] * 0.0, gi[2]))
    tm.register_full_backward_hook(
        lambda mod, gi, go: tgot.append(gi) or (gi[0], gi[1] * 0.0, gi[2])
    )
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    oa, ob = tg.Tensor(a, requires_grad=True), tg.Tensor(b, requires_grad=True)
    m(oa, ob, tg.Tensor(c)).sum().backward()
    tm(ta, tb, torch.tensor(c)).sum().backward()
    for g, tgr in zip(got[0], tgot[0]):  # the constant input gets zeros, as in PyTorch
        np.testing.assert_allclose(g.data, tgr.numpy(), rtol=1e-12)
    np.testing.assert_allclose(oa.grad.data, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(ob.grad.data, tb.grad.numpy())  # replaced by zeros


def test_full_backward_hook_when_no_input_needs_grad():
    torch = pytest.importorskip("torch")
    ours, theirs = _linear_pair(torch)
    got, tgot = [], []
    ours.register_full_backward_hook(lambda m, gi, go: got.append((gi, go)))
    theirs.register_full_backward_hook(lambda m, gi, go: tgot.append((gi, go)))
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        ours(tg.Tensor(X)).sum().backward()
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        theirs(torch.from_numpy(X)).sum().backward()
    assert got[0][0] == (None,) and tgot[0][0] == (None,)
    np.testing.assert_allclose(got[0][1][0].data, tgot[0][1][0].numpy())
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-12)


def test_backward_hook_is_free_under_no_grad_and_gradcheck_holds():
    m = nn.Linear(3, 2, generator=0, dtype=np.float64)
    calls = []
    m.register_full_backward_hook(lambda mod, gi, go: calls.append(1))
    with tg.no_grad():
        m(tg.Tensor(X))
    tg.gradcheck(lambda x: m(x), [tg.Tensor(X, requires_grad=True)])
    assert calls  # the hook ran during the gradcheck's backward
