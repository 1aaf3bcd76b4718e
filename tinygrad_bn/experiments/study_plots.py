"""The study's figures, one PNG per question, drawn from study.json's summary and cells."""

import numpy as np

from .plots import _pyplot
from .study_report import NET, NORM_NAMES, _q3_name


def _annotate(ax, values, fmt, dark_below):
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                fmt(v),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v < dark_below else "black",
            )


def _grid_axes(ax, s, title):
    ax.set_xticks(range(len(s["lrs"])), [f"{v:g}" for v in s["lrs"]])
    ax.set_yticks(range(len(s["init_stds"])), [f"{v:g}" for v in s["init_stds"]])
    ax.set(title=title, xlabel="learning rate", ylabel="initial weight std")


def q1(study, path):
    """2 x 2 heatmaps: final accuracy and steps to the speed target, without and with BN."""
    plt = _pyplot()
    s = study["summary"]["q1"]
    steps = study["config"]["q1"]["steps"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for row, bn in enumerate((False, True)):
        v = s["nets"][NET[bn]]
        acc = np.array(v["final_acc_mean"], dtype=np.float64)
        im = axes[row, 0].imshow(acc, cmap="viridis", vmin=0.0, vmax=1.0, origin="lower")
        _annotate(axes[row, 0], 100 * acc, lambda x: f"{x:.0f}", 60)
        _grid_axes(axes[row, 0], s, f"final test accuracy, {NET[bn]} (%)")
        fig.colorbar(im, ax=axes[row, 0], fraction=0.046, label="accuracy")
        st = np.array(
            [[np.nan if x is None else x for x in r] for r in v["steps_to_target"]],
            dtype=np.float64,
        )
        cmap = plt.get_cmap("magma_r").with_extremes(bad="lightgray")
        im = axes[row, 1].imshow(
            np.ma.masked_invalid(st), cmap=cmap, vmin=0, vmax=steps, origin="lower"
        )
        _annotate(axes[row, 1], st, lambda x: f"{x:.0f}", -1)
        target = f"{100 * s['speed_target']:.0f}%"
        _grid_axes(axes[row, 1], s, f"steps to {target} test accuracy, {NET[bn]} (gray: never)")
        fig.colorbar(im, ax=axes[row, 1], fraction=0.046, label="steps")
    fig.suptitle("Question 1: learning rate x initialization (sigmoid MLP 3x100, MNIST)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def q2(study, path):
    """Accuracy and steps to the speed target against depth; saturated share per layer."""
    plt = _pyplot()
    s = study["summary"]["q2"]
    series = s["series"]
    fig = plt.figure(figsize=(13, 7.5))
    gs = fig.add_gridspec(2, max(2, len(series)))
    half = max(2, len(series)) // 2
    ax_acc, ax_steps = fig.add_subplot(gs[0, :half]), fig.add_subplot(gs[0, half:])
    styles = {NET[False]: "--", NET[True]: "-"}
    for name, rows in series.items():
        depths = [r["depth"] for r in rows]
        style = styles[NET[True]] if name.endswith(NET[True]) else styles[NET[False]]
        ax_acc.errorbar(
            depths,
            [r["final_acc"]["mean"] for r in rows],
            yerr=[r["final_acc"]["std"] or 0 for r in rows],
            linestyle=style,
            marker="o",
            capsize=3,
            label=name,
        )
        ax_steps.plot(
            depths,
            [np.nan if r["steps_to_target"] is None else r["steps_to_target"] for r in rows],
            linestyle=style,
            marker="o",
            label=name,
        )
    ax_acc.set(
        title="final test accuracy (mean ± std over seeds)",
        xlabel="hidden layers",
        ylabel="accuracy",
        ylim=(0, 1),
    )
    ax_steps.set(
        title=f"steps to {100 * s['speed_target']:.0f}% test accuracy (missing: not reached)",
        xlabel="hidden layers",
        ylabel="steps",
    )
    for ax in (ax_acc, ax_steps):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    depths = s["depths"]
    for ax in (ax_acc, ax_steps):
        ax.set_xticks(depths)
    # one colour scale for the four maps, up to the largest share measured (shares are small:
    # on a 0-1 scale every map would be black)
    top = max([v for rows in series.values() for r in rows for v in r["saturated_per_layer"]])
    top = max(top, 0.01)
    for k, (name, rows) in enumerate(series.items()):
        ax = fig.add_subplot(gs[1, k])
        grid = np.full((len(rows), max(depths)), np.nan)
        for i, r in enumerate(rows):
            grid[i, : len(r["saturated_per_layer"])] = r["saturated_per_layer"]
        cmap = plt.get_cmap("inferno").with_extremes(bad="white")
        im = ax.imshow(
            np.ma.masked_invalid(grid),
            cmap=cmap,
            vmin=0,
            vmax=top,
            aspect="auto",
            origin="lower",
            extent=(0.5, max(depths) + 0.5, -0.5, len(rows) - 0.5),
        )
        ax.set_yticks(range(len(rows)), [str(r["depth"]) for r in rows])
        ax.set(title=f"saturated share: {name}", xlabel="layer", ylabel="depth")
        ax.title.set_fontsize(9)
        fig.colorbar(im, ax=ax, fraction=0.05, label="saturated share")
    fig.suptitle("Question 2: depth with saturating nonlinearities")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def q3(study, path):
    """Train (solid) and test (dashed) accuracy over training, and the gap, per variant."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    cells = [c for c in study["cells"] if c["config"]["question"] == 3]
    names = list(study["summary"]["q3"]["variants"])
    colors = dict(zip(names, ("tab:blue", "tab:orange", "tab:red", "tab:green")))

    for name in names:
        mine = [c for c in cells if _q3_name(c["config"]["bn"], c["config"]["dropout"]) == name]
        steps = mine[0]["result"]["curve"]["step"]
        tr = np.mean([c["result"]["curve"]["train_acc"] for c in mine], axis=0)
        te = np.mean([c["result"]["curve"]["test_acc"] for c in mine], axis=0)
        axes[0].plot(steps, tr, "-", color=colors[name], label=f"{name}: train")
        axes[0].plot(steps, te, "--", color=colors[name], label=f"{name}: test")
        axes[1].plot(steps, tr - te, "-", color=colors[name], label=name)
    axes[0].set(
        title="accuracy (solid: training subset, dashed: test)",
        xlabel="training steps",
        ylabel="accuracy",
        ylim=(0.8, 1.0),
    )
    axes[1].set(title="train - test accuracy gap", xlabel="training steps", ylabel="gap")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle("Question 3: regularization (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def q4(study, path):
    """Final test accuracy against batch size per normalization (population: dotted)."""
    plt = _pyplot()
    s = study["summary"]["q4"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for norm, rows in s["norms"].items():
        sizes = [int(b) for b in rows]
        for mode, style in (("moving", "-"), ("population", ":")):
            if not all(mode in r for r in rows.values()):
                continue
            label = NORM_NAMES[norm] + (" (Algorithm 2 population)" if mode == "population" else "")
            ax.errorbar(
                sizes,
                [r[mode]["mean"] for r in rows.values()],
                yerr=[r[mode]["std"] or 0 for r in rows.values()],
                linestyle=style,
                marker="o",
                capsize=3,
                label=label,
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(s["batch_sizes"], [str(b) for b in s["batch_sizes"]])
    ax.set(
        title="Question 4: test accuracy vs mini-batch size (same examples seen)",
        xlabel="batch size",
        ylabel="test accuracy",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


PLOTS = {1: q1, 2: q2, 3: q3, 4: q4}
