"""The study's numbers and verdicts (summarize) and its report.md (render).

Every verdict is computed here from the cells, seed by seed: a claim *holds* when every seed
shows the effect by more than the claim's tolerance, *does not hold* when no seed does, and is
*mixed* when the seeds disagree. The report only formats what summarize() stored in
study.json, so each number in report.md is one in the JSON.
"""

import numpy as np

from .common import fmt_acc, fmt_steps, steps_to_reach

NET = {False: "without BN", True: "with BN"}
NORM_NAMES = {
    "none": "no normalization",
    "batchnorm": "BatchNorm",
    "batchrenorm": "Batch Renorm",
    "layernorm": "LayerNorm",
    "groupnorm": "GroupNorm",
}


def verdict(diffs, tol):
    """'holds' if every per-seed difference exceeds tol, 'does not hold' if none does, else
    'mixed'; None without data."""
    diffs = [d for d in diffs if d is not None]
    if not diffs:
        return None
    above = [d > tol for d in diffs]
    return "holds" if all(above) else "does not hold" if not any(above) else "mixed"


def _stats(values):
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "per_seed": list(values)}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "per_seed": [None if x is None else float(x) for x in values],
    }


def _final(cell):
    acc = cell["result"]["curve"]["test_acc"][-1]
    return 0.0 if acc is None else float(acc)  # a diverged run (NaN) counts as untrained


def _steps_to(cells, target):
    """Steps to `target` test accuracy of the mean curve over `cells` (one per seed)."""
    curves = np.array(
        [[np.nan if a is None else a for a in c["result"]["curve"]["test_acc"]] for c in cells]
    )
    mean = np.nan_to_num(curves, nan=0.0).mean(axis=0)
    return steps_to_reach(cells[0]["result"]["curve"]["step"], mean, target)


def _group(cells, *keys):
    out = {}
    for c in cells:
        out.setdefault(tuple(c["config"][k] for k in keys), []).append(c)
    for group in out.values():
        group.sort(key=lambda c: c["config"]["seed"])
    return out


def summarize(study):
    cells = study["cells"]
    config = study["config"]
    summary, verdicts = {}, []
    for q, fn in ((1, _q1), (2, _q2), (3, _q3), (4, _q4)):
        mine = [c for c in cells if c["config"]["question"] == q]
        if q in config["questions"] and mine:
            summary[f"q{q}"], v = fn(mine, config[f"q{q}"])
            verdicts += v
    summary["verdicts"] = verdicts
    return summary


def _claim(question, claim, metric, diffs, tol, unit, numbers):
    return {
        "question": question,
        "claim": claim,
        "metric": metric,
        "per_seed_difference": diffs,
        "tolerance": tol,
        "unit": unit,
        "verdict": verdict(diffs, tol),
        "numbers": numbers,
    }


# ---------------------------------------------------------------- question 1


def _q1(cells, c):
    lrs, stds, thr = c["lrs"], c["init_stds"], c["threshold"]
    groups = _group(cells, "bn", "init_std", "lr")
    seeds = sorted({x["config"]["seed"] for x in cells})
    out = {"lrs": lrs, "init_stds": stds, "threshold": thr, "speed_target": c["speed_target"]}
    out.update(seeds=seeds, nets={})
    for bn in (False, True):
        acc = np.full((len(stds), len(lrs), len(seeds)), np.nan)
        steps95 = [[None] * len(lrs) for _ in stds]
        for i, std in enumerate(stds):
            for j, lr in enumerate(lrs):
                g = groups.get((bn, std, lr), [])
                for cell in g:
                    acc[i, j, seeds.index(cell["config"]["seed"])] = _final(cell)
                if g:
                    steps95[i][j] = _steps_to(g, c["speed_target"])
        trainable = acc >= thr  # (std, lr, seed)
        per_seed = []
        for k in range(len(seeds)):
            t = trainable[:, :, k]
            lr_ok = np.flatnonzero(t.any(axis=0))
            per_seed.append(
                {
                    "area_fraction": float(t.mean()),
                    "trainable_cells": int(t.sum()),
                    # index into lrs of the largest rate that trains at some init (-1: none)
                    "max_lr_index": int(lr_ok[-1]) if lr_ok.size else -1,
                    "max_lr": float(lrs[lr_ok[-1]]) if lr_ok.size else None,
                    "lr_range": [float(lrs[lr_ok[0]]), float(lrs[lr_ok[-1]])]
                    if lr_ok.size
                    else None,
                    # the widest range of init scales that train at one learning rate
                    "init_scales_at_best_lr": int(t.sum(axis=0).max()),
                }
            )
        out["nets"][NET[bn]] = {
            "final_acc_mean": np.nanmean(acc, axis=2).tolist(),
            "final_acc_std": np.nanstd(acc, axis=2).tolist(),
            "steps_to_target": steps95,
            "per_seed": per_seed,
            "area_fraction": _stats([p["area_fraction"] for p in per_seed]),
        }
    plain, bn = out["nets"][NET[False]]["per_seed"], out["nets"][NET[True]]["per_seed"]
    n_cells = len(lrs) * len(stds)
    verdicts = [
        _claim(
            1,
            "BN allows much higher learning rates",
            "largest trainable learning rate (any init), grid steps with BN minus without",
            [b["max_lr_index"] - p["max_lr_index"] for p, b in zip(plain, bn)],
            0,
            "grid steps",
            {
                "max_lr_without_bn": [p["max_lr"] for p in plain],
                "max_lr_with_bn": [b["max_lr"] for b in bn],
            },
        ),
        _claim(
            1,
            "BN makes training less sensitive to initialization",
            "most init scales that train at one learning rate, with BN minus without",
            [b["init_scales_at_best_lr"] - p["init_scales_at_best_lr"] for p, b in zip(plain, bn)],
            0,
            f"of {len(stds)} scales",
            {
                "without_bn": [p["init_scales_at_best_lr"] for p in plain],
                "with_bn": [b["init_scales_at_best_lr"] for b in bn],
            },
        ),
        _claim(
            1,
            "BN enlarges the trainable region of (learning rate, init scale)",
            f"share of the {n_cells} grid cells reaching {100 * thr:.0f}%, with BN minus without",
            [b["area_fraction"] - p["area_fraction"] for p, b in zip(plain, bn)],
            0.0,
            "of the grid",
            {
                "without_bn": [p["area_fraction"] for p in plain],
                "with_bn": [b["area_fraction"] for b in bn],
            },
        ),
    ]
    return out, verdicts


# ---------------------------------------------------------------- question 2


def _q2(cells, c):
    groups = _group(cells, "activation", "bn", "depth", "lr")
    seeds = sorted({x["config"]["seed"] for x in cells})
    out = {"depths": c["depths"], "threshold": c["threshold"], "seeds": seeds, "series": {}}
    out["speed_target"] = c["speed_target"]
    verdicts = []
    for act in c["activations"]:
        for bn in (False, True):
            rows = []
            for depth in c["depths"]:
                # each (net, depth) at its own best learning rate (by mean final accuracy)
                options = [
                    (lr, groups[(act, bn, depth, lr)])
                    for lr in c["lrs"]
                    if (act, bn, depth, lr) in groups
                ]
                if not options:
                    continue
                lr, g = max(options, key=lambda o: np.mean([_final(x) for x in o[1]]))
                sat = np.array([x["result"]["saturated"] for x in g], dtype=np.float64)
                rows.append(
                    {
                        "depth": depth,
                        "best_lr": lr,
                        "final_acc": _stats([_final(x) for x in g]),
                        "steps_to_target": _steps_to(g, c["speed_target"]),
                        "saturated_per_layer": sat.mean(axis=0).tolist(),
                        "saturated_mean": float(sat.mean()),
                    }
                )
            out["series"][f"{act} {NET[bn]}"] = rows
        plain, bnr = out["series"][f"{act} {NET[False]}"], out["series"][f"{act} {NET[True]}"]
        if not plain or not bnr:
            continue
        thr = c["threshold"]

        def deepest(rows):
            ok = [r["depth"] for r in rows if r["final_acc"]["mean"] >= thr]
            return max(ok) if ok else None

        verdicts.append(
            _claim(
                2,
                f"BN makes deep {act} networks trainable (saturating units)",
                f"final test accuracy at depth {plain[-1]['depth']}, with BN minus without",
                [
                    b - p
                    for p, b in zip(
                        plain[-1]["final_acc"]["per_seed"], bnr[-1]["final_acc"]["per_seed"]
                    )
                ],
                0.01,
                "accuracy",
                {
                    "acc_without_bn": plain[-1]["final_acc"]["per_seed"],
                    "acc_with_bn": bnr[-1]["final_acc"]["per_seed"],
                    "deepest_trainable_without_bn": deepest(plain),
                    "deepest_trainable_with_bn": deepest(bnr),
                    "saturated_without_bn": plain[-1]["saturated_mean"],
                    "saturated_with_bn": bnr[-1]["saturated_mean"],
                },
            )
        )
    return out, verdicts


# ---------------------------------------------------------------- question 3


def _q3(cells, c):
    groups = _group(cells, "bn", "dropout")
    out = {"variants": {}}
    for (bn, dropout), g in sorted(groups.items()):
        last = [x["result"]["curve"] for x in g]
        train = [cv["train_acc"][-1] for cv in last]
        test = [cv["test_acc"][-1] for cv in last]
        out["variants"][_q3_name(bn, dropout)] = {
            "bn": bn,
            "dropout": dropout,
            "train_acc": _stats(train),
            "test_acc": _stats(test),
            "gap": _stats([a - b for a, b in zip(train, test)]),
            "train_loss": _stats([cv["train_eval_loss"][-1] for cv in last]),
            "test_loss": _stats([cv["test_loss"][-1] for cv in last]),
            "best_test_acc": _stats([max(cv["test_acc"]) for cv in last]),
        }
    v = out["variants"]
    plain, bn = v.get(_q3_name(False, 0.0)), v.get(_q3_name(True, 0.0))
    drop = v.get(_q3_name(False, c["dropout"]))
    verdicts = []
    if plain and bn:
        verdicts.append(
            _claim(
                3,
                "BN acts as a regularizer (smaller train/test gap, no dropout)",
                "final train-test accuracy gap without BN minus with BN",
                [p - b for p, b in zip(plain["gap"]["per_seed"], bn["gap"]["per_seed"])],
                0.002,
                "accuracy",
                {"gap_without_bn": plain["gap"]["per_seed"], "gap_with_bn": bn["gap"]["per_seed"]},
            )
        )
    if bn and drop:
        verdicts.append(
            _claim(
                3,
                "BN reduces the need for dropout (BN alone tests as well as dropout alone)",
                "final test accuracy of BN without dropout minus no BN with dropout "
                "(holds unless BN alone is more than 0.25 points worse)",
                [b - d for b, d in zip(bn["test_acc"]["per_seed"], drop["test_acc"]["per_seed"])],
                -0.0025,
                "accuracy",
                {
                    "test_acc_bn_alone": bn["test_acc"]["per_seed"],
                    "test_acc_dropout_alone": drop["test_acc"]["per_seed"],
                },
            )
        )
    return out, verdicts


def _q3_name(bn, dropout):
    return f"{NET[bn]}, {'dropout ' + format(dropout, 'g') if dropout else 'no dropout'}"


# ---------------------------------------------------------------- question 4


def _q4(cells, c):
    groups = _group(cells, "norm", "batch_size")
    sizes = sorted(c["batch_sizes"])
    out = {"batch_sizes": sizes, "norms": {}}
    for norm in c["norms"]:
        rows = {}
        for bs in sizes:
            g = groups.get((norm, bs))
            if not g:
                continue
            row = {"moving": _stats([x["result"]["test_acc_moving"] for x in g])}
            if "test_acc_population" in g[0]["result"]:
                row["population"] = _stats([x["result"]["test_acc_population"] for x in g])
            rows[str(bs)] = row
        if rows:
            out["norms"][norm] = rows
    small = str(sizes[0])
    ref = str(c["reference_batch_size"] if c["reference_batch_size"] in sizes else sizes[-1])
    out["smallest"], out["reference"] = int(small), int(ref)

    def per_seed(norm, bs, mode="moving"):
        row = out["norms"].get(norm, {}).get(bs, {})
        return row.get(mode, {}).get("per_seed")

    def drop(norm):
        a, b = per_seed(norm, ref), per_seed(norm, small)
        return None if a is None or b is None else [x - y for x, y in zip(a, b)]

    out["drop"] = {norm: drop(norm) for norm in out["norms"]}
    verdicts = []
    if out["drop"].get("batchnorm") and out["drop"].get("none"):
        verdicts.append(
            _claim(
                4,
                f"BN depends on the mini-batch (loses more than no normalization from batch "
                f"{ref} to batch {small})",
                f"accuracy drop from batch {ref} to {small}, BatchNorm minus no normalization",
                [b - n for b, n in zip(out["drop"]["batchnorm"], out["drop"]["none"])],
                0.01,
                "accuracy",
                {k: v for k, v in out["drop"].items()},
            )
        )
    if per_seed("batchrenorm", small) and per_seed("batchnorm", small):
        verdicts.append(
            _claim(
                4,
                f"Batch Renormalization reduces that dependence (better than BN at batch {small})",
                f"test accuracy at batch {small}, Batch Renorm minus BatchNorm (moving averages)",
                [
                    r - b
                    for r, b in zip(per_seed("batchrenorm", small), per_seed("batchnorm", small))
                ],
                0.005,
                "accuracy",
                {
                    "batchrenorm": per_seed("batchrenorm", small),
                    "batchnorm": per_seed("batchnorm", small),
                },
            )
        )
    if per_seed("batchnorm", small, "population"):
        verdicts.append(
            _claim(
                4,
                f"Algorithm 2's population statistics beat moving averages at batch {small}",
                f"BatchNorm test accuracy at batch {small}, population minus moving averages",
                [
                    p - m
                    for p, m in zip(
                        per_seed("batchnorm", small, "population"), per_seed("batchnorm", small)
                    )
                ],
                0.0,
                "accuracy",
                {
                    "population": per_seed("batchnorm", small, "population"),
                    "moving": per_seed("batchnorm", small),
                },
            )
        )
    return out, verdicts


# ---------------------------------------------------------------- report.md


def _pm(s, scale=100, unit="%", digits=2):
    """mean ± std (min-max) over seeds, in percent by default."""
    if s is None or s["mean"] is None:
        return "n/a"
    mean, std, lo, hi = (scale * s[k] for k in ("mean", "std", "min", "max"))
    if len(s["per_seed"]) == 1:
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f}{unit} ± {std:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _num(x):
    if x is None:
        return "none"
    if isinstance(x, list):
        return "[" + ", ".join(_num(v) for v in x) + "]"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def render(study):
    s, config, env = study["summary"], study["config"], study["environment"]
    lines = [
        "# The claims of the abstract, measured on MNIST (`tinygrad-bn study`)",
        "",
        f"Seeds: {config['seeds']} (from {config['seed']}); evaluation on the first "
        f"{config['eval_samples']:,} test images; float32, plain SGD unless stated.  ",
        f"Machine: {env['cpu']} ({env.get('cores', env.get('cpu_count'))} cores), "
        f"{env['threads']} kernel thread per "
        f"worker, backend {env['backend']}, tinygrad_bn {env['tinygrad_bn']}, numpy "
        f"{env['numpy']}, Python {env['python']}.  ",
        f"Cells: {len(study['cells'])} ({study['cells_run']} run now, {study['cells_cached']} "
        f"from the cache); wall time {study['total_wall_s']:.0f} s.",
    ]
    if study.get("skipped_norms"):
        lines.append(
            f"Skipped (not in this build of tinygrad_bn.nn): {', '.join(study['skipped_norms'])}."
        )
    lines += [
        "",
        "## Verdicts",
        "",
        "A claim **holds** when every seed shows the effect by more than the tolerance, "
        "**does not hold** when no seed does, and is **mixed** when the seeds disagree. "
        "Differences are per seed, in seed order.",
        "",
    ]
    for v in s["verdicts"]:
        nums = "; ".join(f"{k} {_num(x)}" for k, x in v["numbers"].items())
        lines.append(
            f"- Q{v['question']} **{v['verdict']}**: {v['claim']}. Measure: {v['metric']}: "
            f"{_num(v['per_seed_difference'])} {v['unit']} (needs > {_num(v['tolerance'])}). "
            f"Numbers: {nums}."
        )
    for q, fn in ((1, _render_q1), (2, _render_q2), (3, _render_q3), (4, _render_q4)):
        if f"q{q}" in s:
            lines += ["", *fn(s[f"q{q}"], config[f"q{q}"])]
    return "\n".join(lines) + "\n"


def _render_q1(s, c):
    lines = [
        "## 1. Learning rate x initialization (Figure 1's sigmoid MLP, batch 60)",
        "",
        f"{c['steps']:,} steps per cell; weights N(0, std^2), biases 0. Trainable: final test "
        f"accuracy >= {100 * s['threshold']:.0f}%. Figure: q1.png.",
        "",
    ]
    for net, v in s["nets"].items():
        lines += [
            f"**{net}**: trainable area {_pm(v['area_fraction'])} of the grid; largest trainable "
            f"learning rate per seed {_num([p['max_lr'] for p in v['per_seed']])}; final test "
            f"accuracy (mean over seeds), rows init std, columns learning rate:",
            "",
            "| std \\ lr | " + " | ".join(f"{lr:g}" for lr in s["lrs"]) + " |",
            "|---" * (len(s["lrs"]) + 1) + "|",
        ]
        for std, row in zip(s["init_stds"], v["final_acc_mean"]):
            lines.append(f"| {std:g} | " + " | ".join(fmt_acc(a) for a in row) + " |")
        lines += [
            "",
            f"Steps to {100 * s['speed_target']:.0f}% test accuracy ({net}, mean curve over "
            "seeds; - : not reached):",
            "",
            "| std \\ lr | " + " | ".join(f"{lr:g}" for lr in s["lrs"]) + " |",
            "|---" * (len(s["lrs"]) + 1) + "|",
        ]
        for std, row in zip(s["init_stds"], v["steps_to_target"]):
            lines.append(
                f"| {std:g} | " + " | ".join("-" if x is None else f"{x:,}" for x in row) + " |"
            )
        lines.append("")
    return lines


def _render_q2(s, c):
    lines = [
        "## 2. Depth with saturating units (MLPs of width 100, PyTorch's default init)",
        "",
        f"{c['steps']:,} steps, batch 60; each network at its best learning rate of "
        f"{_num(c['lrs'])}. Saturated: |input of the nonlinearity| > 4 (sigmoid) or > 2 (tanh), "
        "share of (test image, unit) pairs, mean over layers. Figure: q2.png.",
        "",
        f"| network | depth | best lr | final test acc | steps to {100 * s['speed_target']:.0f}% "
        "| saturated |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in s["series"].items():
        for r in rows:
            lines.append(
                f"| {name} | {r['depth']} | {r['best_lr']:g} | {_pm(r['final_acc'])} | "
                f"{fmt_steps(r['steps_to_target'])} | {100 * r['saturated_mean']:.1f}% |"
            )
    return lines


def _render_q3(s, c):
    lines = [
        f"## 3. Regularization (784-{'-'.join(map(str, c['hidden']))}-10 ReLU, "
        f"{c['subset']:,} training images)",
        "",
        f"{c['steps']:,} steps of SGD (lr {c['lr']:g}, momentum {c['sgd_momentum']:g}), batch "
        "60; accuracies on the training subset and on the test images, eval mode. Figure: q3.png.",
        "",
        "| variant | train acc | test acc | gap | train loss | test loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in s["variants"].items():
        lines.append(
            f"| {name} | {_pm(v['train_acc'])} | {_pm(v['test_acc'])} | {_pm(v['gap'])} | "
            f"{_pm(v['train_loss'], 1, '', 4)} | {_pm(v['test_loss'], 1, '', 3)} |"
        )
    return lines


def _render_q4(s, c):
    lines = [
        "## 4. Mini-batch dependence (784-100-100-100-10 ReLU MLP)",
        "",
        f"{60 * c['steps']:,} examples seen at every batch size; lr = {c['lr_at_60']:g} x "
        f"batch/60; BatchNorm and Batch Renorm momentum {c['momentum']:g}; Batch Renorm "
        f"r_max 1 -> {c['r_max']:g}, d_max 0 -> {c['d_max']:g} (warm-up {c['warmup']:g}, "
        f"d_max reached at {c['d_max_at']:g}, r_max at {c['r_max_at']:g} of training). "
        f"Population: Algorithm 2 over {c['population_samples']:,} training images in batches "
        "of the training size. Test accuracy; figure: q4.png.",
        "",
    ]
    cols = []
    for norm, rows in s["norms"].items():
        cols.append((norm, "moving"))
        if any("population" in r for r in rows.values()):
            cols.append((norm, "population"))
    head = [NORM_NAMES[n] + (" (population)" if m == "population" else "") for n, m in cols]
    lines += ["| batch | " + " | ".join(head) + " |", "|---" * (len(cols) + 1) + "|"]
    for bs in s["batch_sizes"]:
        cells = [_pm(s["norms"][n].get(str(bs), {}).get(m)) for n, m in cols]
        lines.append(f"| {bs} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Accuracy drop from batch {s['reference']} to batch {s['smallest']} (per seed): "
        + "; ".join(f"{NORM_NAMES[n]} {_num(d)}" for n, d in s["drop"].items())
        + ".",
    ]
    return lines
