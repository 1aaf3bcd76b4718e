"""Figures of the experiments (matplotlib, Agg backend: no display needed)."""

import numpy as np

COLORS = {"vanilla": "tab:blue", "bn": "tab:red"}
LABELS = {"vanilla": "Without BN", "bn": "With BN"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


# (b) and (c): the three percentiles in one colour per network, told apart by line style
PERCENTILES = (
    ("p15", ":", "15th percentile"),
    ("p50", "-", "median"),
    ("p85", "--", "85th percentile"),
)


def fig1(results, path):
    """Paper Figure 1: (a) test accuracy vs steps, (b, c) the probed input's 15/50/85th percentiles.

    With several seeds, (a) shows the mean and the min-max band; (b, c) show the first seed.
    """
    plt = _pyplot()
    fig = fig1_figure(results)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fig1_figure(results):
    """The matplotlib Figure that fig1 saves."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    runs = results["runs"]
    for network in ("vanilla", "bn"):
        mine = [r for r in runs if r["network"] == network]
        if not mine:
            continue
        steps = np.asarray(mine[0]["curve"]["step"])
        accs = np.array([r["curve"]["test_acc"] for r in mine], dtype=np.float64)
        axes[0].plot(steps, accs.mean(axis=0), color=COLORS[network], label=LABELS[network])
        if len(mine) > 1:
            axes[0].fill_between(
                steps,
                accs.min(axis=0),
                accs.max(axis=0),
                color=COLORS[network],
                alpha=0.2,
                linewidth=0,
            )
    axes[0].set(title="(a) test accuracy", xlabel="training steps", ylabel="accuracy")
    # the paper's scale (0.7 to 1) when both nets get there; a short run shows everything
    finals = [r["curve"]["test_acc"][-1] for r in runs]
    axes[0].set_ylim(0.7 if min(finals) > 0.8 else 0.0, 1.0)
    axes[0].legend(loc="lower right")
    axes[0].grid(alpha=0.3)
    unit = results["config"].get("unit", 0)
    for ax, network, name in (
        (axes[1], "vanilla", "(b) without BN"),
        (axes[2], "bn", "(c) with BN"),
    ):
        mine = [r for r in runs if r["network"] == network]
        if not mine:
            ax.set_visible(False)
            continue
        c = mine[0]["curve"]
        for key, style, label in PERCENTILES:
            ax.plot(c["step"], c[key], style, color=COLORS[network], label=label)
        ax.set(title=f"{name}: input of sigmoid unit {unit}", xlabel="training steps")
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    # the paper draws (b) and (c) on one scale so the drift is comparable
    ys = [
        v
        for r in runs
        if r["network"] in ("vanilla", "bn")
        for k in ("p15", "p85")
        for v in r["curve"][k]
        if v is not None and np.isfinite(v)
    ]
    if ys:
        pad = 0.05 * (max(ys) - min(ys) + 1e-9)
        for ax in axes[1:]:
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
    fig.tight_layout()
    return fig


def claims(results, path):
    """Test accuracy vs steps for every variant: full scale (left) and near the target (right)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    target = results["summary"].get("target_acc")
    for ax in axes:
        for r in results["runs"]:
            c = r["curve"]
            accs = [np.nan if a is None else a for a in c["test_acc"]]
            label = r["variant"] + (
                f" (seed {r['seed']})" if results["config"]["seeds"] > 1 else ""
            )
            ax.plot(c["step"], accs, label=label)
        if target is not None:
            ax.axhline(
                target, color="gray", linestyle=":", label=f"Baseline best {100 * target:.2f}%"
            )
        ax.set(xlabel="training steps", ylabel="test accuracy")
        ax.grid(alpha=0.3)
    axes[0].set(title="Section 4.2 claims: test accuracy", ylim=(0.0, 1.0))
    low = 0.9 if target is None else max(0.0, target - 0.05)
    axes[1].set(title="near the Baseline's best", ylim=(low, 1.0))
    axes[0].legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
