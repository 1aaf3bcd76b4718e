"""The benchmark suite: the quick run works end to end and writes the JSON it promises."""

import json
import os
import subprocess
import sys

import pytest

from tinygrad_bn import bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_CASES = {
    "matmul fwd A@B",
    "matmul bwd dC@B.T",
    "matmul bwd A.T@dC",
    "matmul square",
    "conv2d fwd",
    "conv2d fwd+bwd",
    "batchnorm train fwd+bwd",
    "fig1 MLP step",
    "fig1 MLP step +BN",
    "fig1 MLP step jit",
    "fig1 MLP step +BN jit",
    "engine: op apply",
    "engine: backward walk",
    "engine: kernel door",
    "engine: jit replay",
}


def test_quick_run_writes_json_with_expected_keys(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "benchmarks", "run.py"),
            "--quick",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "numpy/ours" in proc.stdout and "batchnorm train fwd+bwd" in proc.stdout
    assert proc.stdout.startswith("tinygrad_bn bench --quick: a smoke run")  # not a measurement
    data = json.loads(out.read_text())
    env = data["environment"]
    assert {
        "cpu",
        "cores",
        "threads",
        "openmp",
        "compiler_flags",
        "numpy_fallback",
        "numpy",
        "torch",
    } <= set(env)
    assert env["threads"] == 1 and data["quick"] is True
    results = data["results"]
    assert {r["case"] for r in results} == REQUIRED_CASES
    shapes = {r["shape"] for r in results if r["case"] == "batchnorm train fwd+bwd"}
    assert shapes == {"60x100", "256x1024", "64x32x28x28"}
    for r in results:
        assert {"case", "shape", "dtype", "threads", "median_s", "ratios", "gflops"} <= set(r)
        assert set(r["median_s"]) == set(r["min_s"]) == {"ours", "numpy", "torch"}
        assert set(r["ratios"]) == {"numpy/ours", "torch/ours"}
        t = r["median_s"]
        if t["ours"] is None:  # only the MLP step may be n/a, while tinygrad_bn.nn is missing
            assert r["case"].startswith("fig1")
            continue
        assert t["ours"] > 0 and t["numpy"] > 0
        assert r["ratios"]["numpy/ours"] == pytest.approx(t["numpy"] / t["ours"])
        if t["torch"] is not None:
            assert r["ratios"]["torch/ours"] == pytest.approx(t["torch"] / t["ours"])
        if r["case"].startswith(("matmul", "conv2d")):
            assert r["gflops"]["ours"] > 0
        else:
            assert r["gflops"] is None


def test_filter_that_matches_nothing_is_an_error():
    with pytest.raises(SystemExit, match="no case matches"):
        bench.main(["--filter", "no-such-case"])


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--threads", "x"], ["--bogus"]])
def test_bad_arguments_exit_nonzero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code != 0


def test_time_block_takes_a_median_after_warmup():
    calls = []
    median, fastest, n = bench.time_block(
        lambda: calls.append(1), warmup=3, repeats=5, budget_s=0.0
    )
    assert n == 5 and len(calls) == 8 and 0 <= fastest <= median


def test_without_compiled_kernels_ours_is_reported_as_missing(monkeypatch):
    """No extension: "ours" is n/a (never the reference timed under another name)."""
    from tinygrad_bn import kernels

    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_backend", "numpy")
    case = next(c for c in bench.all_cases() if c.shape == "60x100")
    r = bench.run_case(case, 1, warmup=0, repeats=1, budget_s=0.0)
    assert r["median_s"]["ours"] is None and r["median_s"]["numpy"] > 0
    assert r["ratios"] == {"numpy/ours": None, "torch/ours": None}
    table = bench.format_table(bench.environment(1), [r])
    assert "n/a" in table.splitlines()[-1]


def test_peers_smoke_run_prints_its_table():
    """benchmarks/peers.py runs end to end (one block, one step; missing peers are skipped)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "peers.py"
    out = subprocess.run(
        [sys.executable, str(script), "--only", "fig1", "--skip", "torch.compile",
         "--blocks", "1", "--calls", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "tg jit" in out.stdout and "tg eager" in out.stdout
    assert "FLOP floor" in out.stdout and "x its FLOP floor (26.4 MFLOP" in out.stdout


def test_mlp_step_flops_counts_every_product():
    """Figure 1's step: the forward and dW of 4 layers, dX of the last 3 (the data needs none)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import peers

    fwd = 2 * 60 * (784 * 100 + 100 * 100 + 100 * 100 + 100 * 10)
    dx = 2 * 60 * (100 * 100 + 100 * 100 + 10 * 100)
    assert peers.mlp_step_flops() == 2 * fwd + dx == 26_376_000
    assert peers.mlp_step_flops((3, 2), batch=5) == 2 * (2 * 5 * 3 * 2)
