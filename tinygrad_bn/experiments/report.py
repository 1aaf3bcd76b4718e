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
    several = any(v["seeds"] > 1 for v in s.values())
    lines = [
        "# Figure 1 (MNIST, sigmoid MLP 784-100-100-100-10)",
        "",
        _config_line(results),
        "",
        f"| network | final test acc{' (mean ± std, min-max)' if several else ''} | steps to "
        "95% | to 97% | to 98% | AUC | sigmoid-input median, early → late | spread p85-p15, "
        "early → late | wall s / run | steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for net, v in s.items():
        d = v["drift"]
        acc = fmt_acc(v["final_acc_mean"])
        if several:  # one seed has no spread to show: no "± 0.00"
            acc += (
                f" ± {100 * v['final_acc_std']:.2f} "
                f"({fmt_acc(v['final_acc_min'])}-{fmt_acc(v['final_acc_max'])})"
            )
        lines.append(
            f"| {NAMES[net]} | {acc} | "
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
        "**Reading.** " + _fig1_reading(s, _later_drift(results["runs"])),
        "",
    ]
    return "\n".join(lines)


def _later_drift(runs):
    """Per network, the probed input's drift from the first evaluation at or after a tenth of
    the run (step 5,000 of the default 50,000) to the end, averaged over seeds; None when the
    run is too short to have such a stretch after the first evaluation.

    Over the whole run the plain net's drift is mostly an early-training effect; this second
    window says whether BN's input is still the steadier one once that has passed.
    """
    out = {}
    for network in ("vanilla", "bn"):
        mine = [r for r in runs if r["network"] == network]
        if not mine:
            return None
        steps = mine[0]["curve"]["step"]
        start = next((i for i, s in enumerate(steps) if s >= steps[-1] / 10), len(steps) - 1)
        if start <= 1 or start >= len(steps) - 1:
            return None

        def at(i):
            c = [r["curve"] for r in mine]
            median = sum(x["p50"][i] for x in c) / len(c)
            spread = sum(x["p85"][i] - x["p15"][i] for x in c) / len(c)
            return median, spread

        (m0, s0), (m1, s1) = at(start), at(-1)
        out[network] = {
            "step": steps[start],
            "median_from": m0,
            "median_to": m1,
            "spread_from": s0,
            "spread_to": s1,
            "spread_ratio": s1 / s0 if s0 > 0 else None,
        }
    return out


def _more_stable(bn, vanilla):
    """BN's probed input is the steadier: its spread changes less (on a log scale) and its
    median moves no more than the plain net's (+ 0.25, about the step of a seed's noise)."""
    return (
        _log_change(bn["spread_ratio"]) < _log_change(vanilla["spread_ratio"])
        and abs(bn["median_change"]) <= abs(vanilla["median_change"]) + 0.25
    )


def _fig1_reading(s, later=None):
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
    if later is not None:
        lv, lb = later["vanilla"], later["bn"]
        out.append(
            f"From step {lv['step']:,} on, the median moves from {lv['median_from']:+.2f} to "
            f"{lv['median_to']:+.2f} without BN and from {lb['median_from']:+.2f} to "
            f"{lb['median_to']:+.2f} with BN, and the spread changes by a factor "
            f"{_ratio(lv['spread_ratio'])} without BN and {_ratio(lb['spread_ratio'])} with BN."
        )
    faster = diff > 0 and (b["auc"] or 0) > (v["auc"] or 0)
    whole = _more_stable(db, dv)
    out.append(
        "As in the paper's Figure 1, BN trains faster and higher"
        if faster
        else "Unlike the paper's Figure 1, BN does not train both faster and higher here"
    )
    if later is None:
        out[-1] += (
            "; and the BN net's sigmoid input is the more stable of the two."
            if whole
            else "; but the BN net's sigmoid input is not clearly more stable here."
        )
        return " ".join(out)
    from_step = f"from step {later['vanilla']['step']:,} on"
    lv, lb = (
        {**later[n], "median_change": later[n]["median_to"] - later[n]["median_from"]}
        for n in ("vanilla", "bn")
    )
    late = _more_stable(lb, lv)
    if whole and late:
        out[-1] += (
            f"; and the BN net's sigmoid input is the more stable of the two, over the whole "
            f"run and {from_step}."
        )
    elif whole:
        out[-1] += (
            f". The BN net's sigmoid input is the more stable over the whole run, but not "
            f"{from_step}: the plain net's drift happens mostly early in training."
        )
    elif late:
        out[-1] += (
            f". The BN net's sigmoid input is not clearly more stable over the whole run, "
            f"only {from_step}."
        )
    else:
        out[-1] += (
            f"; but the BN net's sigmoid input is not clearly more stable here, neither over "
            f"the whole run nor {from_step}."
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
