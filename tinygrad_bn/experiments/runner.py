"""What the experiments share: one skeleton (run_experiment) around one training loop (train_run).

An *experiment* (fig1, claims) trains a list of models (networks or variants) for every seed
and writes results.json and its figure and report; run_experiment is that skeleton, and an
Experiment says what differs.

One *run* trains one model for a fixed number of steps on mini-batches drawn without
replacement (a new permutation each epoch, partial last batch dropped), evaluates every
``eval_every`` steps and at step 0, and after each evaluation saves a checkpoint. A resumed run
continues from that checkpoint and ends with exactly the curves of an uninterrupted one,
because everything random is either saved (model, optimizer, dropout generator) or a pure
function of (seed, step) (the data order).
"""

import json
import math
import os
import sys
import time
from typing import Callable, NamedTuple

import numpy as np

from .. import checkpoint
from .. import functional as F
from ..environment import environment
from ..jit import jit
from ..tensor import Tensor, manual_seed, no_grad
from . import common

_CHECKPOINT_VERSION = 1


class StopRequested(KeyboardInterrupt):
    """Raised after the checkpoint of the step given by ``stop_after`` (tests simulate Ctrl-C)."""


class ConfigMismatch(ValueError):
    """A checkpoint in the output directory was written by a different configuration."""


def epoch_order(seed, epoch, n):
    """The data order of one epoch: a permutation of range(n) that depends only on (seed, epoch).

    Deriving it instead of advancing one generator means a resumed run needs no saved
    data-order state: step s reads batch s % (n // batch_size) of epoch s // (n // batch_size).
    """
    return np.random.default_rng([int(seed), int(epoch), 0xDA7A]).permutation(n)


def evaluate(forward, x, y, batch_size=2000):
    """Accuracy of ``forward`` (a callable on a Tensor returning logits) on x, y, in eval chunks.

    Chunks bound memory for the conv net; the caller sets eval mode and chooses what to record.
    """
    correct = 0
    with no_grad():
        for start in range(0, len(x), batch_size):
            logits = forward(Tensor(x[start : start + batch_size]))
            correct += int((logits.data.argmax(axis=1) == y[start : start + batch_size]).sum())
    return correct / max(len(x), 1)


def _progress_bar(enabled, total, initial, desc):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
        file=sys.stderr,
        leave=True,
    )


def train_run(
    *,
    model,
    optimizer,
    loss_fn,
    train_x,
    train_y,
    eval_fn,
    steps,
    batch_size,
    eval_every,
    seed,
    checkpoint_path=None,
    resume=False,
    fingerprint=None,
    dropout_rng=None,
    stop_after=None,
    progress=False,
    desc="",
    eager=False,
):
    """Train ``model`` for ``steps`` SGD steps; return {"curve": {...}, "wall_s", "steps_per_s"}.

    ``loss_fn(model, xb, yb)`` returns the scalar loss Tensor of one mini-batch (the model is in
    train mode). ``eval_fn(model)`` returns a dict of scalars for this point of the curve (it
    may switch the model to eval mode; train mode is restored after it). The curve holds
    ``step``, ``train_loss`` (mean over the steps since the previous evaluation; NaN at step 0)
    and one list per key ``eval_fn`` returns, all aligned with ``step``.

    ``fingerprint`` (a dict) identifies the configuration: resuming from a checkpoint with a
    different fingerprint raises ConfigMismatch. ``dropout_rng`` is the numpy Generator that
    dropout draws from (saved and restored). ``stop_after=k`` raises StopRequested after the
    first checkpoint at a step >= k. The step (loss, zero_grad, backward, optimizer step) runs
    under tg.jit, bit-identical to eager; ``eager=True`` runs it eagerly.
    """
    n_batches = len(train_x) // batch_size
    if n_batches < 1:
        raise ValueError(
            f"batch size {batch_size} is larger than the training set ({len(train_x)} examples)"
        )
    curve = {"step": [], "train_loss": []}
    step, wall_before = 0, 0.0
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        state = checkpoint.load(checkpoint_path)
        saved = json.loads(str(state.get("fingerprint", "null")))
        if saved != fingerprint:
            raise ConfigMismatch(
                f"checkpoint {checkpoint_path} was written with a different "
                f"configuration ({_diff(saved, fingerprint)}); rerun without "
                f"--resume or with the original options"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if dropout_rng is not None:
            dropout_rng.bit_generator.state = state["dropout_rng"]
        step, wall_before = int(state["step"]), float(state["wall_s"])
        curve = {
            k: [float(v) if k != "step" else int(v) for v in vals]
            for k, vals in state["curve"].items()
        }

    def record(at_step, mean_loss):
        point = eval_fn(model)
        model.train()
        curve["step"].append(at_step)
        curve["train_loss"].append(mean_loss)
        for key, value in point.items():
            curve.setdefault(key, []).append(float(value))
        return point

    def save(at_step, wall):
        if checkpoint_path is None:
            return
        # the fingerprint as JSON text: compared as text, tuples and lists cannot differ
        state = {
            "version": _CHECKPOINT_VERSION,
            "fingerprint": json.dumps(fingerprint),
            "step": at_step,
            "wall_s": wall,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "curve": {
                k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64)
                for k, v in curve.items()
            },
        }
        if dropout_rng is not None:
            state["dropout_rng"] = dropout_rng.bit_generator.state
        checkpoint.save(state, checkpoint_path)

    def train_step(xb, yb):
        loss = loss_fn(model, xb, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    if not eager:
        train_step = jit(train_step)
    model.train()
    t0 = time.perf_counter()
    if step == 0 and not curve["step"]:
        record(0, float("nan"))
        save(0, time.perf_counter() - t0)
    bar = _progress_bar(progress, steps, step, desc)
    last_acc = curve.get("test_acc", [float("nan")])[-1]
    loss_sum, loss_count = 0.0, 0
    epoch, order = -1, None
    try:
        while step < steps:
            e, b = divmod(step, n_batches)
            if e != epoch:
                epoch, order = e, epoch_order(seed, e, len(train_x))
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = train_step(train_x[idx], train_y[idx])
            # a diverged run (NaN loss) is a result, not an error: it is recorded as is
            loss_sum += loss.item()
            loss_count += 1
            step += 1
            if bar is not None:
                bar.update(1)
            if step % eval_every == 0 or step == steps:
                point = record(step, loss_sum / loss_count)
                loss_sum, loss_count = 0.0, 0
                last_acc = point.get("test_acc", last_acc)
                save(step, wall_before + time.perf_counter() - t0)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{curve['train_loss'][-1]:.4f}", acc=f"{last_acc:.4f}", refresh=False
                    )
                if stop_after is not None and step >= stop_after and step < steps:
                    raise StopRequested(f"stopped after step {step} (--stop-after)")
    finally:
        if bar is not None:
            bar.close()
    wall = wall_before + time.perf_counter() - t0
    return {"curve": curve, "wall_s": wall, "steps_per_s": steps / wall if wall > 0 else None}


def _diff(saved, wanted):
    if not isinstance(saved, dict) or not isinstance(wanted, dict):
        return f"saved {saved!r}, now {wanted!r}"
    keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    return ", ".join(f"{k}: saved {saved.get(k)!r}, now {wanted.get(k)!r}" for k in keys)


# ---------------------------------------------------------------- the experiment skeleton


class Experiment(NamedTuple):
    """What one experiment adds to run_experiment's skeleton.

    ``labels(config)`` lists what to train for every seed (networks, variants), stored in each
    run under the key ``label``; ``build(config, label, seed, n_eval)`` returns a Run;
    ``make_eval(config, x_eval, y_eval)`` the runner's eval_fn; ``headline`` names the accuracy
    logged after each run and picks it from the curve ("final", or "best"); ``validate``
    checks what is particular to the experiment, after check_config's shared rules.
    """

    name: str
    defaults: dict
    conv: bool
    label: str
    labels: Callable
    build: Callable
    make_eval: Callable
    headline: str
    validate: Callable
    summarize: Callable
    write_outputs: Callable


class Run(NamedTuple):
    """One model to train: ``info`` is stored in the run's record (lr first), ``fingerprint``
    identifies its configuration in the checkpoint."""

    model: object
    optimizer: object
    info: dict
    fingerprint: dict
    dropout_rng: object = None


def run_experiment(
    experiment,
    config,
    out_dir,
    data_dir=None,
    download=True,
    resume=False,
    progress=False,
    threads=None,
    stop_after=None,
    log=print,
    eager=False,
):
    """Train every label of ``experiment`` for every seed; write its outputs in ``out_dir``.
    The training step replays under tg.jit unless ``eager`` (the results are identical).

    Returns the results dict (the content of results.json).
    """
    name = experiment.name
    config = {**experiment.defaults, **config}
    check_config(name, config)
    experiment.validate(config)
    threads, (x_train, y_train), (x_eval, y_eval) = common.setup(
        out_dir, data_dir, download, threads, experiment.conv, config["eval_samples"]
    )
    n_eval = len(y_eval)
    eval_fn = experiment.make_eval(config, x_eval, y_eval)
    pick = {"final": lambda accs: accs[-1], "best": max}[experiment.headline]

    runs, started = [], time.perf_counter()
    for seed in range(config["seed"], config["seed"] + config["seeds"]):
        for label in experiment.labels(config):
            manual_seed(seed)
            run = experiment.build(config, label, seed, n_eval)
            out = train_run(
                model=run.model,
                optimizer=run.optimizer,
                loss_fn=_loss,
                train_x=x_train,
                train_y=y_train,
                eval_fn=eval_fn,
                steps=config["steps"],
                batch_size=config["batch_size"],
                eval_every=config["eval_every"],
                seed=seed,
                checkpoint_path=os.path.join(
                    out_dir, "checkpoints", f"{name}-{label}-seed{seed}.ckpt"
                ),
                resume=resume,
                fingerprint=run.fingerprint,
                dropout_rng=run.dropout_rng,
                stop_after=stop_after,
                progress=progress,
                eager=eager,
                desc=f"{name} {label} seed {seed}",
            )
            runs.append({experiment.label: label, "seed": seed, **run.info, **out})
            log(
                f"{name} {label} seed {seed}: {experiment.headline} test accuracy "
                f"{common.fmt_acc(pick(out['curve']['test_acc']))}, {out['wall_s']:.1f} s "
                f"({out['steps_per_s']:.0f} steps/s)"
            )
    results = {
        "experiment": name,
        "config": {**config, "eval_samples": n_eval},
        "environment": environment(threads),
        "runs": runs,
        "summary": experiment.summarize(runs),
        "total_wall_s": time.perf_counter() - started,
    }
    experiment.write_outputs(results, out_dir)
    return results


def _loss(model, xb, yb):
    return F.cross_entropy(model(Tensor(xb)), yb)


def check_config(name, config):
    """The rules every experiment's configuration follows (ValueError naming the key)."""
    for key in ("steps", "batch_size", "eval_every", "seeds", "eval_samples"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: {key}: expected an integer >= 1 (got {value!r})")
    if config["batch_size"] < 2:
        raise ValueError(
            f"{name}: batch_size: expected >= 2, as BatchNorm needs more than one value per "
            f"feature (got {config['batch_size']})"
        )


def check_positive(name, config, *keys):
    """Each of ``keys`` is a finite number > 0."""
    for key in keys:
        value = config[key]
        if not _is_real(value) or not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name}: {key}: expected a finite number > 0 (got {value!r})")


def check_range(name, config, key, low, high):
    """``config[key]`` lies in [low, high)."""
    value = config[key]
    if not _is_real(value) or not low <= value < high:
        raise ValueError(f"{name}: {key}: expected a number in [{low}, {high}) (got {value!r})")


def _is_real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
