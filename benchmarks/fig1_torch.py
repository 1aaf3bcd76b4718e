"""Figure 1's experiment in tinygrad_bn and in plain PyTorch (CPU, eager), timed side by side.

    python benchmarks/fig1_torch.py [--steps 2000] [--eval-every 500] [--repeats 3] [--threads N]

Both sides train both networks (without and with BN) for --steps steps of SGD on mini-batches
of 60 with the same data order, evaluating test accuracy and the probed unit's percentiles on
all 10,000 test images every --eval-every steps, as `tinygrad-bn fig1` does. The data is
converted to float32 once, before timing. Each side runs in its own block (OpenBLAS/OpenMP
threads spin after a call and would slow the other if interleaved call by call); the blocks
alternate --repeats times and we report medians and the ratio.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinygrad_bn import kernels, optim  # noqa: E402
from tinygrad_bn.experiments import common, fig1, models, runner  # noqa: E402
from tinygrad_bn.tensor import manual_seed  # noqa: E402


def ours(data, steps, eval_every, lr, init_std, tmp):
    (x_train, y_train), (x_test, y_test) = data
    eval_fn = fig1._make_eval(x_test, y_test, unit=0)
    t0 = time.perf_counter()
    accs = {}
    for network in fig1.NETWORKS:
        manual_seed(0)
        model = models.fig1_mlp(network == "bn", init_std, np.random.default_rng(0))
        opt = optim.SGD(model.parameters(), lr=lr)
        out = runner.train_run(
            model=model,
            optimizer=opt,
            loss_fn=fig1._loss,
            train_x=x_train,
            train_y=y_train,
            eval_fn=eval_fn,
            steps=steps,
            batch_size=60,
            eval_every=eval_every,
            seed=0,
            checkpoint_path=os.path.join(tmp, f"{network}.ckpt"),
        )
        accs[network] = out["curve"]["test_acc"][-1]
    return time.perf_counter() - t0, accs


def torch_version(data, steps, eval_every, lr, init_std):
    import torch

    (x_train, y_train), (x_test, y_test) = data
    xtr, ytr = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xte, yte = torch.from_numpy(x_test), torch.from_numpy(y_test)

    def mlp(bn, generator):
        layers, fan_in = [], 784
        for _ in range(3):
            lin = torch.nn.Linear(fan_in, 100, bias=not bn)
            torch.nn.init.normal_(lin.weight, 0.0, init_std, generator=generator)
            if not bn:
                torch.nn.init.zeros_(lin.bias)
            layers += [lin] + ([torch.nn.BatchNorm1d(100)] if bn else []) + [torch.nn.Sigmoid()]
            fan_in = 100
        lin = torch.nn.Linear(100, 10)
        torch.nn.init.normal_(lin.weight, 0.0, init_std, generator=generator)
        torch.nn.init.zeros_(lin.bias)
        return torch.nn.Sequential(*layers, lin)

    def evaluate(model):
        model.eval()
        with torch.no_grad():
            h = xte
            for layer in list(model)[:-2]:
                h = layer(h)
            probed = h[:, 0].double().numpy()
            logits = model[-1](model[-2](h))
            acc = (logits.argmax(1) == yte).double().mean().item()
        np.percentile(probed, (15, 50, 85))
        model.train()
        return acc

    t0 = time.perf_counter()
    accs = {}
    n_batches = len(x_train) // 60
    for network in fig1.NETWORKS:
        model = mlp(network == "bn", torch.Generator().manual_seed(0))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        evaluate(model)
        for step in range(steps):
            e, b = divmod(step, n_batches)
            if b == 0:
                order = torch.from_numpy(runner.epoch_order(0, e, len(x_train)))
            idx = order[b * 60 : (b + 1) * 60]
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                acc = evaluate(model)
        accs[network] = acc
    return time.perf_counter() - t0, accs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="steps per network (default 2000)")
    p.add_argument("--eval-every", type=int, default=500, help="default 500")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per side (default 3)")
    p.add_argument("--threads", type=int, default=None, help="threads for both (default: all)")
    p.add_argument("--lr", type=float, default=fig1.DEFAULTS["lr_vanilla"])
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("fig1_torch: PyTorch is not installed (pip install torch); nothing to compare")
        return 1
    threads = args.threads or kernels.get_num_threads()
    kernels.set_num_threads(threads)
    torch.set_num_threads(threads)
    data = common.load_data(args.data_dir, download=True, conv=False)
    print(
        f"fig1, both networks, {args.steps} steps each, eval every {args.eval_every} on "
        f"10,000 test images; {threads} threads; torch {torch.__version__}, "
        f"{common.environment(threads)['cpu']}"
    )
    t_ours, t_torch = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            t, acc_ours = ours(data, args.steps, args.eval_every, args.lr, 0.01, tmp)
            t_ours.append(t)
            t, acc_torch = torch_version(data, args.steps, args.eval_every, args.lr, 0.01)
            t_torch.append(t)
    mo, mt = float(np.median(t_ours)), float(np.median(t_torch))
    print(f"{'':12}{'median s':>10}{'steps/s':>10}  final acc (vanilla, bn)   all runs (s)")
    for name, m, ts, acc in (
        ("tinygrad_bn", mo, t_ours, acc_ours),
        ("torch", mt, t_torch, acc_torch),
    ):
        print(
            f"{name:12}{m:10.2f}{2 * args.steps / m:10.0f}  "
            f"{acc['vanilla']:.4f}, {acc['bn']:.4f}          "
            f"{', '.join(f'{t:.2f}' for t in ts)}"
        )
    print(f"ratio torch / tinygrad_bn = {mt / mo:.2f} (> 1: tinygrad_bn is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
