"""The claims of Section 4.2 (Table 2) at CPU scale: a small conv net on MNIST.

The paper's ImageNet/Inception variants map to a 2-block conv net (see models.claims_convnet)
trained with SGD + momentum at a constant learning rate:

    Baseline             no BN, ReLU, dropout, lr            (the paper's "Inception")
    BN-Baseline          BN, ReLU, no dropout, lr
    BN-x5 / BN-x30       as BN-Baseline with lr x5 / x30
    BN-x5-Sigmoid        BN, sigmoid, lr x5
    Baseline-Sigmoid     no BN, sigmoid, dropout, lr         (the paper: stays at chance)
    Baseline-NoDropout   no BN, ReLU, no dropout, lr         (the dropout claim, both ways:)
    BN-Baseline+Dropout  BN, ReLU, dropout, lr

Like Table 2 we report, per variant, the steps to reach the Baseline's best test accuracy and
the best test accuracy reached.
"""

import os
import time

import numpy as np

from .. import functional as F
from .. import optim
from ..tensor import Tensor, manual_seed
from . import common, models, plots, report
from .runner import evaluate, train_run

# name -> (batch norm, activation, learning-rate multiplier, dropout)
VARIANTS = {
    "Baseline": (False, "relu", 1, True),
    "BN-Baseline": (True, "relu", 1, False),
    "BN-x5": (True, "relu", 5, False),
    "BN-x30": (True, "relu", 30, False),
    "BN-x5-Sigmoid": (True, "sigmoid", 5, False),
    "Baseline-Sigmoid": (False, "sigmoid", 1, True),
    "Baseline-NoDropout": (False, "relu", 1, False),
    "BN-Baseline+Dropout": (True, "relu", 1, True),
}

DEFAULTS = {
    "steps": 2000,
    "batch_size": 60,
    "lr": 0.002,
    "momentum": 0.9,
    "dropout": 0.25,
    "seeds": 1,
    "seed": 0,
    "eval_every": 100,
    "eval_samples": 2000,
    "channels": [8, 16],
    "variants": list(VARIANTS),
}
# Why these defaults (measured, docs/results.md): the whole default run must take about ten
# minutes on 2 cores, so the net is small (8 and 16 channels, ~98% on MNIST when trained
# longer) and each variant gets 2,000 steps (120,000 images, 2 epochs), evaluated on 2,000
# test images every 100 steps. The base rate 0.002 (with momentum 0.9) is, as the paper's
# Inception rate was, one at which the Baseline trains stably; x5 and x30 then stay
# trainable with BN.


def _loss(model, xb, yb):
    return F.cross_entropy(model(Tensor(xb)), yb)


def run(
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
    """Train every variant for every seed; write results.json, claims.png and report.md."""
    config = {**DEFAULTS, **config}
    _validate(config)
    threads, (x_train, y_train), (x_eval, y_eval) = common.setup(
        out_dir, data_dir, download, threads, conv=True, eval_samples=config["eval_samples"]
    )
    n_eval = len(y_eval)

    def eval_fn(model):
        model.eval()
        return {"test_acc": evaluate(model, x_eval, y_eval)}

    runs, started = [], time.perf_counter()
    for seed in range(config["seed"], config["seed"] + config["seeds"]):
        for name in config["variants"]:
            batch_norm, activation, mult, dropout = VARIANTS[name]
            lr = config["lr"] * mult
            p = config["dropout"] if dropout else 0.0
            manual_seed(seed)
            dropout_rng = np.random.default_rng([seed, 0xD0])
            model = models.claims_convnet(
                batch_norm,
                activation,
                p,
                np.random.default_rng(seed),
                dropout_rng,
                channels=tuple(config["channels"]),
            )
            opt = optim.SGD(model.parameters(), lr=lr, momentum=config["momentum"])
            fingerprint = {k: v for k, v in config.items() if k not in ("seeds", "variants")}
            fingerprint.update(variant=name, run_seed=seed, n_eval=n_eval)
            out = train_run(
                model=model,
                optimizer=opt,
                loss_fn=_loss,
                train_x=x_train,
                train_y=y_train,
                eval_fn=eval_fn,
                steps=config["steps"],
                batch_size=config["batch_size"],
                eval_every=config["eval_every"],
                seed=seed,
                checkpoint_path=os.path.join(
                    out_dir, "checkpoints", f"claims-{name}-seed{seed}.ckpt"
                ),
                resume=resume,
                fingerprint=fingerprint,
                dropout_rng=dropout_rng,
                stop_after=stop_after,
                progress=progress,
                eager=eager,
                desc=f"claims {name} seed {seed}",
            )
            runs.append(
                {
                    "variant": name,
                    "seed": seed,
                    "lr": lr,
                    "batch_norm": batch_norm,
                    "activation": activation,
                    "dropout": p,
                    **out,
                }
            )
            log(
                f"claims {name} seed {seed}: best test accuracy "
                f"{common.fmt_acc(max(out['curve']['test_acc']))}, {out['wall_s']:.1f} s "
                f"({out['steps_per_s']:.0f} steps/s)"
            )
    results = {
        "experiment": "claims",
        "config": {**config, "eval_samples": n_eval},
        "environment": common.environment(threads),
        "runs": runs,
        "summary": summarize(runs),
        "total_wall_s": time.perf_counter() - started,
    }
    common.write_json(os.path.join(out_dir, "results.json"), results)
    plots.claims(results, os.path.join(out_dir, "claims.png"))
    common.write_text(os.path.join(out_dir, "report.md"), report.claims(results))
    return results


def _validate(config):
    for key in ("steps", "batch_size", "eval_every", "seeds", "eval_samples"):
        if not isinstance(config[key], (int, np.integer)) or config[key] < 1:
            raise ValueError(f"claims: {key} must be an integer >= 1, got {config[key]!r}")
    if not config["lr"] > 0 or not np.isfinite(config["lr"]):
        raise ValueError(f"claims: lr must be a finite number > 0, got {config['lr']!r}")
    if not 0 <= config["momentum"] < 1:
        raise ValueError(f"claims: momentum must lie in [0, 1), got {config['momentum']!r}")
    if not 0 <= config["dropout"] < 1:
        raise ValueError(f"claims: dropout must lie in [0, 1), got {config['dropout']!r}")
    unknown = [v for v in config["variants"] if v not in VARIANTS]
    if unknown or not config["variants"]:
        raise ValueError(
            f"claims: variants must be a non-empty subset of {list(VARIANTS)}, "
            f"got {config['variants']!r}"
        )
    channels = config["channels"]
    if not 1 <= len(channels) <= 4 or not all(
        isinstance(c, (int, np.integer)) and c >= 1 for c in channels
    ):
        raise ValueError(
            f"claims: channels must be 1 to 4 integers >= 1 (each block halves "
            f"the 28x28 image), got {channels!r}"
        )
    if config["batch_size"] < 2:
        raise ValueError(
            "claims: batch_size must be >= 2 (BatchNorm needs more than one "
            f"value per channel), got {config['batch_size']}"
        )


def summarize(runs):
    """Per variant: best and final accuracy of the mean curve, steps to the Baseline's best."""
    variants = {}
    for run in runs:
        variants.setdefault(run["variant"], []).append(run)
    target = None
    if "Baseline" in variants:
        target = float(np.max(_mean_curve(variants["Baseline"])))
    summary = {"target_acc": target, "variants": {}}
    for name, mine in variants.items():
        mean = _mean_curve(mine)
        steps = mine[0]["curve"]["step"]
        finite = mean[np.isfinite(mean)]
        summary["variants"][name] = {
            "seeds": len(mine),
            "batch_norm": mine[0]["batch_norm"],
            "activation": mine[0]["activation"],
            "dropout": mine[0]["dropout"],
            "lr": mine[0]["lr"],
            "steps_to_target": (
                common.steps_to_reach(steps, mean, target) if target is not None else None
            ),
            "best_acc_mean": float(finite.max()) if finite.size else None,
            "final_acc_mean": float(mean[-1]),
            "wall_s_mean": float(np.mean([r["wall_s"] for r in mine])),
            "steps_per_s_mean": float(np.mean([r["steps_per_s"] for r in mine])),
        }
    return summary


def _mean_curve(runs):
    return np.array([r["curve"]["test_acc"] for r in runs], dtype=np.float64).mean(axis=0)
