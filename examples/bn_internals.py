"""What Batch Normalization computes, step by step, and where its running estimates go.

Part 1 (Algorithm 1 of Ioffe & Szegedy 2015): one mini-batch of m MNIST images goes
through a fixed random Linear(784, 3); for its 3 features we print the batch mean, the
*biased* batch variance (divide by m), the normalized values and the scaled and shifted
output, and check that nn.BatchNorm1d computes the same, forward and backward (the
backward against the paper's Section 3 formulas, written out in NumPy).

Part 2 (Algorithm 2): the running estimates. Over many training mini-batches we compare
running_mean / running_var with momentum=0.1 (an exponential moving average, PyTorch's
default) and with momentum=None (the cumulative average, the paper's literal form) against
the true statistics of the whole training set, and show why the running variance uses the
*unbiased* batch variance m/(m-1) var_B. A plot is written to --out.

    python examples/bn_internals.py          # writes runs/examples/bn_internals.png
    python examples/bn_internals.py --batches 200 --out /tmp/bn.png
"""

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

try:
    import tinygrad_bn as tg
except ImportError:  # run from a source checkout without `pip install`: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinygrad_bn as tg
from tinygrad_bn import nn  # noqa: E402
from tinygrad_bn.data import batches, flatten, load_mnist, to_float  # noqa: E402

np.set_printoptions(precision=4, suppress=True)


def features(images, seed):
    """(N, 28, 28) uint8 -> (N, 3) float64: the pre-activations of 3 random hidden units."""
    w = np.random.default_rng(seed).normal(0.0, 0.1, size=(784, 3)).astype(np.float32)
    return (flatten(to_float(images)) @ w).astype(np.float64)  # float32 pixels: half the memory


def algorithm1(x, gamma, beta, eps):
    """Print Algorithm 1 on one (m, C) mini-batch; check BatchNorm1d forward and backward."""
    m = len(x)
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)  # biased: divide by m, not m - 1
    xhat = (x - mu) / np.sqrt(var + eps)
    y = gamma * xhat + beta
    print(f"mini-batch x: m = {m} examples, {x.shape[1]} features\n{x}")
    print(f"mu_B  = (1/m) sum x_i              = {mu}")
    print(f"var_B = (1/m) sum (x_i - mu_B)^2   = {var}")
    print(f"xhat  = (x - mu_B) / sqrt(var_B + eps)   (each column: mean 0, variance ~1)\n{xhat}")
    print(f"y     = gamma * xhat + beta   with gamma = {gamma}, beta = {beta}\n{y}")

    bn = nn.BatchNorm1d(x.shape[1], eps=eps, dtype=np.float64)
    bn.weight.data[:], bn.bias.data[:] = gamma, beta
    xt = tg.Tensor(x, requires_grad=True)
    out = bn(xt)
    dy = np.random.default_rng(0).standard_normal(x.shape)  # some upstream gradient dl/dy
    out.backward(dy)

    # Section 3: the gradients, as the paper writes them
    dxhat = dy * gamma
    dvar = np.sum(dxhat * (x - mu), axis=0) * -0.5 * (var + eps) ** -1.5
    dmu = np.sum(-dxhat / np.sqrt(var + eps), axis=0) + dvar * np.sum(-2 * (x - mu), axis=0) / m
    dx = dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m + dmu / m
    for name, got, want in (
        ("y", out.numpy(), y),
        ("dl/dx", xt.grad.numpy(), dx),
        ("dl/dgamma", bn.weight.grad.numpy(), np.sum(dy * xhat, axis=0)),
        ("dl/dbeta", bn.bias.grad.numpy(), dy.sum(axis=0)),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)
    print(
        "nn.BatchNorm1d gives the same y, and the same dl/dx, dl/dgamma, dl/dbeta as the "
        "paper's backward formulas"
    )


def algorithm2(x_all, batch_size, n_batches, seed):
    """Train-mode passes over n_batches mini-batches; the running estimates after each."""
    ema = nn.BatchNorm1d(x_all.shape[1], momentum=0.1, dtype=np.float64)
    cumulative = nn.BatchNorm1d(x_all.shape[1], momentum=None, dtype=np.float64)
    history = {"ema": [], "cumulative": []}
    biased = []  # the batch variances var_B (divide by m), to show what they would give
    rng = np.random.default_rng(seed)
    with tg.no_grad():  # only the running estimates are wanted here
        while len(biased) < n_batches:
            for xb, _ in batches(x_all, np.zeros(len(x_all)), batch_size, seed=rng, drop_last=True):
                for name, bn in (("ema", ema), ("cumulative", cumulative)):
                    bn(tg.Tensor(xb))
                    history[name].append(
                        (bn.running_mean.numpy().copy(), bn.running_var.numpy().copy())
                    )
                biased.append(xb.var(axis=0))
                if len(biased) == n_batches:
                    break
    return history, np.array(biased)


def plot(history, biased, true_mean, true_var, batch_size, out):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = np.arange(1, len(history["ema"]) + 1)
    for ax, i, title, true in (
        (axes[0], 0, "running_mean", true_mean[0]),
        (axes[1], 1, "running_var", true_var[0]),
    ):
        ax.plot(steps, [h[i][0] for h in history["ema"]], label="momentum=0.1 (EMA)", lw=1)
        ax.plot(
            steps,
            [h[i][0] for h in history["cumulative"]],
            label="momentum=None (cumulative)",
            lw=1.5,
        )
        if i == 1:  # what averaging the biased var_B (divide by m) would converge to
            ax.plot(
                steps,
                np.cumsum(biased[:, 0]) / steps,
                lw=1,
                ls=":",
                label="cumulative average of biased var_B",
            )
        ax.axhline(true, color="k", ls="--", lw=1, label="population (all 60,000 images)")
        ax.set_title(f"{title} of feature 0, mini-batches of {batch_size}")
        ax.set_xlabel("training mini-batches")
        ax.set_xscale("log")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--batch-size", type=int, default=8, help="mini-batch size m")
    p.add_argument("--batches", type=int, default=1000, help="mini-batches for Algorithm 2")
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        default=os.path.join("runs", "examples", "bn_internals.png"),
        help="where to write the plot; its folder is created (default: %(default)s, beside "
        "the outputs of `tinygrad-bn fig1`, which git ignores)",
    )
    p.add_argument("--data-dir", default=None, help="MNIST directory (default: load_mnist's)")
    args = p.parse_args(argv)
    if args.batch_size < 2 or args.batches < 1 or not args.eps > 0:
        p.error("need --batch-size >= 2, --batches >= 1 and --eps > 0")

    try:
        (x_train, _), _ = load_mnist(args.data_dir)
    except FileNotFoundError as e:  # no data and no download: say where to put it
        sys.exit(f"error: {e}")
    x_all = features(x_train, args.seed)

    print("== Algorithm 1: one training mini-batch ==")
    algorithm1(
        x_all[: args.batch_size], np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0]), args.eps
    )

    print(
        f"\n== Algorithm 2: running estimates over {args.batches} mini-batches "
        f"of {args.batch_size} =="
    )
    history, biased = algorithm2(x_all, args.batch_size, args.batches, args.seed)
    true_mean, true_var = x_all.mean(axis=0), x_all.var(axis=0)
    print(f"population mean          {true_mean}")
    for name in ("ema", "cumulative"):
        print(f"running_mean {name:>10}   {history[name][-1][0]}")
    print(f"population variance      {true_var}")
    for name in ("ema", "cumulative"):
        print(f"running_var  {name:>10}   {history[name][-1][1]}")
    m = args.batch_size
    print(
        f"average of biased var_B  {biased.mean(axis=0)}   (too small by (m-1)/m = "
        f"{(m - 1) / m:.3f}: why running_var uses m/(m-1) var_B)"
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(history, biased, true_mean, true_var, args.batch_size, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
