"""The `tinygrad-bn` command: help, bad options (one line, no traceback), an end-to-end run."""

import json
import os
import subprocess
import sys
import types

import pytest

from tinygrad_bn import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "tinygrad_bn", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO,
        timeout=300,
    )


def _assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["fig1", "--steps", "-5"], ["--steps", "-5"]),
        (["fig1", "--steps", "ten"], ["--steps", "'ten'"]),
        (["fig1", "--eval-every", "0"], ["--eval-every"]),
        (["fig1", "--lr", "0"], ["--lr"]),
        (["fig1", "--lr-bn", "nan"], ["--lr-bn"]),
        (["fig1", "--threads", "0"], ["--threads"]),
        (["fig1", "--bogus"], ["--bogus"]),
        (["claims", "--dropout", "1.5"], ["--dropout"]),
        (["claims", "--variants", "Inception"], ["Inception"]),
        (["frobnicate"], ["frobnicate"]),
        ([], ["required"]),
    ],
)
def test_bad_options_exit_with_one_line(args, needles):
    _assert_one_line_error(_run(*args), *needles)


def test_missing_data_directory_is_one_line(tmp_path):
    missing = str(tmp_path / "nowhere")
    _assert_one_line_error(
        _run("fig1", "--data-dir", missing, "--out", str(tmp_path / "o")),
        "nowhere",
        "does not exist",
    )


def test_data_directory_without_files_is_one_line(tmp_path):
    proc = _run(
        "claims", "--data-dir", str(tmp_path), "--no-download", "--out", str(tmp_path / "o")
    )
    _assert_one_line_error(proc, "MNIST files missing")


@pytest.mark.parametrize("command", ["fig1", "claims"])
def test_help_explains_every_option(command):
    parser = cli.build_parser()._subparsers._group_actions[0].choices[command]
    text = parser.format_help()
    for action in parser._actions:
        if action.help == "==SUPPRESS==":
            continue
        assert action.help, action.dest
        for flag in action.option_strings:
            assert flag in text


def test_top_level_help_lists_commands():
    proc = _run("--help")
    assert proc.returncode == 0
    for command in ("fig1", "claims", "bench"):
        assert command in proc.stdout


def test_bench_forwards_its_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("tinygrad_bn.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "tinygrad_bn.bench", fake)
    import tinygrad_bn

    monkeypatch.setattr(tinygrad_bn, "bench", fake, raising=False)
    assert cli.main(["bench", "--quick", "--only", "matmul"]) == 0
    assert seen == [["--quick", "--only", "matmul"]]


def test_fig1_end_to_end_interrupt_and_resume(tmp_path):
    common = [
        "fig1",
        "--steps",
        "60",
        "--eval-every",
        "30",
        "--eval-samples",
        "200",
        "--threads",
        "1",
        "--no-download",
    ]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    proc = _run(*common, "--out", full)
    assert proc.returncode == 0, proc.stderr
    assert "| With BN |" in proc.stdout and "Traceback" not in proc.stderr
    assert sorted(os.listdir(full)) == ["checkpoints", "fig1.png", "report.md", "results.json"]

    stopped = _run(*common, "--out", part, "--stop-after", "30")
    assert stopped.returncode == 130
    assert "--resume" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not os.path.exists(os.path.join(part, "results.json"))
    resumed = _run(*common, "--out", part, "--resume")
    assert resumed.returncode == 0, resumed.stderr

    def curves(out):
        with open(os.path.join(out, "results.json")) as f:
            return [(r["network"], r["curve"]) for r in json.load(f)["runs"]]

    assert curves(part) == curves(full)


def test_resume_with_other_options_is_one_line(tmp_path):
    common = [
        "fig1",
        "--steps",
        "40",
        "--eval-every",
        "20",
        "--eval-samples",
        "100",
        "--threads",
        "1",
        "--no-download",
        "--out",
        str(tmp_path),
    ]
    assert _run(*common, "--stop-after", "20").returncode == 130
    _assert_one_line_error(_run(*common, "--resume", "--init-std", "0.02"), "init_std")
