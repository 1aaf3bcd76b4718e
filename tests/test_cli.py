"""The `tinygrad-bn` command: help, bad options (one line, no traceback), an end-to-end run."""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import types

import pytest

from tinygrad_bn import cli
from tinygrad_bn.data import mnist, read_idx, write_idx

FILES = mnist.FILES

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


def _main(capsys, *args):
    """Run the command in this process (for what fails while parsing: no subprocess start)."""
    try:
        code = cli.main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _assert_one_line_error(proc, *needles, status=2):
    assert proc.returncode == status, proc.stderr
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
        (["fig1", "--steps", "100000000"], ["--steps", "10,000,000"]),
        (["fig1", "--eval-every", "0"], ["--eval-every"]),
        (["fig1", "--lr", "0"], ["--lr"]),
        (["fig1", "--lr-bn", "nan"], ["--lr-bn"]),
        (["fig1", "--threads", "0"], ["--threads"]),
        (["fig1", "--unit", "100"], ["--unit", "0 to 99"]),
        (["fig1", "--batch-size", "1"], ["--batch-size"]),
        (["fig1", "--seeds", "1000"], ["--seeds"]),
        (["fig1", "--eval-samples", "20000"], ["--eval-samples"]),
        (["fig1", "--bogus"], ["--bogus", "see tinygrad-bn fig1 --help"]),
        (["fig1", "extra"], ["extra", "see tinygrad-bn fig1 --help"]),
        (["--bogus", "fig1"], ["--bogus", "see tinygrad-bn --help"]),
        (["claims", "--dropout", "1.5"], ["--dropout"]),
        (["claims", "--momentum", "1"], ["--momentum"]),
        (["claims", "--channels", "100000"], ["--channels", "1 to 64"]),
        (["claims", "--channels", "8", "8", "8", "8", "8"], ["--channels", "1 to 4 blocks"]),
        (["claims", "--batch-size", "60000"], ["--batch-size", "1,000"]),
        (["claims", "--variants", "Inception"], ["Inception"]),
        (["claims", "--data-dir", "/nonexistent-dir"], ["--data-dir", "/nonexistent-dir"]),
        (["frobnicate"], ["frobnicate"]),
        ([], ["required"]),
    ],
)
def test_bad_options_exit_2_with_one_line(args, needles, capsys):
    _assert_one_line_error(_main(capsys, *args), *needles)


@pytest.mark.parametrize("abbreviation", ["--step", "--batch", "--eval-e", "--no-d"])
def test_abbreviations_are_rejected(abbreviation, tmp_path, capsys):
    # argparse would take `--step 100` for `--steps 100` and run something else than asked
    proc = _main(capsys, "fig1", abbreviation, "100", "--out", str(tmp_path / "o"))
    _assert_one_line_error(proc, "unrecognized arguments", abbreviation)
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    import tinygrad_bn

    proc = _main(capsys, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"tinygrad-bn {tinygrad_bn.__version__}"


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    _assert_one_line_error(_main(capsys, "fig1", "--out", str(tmp_path / "f")), "--out", "file")


def test_missing_data_files_error_is_printed_whole_and_leaves_no_folders(tmp_path):
    out = tmp_path / "runs" / "claims"
    proc = _run("claims", "--data-dir", str(tmp_path), "--no-download", "--out", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tinygrad-bn claims: error: MNIST files missing")
    for name in FILES:  # the later lines say what to put where
        assert f"  {name}.gz" in proc.stderr
    assert not (tmp_path / "runs").exists()  # the run failed before training: no empty folders


def test_damaged_data_error_names_the_file_and_both_checksums(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in FILES[:3]:
        os.symlink(os.path.join(mnist.BUNDLED, name + ".gz"), data / (name + ".gz"))
    labels = read_idx(os.path.join(mnist.BUNDLED, FILES[3] + ".gz"))
    labels[0] = (labels[0] + 1) % 10
    write_idx(data / FILES[3], labels)
    found = hashlib.sha256((data / FILES[3]).read_bytes()).hexdigest()
    out = tmp_path / "out"
    proc = _run("fig1", "--data-dir", str(data), "--out", str(out), "--no-download")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("tinygrad-bn fig1: error:") and "damaged or altered" in lines[0]
    assert str(data / FILES[3]) in lines[1]
    assert found in lines[1] and mnist.SHA256[FILES[3]] in lines[1]
    assert not out.exists()


def test_bench_json_in_a_missing_folder_fails_before_benchmarking(tmp_path, capsys):
    proc = _main(capsys, "bench", "--json", str(tmp_path / "missing" / "x.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--json" in proc.stderr and "existing folder" in proc.stderr
    assert "done" not in proc.stderr and not proc.stdout  # no case ran


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


SIZE_OPTIONS = {
    "fig1": ["--steps", "--batch-size", "--seeds", "--seed", "--eval-every", "--eval-samples"]
    + ["--unit"],
    "claims": ["--steps", "--batch-size", "--seeds", "--seed", "--eval-every", "--eval-samples"]
    + ["--channels"],
}


@pytest.mark.parametrize("command", sorted(SIZE_OPTIONS))
def test_every_size_option_states_the_bound_it_enforces(command):
    parser = cli.build_parser()._subparsers._group_actions[0].choices[command]
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    for flag in SIZE_OPTIONS[command]:
        action = actions[flag]
        low, high = re.search(r"\((\d[\d,]*) to (\d[\d,]*)", action.help).groups()
        low, high = int(low.replace(",", "")), int(high.replace(",", ""))
        assert action.type(str(low)) == low and action.type(str(high)) == high, flag
        for outside in (low - 1, high + 1):
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(str(outside))


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
    proc = _run(*common, "--resume", "--init-std", "0.02")
    _assert_one_line_error(proc, "init_std", status=1)
