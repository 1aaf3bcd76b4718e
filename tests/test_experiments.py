"""The paper's experiments end to end on the real MNIST files (TINYGRAD_BN_DATA), kept short.

Short runs (a few hundred steps, a small evaluation set) check what the full runs rely on: the
files and their schema, ordered percentiles, determinism, and that an interrupted run resumed
from its checkpoint ends with exactly the curves of an uninterrupted one.
"""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn as tg
from tinygrad_bn.experiments import claims, common, fig1, models, runner

FIG1_SHORT = {"steps": 120, "eval_every": 40, "eval_samples": 300, "lr_vanilla": 1.0, "lr_bn": 1.0}
CLAIMS_SHORT = {
    "steps": 30,
    "eval_every": 15,
    "eval_samples": 200,
    "variants": ["Baseline", "BN-Baseline", "BN-Baseline+Dropout"],
}


def _quiet(msg):
    pass


def _fig1(tmp_path, name, **kw):
    out = str(tmp_path / name)
    return fig1.run(
        {**FIG1_SHORT, **kw.pop("config", {})}, out, download=False, threads=1, log=_quiet, **kw
    ), out


def _curves(results, key):
    """Curves by (network or variant, seed), NaN as None so that equal curves compare equal."""
    return common.json_safe({f"{r[key]}/{r['seed']}": r["curve"] for r in results["runs"]})


# ---------------------------------------------------------------- fig1


@pytest.fixture(scope="module")
def fig1_run(tmp_path_factory):
    return _fig1(tmp_path_factory.mktemp("fig1"), "a")


def test_fig1_writes_files_and_schema(fig1_run):
    results, out = fig1_run
    for name in ("results.json", "fig1.png", "report.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "results.json")) as f:
        on_disk = json.load(f)
    assert set(on_disk) >= {"config", "runs", "summary", "environment"}
    assert on_disk["config"]["steps"] == 120 and on_disk["config"]["eval_samples"] == 300
    assert on_disk["environment"]["threads"] == 1
    assert [r["network"] for r in on_disk["runs"]] == ["vanilla", "bn"]
    for r in on_disk["runs"]:
        assert r["seed"] == 0 and r["lr"] == 1.0 and r["wall_s"] > 0 and r["steps_per_s"] > 0
        c = r["curve"]
        assert c["step"] == [0, 40, 80, 120]
        for key in ("test_acc", "train_loss", "p15", "p50", "p85"):
            assert len(c[key]) == len(c["step"]), key
        assert c["train_loss"][0] is None  # no training before step 0
        assert all(0.0 <= a <= 1.0 for a in c["test_acc"])
        assert all(lo <= mid <= hi for lo, mid, hi in zip(c["p15"], c["p50"], c["p85"]))
    for net in ("vanilla", "bn"):
        s = on_disk["summary"][net]
        assert set(s["steps_to"]) == {"0.95", "0.97", "0.98"}
        assert 0.0 <= s["final_acc_mean"] <= 1.0 and s["final_acc_std"] == 0.0
        assert (
            s["final_acc_mean"]
            == on_disk["runs"][0 if net == "vanilla" else 1]["curve"]["test_acc"][-1]
        )
    report = open(os.path.join(out, "report.md")).read()
    assert "| Without BN |" in report and "| With BN |" in report


def test_fig1_bn_learns_faster_than_vanilla_early(fig1_run):
    # with N(0, 0.01^2) weights the sigmoid net without BN barely moves in 120 steps; with BN
    # it is far above chance: the effect Figure 1 shows, visible even in a short run
    results, _ = fig1_run
    acc = {r["network"]: r["curve"]["test_acc"][-1] for r in results["runs"]}
    assert acc["bn"] > 0.6 and acc["bn"] > acc["vanilla"] + 0.2


def test_fig1_is_deterministic(fig1_run, tmp_path):
    again, _ = _fig1(tmp_path, "b")
    assert _curves(again, "network") == _curves(fig1_run[0], "network")


def test_fig1_resume_gives_the_uninterrupted_curves(fig1_run, tmp_path):
    with pytest.raises(runner.StopRequested):
        _fig1(tmp_path, "r", stop_after=40)
    ckpt = tmp_path / "r" / "checkpoints"
    assert sorted(os.listdir(ckpt)) == ["fig1-vanilla-seed0.ckpt"]  # stopped in the first run
    resumed, _ = _fig1(tmp_path, "r", resume=True)
    assert _curves(resumed, "network") == _curves(fig1_run[0], "network")


def test_fig1_resume_refuses_another_configuration(tmp_path):
    with pytest.raises(runner.StopRequested):
        _fig1(tmp_path, "m", stop_after=40)
    with pytest.raises(runner.ConfigMismatch, match="lr_vanilla"):
        _fig1(tmp_path, "m", resume=True, config={"lr_vanilla": 0.5})


def test_fig1_seeds_are_aggregated(tmp_path):
    results, _ = _fig1(tmp_path, "s", config={"steps": 40, "eval_every": 20, "seeds": 2, "seed": 3})
    assert [(r["network"], r["seed"]) for r in results["runs"]] == [
        ("vanilla", 3),
        ("bn", 3),
        ("vanilla", 4),
        ("bn", 4),
    ]
    finals = [r["curve"]["test_acc"][-1] for r in results["runs"] if r["network"] == "bn"]
    s = results["summary"]["bn"]
    assert s["seeds"] == 2
    assert s["final_acc_mean"] == pytest.approx(np.mean(finals))
    assert s["final_acc_std"] == pytest.approx(np.std(finals))
    assert finals[0] != finals[1]  # different seeds, different runs


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": 0},
        {"eval_every": -1},
        {"lr_bn": 0.0},
        {"init_std": float("nan")},
        {"batch_size": 1},
        {"unit": 100},
    ],
)
def test_fig1_rejects_bad_config(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        fig1.run({**FIG1_SHORT, **bad}, str(tmp_path), download=False, log=_quiet)


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": True},
        {"momentum": 1.0},
        {"dropout": -0.1},
        {"lr": float("inf")},
        {"channels": []},
        {"variants": "Baseline"},
    ],
)
def test_claims_rejects_bad_config(tmp_path, bad):
    with pytest.raises(ValueError, match=f"claims: {next(iter(bad))}: expected"):
        claims.run({**CLAIMS_SHORT, **bad}, str(tmp_path), download=False, log=_quiet)
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_one_environment_record_for_bench_and_experiments(fig1_run):
    from tinygrad_bn import bench, environment

    record = set(environment.environment(1))
    assert set(fig1_run[0]["environment"]) == record
    assert record <= set(bench.environment(1))
    assert {"cores", "numpy_fallback", "compiler_flags", "cpu", "threads"} <= record


# ---------------------------------------------------------------- models


def test_fig1_networks_share_initial_weights_and_differ_only_by_bn():
    plain = models.fig1_mlp(False, 0.01, np.random.default_rng(5))
    bn = models.fig1_mlp(True, 0.01, np.random.default_rng(5))
    lin_plain = [m for m in plain if isinstance(m, tg.nn.Linear)]
    lin_bn = [m for m in bn if isinstance(m, tg.nn.Linear)]
    assert [m.weight.shape for m in lin_plain] == [(100, 784), (100, 100), (100, 100), (10, 100)]
    for a, b in zip(lin_plain, lin_bn):
        np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert all(m.bias is None for m in lin_bn[:3]) and lin_bn[3].bias is not None
    assert all(np.all(m.bias.data == 0) for m in lin_plain)
    w = np.concatenate([m.weight.data.ravel() for m in lin_plain])
    assert abs(w.std() - 0.01) < 0.0005 and abs(w.mean()) < 0.0005
    assert sum(isinstance(m, tg.nn.BatchNorm1d) for m in bn) == 3


def test_forward_probed_returns_logits_and_the_last_sigmoid_input():
    model = models.fig1_mlp(True, 0.1, np.random.default_rng(0)).eval()
    x = tg.Tensor(np.random.default_rng(1).random((7, 784), dtype=np.float32))
    at = models.last_sigmoid_index(model)
    assert isinstance(model[at], tg.nn.Sigmoid) and isinstance(model[at - 1], tg.nn.BatchNorm1d)
    with tg.no_grad():
        logits, probed = models.forward_probed(model, x, at)
        np.testing.assert_array_equal(logits.data, model(x).data)
        h = x
        for layer in list(model)[:at]:
            h = layer(h)
    np.testing.assert_array_equal(probed.data, h.data)


def test_claims_convnet_shapes():
    for bn, act, p in ((False, "relu", 0.25), (True, "sigmoid", 0.0)):
        model = models.claims_convnet(
            bn, act, p, np.random.default_rng(0), np.random.default_rng(1)
        )
        with tg.no_grad():
            assert model(tg.Tensor(np.zeros((3, 1, 28, 28), np.float32))).shape == (3, 10)
        assert any(isinstance(m, tg.nn.BatchNorm2d) for m in model) == bn
        assert any(isinstance(m, tg.nn.Dropout) for m in model) == (p > 0)


# ---------------------------------------------------------------- claims


@pytest.fixture(scope="module")
def claims_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("claims") / "a")
    return claims.run(CLAIMS_SHORT, out, download=False, threads=1, log=_quiet), out


def test_claims_writes_files_and_schema(claims_run):
    results, out = claims_run
    for name in ("results.json", "claims.png", "report.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "results.json")) as f:
        on_disk = json.load(f)
    assert [r["variant"] for r in on_disk["runs"]] == CLAIMS_SHORT["variants"]
    for r in on_disk["runs"]:
        assert r["curve"]["step"] == [0, 15, 30]
        assert all(0.0 <= a <= 1.0 for a in r["curve"]["test_acc"])
    s = on_disk["summary"]
    base = [r for r in on_disk["runs"] if r["variant"] == "Baseline"][0]["curve"]
    assert s["target_acc"] == max(base["test_acc"])
    assert (
        s["variants"]["Baseline"]["steps_to_target"]
        == base["step"][int(np.argmax(base["test_acc"]))]
    )
    for name, v in s["variants"].items():
        run = [r for r in on_disk["runs"] if r["variant"] == name][0]
        assert v["best_acc_mean"] == max(run["curve"]["test_acc"])
        assert v["steps_to_target"] == common.steps_to_reach(
            run["curve"]["step"], run["curve"]["test_acc"], s["target_acc"]
        )
    assert s["variants"]["BN-Baseline+Dropout"]["dropout"] == 0.25
    assert "| BN-Baseline |" in open(os.path.join(out, "report.md")).read()


def test_claims_resume_with_dropout_gives_the_uninterrupted_curves(claims_run, tmp_path):
    out = str(tmp_path / "r")
    with pytest.raises(runner.StopRequested):
        claims.run(CLAIMS_SHORT, out, download=False, threads=1, log=_quiet, stop_after=15)
    resumed = claims.run(CLAIMS_SHORT, out, download=False, threads=1, log=_quiet, resume=True)
    assert _curves(resumed, "variant") == _curves(claims_run[0], "variant")


def test_claims_rejects_unknown_variant(tmp_path):
    with pytest.raises(ValueError, match="variants"):
        claims.run({**CLAIMS_SHORT, "variants": ["Inception"]}, str(tmp_path), download=False)


# ---------------------------------------------------------------- helpers


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**31 - 1), st.integers(0, 50), st.integers(1, 300))
def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch(seed, epoch, n):
    order = runner.epoch_order(seed, epoch, n)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    np.testing.assert_array_equal(order, runner.epoch_order(seed, epoch, n))


def test_epoch_orders_differ_between_epochs():
    assert not np.array_equal(runner.epoch_order(0, 0, 1000), runner.epoch_order(0, 1, 1000))


@settings(deadline=None, max_examples=40)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=30), st.floats(0, 1))
def test_steps_to_reach_and_auc_match_direct_definitions(accs, target):
    steps = [10 * i for i in range(len(accs))]
    hits = [s for s, a in zip(steps, accs) if a >= target]
    assert common.steps_to_reach(steps, accs, target) == (hits[0] if hits else None)
    auc = common.area_under_curve(steps, accs)
    expected = sum((accs[i] + accs[i + 1]) / 2 * 10 for i in range(len(accs) - 1)) / steps[-1]
    assert auc == pytest.approx(expected)
    assert min(accs) - 1e-12 <= auc <= max(accs) + 1e-12


def test_json_safe_writes_nan_as_null():
    out = common.json_safe(
        {"a": [float("nan"), np.float32(0.5), np.int64(3)], "b": np.array([1.0, np.inf])}
    )
    assert json.loads(json.dumps(out, allow_nan=False)) == {"a": [None, 0.5, 3], "b": [1.0, None]}
