"""Markdown reports of the experiments (written to report.md and printed at the end of a run)."""

import math

from .common import fmt_acc, fmt_steps

NAMES = {"vanilla": "Without BN", "bn": "With BN"}


def _config_line(results):
    c, env = results["config"], results["environment"]
    return (
        f"Config: {', '.join(f'{k}={v}' for k, v in c.items())}.  \n"
        f"Machine: {env['cpu']} ({env['cores']} cores), {env['threads']} kernel "
        f"threads, backend {env['backend']}, tinygrad_bn {env['tinygrad_bn']}, "
        f"numpy {env['numpy']}, Python {env['python']}."
    )


def fig1(results):
    s = results["summary"]
    lines = [
        "# Figure 1 (MNIST, sigmoid MLP 784-100-100-100-10)",
        "",
        _config_line(results),
        "",
        "| network | final test acc (mean ± std, min-max) | steps to 95% | to 97% | "
        "to 98% | AUC | sigmoid-input median, early → late | spread p85-p15, early → "
        "late | wall s / run | steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for net, v in s.items():
        d = v["drift"]
        lines.append(
            f"| {NAMES[net]} | {fmt_acc(v['final_acc_mean'])} ± {100 * v['final_acc_std']:.2f}"
            f" ({fmt_acc(v['final_acc_min'])}-{fmt_acc(v['final_acc_max'])}) | "
            f"{fmt_steps(v['steps_to']['0.95'])} | {fmt_steps(v['steps_to']['0.97'])} | "
            f"{fmt_steps(v['steps_to']['0.98'])} | {v['auc']:.4f} | "
            f"{d['median_early']:+.3f} → {d['median_late']:+.3f} | "
            f"{d['spread_early']:.3f} → {d['spread_late']:.3f} | {v['wall_s_mean']:.1f} | "
            f"{v['steps_per_s_mean']:.0f} |"
        )
    lines += [
        "",
        f"Early = step {next(iter(s.values()))['drift']['early_step']:,} (first "
        f"evaluation), late = the last step. Steps-to and AUC use the mean curve over "
        f"seeds; AUC is the mean test accuracy over training.",
        "",
        "**Reading.** " + _fig1_reading(s),
        "",
    ]
    return "\n".join(lines)


def _fig1_reading(s):
    if "vanilla" not in s or "bn" not in s:
        return "Only one network was run; nothing to compare."
    v, b = s["vanilla"], s["bn"]
    out = []
    diff = b["final_acc_mean"] - v["final_acc_mean"]
    out.append(
        f"With BN the network ends at {fmt_acc(b['final_acc_mean'])} test accuracy, "
        f"{'higher' if diff > 0 else 'lower'} than without BN "
        f"({fmt_acc(v['final_acc_mean'])}) by {abs(100 * diff):.2f} points."
    )
    for t in ("0.95", "0.97", "0.98"):
        sv, sb = v["steps_to"][t], b["steps_to"][t]
        if sb is not None and sv is not None:
            out.append(
                f"It reaches {float(t):.0%} after {sb:,} steps instead of {sv:,} "
                f"({sv / max(sb, 1):.1f}x fewer)."
            )
        elif sb is not None:
            out.append(
                f"It reaches {float(t):.0%} after {sb:,} steps; without BN the network "
                f"never does in this run."
            )
        elif sv is not None:
            out.append(
                f"Without BN the network reaches {float(t):.0%} after {sv:,} steps; "
                f"with BN it does not."
            )
    dv, db = v["drift"], b["drift"]
    out.append(
        f"Between step {dv['early_step']:,} and the end, the probed sigmoid input's "
        f"median moves from {dv['median_early']:+.2f} to {dv['median_late']:+.2f} "
        f"without BN and from {db['median_early']:+.2f} to {db['median_late']:+.2f} "
        f"with BN; its spread (p85 - p15) changes by a factor "
        f"{_ratio(dv['spread_ratio'])} without BN and {_ratio(db['spread_ratio'])} "
        f"with BN."
    )
    faster = diff > 0 and (b["auc"] or 0) > (v["auc"] or 0)
    stable = (
        _log_change(db["spread_ratio"]) < _log_change(dv["spread_ratio"])
        and abs(db["median_change"]) <= abs(dv["median_change"]) + 0.25
    )
    out.append(
        (
            "As in the paper's Figure 1, BN trains faster and higher"
            if faster
            else "Unlike the paper's Figure 1, BN does not train both faster and higher here"
        )
        + (
            "; and the BN net's sigmoid input is the more stable of the two."
            if stable
            else "; but the BN net's sigmoid input is not clearly more stable here."
        )
    )
    return " ".join(out)


def _ratio(r):
    return "n/a" if r is None else f"{r:.2f}"


def _log_change(r):
    """How far a ratio is from 1 on a log scale (x2 and x0.5 count the same)."""
    return float("inf") if r is None or r <= 0 else abs(math.log(r))


def claims(results):
    s = results["summary"]
    target = s.get("target_acc")
    lines = [
        "# Section 4.2 claims at CPU scale (MNIST, small conv net)",
        "",
        _config_line(results),
        "",
        f"Target: the Baseline's best test accuracy, {fmt_acc(target)}.",
        "",
        "| variant | BN | activation | dropout | lr | steps to Baseline's best | "
        "best test acc | final test acc | wall s | steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in s["variants"].items():
        lines.append(
            f"| {name} | {'yes' if v['batch_norm'] else 'no'} | {v['activation']} | "
            f"{v['dropout']} | {v['lr']:g} | {fmt_steps(v['steps_to_target'])} | "
            f"{fmt_acc(v['best_acc_mean'])} | {fmt_acc(v['final_acc_mean'])} | "
            f"{v['wall_s_mean']:.1f} | {v['steps_per_s_mean']:.0f} |"
        )
    lines += [
        "",
        "Steps and accuracies use the mean curve over seeds. 'not reached' means the "
        "variant never reached the Baseline's best within the run (in the paper, "
        "BN-x5-Sigmoid's '—').",
        "",
        "**Reading.** " + _claims_reading(s),
        "",
    ]
    return "\n".join(lines)


def _claims_reading(s):
    vs = s["variants"]
    base = vs.get("Baseline")
    if base is None:
        return "The Baseline was not run; steps-to-target is undefined."
    out = []
    for name in ("BN-Baseline", "BN-x5", "BN-x30"):
        v = vs.get(name)
        if v is None:
            continue
        if v["steps_to_target"] is not None and base["steps_to_target"]:
            ratio = base["steps_to_target"] / max(v["steps_to_target"], 1)
            out.append(
                f"{name} reaches the Baseline's best in {v['steps_to_target']:,} steps "
                f"({ratio:.1f}x fewer than the Baseline's {base['steps_to_target']:,}) "
                f"and peaks at {fmt_acc(v['best_acc_mean'])}."
            )
        else:
            out.append(
                f"{name} does not reach the Baseline's best (peaks at "
                f"{fmt_acc(v['best_acc_mean'])})."
            )
    sig, bsig = vs.get("Baseline-Sigmoid"), vs.get("BN-x5-Sigmoid")
    if sig and bsig:
        out.append(
            f"With sigmoids, BN-x5-Sigmoid peaks at {fmt_acc(bsig['best_acc_mean'])} "
            f"and Baseline-Sigmoid at {fmt_acc(sig['best_acc_mean'])}."
        )
    drop = vs.get("BN-Baseline+Dropout")
    nodrop = vs.get("BN-Baseline")
    if drop and nodrop:
        out.append(
            f"Adding dropout to BN-Baseline changes its peak from "
            f"{fmt_acc(nodrop['best_acc_mean'])} to {fmt_acc(drop['best_acc_mean'])}."
        )
    return " ".join(out)
