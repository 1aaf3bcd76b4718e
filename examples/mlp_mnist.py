"""The paper's MNIST MLP (Section 4.1), with and without Batch Normalization.

A 784-100-100-100-10 sigmoid network, weights drawn from N(0, 0.01^2), biases zero, trained
with plain SGD on mini-batches of 60. The BN variant puts a BatchNorm1d between each hidden
Linear (which then has no bias: beta takes its role, Section 3.2) and its sigmoid. Both
networks start from the same weights, so BN is the only difference. Prints test accuracy.

    python examples/mlp_mnist.py       # 2000 steps per network, one kernel thread
    python examples/mlp_mnist.py --steps 500 --lr 0.5

MNIST is read by tinygrad_bn.data.load_mnist(): --data-dir, else $TINYGRAD_BN_DATA, else the
copy bundled with tinygrad_bn.
The full experiment (50,000 steps, Figure 1's curves) is `tinygrad-bn fig1`.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import tinygrad_bn as tg
except ImportError:  # run from a source checkout without `pip install`: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinygrad_bn as tg
import tinygrad_bn.functional as F
from tinygrad_bn import nn, optim
from tinygrad_bn.data import batches, flatten, load_mnist, to_float


def make_mlp(batch_norm, seed):
    """784-100-100-100-10 sigmoid MLP; with BN before each hidden sigmoid."""
    rng = np.random.default_rng(seed)  # same seed -> same weights for both variants
    layers, fan_in = [], 784
    for width in (100, 100, 100):
        layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.Sigmoid())
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    model = nn.Sequential(*layers)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.01, generator=rng)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


def accuracy(model, x, y):
    model.eval()  # BN normalizes with its running estimates (Algorithm 2)
    with tg.no_grad():
        logits = model(tg.Tensor(x))
    model.train()
    return float((logits.numpy().argmax(axis=1) == y).mean())


def train(model, x, y, steps, lr, batch_size, seed):
    opt = optim.SGD(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)  # a Generator: each epoch gets a new shuffle
    step = 0
    while step < steps:
        for xb, yb in batches(x, y, batch_size, seed=rng, drop_last=True):
            loss = F.cross_entropy(model(tg.Tensor(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return float(loss.item())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--steps", type=int, default=2000, help="SGD steps per network")
    p.add_argument("--lr", type=float, default=1.0, help="learning rate (both networks)")
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for the compiled kernels (default: 1, as the experiments: these kernels "
        "are small, and a second thread pays only on an otherwise idle machine)",
    )
    p.add_argument("--data-dir", default=None, help="MNIST directory (default: load_mnist's)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 2 or args.threads < 1:
        p.error(
            "--steps and --threads must be >= 1, --batch-size >= 2 (BN needs 2 values per feature)"
        )
    tg.kernels.set_num_threads(args.threads)

    try:
        (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    except FileNotFoundError as e:  # no data and no download: say where to put it
        sys.exit(f"error: {e}")
    x_train, x_test = flatten(to_float(x_train)), flatten(to_float(x_test))

    for name, batch_norm in (("without BN", False), ("with BN", True)):
        model = make_mlp(batch_norm, args.seed)
        start = time.perf_counter()
        loss = train(model, x_train, y_train, args.steps, args.lr, args.batch_size, args.seed)
        seconds = time.perf_counter() - start
        acc = accuracy(model, x_test, y_test)
        print(
            f"{name:>10}: test accuracy {acc:.4f} after {args.steps} steps "
            f"(last batch loss {loss:.3f}, {seconds:.1f} s)"
        )


if __name__ == "__main__":
    main()
