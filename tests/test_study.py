"""`tinygrad-bn study`: end to end, cache and resume, --jobs, and the report against the JSON."""

import copy
import json
import os
import re

import pytest

from tinygrad_bn import cli
from tinygrad_bn.experiments import study, study_report
from tinygrad_bn.experiments.runner import StopRequested

DATA = os.environ.get("TINYGRAD_BN_DATA")


def _load(out):
    with open(os.path.join(out, "study.json"), encoding="utf-8") as f:
        return json.load(f)


def _tiny(**q1):
    """--quick's question 1, cut further for the cache tests."""
    config = study.make_config(quick=True, questions=[1])
    config["q1"].update({"lrs": [0.1, 3.0], "init_stds": [0.01], "steps": 30, **q1})
    return config


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """`tinygrad-bn study --quick --jobs 2`, run once for the module."""
    out = str(tmp_path_factory.mktemp("study-quick"))
    rc = cli.main(["study", "--quick", "--jobs", "2", "--no-progress", "--out", out])
    assert rc == 0
    return out, _load(out)


def test_quick_end_to_end(quick):
    out, s = quick
    for name in ("study.json", "report.md", "q1.png", "q2.png", "q3.png", "q4.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert s["environment"]["threads"] == 1
    assert {c["config"]["question"] for c in s["cells"]} == {1, 2, 3, 4}
    # every cell cached on its own, under the name its configuration gives
    for c in s["cells"]:
        with open(study.cell_path(out, c["config"]), encoding="utf-8") as f:
            assert json.load(f)["result"] == c["result"]
    assert {v["question"] for v in s["summary"]["verdicts"]} == {1, 2, 3, 4}
    assert all(
        v["verdict"] in ("holds", "does not hold", "mixed") for v in s["summary"]["verdicts"]
    )


def test_report_numbers_are_the_jsons(quick):
    out, s = quick
    # the summary (and so every verdict) follows from the cells stored in study.json ...
    assert study_report.summarize(s) == s["summary"]
    # ... and report.md is a function of study.json alone
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    assert study_report.render(s) == report
    for v in s["summary"]["verdicts"]:
        row = next(line for line in report.splitlines() if f"**: {v['claim']}." in line)
        assert f"**{v['verdict']}**" in row
        assert study_report._num(v["per_seed_difference"]) in row
    q4 = s["summary"]["q4"]
    bn_small = q4["norms"]["batchnorm"][str(q4["smallest"])]["moving"]["mean"]
    assert re.search(rf"\| {q4['smallest']} \| [^\n]*{100 * bn_small:.2f}%", report)


def test_jobs_2_equals_jobs_1(quick, tmp_path):
    _, s2 = quick
    config = study.make_config(quick=True, questions=[1, 4])
    s1 = study.run(config, str(tmp_path), jobs=1, log=lambda m: None)
    assert s1["cells_run"] == len(s1["cells"])
    cells2 = [c for c in s2["cells"] if c["config"]["question"] in (1, 4)]
    assert study.comparable(s1["cells"]) == study.comparable(cells2)
    for q in ("q1", "q4"):
        assert study.comparable(s1["summary"][q]) == study.comparable(s2["summary"][q])


def test_resume_gives_the_uninterrupted_study(tmp_path):
    config = _tiny()
    whole = study.run(config, str(tmp_path / "whole"), log=lambda m: None)
    part = str(tmp_path / "part")
    with pytest.raises(StopRequested):
        study.run(config, part, stop_after_cells=3, log=lambda m: None)
    assert len(os.listdir(os.path.join(part, "cells"))) == 3
    resumed = study.run(config, part, log=lambda m: None)
    assert (resumed["cells_cached"], resumed["cells_run"]) == (3, len(whole["cells"]) - 3)
    assert study.comparable(_load(part)) == study.comparable(_load(str(tmp_path / "whole")))


def test_larger_grid_reuses_cells_and_changed_cells_rerun(tmp_path):
    out = str(tmp_path)
    small = study.run(_tiny(lrs=[0.1], init_stds=[0.01]), out, log=lambda m: None)
    larger = _tiny(lrs=[0.1, 3.0], init_stds=[0.01])
    larger["seeds"] = 2
    big = study.run(larger, out, log=lambda m: None)
    assert (big["cells_cached"], big["cells_run"]) == (len(small["cells"]), 6)
    reused = next(c for c in big["cells"] if c["config"] == small["cells"][0]["config"])
    assert reused["result"] == small["cells"][0]["result"]
    # a cell whose configuration changed (here its step budget) is not taken from the cache
    again = study.run(_tiny(lrs=[0.1], init_stds=[0.01], steps=20), out, log=lambda m: None)
    assert again["cells_run"] == len(again["cells"])
    # a damaged cache file is run again, not trusted
    path = study.cell_path(out, small["cells"][0]["config"])
    for damage in ("{not json", "[1, 2]", '{"version": 1}'):
        with open(path, "w", encoding="utf-8") as f:
            f.write(damage)
        rerun = study.run(_tiny(lrs=[0.1], init_stds=[0.01]), out, log=lambda m: None)
        assert rerun["cells_run"] == 1


@pytest.mark.parametrize(
    "diffs,tol,expected",
    [
        ([0.1, 0.2], 0.0, "holds"),
        ([0.1, -0.2], 0.0, "mixed"),
        ([0.0, -0.2], 0.0, "does not hold"),
        ([0.004], 0.005, "does not hold"),
        ([-0.001], -0.0025, "holds"),
        ([], 0.0, None),
    ],
)
def test_verdict_rule(diffs, tol, expected):
    assert study_report.verdict(diffs, tol) == expected


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--questions", "0,2"], "comma-separated list of question numbers 1-4"),
        (["--jobs", "65"], "an integer from 1 to 64"),
        (["--seeds", "0"], "an integer >= 1"),
        (["--steps", "x"], "an integer from 1 to 10,000,000"),
        (["--quic"], "unrecognized arguments: --quic"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["study", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_config_is_copied_not_shared():
    a = study.make_config(quick=True)
    a["q1"]["lrs"].append(99.0)
    assert 99.0 not in study.make_config(quick=True)["q1"]["lrs"]
    assert copy.deepcopy(study.QUICK)["q1"]["lrs"] == study.make_config(quick=True)["q1"]["lrs"]
