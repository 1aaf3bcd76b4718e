"""tinygrad_bn.nn: Module bookkeeping, repr, init, and every layer against NumPy + gradcheck."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn
from tinygrad_bn.nn.module import Parameter

# ---------------------------------------------------------------- helpers


def _owner(module, dotted):
    *path, leaf = dotted.split(".")
    for p in path:
        module = module._modules[p]
    return module, leaf


def module_gradcheck(module, x, **kw):
    """tg.gradcheck of module(x) w.r.t. x and every parameter, in float64.

    gradcheck works on float64 copies of its inputs, so the copies of the parameters are
    swapped into the module for the duration of each call and the originals put back.
    """
    names = [n for n, _ in module.named_parameters()]
    originals = [p for _, p in module.named_parameters()]

    def fn(x, *params):
        for name, p in zip(names, params):
            owner, leaf = _owner(module, name)
            owner.__dict__[leaf] = p
            owner._parameters[leaf] = p
        try:
            return module(x)
        finally:
            for name, p in zip(names, originals):
                owner, leaf = _owner(module, name)
                owner.__dict__[leaf] = p
                owner._parameters[leaf] = p

    return tg.gradcheck(fn, [x] + originals, **kw)


class Net(nn.Module):
    """A module with params, a buffer, a nested Sequential and a plain attribute."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4, generator=0)
        self.register_buffer("scale", tg.Tensor(np.full(4, 2.0, dtype=np.float32)))
        self.body = nn.Sequential(nn.BatchNorm1d(4), nn.Sigmoid(), nn.Linear(4, 2, generator=1))
        self.gain = Parameter(np.ones(2, dtype=np.float32))
        self.note = "plain attribute"

    def forward(self, x):
        return self.body(self.fc(x) * self.scale) * self.gain


# ---------------------------------------------------------------- Module bookkeeping


def test_named_parameters_order_and_buffers():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "gain",
        "fc.weight",
        "fc.bias",
        "body.0.weight",
        "body.0.bias",
        "body.2.weight",
        "body.2.bias",
    ]
    assert all(isinstance(p, Parameter) and p.requires_grad for p in net.parameters())
    assert [n for n, _ in net.named_buffers()] == [
        "scale",
        "body.0.running_mean",
        "body.0.running_var",
        "body.0.num_batches_tracked",
    ]
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["gain"]
    assert net.note == "plain attribute" and "note" not in net._parameters


def test_children_and_modules():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["fc", "body"]
    assert list(net.children()) == [net.fc, net.body]
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "fc", "body", "body.0", "body.1", "body.2"]
    assert list(net.modules())[0] is net


def test_shared_parameter_and_module_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_modules()] == ["", "0", "1"]


def test_train_eval_recursive():
    net = Net()
    assert net.training and all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.body.train()
    assert not net.training and all(m.training for m in net.body.modules())
    with pytest.raises(TypeError, match="bool"):
        net.train("no")


def test_zero_grad_and_apply():
    net = Net()
    out = net(tg.randn(5, 3, seed=0)).sum()
    out.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.data == 0) for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    seen = []
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "BatchNorm1d", "Sigmoid", "Linear", "Sequential", "Net"]


def test_setattr_registration_rules():
    net = Net()
    with pytest.raises(TypeError, match="parameter 'gain'"):
        net.gain = tg.Tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="child module 'fc'"):
        net.fc = 3
    with pytest.raises(TypeError, match="buffer 'scale'"):
        net.scale = np.ones(4)
    net.gain = None
    assert "gain" not in dict(net.named_parameters())
    del net.fc
    assert "fc" not in net._modules and not hasattr(net, "fc")
    with pytest.raises(ValueError, match='expected a non-empty name without "."'):
        net.register_buffer("a.b", tg.zeros(1))
    with pytest.raises(ValueError, match="already exists"):
        net.register_parameter("note", None)
    with pytest.raises(TypeError, match="Parameter or None"):
        net.register_parameter("w", tg.zeros(1))

    class Broken(nn.Module):
        def __init__(self):
            self.w = Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Broken()


def test_parameter_is_tensor():
    p = Parameter(np.arange(3.0))
    assert isinstance(p, tg.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:")
    assert not Parameter(np.zeros(2), requires_grad=False).requires_grad
    y = p * 2.0
    assert type(y) is tg.Tensor  # ops return plain Tensors


def test_state_dict_round_trip_copies():
    a, b = Net(), Net()
    a.body[0](tg.randn(8, 4, seed=0))  # moves running stats and the counter
    b.fc.weight.data[...] = 7
    sd = a.state_dict()
    # like PyTorch: a module's own parameters, then its own buffers, then each child
    assert list(sd) == [
        "gain",
        "scale",
        "fc.weight",
        "fc.bias",
        "body.0.weight",
        "body.0.bias",
        "body.0.running_mean",
        "body.0.running_var",
        "body.0.num_batches_tracked",
        "body.2.weight",
        "body.2.bias",
    ]
    assert all(type(v) is tg.Tensor for v in sd.values())
    live = a.state_dict(prefix="net.", keep_vars=True)
    assert live["net.fc.weight"] is a.fc.weight and live["net.scale"] is a.scale
    a.fc.weight.data[...] += 1.0  # a copy: the saved values do not follow
    assert not np.array_equal(sd["fc.weight"].data, a.fc.weight.data)
    weight = b.fc.weight
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b.fc.weight is weight  # loaded in place
    for key, value in sd.items():
        assert np.array_equal(b.state_dict()[key].data, value.data), key
    assert b.body[0].num_batches_tracked.item() == 1
    # ndarrays are accepted too
    b.load_state_dict({k: v.data * 0 for k, v in sd.items()})
    assert np.all(b.fc.weight.data == 0)


def test_load_state_dict_errors_name_keys_and_shapes():
    net = Net()
    sd = net.state_dict()
    del sd["fc.bias"]
    sd["extra.weight"] = np.zeros(3)
    before = net.fc.weight.data.copy()
    sd["fc.weight"] = sd["fc.weight"].data + 1
    with pytest.raises(
        ValueError,
        match=r"missing key\(s\): 'fc.bias'.*unexpected key\(s\): "
        r"'extra.weight'",
    ):
        net.load_state_dict(sd)
    assert np.array_equal(net.fc.weight.data, before)  # nothing partially loaded
    res = net.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["fc.bias"] and res.unexpected_keys == ["extra.weight"]
    assert np.array_equal(net.fc.weight.data, before + 1)
    bad = net.state_dict()
    bad["body.2.weight"] = np.zeros((3, 4))
    with pytest.raises(
        ValueError,
        match=r"size mismatch for 'body.2.weight': expected shape "
        r"\(2, 4\).*got \(3, 4\)",
    ):
        net.load_state_dict(bad)
    with pytest.raises(TypeError, match="dict"):
        net.load_state_dict([1, 2])


def test_repr_tree():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Sequential(nn.Linear(16, 10), nn.Tanh()),
        nn.Identity(),
    )
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
        "  (1): BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (2): ReLU()\n"
        "  (3): MaxPool2d(kernel_size=2, stride=2, padding=0)\n"
        "  (4): Flatten(start_dim=1, end_dim=-1)\n"
        "  (5): Dropout(p=0.25)\n"
        "  (6): Sequential(\n"
        "    (0): Linear(in_features=16, out_features=10, bias=True)\n"
        "    (1): Tanh()\n"
        "  )\n"
        "  (7): Identity()\n"
        ")"
    )


def test_sequential_container():
    layers = [nn.Linear(3, 3, generator=i) for i in range(3)]
    seq = nn.Sequential(*layers[:2])
    assert len(seq) == 2 and list(seq) == layers[:2]
    assert seq[-1] is layers[1] and seq[0] is layers[0]
    assert seq.append(layers[2]) is seq and len(seq) == 3 and seq[2] is layers[2]
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == layers[1:]
    with pytest.raises(IndexError, match=r"Sequential: expected an index in \[-3, 2\] \(got 3\)"):
        seq[3]
    with pytest.raises(TypeError, match="expected an integer or slice index"):
        seq["0"]
    seq[0] = nn.Identity()
    assert isinstance(seq[0], nn.Identity)
    named = nn.Sequential({"fc": nn.Linear(2, 2), "act": nn.ReLU()})
    assert [n for n, _ in named.named_children()] == ["fc", "act"]
    x = tg.randn(4, 3, seed=1)
    ref = layers[2](layers[1](x)).data
    np.testing.assert_allclose(seq(x).data, ref)  # Identity then the two layers


def test_deepcopy_keeps_registration():
    import copy

    net = Net()
    twin = copy.deepcopy(net)
    assert twin.fc.weight is twin.fc._parameters["weight"]
    assert twin.fc.weight is not net.fc.weight
    np.testing.assert_array_equal(twin.fc.weight.data, net.fc.weight.data)


# ---------------------------------------------------------------- init


def test_linear_default_init_is_pytorchs():
    lin = nn.Linear(50, 40, generator=0)
    bound = 1 / math.sqrt(50)
    for p in (lin.weight, lin.bias):
        assert np.all(np.abs(p.data) <= bound) and np.abs(p.data).max() > 0.9 * bound
    assert lin.weight.dtype == np.float32
    # same seed -> same values; weight and bias draw from one stream, not the same start
    again = nn.Linear(50, 40, generator=0)
    np.testing.assert_array_equal(lin.weight.data, again.weight.data)
    assert not np.allclose(lin.weight.data[0, :40], lin.bias.data)
    conv = nn.Conv2d(3, 8, (3, 5), generator=np.random.default_rng(0), dtype=np.float64)
    cb = 1 / math.sqrt(3 * 15)
    assert conv.weight.shape == (8, 3, 3, 5) and conv.weight.dtype == np.float64
    assert np.abs(conv.weight.data).max() <= cb and np.abs(conv.bias.data).max() <= cb


def test_default_generator_follows_manual_seed():
    tg.manual_seed(123)
    a = nn.Linear(4, 4)
    tg.manual_seed(123)
    b = nn.Linear(4, 4)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)


def test_init_functions_statistics():
    w = tg.zeros(400, 300, dtype=np.float64)
    fan_in, fan_out = 300, 400
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=0)
    assert abs(w.data.std() - math.sqrt(2 / fan_out)) < 0.02 * math.sqrt(2 / fan_out)
    nn.init.kaiming_uniform_(w, generator=0)
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)  # a=0: gain sqrt(2 / (1 + 0^2))
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    nn.init.xavier_uniform_(w, gain=2.0, generator=0)
    bound = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    nn.init.xavier_normal_(w, generator=0)
    std = math.sqrt(2 / (fan_in + fan_out))
    assert abs(w.data.std() - std) < 0.02 * std
    nn.init.normal_(w, 3.0, 0.5, generator=0)
    assert abs(w.data.mean() - 3.0) < 0.01 and abs(w.data.std() - 0.5) < 0.01
    nn.init.uniform_(w, -1.0, 2.0, generator=0)
    assert w.data.min() >= -1 and w.data.max() < 2 and abs(w.data.mean() - 0.5) < 0.02
    assert nn.init.constant_(w, 0.25) is w and np.all(w.data == 0.25)
    nn.init.ones_(w)
    assert np.all(w.data == 1)
    nn.init.zeros_(w)
    assert np.all(w.data == 0)


def test_init_errors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(tg.zeros(3))
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_uniform_(tg.zeros(3, 3), mode="fan")
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.kaiming_normal_(tg.zeros(3, 3), nonlinearity="swish")
    with pytest.raises(TypeError, match="Tensor"):
        nn.init.normal_(np.zeros(3))
    with pytest.raises(ValueError, match="std"):
        nn.init.normal_(tg.zeros(3), std=-1.0)


# ---------------------------------------------------------------- layers: forward vs NumPy


def _x(shape, seed=0, dtype=np.float64):
    return tg.Tensor(
        np.random.default_rng(seed).standard_normal(shape).astype(dtype), requires_grad=True
    )


@settings(deadline=None, max_examples=10)
@given(
    n=st.integers(1, 4),
    fin=st.integers(1, 5),
    fout=st.integers(1, 5),
    bias=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_linear_forward(n, fin, fout, bias, dtype):
    lin = nn.Linear(fin, fout, bias=bias, generator=n, dtype=dtype)
    x = _x((n, fin), dtype=dtype)
    ref = x.data @ lin.weight.data.T + (lin.bias.data if bias else 0)
    out = lin(x)
    assert out.dtype == dtype and out.shape == (n, fout)
    np.testing.assert_allclose(
        out.data, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6
    )


def test_linear_gradcheck():
    assert module_gradcheck(nn.Linear(4, 3, generator=0, dtype=np.float64), _x((5, 4)))
    assert module_gradcheck(
        nn.Linear(3, 2, bias=False, generator=1, dtype=np.float64), _x((2, 4, 3))
    )


def _conv_ref(x, w, b, stride, padding):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (wd + 2 * padding[1] - kw) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


@settings(deadline=None, max_examples=8)
@given(k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), bias=st.booleans())
def test_conv2d_forward(k, stride, padding, bias):
    conv = nn.Conv2d(
        2, 3, k, stride=stride, padding=padding, bias=bias, generator=k, dtype=np.float64
    )
    x = _x((2, 2, 5, 4), seed=k)
    ref = _conv_ref(
        x.data, conv.weight.data, conv.bias.data if bias else None, conv.stride, conv.padding
    )
    np.testing.assert_allclose(conv(x).data, ref, rtol=1e-10, atol=1e-12)


def test_conv2d_gradcheck():
    conv = nn.Conv2d(2, 2, (2, 3), stride=(2, 1), padding=1, generator=0, dtype=np.float64)
    assert module_gradcheck(conv, _x((2, 2, 4, 3)))


def test_maxpool_flatten_forward_and_grad():
    x = tg.Tensor(
        np.random.default_rng(0).permutation(2 * 3 * 4 * 6).reshape(2, 3, 4, 6).astype(np.float64)
        / 7,
        requires_grad=True,
    )
    pool = nn.MaxPool2d(2)
    ref = x.data.reshape(2, 3, 2, 2, 3, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(pool(x).data, ref)
    assert pool.stride == 2
    assert tg.gradcheck(lambda t: pool(t), [x])
    flat = nn.Flatten()
    assert flat(x).shape == (2, 72)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 6)
    assert nn.Flatten(-2)(x).shape == (2, 3, 24)
    np.testing.assert_array_equal(flat(x).data, x.data.reshape(2, -1))
    assert tg.gradcheck(lambda t: nn.Flatten(1, 2)(t), [x])


@settings(deadline=None, max_examples=10)
@given(
    data=hnp.arrays(
        np.float64, (3, 4), elements=st.floats(-3, 3).map(lambda v: round(v, 2) + 0.003)
    )
)
def test_activations(data):
    x = tg.Tensor(data, requires_grad=True)
    np.testing.assert_allclose(nn.ReLU()(x).data, np.maximum(data, 0))
    np.testing.assert_allclose(nn.Sigmoid()(x).data, 1 / (1 + np.exp(-data)), rtol=1e-12)
    np.testing.assert_allclose(nn.Tanh()(x).data, np.tanh(data), rtol=1e-12)
    assert nn.Identity(3, key=1)(x) is x
    for layer in (nn.ReLU(), nn.Sigmoid(), nn.Tanh()):
        assert tg.gradcheck(layer, [x])


def test_dropout_train_eval_and_generator():
    x = tg.ones(200, 50, dtype=np.float64)
    d = nn.Dropout(0.3, generator=5)
    y = d(x).data
    assert set(np.unique(y)) <= {0.0, 1 / 0.7}
    assert abs((y == 0).mean() - 0.3) < 0.02
    twin = nn.Dropout(0.3, generator=5)
    np.testing.assert_array_equal(twin(x).data, y)  # same seed, same mask
    assert not np.array_equal(d(x).data, y)  # the stream moves on
    assert d.eval()(x) is x
    assert nn.Dropout(0.0)(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    # a fresh layer with the same seed draws the same mask on every call: gradcheck-able
    xc = tg.Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    assert tg.gradcheck(lambda t: nn.Dropout(0.4, generator=3)(t), [xc])
    # the gradient flows through the kept entries, scaled
    xg = tg.Tensor(np.ones((4, 5)), requires_grad=True)
    d.train()
    out = d(xg)
    out.sum().backward()
    np.testing.assert_array_equal(xg.grad.data, out.data)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(1, 2, 0)
    with pytest.raises(ValueError, match="stride"):
        nn.Conv2d(1, 2, 3, stride=(1, 2, 3))
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Linear(2, 2, dtype=np.int32)
    with pytest.raises(
        ValueError,
        match=r"linear: expected input's last dim to equal weight's in_features 3 \(got 5\)",
    ):
        nn.Linear(3, 2)(tg.zeros(4, 5))
    with pytest.raises(ValueError, match="channels"):
        nn.Conv2d(3, 2, 1)(tg.zeros(1, 2, 4, 4))


def test_mlp_gradcheck_end_to_end():
    model = nn.Sequential(
        nn.Linear(4, 5, generator=0, dtype=np.float64),
        nn.Sigmoid(),
        nn.Linear(5, 3, generator=1, dtype=np.float64),
    )
    labels = np.array([0, 2, 1])
    loss_model = nn.Sequential(model)

    class Loss(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = loss_model

        def forward(self, x):
            return F.cross_entropy(self.inner(x), labels)

    assert module_gradcheck(Loss(), _x((3, 4)))


def test_float_double_cast_in_place():
    net = Net()
    net.body[0](tg.randn(4, 4, seed=0))
    weight = net.fc.weight
    assert net.double() is net
    assert weight is net.fc.weight and weight.dtype == np.float64
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.scale.dtype == net.body[0].running_var.dtype == np.float64
    assert net.body[0].num_batches_tracked.dtype == np.float64  # a count: dtype kept
    out = net(tg.randn(5, 3, seed=1, dtype=np.float64))
    assert out.dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert net.body[0].num_batches_tracked.item() == 2  # one call above, one forward


def test_nn_functional_alias():
    import tinygrad_bn.nn.functional as NF

    assert NF.batch_norm is F.batch_norm and NF.cross_entropy is F.cross_entropy


# ---------------------------------------------------------------- ModuleList, ModuleDict


def test_module_list_registers_and_renumbers():
    torch = pytest.importorskip("torch")
    ours = nn.ModuleList([nn.Linear(2, 3, generator=0), nn.ReLU()])
    theirs = torch.nn.ModuleList([torch.nn.Linear(2, 3), torch.nn.ReLU()])
    for m in (ours, theirs):
        m.insert(1, type(m[1])())  # (0) Linear (1) ReLU (2) ReLU
        m.append(type(m[1])())
        m += [type(m[1])()]
        del m[2]
        m[0] = m[0]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"0.weight", "0.bias"}
    assert len(ours) == len(theirs) == 4 and isinstance(ours[1:], nn.ModuleList)
    assert len(ours[1:]) == 3 and ours[-1] is list(ours)[3]
    assert ours.pop(0).out_features == 3 and len(ours) == 3 and "0" in ours._modules
    with pytest.raises(IndexError, match="out of range"):
        ours[7]
    with pytest.raises(TypeError, match="integers or slices"):
        ours["a"]
    with pytest.raises(TypeError):
        ours.append(3)
    with pytest.raises(NotImplementedError):
        ours(tg.Tensor([1.0]))  # a container has no forward, as in PyTorch
    ours.eval()
    assert not any(m.training for m in ours)


def test_module_dict():
    md = nn.ModuleDict({"fc": nn.Linear(2, 3, generator=0)})
    md.update([("act", nn.ReLU())])
    md["out"] = nn.Linear(3, 1, generator=1)
    assert list(md) == list(md.keys()) == ["fc", "act", "out"] and "act" in md
    assert len(md) == 3 and sorted(md.state_dict()) == [
        "fc.bias",
        "fc.weight",
        "out.bias",
        "out.weight",
    ]
    assert isinstance(md.pop("act"), nn.ReLU) and "act" not in md and len(md) == 2
    del md["fc"]
    assert [k for k, _ in md.items()] == ["out"] and len(list(md.values())) == 1
    with pytest.raises(KeyError):
        del md["missing"]
    with pytest.raises(ValueError, match="pair"):
        md.update([nn.ReLU()])
    md.clear()
    assert len(md) == 0 and list(md.parameters()) == []


# ---------------------------------------------------------------- Embedding, Conv1d


def test_embedding_matches_torch_with_padding_idx():
    torch = pytest.importorskip("torch")
    idx = np.array([[0, 2, 4], [4, 1, 2]])
    for padding_idx in (None, 2, -1):
        ours = nn.Embedding(5, 3, padding_idx=padding_idx, generator=0, dtype=np.float64)
        theirs = torch.nn.Embedding(5, 3, padding_idx=padding_idx).double()
        if padding_idx is not None:
            assert np.all(ours.weight.data[padding_idx] == 0)
            ours.weight.data[padding_idx] = 0.5  # the row's value is used, its grad is not
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        dy = np.random.default_rng(0).standard_normal((2, 3, 3))
        out, tout = ours(idx), theirs(torch.from_numpy(idx))
        out.backward(dy)
        tout.backward(torch.from_numpy(dy))
        np.testing.assert_array_equal(out.data, tout.detach().numpy())
        np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-12)
        assert repr(ours) == repr(theirs)
        assert ours.padding_idx == theirs.padding_idx


def test_embedding_max_norm_and_from_pretrained_match_torch():
    torch = pytest.importorskip("torch")
    table = np.random.default_rng(1).standard_normal((4, 3)) * 3
    ours = nn.Embedding.from_pretrained(table.copy(), freeze=False, max_norm=1.5)
    theirs = torch.nn.Embedding.from_pretrained(torch.tensor(table), freeze=False, max_norm=1.5)
    idx = np.array([0, 3, 3])
    np.testing.assert_allclose(ours(idx).data, theirs(torch.from_numpy(idx)).detach().numpy())
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-12)
    frozen = nn.Embedding.from_pretrained(table)
    assert not frozen.weight.requires_grad and not frozen(idx).requires_grad


def test_embedding_gradcheck_and_errors():
    w = tg.Tensor(np.random.default_rng(2).standard_normal((5, 2)), requires_grad=True)
    tg.gradcheck(lambda w: F.embedding(np.array([[1, 1], [0, 3]]), w), [w])  # repeats add up
    e = nn.Embedding(5, 2)
    with pytest.raises(IndexError, match=r"expected indices in \[0, 5\)"):
        e(np.array([5]))
    with pytest.raises(IndexError, match="index out of range"):
        e(np.array([-1]))
    with pytest.raises(TypeError, match="integer indices"):
        e(tg.Tensor([0.5]))
    assert e(tg.Tensor([1.0, 2.0])).shape == (2, 2)  # float Tensors holding integers are fine
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=5)
    with pytest.raises(NotImplementedError, match="scale_grad_by_freq"):
        nn.Embedding(5, 2, scale_grad_by_freq=True)


@pytest.mark.parametrize(
    "k,stride,padding,bias",
    [(3, 1, 0, True), (3, 2, 1, False), (1, 1, 0, True), (5, 1, "same", True)],
)
def test_conv1d_matches_torch(k, stride, padding, bias):
    torch = pytest.importorskip("torch")
    ours = nn.Conv1d(3, 4, k, stride, padding, bias=bias, generator=0, dtype=np.float64)
    theirs = torch.nn.Conv1d(3, 4, k, stride, padding, bias=bias).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        if bias:
            theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    x_np = np.random.default_rng(3).standard_normal((2, 3, 9))
    x, tx = tg.Tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    out, tout = ours(x), theirs(tx)
    dy = np.random.default_rng(4).standard_normal(out.shape)
    out.backward(dy)
    tout.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-10)
    assert repr(ours) == repr(theirs)
    assert ours.weight.shape == tuple(theirs.weight.shape)


def test_conv1d_init_gradcheck_and_errors():
    m = nn.Conv1d(4, 2, 3, generator=0, dtype=np.float64)
    assert np.abs(m.weight.data).max() <= 1 / math.sqrt(12)  # PyTorch's bound 1/sqrt(fan_in)
    module_gradcheck(
        m, tg.Tensor(np.random.default_rng(5).standard_normal((2, 4, 6)), requires_grad=True)
    )
    with pytest.raises(ValueError, match=r"expected 3D input \(N, C, L\)"):
        m(tg.randn(2, 4))
    with pytest.raises(ValueError, match="3 channels but weight"):
        F.conv1d(tg.randn(2, 3, 5), m.weight)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv1d(3, 2, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv1d(3, 2, 3, stride=2, padding="same")
    with pytest.raises(NotImplementedError, match="padding_mode"):
        nn.Conv1d(3, 2, 3, padding_mode="reflect")


@pytest.mark.parametrize(
    "kw",
    [
        {"dilation": 2},
        {"groups": 2},
        {"padding": "same", "dilation": (1, 2)},
        {"padding": "valid", "stride": 2},
    ],
)
def test_conv2d_module_options_match_torch(kw):
    torch = pytest.importorskip("torch")
    conv = nn.Conv2d(4, 6, 3, generator=0, dtype=np.float64, **kw)
    ref = torch.nn.Conv2d(4, 6, 3, **kw).double()
    ref.weight.data = torch.tensor(conv.weight.data)
    ref.bias.data = torch.tensor(conv.bias.data)
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 8))
    assert conv.weight.shape == tuple(ref.weight.shape)
    np.testing.assert_allclose(
        conv(tg.Tensor(x)).data, ref(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12
    )
