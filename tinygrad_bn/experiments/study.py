"""`tinygrad-bn study`: each claim of the paper's abstract, measured on MNIST.

Four questions, each a grid of independent training runs ("cells"):

    1  learning rate x initial weight scale, Figure 1's sigmoid MLP with and without BN
    2  depth (hidden layers) with saturating units (sigmoid, tanh), with and without BN
    3  regularization: train/test gap of an overparameterized MLP on a subset, BN x dropout
    4  mini-batch dependence: batch sizes at a fixed number of examples seen, for no
       normalization, BatchNorm, Batch Renormalization, LayerNorm and GroupNorm; for the
       batch-statistics layers, inference with moving averages vs Algorithm 2's population
       statistics

Every cell is cached in OUT/cells/ as soon as it finishes (one small JSON file, written
atomically), under a name derived from its whole configuration: an interrupted study resumes
where it stopped, and a larger grid (more seeds, more learning rates) reuses the cells it has.
Cells run in `jobs` worker processes (spawned, one kernel thread each); every cell is a pure
function of its configuration, so the results are the same for any number of jobs.
"""

import hashlib
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from .. import kernels
from ..environment import environment
from . import common, study_cells, study_plots, study_report
from .runner import StopRequested

QUESTIONS = (1, 2, 3, 4)
CELL_VERSION = 1  # bump when a change to study_cells changes what a cached cell would hold

# The default grid is sized for about 15 minutes on 2 cores (measured: docs/results.md).
DEFAULTS = {
    "questions": [1, 2, 3, 4],
    "seeds": 2,
    "seed": 0,
    "eval_samples": 2000,
    "q1": {
        "lrs": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
        "init_stds": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "steps": 1500,
        "evals": 20,
        "threshold": 0.9,  # trainable: final test accuracy at least this
        "speed_target": 0.9,  # the heatmap of steps to reach this test accuracy
    },
    "q2": {
        "depths": [2, 5, 10, 20],
        "activations": ["sigmoid", "tanh"],
        "lrs": [0.1, 1.0],
        "steps": 1500,
        "evals": 20,
        "threshold": 0.9,
        "speed_target": 0.9,
    },
    "q3": {
        "hidden": [1000, 1000],
        "subset": 5000,
        "dropout": 0.5,
        "lr": 0.01,
        "sgd_momentum": 0.9,
        "steps": 2000,
        "evals": 10,
    },
    "q4": {
        "batch_sizes": [2, 4, 8, 16, 32, 64, 128, 256],
        "norms": list(study_cells.NORMS),
        # examples seen = steps x 60 for every batch size; lr = lr_at_60 x batch_size / 60
        # (the linear scaling rule: the same step per example at every batch size)
        "steps": 500,
        "lr_at_60": 0.2,
        "momentum": 0.01,
        "r_max": 3.0,
        "d_max": 5.0,
        # the paper's schedule (5k warm-up, d_max reached at 25k, r_max at 40k steps) as
        # fractions of this shorter training
        "warmup": 0.05,
        "d_max_at": 0.25,
        "r_max_at": 0.4,
        "population_samples": 2000,
        "evals": 8,
        "reference_batch_size": 32,
    },
}

# --quick: every question, one seed, tiny grids: under a minute (the tests run it)
QUICK = {
    "questions": [1, 2, 3, 4],
    "seeds": 1,
    "seed": 0,
    "eval_samples": 500,
    "q1": {**DEFAULTS["q1"], "lrs": [0.1, 3.0], "init_stds": [0.01, 1.0], "steps": 100, "evals": 2},
    "q2": {
        **DEFAULTS["q2"],
        "depths": [2, 5],
        "activations": ["sigmoid"],
        "lrs": [1.0],
        "steps": 100,
        "evals": 2,
    },
    "q3": {**DEFAULTS["q3"], "hidden": [64, 64], "subset": 300, "steps": 100, "evals": 2},
    "q4": {
        **DEFAULTS["q4"],
        "batch_sizes": [4, 32],
        "steps": 25,
        "population_samples": 128,
        "evals": 2,
    },
}


def make_config(quick=False, questions=None, seeds=None, seed=None, steps=None):
    """The study's configuration: DEFAULTS (or QUICK) with the command line's overrides.

    `steps` replaces every question's step budget (for question 4: examples seen / 60).
    """
    base = json.loads(json.dumps(QUICK if quick else DEFAULTS))
    if questions is not None:
        base["questions"] = sorted(set(questions))
    if seeds is not None:
        base["seeds"] = seeds
    if seed is not None:
        base["seed"] = seed
    if steps is not None:
        for q in QUESTIONS:
            base[f"q{q}"]["steps"] = steps
    validate(base)
    return base


def validate(config):
    bad = [q for q in config["questions"] if q not in QUESTIONS]
    if bad or not config["questions"]:
        raise ValueError(f"study: questions must be a non-empty subset of 1-4 (got {bad})")
    for key in ("seeds", "eval_samples"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"study: {key}: expected an integer >= 1 (got {config[key]!r})")
    for q in QUESTIONS:
        if not isinstance(config[f"q{q}"]["steps"], int) or config[f"q{q}"]["steps"] < 1:
            raise ValueError(f"study: steps: expected an integer >= 1 (got {config[f'q{q}']!r})")


# ---------------------------------------------------------------- the grid


def grid(config):
    """Every cell of the study, in a fixed order (questions, then their axes, seeds innermost)."""
    cells = []
    seeds = range(config["seed"], config["seed"] + config["seeds"])
    n_eval = config["eval_samples"]
    if 1 in config["questions"]:
        c = config["q1"]
        for bn in (False, True):
            for std in c["init_stds"]:
                for lr in c["lrs"]:
                    for s in seeds:
                        cells.append(
                            dict(
                                question=1,
                                bn=bn,
                                init_std=std,
                                lr=lr,
                                seed=s,
                                steps=c["steps"],
                                evals=c["evals"],
                                eval_samples=n_eval,
                            )
                        )
    if 2 in config["questions"]:
        c = config["q2"]
        for act in c["activations"]:
            for bn in (False, True):
                for depth in c["depths"]:
                    for lr in c["lrs"]:
                        for s in seeds:
                            cells.append(
                                dict(
                                    question=2,
                                    activation=act,
                                    bn=bn,
                                    depth=depth,
                                    lr=lr,
                                    seed=s,
                                    steps=c["steps"],
                                    evals=c["evals"],
                                    eval_samples=n_eval,
                                )
                            )
    if 3 in config["questions"]:
        c = config["q3"]
        for bn in (False, True):
            for dropout in (0.0, c["dropout"]):
                for s in seeds:
                    cells.append(
                        dict(
                            question=3,
                            bn=bn,
                            dropout=dropout,
                            hidden=list(c["hidden"]),
                            subset=c["subset"],
                            lr=c["lr"],
                            sgd_momentum=c["sgd_momentum"],
                            seed=s,
                            steps=c["steps"],
                            evals=c["evals"],
                            eval_samples=n_eval,
                        )
                    )
    if 4 in config["questions"]:
        c = config["q4"]
        for norm in c["norms"]:
            for bs in c["batch_sizes"]:
                for s in seeds:
                    cell = dict(
                        question=4,
                        norm=norm,
                        batch_size=bs,
                        seed=s,
                        steps=max(1, c["steps"] * 60 // bs),
                        lr=c["lr_at_60"] * bs / 60,
                        evals=c["evals"],
                        eval_samples=n_eval,
                    )
                    if norm in ("batchnorm", "batchrenorm"):
                        cell.update(
                            momentum=c["momentum"], population_samples=c["population_samples"]
                        )
                    if norm == "batchrenorm":
                        cell.update(
                            {k: c[k] for k in ("r_max", "d_max", "warmup", "d_max_at", "r_max_at")}
                        )
                    cells.append(cell)
    return cells


def cell_name(cell):
    """A short readable label (progress bar, file names)."""
    q = cell["question"]
    if q == 1:
        what = f"{'bn' if cell['bn'] else 'plain'} std={cell['init_std']:g} lr={cell['lr']:g}"
    elif q == 2:
        net = "bn" if cell["bn"] else "plain"
        what = f"{cell['activation']} {net} depth={cell['depth']} lr={cell['lr']:g}"
    elif q == 3:
        what = f"{'bn' if cell['bn'] else 'plain'} dropout={cell['dropout']:g}"
    else:
        what = f"{cell['norm']} batch={cell['batch_size']}"
    return f"q{q} {what} seed={cell['seed']}"


def cell_path(out_dir, cell):
    """OUT/cells/q<N>-<hash of the whole configuration>.json."""
    text = json.dumps({"version": CELL_VERSION, **cell}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return os.path.join(out_dir, "cells", f"q{cell['question']}-{digest}.json")


def _load_cached(path, cell):
    """The cached result of `cell`, or None if there is none (or it is unreadable or stale)."""
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("version") != CELL_VERSION:
        return None
    if saved.get("cell") != common.json_safe(cell) or not isinstance(saved.get("result"), dict):
        return None
    return saved["result"]


# ---------------------------------------------------------------- workers

_DATA = {}


def _data(data_dir, download, n_eval):
    """MNIST as (N, 784) float32, loaded once per process."""
    key = (data_dir, n_eval)
    if key not in _DATA:
        train, (x_test, y_test) = common.load_data(data_dir, download, conv=False)
        _DATA[key] = (train, (np.ascontiguousarray(x_test[:n_eval]), y_test[:n_eval]))
    return _DATA[key]


def _worker_init():
    # one kernel thread per worker: N workers use N cores, and results do not depend on
    # how many threads a reduction was split over
    kernels.set_num_threads(1)


def _work(args):
    index, cell, data_dir, download = args
    result = study_cells.run_cell(cell, _data(data_dir, download, cell["eval_samples"]))
    return index, common.json_safe(result)


def run(
    config,
    out_dir,
    data_dir=None,
    download=True,
    jobs=1,
    progress=False,
    stop_after_cells=None,
    log=print,
):
    """Run (or reuse) every cell of the grid; write study.json, q<N>.png and report.md.

    Returns the study dict (the content of study.json). `stop_after_cells=k` raises
    StopRequested once k new cells are cached (tests simulate an interruption).
    """
    validate(config)
    os.makedirs(os.path.join(out_dir, "cells"), exist_ok=True)
    started = time.perf_counter()
    cells = grid(config)
    skipped = sorted(
        {c["norm"] for c in cells if "norm" in c and not study_cells.norm_available(c["norm"])}
    )
    cells = [c for c in cells if "norm" not in c or study_cells.norm_available(c["norm"])]
    results = [None] * len(cells)
    todo = []
    for i, cell in enumerate(cells):
        results[i] = _load_cached(cell_path(out_dir, cell), cell)
        if results[i] is None:
            todo.append(i)
    log(
        f"study: {len(cells)} cells, {len(cells) - len(todo)} cached in {out_dir}, "
        f"{len(todo)} to run on {jobs} worker{'s' if jobs > 1 else ''}"
    )
    bar = _bar(progress, len(cells), len(cells) - len(todo))
    done = 0

    def finished(i, result):
        nonlocal done
        results[i] = result
        cell = cells[i]
        common.write_json(
            cell_path(out_dir, cell), {"version": CELL_VERSION, "cell": cell, "result": result}
        )
        done += 1
        if bar is not None:
            bar.update(1)
        if stop_after_cells is not None and done >= stop_after_cells and done < len(todo):
            raise StopRequested(f"stopped after {done} new cells")

    # question by question (each finished question is complete in the cache), the longest
    # cells of a question first, so that no worker is left with a long one at the end
    todo.sort(key=lambda i: (cells[i]["question"], -_cost(cells[i])))
    args = [(i, cells[i], data_dir, download) for i in todo]
    try:
        if jobs == 1 or len(todo) <= 1:
            before = kernels.get_num_threads()
            _worker_init()
            try:
                for a in args:
                    if bar is not None:
                        bar.set_postfix_str(cell_name(cells[a[0]]), refresh=True)
                    finished(*_work(a))
            finally:
                kernels.set_num_threads(before)
        elif args:
            # spawn, not fork: a forked child of a process that ran an OpenMP region can hang
            # in libgomp (docs/KERNELS), and spawned workers start clean
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(jobs, initializer=_worker_init) as pool:
                for i, result in pool.imap_unordered(_work, args):
                    if bar is not None:
                        bar.set_postfix_str(f"done: {cell_name(cells[i])}", refresh=True)
                    finished(i, result)
    finally:
        if bar is not None:
            bar.close()

    study = {
        "experiment": "study",
        "config": config,
        "environment": environment(1),
        "skipped_norms": skipped,
        "cells": [{"name": cell_name(c), "config": c, "result": r} for c, r in zip(cells, results)],
        "cells_run": len(todo),
        "cells_cached": len(cells) - len(todo),
    }
    study["summary"] = study_report.summarize(study)
    study["total_wall_s"] = time.perf_counter() - started
    write_outputs(study, out_dir)
    return study


def _cost(cell):
    """A rough relative run time of a cell (only orders the work; results do not depend on it)."""
    width = {2: cell.get("depth", 3) / 3}.get(cell["question"], 1)
    return cell["steps"] * width


def _bar(enabled, total, initial):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc="study",
        unit="cell",
        dynamic_ncols=True,
        mininterval=0.5,
        file=sys.stderr,
    )


def write_outputs(study, out_dir):
    common.write_json(os.path.join(out_dir, "study.json"), study)
    for q in study["config"]["questions"]:
        study_plots.PLOTS[q](study, os.path.join(out_dir, f"q{q}.png"))
    common.write_text(os.path.join(out_dir, "report.md"), study_report.render(study))


def comparable(study):
    """study.json without what differs between two runs of the same grid (times, machine)."""
    timing = {"wall_s", "steps_per_s", "total_wall_s", "environment", "cells_run", "cells_cached"}

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in timing}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(common.json_safe(study))
