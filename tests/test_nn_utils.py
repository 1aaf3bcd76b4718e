"""nn.utils.fold_batchnorm and nn.utils.recompute_batchnorm_stats."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn as tg
from tinygrad_bn import nn
from tinygrad_bn.nn.utils import fold_batchnorm, recompute_batchnorm_stats


def _randomize_bn(model, seed):
    """Real, non-trivial statistics and affine parameters in every BatchNorm."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.data[...] = rng.standard_normal(c) * 2
            m.running_var.data[...] = rng.uniform(0.1, 5.0, c)
            if m.affine:
                m.weight.data[...] = rng.uniform(-2, 2, c)
                m.bias.data[...] = rng.standard_normal(c)


def _mlp(bias, affine, seed):
    return nn.Sequential(
        nn.Linear(6, 5, bias=bias, generator=seed),
        nn.BatchNorm1d(5, affine=affine),
        nn.Sigmoid(),
        nn.Linear(5, 4, generator=seed + 1),
        nn.BatchNorm1d(4),
        nn.Linear(4, 3, generator=seed + 2),
    )


def _assert_float32_close(a, b):
    scale = max(np.abs(b).max(), 1.0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)


@settings(deadline=None, max_examples=10)
@given(bias=st.booleans(), affine=st.booleans(), seed=st.integers(0, 1000))
def test_fold_mlp_matches_eval_outputs(bias, affine, seed):
    model = _mlp(bias, affine, seed)
    _randomize_bn(model, seed)
    model.train()
    before = {k: v.data.copy() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert model.training  # input untouched ...
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.data, before[k])  # ... values too
    assert not any(m.training for m in folded.modules())
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    assert folded[0].bias is not None and folded[0].weight.dtype == np.float32
    x = tg.Tensor(np.random.default_rng(seed).standard_normal((7, 6)).astype(np.float32) * 3)
    _assert_float32_close(folded(x).data, model.eval()(x).data)


def test_fold_conv_nested_and_unfoldable_pairs():
    inner = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, generator=0),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 2, stride=2, bias=False, generator=1),
        nn.BatchNorm2d(4),
    )
    model = nn.Sequential(
        inner,
        nn.Flatten(),
        nn.BatchNorm1d(16),  # BN after Flatten: kept
        nn.Linear(16, 3, generator=2),
        nn.ReLU(),
        nn.BatchNorm1d(3),
    )
    _randomize_bn(model, 0)
    folded = fold_batchnorm(model)
    assert isinstance(folded[0][1], nn.Identity) and isinstance(folded[0][4], nn.Identity)
    assert isinstance(folded[2], nn.BatchNorm1d) and isinstance(folded[5], nn.BatchNorm1d)
    x = tg.Tensor(np.random.default_rng(1).standard_normal((3, 2, 4, 4)).astype(np.float32))
    _assert_float32_close(folded(x).data, model.eval()(x).data)


def test_fold_keeps_batchnorm_without_running_stats():
    model = nn.Sequential(
        nn.Linear(3, 2, generator=0), nn.BatchNorm1d(2, track_running_stats=False)
    )
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.BatchNorm1d)
    with pytest.raises(TypeError, match="Module"):
        fold_batchnorm(lambda x: x)


def test_fold_formula_directly():
    lin = nn.Linear(2, 2, dtype=np.float64, generator=0)
    bn = nn.BatchNorm1d(2, eps=0.5, dtype=np.float64)
    bn.running_mean.data[...] = [1.0, -2.0]
    bn.running_var.data[...] = [3.5, 1.5]
    bn.weight.data[...] = [2.0, -1.0]
    bn.bias.data[...] = [0.5, 0.25]
    folded = fold_batchnorm(nn.Sequential(lin, bn))
    s = np.array([2.0 / 2.0, -1.0 / np.sqrt(2.0)])
    np.testing.assert_allclose(folded[0].weight.data, lin.weight.data * s[:, None], rtol=1e-15)
    np.testing.assert_allclose(
        folded[0].bias.data, (lin.bias.data - [1.0, -2.0]) * s + [0.5, 0.25], rtol=1e-15
    )


# ---------------------------------------------------------------- recompute_batchnorm_stats


def _np_forward_train(model, x):
    """NumPy forward of Linear -> BN -> Sigmoid -> Linear -> BN in training mode.

    Returns each BatchNorm's input (the statistics are computed from these)."""
    lin1, bn1, _, lin2, bn2 = model
    h1 = x @ lin1.weight.data.T.astype(np.float64) + lin1.bias.data
    z = (h1 - h1.mean(0)) / np.sqrt(h1.var(0) + bn1.eps) * bn1.weight.data + bn1.bias.data
    h2 = (1 / (1 + np.exp(-z))) @ lin2.weight.data.T.astype(np.float64) + lin2.bias.data
    return h1, h2


def _bn_model():
    model = nn.Sequential(
        nn.Linear(5, 4, generator=0, dtype=np.float64),
        nn.BatchNorm1d(4, momentum=0.25, dtype=np.float64),
        nn.Sigmoid(),
        nn.Linear(4, 3, generator=1, dtype=np.float64),
        nn.BatchNorm1d(3, dtype=np.float64),
    )
    model[1].weight.data[...] = [0.5, 1.0, 1.5, 2.0]
    return model


def test_recompute_gives_population_statistics():
    model = _bn_model()
    _randomize_bn(model, 3)  # stale statistics to be replaced
    model[1].num_batches_tracked.data[...] = 17
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((6, 5)) * 2 + 1 for _ in range(5)]
    # a mix of the accepted forms: arrays, Tensors and (x, y) pairs
    batches = [xs[0], tg.Tensor(xs[1]), (xs[2], np.zeros(6)), [tg.Tensor(xs[3]), None], xs[4]]
    model[4].eval()  # a mixed training state to restore
    assert recompute_batchnorm_stats(model, iter(batches)) is model
    h = [_np_forward_train(model, x) for x in xs]
    for i, bn in ((0, model[1]), (1, model[4])):
        inputs = [pair[i] for pair in h]
        np.testing.assert_allclose(
            bn.running_mean.data, np.mean([a.mean(0) for a in inputs], 0), rtol=1e-10
        )
        np.testing.assert_allclose(
            bn.running_var.data, np.mean([a.var(0, ddof=1) for a in inputs], 0), rtol=1e-10
        )
        assert bn.num_batches_tracked.item() == 5
    assert model[1].momentum == 0.25 and model[4].momentum == 0.1
    assert model.training and model[1].training and not model[4].training


def test_recompute_errors_leave_the_model_alone():
    model = _bn_model()
    before = {k: v.data.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="empty"):
        recompute_batchnorm_stats(model, [])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.data, before[k])
    with pytest.raises(TypeError, match="Module"):
        recompute_batchnorm_stats("model", [np.zeros((2, 5))])
    model.eval()
    with pytest.raises(ValueError, match="features"):  # a bad batch: modes restored
        recompute_batchnorm_stats(model, [np.zeros((2, 5)), np.zeros((2, 7))])
    assert not any(m.training for m in model.modules())
    assert model[1].momentum == 0.25


# ---------------------------------------------------------------- what fold_batchnorm must not fold


def _x(*shape, seed=0):
    return tg.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _same_outputs(folded, model, x):
    np.testing.assert_allclose(folded(x).data, model.eval()(x).data, rtol=1e-5, atol=1e-5)


def test_fold_leaves_a_linear_used_twice_alone():
    lin = nn.Linear(3, 3, generator=0)
    model = nn.Sequential(lin, nn.BatchNorm1d(3), nn.Sigmoid(), lin)
    _randomize_bn(model, 1)
    with pytest.warns(UserWarning, match="used more than once"):
        folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.BatchNorm1d)
    _same_outputs(folded, model, _x(5, 3))


def test_fold_leaves_shared_parameters_alone():
    a, b = nn.Linear(3, 3, generator=0), nn.Linear(3, 3, generator=1)
    b.weight = a.weight  # tied weights: folding into a would change b
    model = nn.Sequential(a, nn.BatchNorm1d(3), nn.Sigmoid(), b)
    _randomize_bn(model, 2)
    with pytest.warns(UserWarning, match="shared"):
        folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.BatchNorm1d)
    _same_outputs(folded, model, _x(5, 3))


def test_folded_linear_refuses_3d_input_where_batchnorm_normalized_another_dim():
    # Linear on (N, L, F) then BatchNorm1d(F) with F == L: BN normalizes L, not the features
    model = nn.Sequential(nn.Linear(4, 3, generator=0), nn.BatchNorm1d(3))
    _randomize_bn(model, 3)
    folded = fold_batchnorm(model)
    _same_outputs(folded, model, _x(6, 4))  # (N, features): folded exactly
    x3 = _x(6, 3, 4)
    model.eval()(x3)  # the original runs on it ...
    with pytest.raises(ValueError, match="expected 2D input.*got 3D input"):
        folded(x3)  # ... the folded one refuses rather than compute something else


def test_fold_refuses_invalid_statistics():
    model = nn.Sequential(nn.Linear(3, 2, generator=0), nn.BatchNorm1d(2))
    model[1].running_var.data[...] = [1.0, -1.0]  # negative: sqrt would make NaN weights
    with pytest.warns(UserWarning, match="var \\+ eps <= 0"):
        folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.BatchNorm1d) and np.isfinite(folded[0].weight.data).all()
    model[1].running_var.data[...] = 1.0
    model[1].running_mean.data[...] = [0.0, np.inf]
    with pytest.warns(UserWarning, match="not finite"):
        assert isinstance(fold_batchnorm(model)[1], nn.BatchNorm1d)


def test_fold_leaves_overridden_forwards_alone():
    class Reversed(nn.Sequential):
        def forward(self, x):
            for module in reversed(list(self)):
                x = module(x)
            return x

    model = Reversed(nn.Linear(3, 3, generator=0), nn.BatchNorm1d(3))  # runs BN, then Linear
    _randomize_bn(model, 4)
    with pytest.warns(UserWarning, match="overrides Sequential.forward"):
        folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.BatchNorm1d)
    _same_outputs(folded, model, _x(4, 3))

    class Doubled(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(Doubled(3, 3, generator=0), nn.BatchNorm1d(3))
    _randomize_bn(model, 4)
    with pytest.warns(UserWarning, match="overrides Linear.forward"):
        folded = fold_batchnorm(model)
    _same_outputs(folded, model, _x(4, 3))


def test_recompute_failing_midway_restores_the_statistics():
    model = _bn_model()
    _randomize_bn(model, 5)
    model[1].num_batches_tracked.data[...] = 9
    before = {k: v.data.copy() for k, v in model.state_dict().items()}
    good = np.random.default_rng(0).standard_normal((6, 5))
    with pytest.raises(ValueError, match="features"):  # two good batches, then a bad one
        recompute_batchnorm_stats(model, [good, good, np.zeros((6, 7))])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.data, before[k], err_msg=k)

    def interrupted():
        yield good
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        recompute_batchnorm_stats(model, interrupted())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.data, before[k], err_msg=k)


@settings(deadline=None, max_examples=25)
@given(
    picks=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    nested=st.booleans(),
    seed=st.integers(0, 100),
)
def test_fold_never_changes_what_a_model_computes(picks, nested, seed):
    # a small pool, so modules get reused: a fold must notice and keep those pairs
    pool = [nn.Linear(3, 3, generator=seed + i) for i in range(3)]
    pool += [nn.BatchNorm1d(3) for _ in range(3)] + [nn.Sigmoid()]
    layers = [pool[i] for i in picks]
    model = nn.Sequential(nn.Sequential(*layers), pool[0]) if nested else nn.Sequential(*layers)
    _randomize_bn(model, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folded = fold_batchnorm(model)
    x = _x(5, 3, seed=seed)
    np.testing.assert_allclose(folded(x).data, model.eval()(x).data, rtol=1e-4, atol=1e-5)
