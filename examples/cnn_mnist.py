"""A small conv-BN-ReLU network on MNIST, then BatchNorm folded away for inference.

Trains [Conv2d(no bias) - BatchNorm2d - ReLU - MaxPool2d] x 2 - Linear briefly, then builds
``nn.utils.fold_batchnorm(model)``: in eval mode BN is one fixed affine map per channel
(Algorithm 2), so it can be merged into the convolution before it. The example checks that
the folded and unfolded networks give the same eval outputs and prints how much faster the
folded one runs (median of repeated timings, both measured in this process), next to the
time of the BatchNorm layers alone: folding cannot save more than that.

    python examples/cnn_mnist.py                 # 300 steps, one kernel thread
    python examples/cnn_mnist.py --steps 50 --repeats 5
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
from tinygrad_bn.data import batches, load_mnist, to_float


def make_cnn(seed):
    """(N, 1, 28, 28) -> (N, 10); convolutions have no bias: BN's beta replaces it."""
    g = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False, generator=g),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8 x 14 x 14
        nn.Conv2d(8, 16, 3, padding=1, bias=False, generator=g),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 16 x 7 x 7
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10, generator=g),
    )


def median_seconds(fn, repeats):
    fn()  # warm-up: first-call costs (allocation, thread start) are not what we compare
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bn_seconds(model, x, repeats):
    """Median time of the BatchNorm2d layers alone, on their real inputs: what folding saves."""
    inputs = []
    for layer in model:
        if isinstance(layer, nn.BatchNorm2d):
            inputs.append((layer, x))
        x = layer(x)
    return sum(median_seconds(lambda bn=bn, a=a: bn(a), repeats) for bn, a in inputs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--steps", type=int, default=300, help="SGD steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--eval-images", type=int, default=1000, help="test images to evaluate")
    p.add_argument("--repeats", type=int, default=15, help="timed inference repeats")
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
    if (
        min(args.steps, args.eval_images, args.repeats) < 1
        or args.threads < 1
        or args.batch_size < 2
    ):
        p.error("--steps, --eval-images, --repeats, --threads must be >= 1 and --batch-size >= 2")
    tg.kernels.set_num_threads(args.threads)

    try:
        (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    except FileNotFoundError as e:  # no data and no download: say where to put it
        sys.exit(f"error: {e}")
    x_train = to_float(x_train)[:, None]  # (N, 1, 28, 28)
    x_test, y_test = to_float(x_test[: args.eval_images])[:, None], y_test[: args.eval_images]

    model = make_cnn(args.seed)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    rng = np.random.default_rng(args.seed)
    step = 0
    while step < args.steps:
        for xb, yb in batches(x_train, y_train, args.batch_size, seed=rng, drop_last=True):
            loss = F.cross_entropy(model(tg.Tensor(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == args.steps:
                break
    print(f"trained {args.steps} steps, last batch loss {loss.item():.3f}")

    model.eval()
    folded = nn.utils.fold_batchnorm(model)  # a new model; `model` keeps its BatchNorms
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    print(f"folded {n_bn - n_left} of {n_bn} BatchNorm2d layers into the convolutions")

    x = tg.Tensor(x_test)
    with tg.no_grad():
        out, out_folded = model(x).numpy(), folded(x).numpy()
        max_diff = float(np.max(np.abs(out - out_folded)))
        acc = float((out.argmax(1) == y_test).mean())
        acc_folded = float((out_folded.argmax(1) == y_test).mean())
        print(f"test accuracy: unfolded {acc:.4f}, folded {acc_folded:.4f} ({len(y_test)} images)")
        print(f"max |unfolded - folded| logit difference: {max_diff:.2e}")
        # float32 sums in another order: allow a few ulps of the logits' size
        if not np.allclose(out, out_folded, rtol=1e-4, atol=1e-4 * np.abs(out).max()):
            sys.exit("error: folded and unfolded outputs differ")
        t_unfolded = median_seconds(lambda: model(x), args.repeats)
        t_folded = median_seconds(lambda: folded(x), args.repeats)
        t_bn = bn_seconds(model, x, args.repeats)
    print(
        f"inference on {len(y_test)} images, median of {args.repeats}: "
        f"unfolded {t_unfolded * 1e3:.1f} ms, folded {t_folded * 1e3:.1f} ms, "
        f"speed-up {t_unfolded / t_folded:.2f}x"
    )
    print(
        f"the BatchNorm2d layers alone take {t_bn * 1e3:.1f} ms "
        f"({100 * t_bn / t_unfolded:.0f}% of unfolded inference): at most what folding saves"
    )


if __name__ == "__main__":
    main()
