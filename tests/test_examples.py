"""Run every script in examples/ as a user would (a subprocess, from another directory) and
check what it prints and writes. Steps are reduced so the whole file stays well under 60 s."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = ("mlp_mnist.py", "cnn_mnist.py", "custom_op.py", "bn_internals.py")


def run_example(name, *args, cwd):
    """Run examples/<name> from `cwd`; return stdout, failing with stderr on a non-zero exit."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the example must find the package by itself
    # One thread: these tests check results, not speed, and on a busy machine two spinning
    # OpenMP/OpenBLAS threads made the MLP example 10x slower (0.9 s -> 11 s for 300 steps).
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def floats_after(label, text):
    """The numbers in the bracketed array printed after `label` (e.g. 'population mean')."""
    line = next(ln for ln in text.splitlines() if ln.startswith(label))
    return [float(v) for v in line[len(label) :].split("]")[0].strip(" [").split()]


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_the_docstring(name, tmp_path):
    out = run_example(name, "--help", cwd=tmp_path)
    assert out.startswith("usage:") and "--" in out
    source = (EXAMPLES / name).read_text()
    first_line = source.split('"""')[1].splitlines()[0]
    assert first_line.split()[0] in out


@pytest.mark.parametrize(
    "name, args",
    [
        ("mlp_mnist.py", ["--steps", "0"]),
        ("cnn_mnist.py", ["--batch-size", "1"]),
        ("custom_op.py", ["--examples", "0"]),
        ("bn_internals.py", ["--batch-size", "1"]),
    ],
)
def test_bad_options_exit_2_with_a_message(name, args, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_mlp_mnist_bn_learns(tmp_path):
    out = run_example("mlp_mnist.py", "--steps", "300", cwd=tmp_path)
    acc = dict(re.findall(r"(without BN|with BN): test accuracy ([\d.]+) after 300 steps", out))
    assert set(acc) == {"without BN", "with BN"}, out
    assert 0.0 <= float(acc["without BN"]) <= 1.0
    # 300 steps of SGD at lr 1: the BN net is far above chance (the paper's Figure 1 claim)
    assert float(acc["with BN"]) > 0.7, out


def test_cnn_mnist_folding_agrees_and_reports_speed(tmp_path):
    out = run_example(
        "cnn_mnist.py", "--steps", "60", "--eval-images", "300", "--repeats", "3", cwd=tmp_path
    )
    assert "folded 2 of 2 BatchNorm2d layers" in out, out
    acc = re.search(r"test accuracy: unfolded ([\d.]+), folded ([\d.]+)", out)
    assert acc and float(acc[1]) > 0.5, out
    assert abs(float(acc[1]) - float(acc[2])) <= 1 / 300  # at most one borderline image
    diff = re.search(r"logit difference: ([\d.e+-]+)", out)
    assert diff and float(diff[1]) < 1e-3, out
    speed = re.search(r"unfolded ([\d.]+) ms, folded ([\d.]+) ms, speed-up ([\d.]+)x", out)
    assert speed and float(speed[1]) > 0 and float(speed[2]) > 0, out
    assert float(speed[3]) == pytest.approx(float(speed[1]) / float(speed[2]), rel=0.05, abs=0.01)
    bn = re.search(r"BatchNorm2d layers alone take ([\d.]+) ms \((\d+)% of", out)
    assert bn and float(bn[1]) > 0, out


def test_custom_op_passes_and_catches_the_bug(tmp_path):
    out = run_example("custom_op.py", "--examples", "10", cwd=tmp_path)
    assert "gradient (= sigmoid(x)):  [0.1192, 0.5, 0.9526]" in out, out
    assert "Softplus: forward matches NumPy and backward matches central differences" in out
    assert "BuggySoftplus: caught as expected" in out and "analytic" in out


def test_bn_internals_prints_both_algorithms_and_writes_the_plot(tmp_path):
    plot = tmp_path / "sub" / "bn.png"
    plot.parent.mkdir()
    out = run_example("bn_internals.py", "--batches", "400", "--out", str(plot), cwd=tmp_path)
    assert "nn.BatchNorm1d gives the same y" in out, out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "bn_internals.png").exists()  # --out was honoured
    true_mean, cum_mean = (
        floats_after("population mean", out),
        floats_after("running_mean cumulative", out),
    )
    true_var = floats_after("population variance", out)
    cum_var = floats_after("running_var  cumulative", out)
    biased = floats_after("average of biased var_B", out)
    assert len(true_mean) == len(cum_mean) == len(true_var) == len(cum_var) == len(biased) == 3
    for t, c in zip(true_mean, cum_mean):
        assert abs(c - t) < 0.1 * (abs(t) + 1)
    # the unbiased cumulative estimate lands nearer the population variance than the
    # average of biased batch variances, which sits (m-1)/m = 7/8 low
    for t, c, b in zip(true_var, cum_var, biased):
        assert abs(c - t) < abs(b - t)
        assert b < t


def test_bn_internals_writes_into_an_output_folder_that_git_ignores(tmp_path):
    run_example("bn_internals.py", "--batches", "20", cwd=tmp_path)
    assert os.listdir(tmp_path) == ["runs"]  # nothing in the current directory itself
    plot = Path("runs", "examples", "bn_internals.png")
    assert (tmp_path / plot).stat().st_size > 0
    # run from a clone's root, the same path would not show up in `git status`
    root = EXAMPLES.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(plot)], cwd=root)
    assert ignored.returncode == 0, f"{plot} is not ignored by git"


def test_custom_op_without_hypothesis_says_which_extra(tmp_path):
    blocker = (
        "import sys\n"
        "class NoHypothesis:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'hypothesis':\n"
        "            raise ImportError('No module named hypothesis (hidden by the test)')\n"
        "sys.meta_path.insert(0, NoHypothesis())\n"
        f"sys.argv = ['custom_op.py']\n"
        f"exec(compile(open({str(EXAMPLES / 'custom_op.py')!r}).read(), 'custom_op.py', 'exec'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", blocker], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "needs hypothesis" in proc.stderr and ".[test]" in proc.stderr
