"""One training step of the paper's networks in tinygrad_bn and its peers, side by side.

    python benchmarks/peers.py [--blocks 7] [--calls 50] [--only fig1] [--skip torch.compile]

Cases (batch 60, as the experiments): the Figure 1 MLP (784-100-100-100-10 sigmoid,
cross-entropy, SGD lr 1.0) without and with BatchNorm1d, and the claims conv net
([conv3x3-(BN)-ReLU-maxpool2] x 2 with 8 and 16 channels, linear; SGD lr 0.002 momentum 0.9)
without and with BatchNorm2d. Implementations: tinygrad_bn eager and with tg.jit, PyTorch
eager and torch.compile, JAX jit of the whole step, and a hand-written NumPy MLP (Figure 1
only). PyTorch and JAX are optional: a missing one is skipped with a note.

Everything runs on 1 thread (our kernels, NumPy's BLAS through threadpoolctl, torch, XLA).
Each implementation is timed in blocks of --calls steps after a warm-up; the blocks of all
implementations alternate --blocks times and the table shows the median block. "first call"
is the time of the first step (recording, tracing or compiling included). Ratios are the
other's time over tinygrad_bn jit's (> 1: ours is faster). For Figure 1 "FLOP floor" is the
step's 26.4 MFLOP of matrix products at the rate NumPy's BLAS reaches on 1024^3 in the same
blocks, and the last line says how far tg jit is from it (issue 14's moonshot: 1.6x).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

BATCH = 60
IMPLS = ("tg eager", "tg jit", "torch eager", "torch.compile", "jax jit", "numpy")


def _batches(conv, n=4):
    rng = np.random.default_rng(0)
    shape = (BATCH, 1, 28, 28) if conv else (BATCH, 784)
    return [(rng.random(shape, dtype=np.float32), rng.integers(0, 10, BATCH)) for _ in range(n)]


# ---------------------------------------------------------------- tinygrad_bn


def _tg_step(case, compiled):
    import tinygrad_bn as tg
    import tinygrad_bn.functional as F
    from tinygrad_bn import optim
    from tinygrad_bn.experiments import models

    conv, bn = case
    rng = np.random.default_rng(0)
    if conv:
        model = models.claims_convnet(bn, "relu", 0.0, rng)
        opt = optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    else:
        model = models.fig1_mlp(bn, 0.01, rng)
        opt = optim.SGD(model.parameters(), lr=1.0)

    def step(x, y):
        loss = F.cross_entropy(model(tg.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return tg.jit(step) if compiled else step


# ---------------------------------------------------------------- PyTorch


def _torch_step(case, compiled):
    import torch

    conv, bn = case
    nn = torch.nn
    torch.manual_seed(0)
    if conv:
        layers, c_in = [], 1
        for c_out in (8, 16):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn))
            layers += ([nn.BatchNorm2d(c_out)] if bn else []) + [nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    else:
        layers, fan_in = [], 784
        for _ in range(3):
            layers.append(nn.Linear(fan_in, 100, bias=not bn))
            layers += ([nn.BatchNorm1d(100)] if bn else []) + [nn.Sigmoid()]
            fan_in = 100
        model = nn.Sequential(*layers, nn.Linear(100, 10))
        for p in model.parameters():
            nn.init.normal_(p, 0.0, 0.01)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def step(x, y):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    fn = torch.compile(step) if compiled else step
    return lambda x, y: fn(torch.from_numpy(x), torch.from_numpy(y))


# ---------------------------------------------------------------- JAX


def _jax_step(case):
    import jax
    import jax.numpy as jnp

    conv, bn = case
    key = jax.random.PRNGKey(0)
    params, stats = {}, {}

    def normal(shape, std):
        nonlocal key
        key, sub = jax.random.split(key)
        return std * jax.random.normal(sub, shape, jnp.float32)

    def batch_norm(h, name, axes, p, s):
        mean, var = h.mean(axes), h.var(axes)
        m = h.size // h.shape[1]
        shape = (1, -1) + (1,) * (h.ndim - 2)
        y = (h - mean.reshape(shape)) / jnp.sqrt(var.reshape(shape) + 1e-5)
        new = {
            name + "m": 0.9 * s[name + "m"] + 0.1 * mean,
            name + "v": 0.9 * s[name + "v"] + 0.1 * var * m / (m - 1),
        }
        return y * p[name + "g"].reshape(shape) + p[name + "b"].reshape(shape), new

    if conv:
        c_in = 1
        for i, c_out in enumerate((8, 16)):
            params[f"w{i}"] = normal((c_out, c_in, 3, 3), (2.0 / (c_in * 9)) ** 0.5)
            if bn:
                params[f"bn{i}g"], params[f"bn{i}b"] = jnp.ones(c_out), jnp.zeros(c_out)
                stats[f"bn{i}m"], stats[f"bn{i}v"] = jnp.zeros(c_out), jnp.ones(c_out)
            else:
                params[f"c{i}"] = jnp.zeros(c_out)
            c_in = c_out
        params["wl"], params["bl"] = normal((784, 10), (2.0 / 784) ** 0.5), jnp.zeros(10)
    else:
        sizes = (784, 100, 100, 100, 10)
        for i in range(4):
            params[f"w{i}"] = normal((sizes[i], sizes[i + 1]), 0.01)
            params[f"b{i}"] = jnp.zeros(sizes[i + 1])
            if bn and i < 3:
                del params[f"b{i}"]
                params[f"bn{i}g"], params[f"bn{i}b"] = jnp.ones(100), jnp.zeros(100)
                stats[f"bn{i}m"], stats[f"bn{i}v"] = jnp.zeros(100), jnp.ones(100)

    def loss_fn(p, s, x, y):
        h, new = x, {}
        if conv:
            for i in range(2):
                h = jax.lax.conv_general_dilated(h, p[f"w{i}"], (1, 1), ((1, 1), (1, 1)))
                if bn:
                    h, upd = batch_norm(h, f"bn{i}", (0, 2, 3), p, s)
                    new.update(upd)
                else:
                    h = h + p[f"c{i}"].reshape(1, -1, 1, 1)
                h = jax.nn.relu(h)
                h = jax.lax.reduce_window(
                    h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"
                )
            logits = h.reshape(h.shape[0], -1) @ p["wl"] + p["bl"]
        else:
            for i in range(3):
                h = h @ p[f"w{i}"]
                if bn:
                    h, upd = batch_norm(h, f"bn{i}", (0,), p, s)
                    new.update(upd)
                else:
                    h = h + p[f"b{i}"]
                h = jax.nn.sigmoid(h)
            logits = h @ p["w3"] + p["b3"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(logp[jnp.arange(y.shape[0]), y]), new

    lr, mom = (0.002, 0.9) if conv else (1.0, 0.0)
    bufs = jax.tree_util.tree_map(jnp.zeros_like, params)

    @jax.jit
    def step(p, s, b, x, y):
        (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        b = jax.tree_util.tree_map(lambda b_, g_: mom * b_ + g_, b, g) if mom else g
        p = jax.tree_util.tree_map(lambda p_, b_: p_ - lr * b_, p, b)
        return p, new, b, loss

    state = [params, stats, bufs]

    def run(x, y):
        state[0], state[1], state[2], loss = step(*state, x, y)
        return loss.block_until_ready()

    return run


# ---------------------------------------------------------------- NumPy by hand


def _numpy_step(case):
    """Figure 1's MLP with backpropagation written out in NumPy (float32, SGD lr 1.0)."""
    conv, bn = case
    if conv:
        return None
    rng = np.random.default_rng(0)
    sizes = (784, 100, 100, 100, 10)
    W = [
        (0.01 * rng.standard_normal((sizes[i + 1], sizes[i]))).astype(np.float32) for i in range(4)
    ]
    b = [np.zeros(sizes[i + 1], np.float32) for i in range(4)]
    gamma = [np.ones(100, np.float32) for _ in range(3)]
    beta = [np.zeros(100, np.float32) for _ in range(3)]
    rmean = [np.zeros(100, np.float32) for _ in range(3)]
    rvar = [np.ones(100, np.float32) for _ in range(3)]
    lr = np.float32(1.0)

    def step(x, y):
        acts, cache = [x], []
        h = x
        for i in range(3):
            z = h @ W[i].T
            if bn:
                mean, var = z.mean(0), z.var(0)
                inv = 1.0 / np.sqrt(var + 1e-5)
                xhat = (z - mean) * inv
                rmean[i] *= 0.9
                rmean[i] += 0.1 * mean
                rvar[i] *= 0.9
                rvar[i] += (0.1 * BATCH / (BATCH - 1)) * var
                cache.append((xhat, inv))
                z = xhat * gamma[i] + beta[i]
            else:
                z += b[i]
            h = 1.0 / (1.0 + np.exp(-z))
            acts.append(h)
        logits = h @ W[3].T + b[3]
        shifted = logits - logits.max(1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss = -logp[np.arange(BATCH), y].mean()
        d = np.exp(logp)
        d[np.arange(BATCH), y] -= 1
        d /= BATCH
        for i in range(3, -1, -1):
            gW, gb = d.T @ acts[i], d.sum(0)
            if i:
                dh = d @ W[i]
                dz = dh * acts[i] * (1 - acts[i])
                if bn:
                    xhat, inv = cache[i - 1]
                    gg, gbeta = (dz * xhat).sum(0), dz.sum(0)
                    dxhat = dz * gamma[i - 1]
                    d = inv * (dxhat - dxhat.mean(0) - xhat * (dxhat * xhat).mean(0))
                    gamma[i - 1] -= lr * gg
                    beta[i - 1] -= lr * gbeta
                else:
                    d = dz
            W[i] -= lr * gW
            if not bn or i == 3:
                b[i] -= lr * gb
        return loss

    return step


# ---------------------------------------------------------------- timing


def _available():
    have = {"tg eager": True, "tg jit": True, "numpy": True}
    notes = []
    try:
        import torch

        torch.set_num_threads(1)
        have["torch eager"] = have["torch.compile"] = True
    except ImportError:
        notes.append("PyTorch not installed (pip install torch): its columns are skipped")
    try:
        import jax  # noqa: F401

        have["jax jit"] = True
    except ImportError:
        notes.append('JAX not installed (pip install "jax[cpu]"): its column is skipped')
    return have, notes


def _build(impl, case):
    if impl == "tg eager":
        return _tg_step(case, False)
    if impl == "tg jit":
        return _tg_step(case, True)
    if impl == "torch eager":
        return _torch_step(case, False)
    if impl == "torch.compile":
        return _torch_step(case, True)
    if impl == "jax jit":
        return _jax_step(case)
    return _numpy_step(case)


def mlp_step_flops(sizes=(784, 100, 100, 100, 10), batch=BATCH):
    """Multiply-add FLOPs (2 per multiply-add) of one Figure 1 training step's matrix products:
    every layer's forward and weight gradient, and the input gradient of all but the first
    (the data needs none). Bias, activations, BatchNorm and the loss are left out: O(B*n)."""
    flops = 0
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        flops += 2 * batch * n_in * n_out * (2 if i == 0 else 3)
    return flops


def _blas_1024(rng=np.random.default_rng(1)):
    """One 1024^3 float32 product through NumPy's BLAS: the rate the FLOP floor is taken at."""
    a, b = (rng.random((1024, 1024), dtype=np.float32) for _ in range(2))
    return lambda: a @ b


def measure(case, impls, blocks, calls):
    """{impl: (first call s, median s per step)} for one case, blocks interleaved. For the
    MLP cases "FLOP floor" is the step's FLOPs at the rate NumPy's BLAS reaches on 1024^3 in
    the same blocks (3 products per block)."""
    data = _batches(case[0])
    steps, first, times = {}, {}, {}
    for impl in impls:
        try:
            fn = _build(impl, case)
        except Exception as e:  # a peer that fails to build is reported, not fatal
            print(f"  {impl}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        if fn is None:
            continue
        t0 = time.perf_counter()
        fn(*data[0])
        first[impl] = time.perf_counter() - t0
        for x, y in data * 3:  # warm-up: every batch, past any second-call specialisation
            fn(x, y)
        steps[impl], times[impl] = fn, []
    floor = [] if not case[0] else None
    big = _blas_1024()
    for _ in range(blocks):
        for impl, fn in steps.items():
            t0 = time.perf_counter()
            for i in range(calls):
                fn(*data[i % len(data)])
            times[impl].append((time.perf_counter() - t0) / calls)
        if floor is not None:
            t0 = time.perf_counter()
            for _ in range(3):
                big()
            rate = 3 * 2 * 1024**3 / (time.perf_counter() - t0)
            floor.append(mlp_step_flops() / rate)
    res = {impl: (first[impl], statistics.median(times[impl])) for impl in steps}
    if floor:
        res["FLOP floor"] = (0.0, statistics.median(floor))
    return res


CASES = {
    "fig1": (False, False),
    "fig1 +BN": (False, True),
    "conv": (True, False),
    "conv +BN": (True, True),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=7, help="interleaved blocks (default 7)")
    p.add_argument("--calls", type=int, default=50, help="steps per block (default 50)")
    p.add_argument("--only", default="", help="run only cases whose name contains this")
    p.add_argument("--skip", action="append", default=[], choices=IMPLS, help="leave one out")
    args = p.parse_args(argv)

    from tinygrad_bn import bench, kernels
    from tinygrad_bn.environment import cpu_model

    kernels.set_num_threads(1)
    have, notes = _available()
    impls = [i for i in IMPLS if have.get(i) and i not in args.skip]
    print(
        f"peers.py | {cpu_model()} | 1 thread | load average {os.getloadavg()[0]:.1f} | "
        f"malloc {kernels.info()['malloc']}"
    )
    versions = [f"numpy {np.__version__}"]
    for mod in ("torch", "jax"):
        if mod in sys.modules:
            versions.append(f"{mod} {sys.modules[mod].__version__}")
    print(" | ".join(versions) + f" | {args.blocks} blocks x {args.calls} steps, medians")
    for note in notes:
        print("note: " + note)
    if not bench._has_threadpoolctl():
        print("note: threadpoolctl not installed: NumPy's BLAS keeps its own thread count")
    header = (
        f"{'case':<10} {'implementation':<14} {'ms/step':>9} {'vs tg jit':>10} {'first call':>11}"
    )
    print(header + "\n" + "-" * len(header))
    for name, case in CASES.items():
        if args.only not in name:
            continue
        with bench._blas_threads(1):  # NumPy's BLAS at 1 thread too (with threadpoolctl)
            res = measure(case, impls, args.blocks, args.calls)
        ref = res.get("tg jit", (None, None))[1]
        for impl, (first, median) in res.items():
            ratio = f"{median / ref:.2f}x" if ref else "n/a"
            when = f"{first:10.3f}s" if impl != "FLOP floor" else f"{'':>11}"
            print(f"{name:<10} {impl:<14} {median * 1e3:9.3f} {ratio:>10} {when}")
        if ref and "FLOP floor" in res:
            floor = res["FLOP floor"][1]
            print(
                f"{name:<10} tg jit is {ref / floor:.2f}x its FLOP floor "
                f"({mlp_step_flops() / 1e6:.1f} MFLOP at {mlp_step_flops() / floor / 1e9:.0f} "
                "GFLOP/s, NumPy's BLAS on 1024^3)"
            )
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
