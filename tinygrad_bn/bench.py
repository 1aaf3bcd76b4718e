"""Kernel benchmarks: our Cython kernels vs our NumPy reference vs PyTorch CPU, side by side.

    tinygrad-bn bench [--quick] [--threads N] [--filter SUBSTR] [--json PATH]
    python -m tinygrad_bn.bench ...        (same; benchmarks/run.py is a thin wrapper)

Every case builds its data once; each implementation then runs on that same data in its
own block: warm-up, then timed repeats, reporting the median. Blocks, not call-by-call
alternation: OpenBLAS, libgomp and torch's pool all busy-wait after a call, and on a
small machine interleaving them slows whichever runs next (see KERNELS.md).
Implementations: "ours" (tinygrad_bn.kernels, backend "cython"), "numpy" (the same
dispatch with backend "numpy": our reference) and "torch" (PyTorch CPU, when importable,
with torch.set_num_threads set to the same count). A ratio is other time / our time, so
> 1 means ours is faster. NumPy's BLAS fixes its thread count at import: for a fair
single-thread run use `OPENBLAS_NUM_THREADS=1 tinygrad-bn bench --threads 1`.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import numpy as np

from . import environment as _environment
from . import kernels
from ._argtypes import new_file, thread_count

IMPLS = ("ours", "numpy", "torch")


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---------------------------------------------------------------- timing


def time_block(fn, warmup, repeats, budget_s):
    """(median, fastest, calls): seconds per call of fn() over `warmup` untimed calls, then
    at least `repeats` timed calls, more while the block has used less than budget_s."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < budget_s and len(times) < 1000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), len(times)


class Case:
    """One benchmark: name, shape text, dtype, FLOPs per call (or None) and a setup that
    returns {impl: zero-argument callable} for the implementations available."""

    def __init__(self, name, shape, setup, flops=None, dtype="float32"):
        self.name, self.shape, self.setup, self.flops, self.dtype = name, shape, setup, flops, dtype


def _rng():
    return np.random.default_rng(0)


# which kernels backend each implementation's block runs under (set once per block, so
# the per-call cost of the context manager stays out of the timings)
BACKENDS = {"ours": "cython", "numpy": "numpy", "torch": None}


def _kernel_impls(fn, torch_fn):
    """ours/numpy both run fn (through the dispatch); torch_fn (or None) is torch's version."""
    impls = {"ours": fn, "numpy": fn}
    if torch_fn is not None:
        impls["torch"] = torch_fn
    return impls


# ---------------------------------------------------------------- matmul


def _matmul_case(name, m, k, n, transpose=None):
    """C = A @ B with A (m, k), B (k, n); transpose "a"/"b" makes that operand a
    transposed view of a contiguous array, as in the backward products dC @ B.T, A.T @ dC."""

    def setup():
        rng = _rng()
        a = rng.standard_normal((k, m) if transpose == "a" else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if transpose == "b" else (k, n)).astype(np.float32)
        a = a.T if transpose == "a" else a
        b = b.T if transpose == "b" else b
        torch = _torch()
        torch_fn = None
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)  # keep the transposed strides
            torch_fn = lambda: torch.matmul(ta, tb)
        return _kernel_impls(lambda: kernels.matmul(a, b), torch_fn)

    return Case(name, f"{m}x{k}@{k}x{n}", setup, flops=2.0 * m * k * n)


def _matmul_cases():
    cases = []
    for m, k, n in ((60, 784, 100), (60, 100, 100), (60, 100, 10)):
        cases.append(_matmul_case("matmul fwd A@B", m, k, n))
        # backward of C = A @ B (A: (m, k), B: (k, n), dC: (m, n))
        cases.append(_matmul_case("matmul bwd dC@B.T", m, n, k, transpose="b"))
        cases.append(_matmul_case("matmul bwd A.T@dC", k, m, n, transpose="a"))
    cases.append(_matmul_case("matmul square", 256, 256, 256))
    cases.append(_matmul_case("matmul square", 1024, 1024, 1024))
    return cases


# ---------------------------------------------------------------- conv2d


def _conv_case(n, c, o, hw, backward):
    k, stride, pad = 3, 1, 1
    flops = 2.0 * n * o * hw * hw * c * k * k * (3 if backward else 1)

    def setup():
        rng = _rng()
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((o, c, k, k)) * 0.1).astype(np.float32)
        gy = rng.standard_normal((n, o, hw, hw)).astype(np.float32)

        def ours():
            y = kernels.conv2d_forward(x, w, stride, pad)
            if backward:
                return kernels.conv2d_backward(x, w, gy, stride, pad)
            return y

        torch = _torch()
        torch_fn = None
        if torch is not None:
            tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)

            def torch_fn():
                y = torch.nn.functional.conv2d(tx, tw, None, stride, pad)
                if backward:
                    return torch.ops.aten.convolution_backward(
                        tgy,
                        tx,
                        tw,
                        None,
                        [stride] * 2,
                        [pad] * 2,
                        [1, 1],
                        False,
                        [0, 0],
                        1,
                        [True, True, False],
                    )
                return y

        return _kernel_impls(ours, torch_fn)

    name = "conv2d fwd+bwd" if backward else "conv2d fwd"
    return Case(name, f"N{n} {c}->{o} {hw}x{hw} k3 p1", setup, flops=flops)


def _conv_cases():
    return [
        _conv_case(64, 1, 32, 28, False),
        _conv_case(64, 32, 64, 14, False),
        _conv_case(64, 1, 32, 28, True),
        _conv_case(64, 32, 64, 14, True),
    ]


# ---------------------------------------------------------------- batch norm


def _bn_case(shape):
    def setup():
        rng = _rng()
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        c = shape[1]
        w = (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)
        b = (0.1 * rng.standard_normal(c)).astype(np.float32)
        # the kernels take (N, C) or (N, C, L): a (N, C, H, W) map is passed as (N, C, H*W)
        x3 = x if x.ndim <= 3 else x.reshape(shape[0], c, -1)
        dy3 = dy if dy.ndim <= 3 else dy.reshape(x3.shape)

        def ours():
            y, mean, var, invstd = kernels.batch_norm_forward_train(x3, w, b, 1e-5)
            return kernels.batch_norm_backward(dy3, x3, mean, invstd, w)

        torch = _torch()
        torch_fn = None
        if torch is not None:
            tx, tdy, tw, tb = (torch.from_numpy(a) for a in (x, dy, w, b))

            def torch_fn():  # aten's fused kernels directly, no autograd: like for like
                y, mean, invstd = torch.ops.aten.native_batch_norm(
                    tx, tw, tb, None, None, True, 0.1, 1e-5
                )
                return torch.ops.aten.native_batch_norm_backward(
                    tdy, tx, tw, None, None, mean, invstd, True, 1e-5, [True, True, True]
                )

        return _kernel_impls(ours, torch_fn)

    return Case("batchnorm train fwd+bwd", "x".join(map(str, shape)), setup)


def _bn_cases():
    return [_bn_case(s) for s in ((60, 100), (256, 1024), (64, 32, 28, 28))]


# ---------------------------------------------------------------- Figure 1 training step


def _mlp_case(batch_norm, compiled=False):
    """One SGD step of the paper's Figure 1 network: 784-100-100-100-10 sigmoid MLP,
    cross-entropy, batch 60; with BatchNorm1d before each sigmoid (Linear without bias);
    `compiled`: our step replayed by tg.jit (torch stays eager)."""

    def setup():
        rng = _rng()
        x = rng.random((60, 784), dtype=np.float32)
        labels = rng.integers(0, 10, 60)
        impls = {}
        try:
            import tinygrad_bn as tg
            import tinygrad_bn.functional as F
            from tinygrad_bn import nn, optim
        except ImportError:  # the autodiff layer not there yet: report n/a for ours
            tg = None
        if tg is not None:
            layers, width = [], 784
            for _ in range(3):
                layers.append(nn.Linear(width, 100, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm1d(100))
                layers.append(nn.Sigmoid())
                width = 100
            layers.append(nn.Linear(100, 10))
            model = nn.Sequential(*layers)
            opt = optim.SGD(model.parameters(), lr=0.1)
            tx = tg.Tensor(x)

            def step():
                opt.zero_grad()
                loss = F.cross_entropy(model(tx), labels)
                loss.backward()
                opt.step()
                return loss

            if compiled:
                step = tg.jit(step)
            impls = {"ours": step, "numpy": step}
        torch = _torch()
        if torch is not None:
            tnn = torch.nn
            layers, width = [], 784
            for _ in range(3):
                layers.append(tnn.Linear(width, 100, bias=not batch_norm))
                if batch_norm:
                    layers.append(tnn.BatchNorm1d(100))
                layers.append(tnn.Sigmoid())
                width = 100
            layers.append(tnn.Linear(100, 10))
            tmodel = tnn.Sequential(*layers)
            topt = torch.optim.SGD(tmodel.parameters(), lr=0.1)
            ttx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)

            def torch_step():
                topt.zero_grad()
                loss = torch.nn.functional.cross_entropy(tmodel(ttx), tlabels)
                loss.backward()
                topt.step()
                return loss

            impls["torch"] = torch_step
        return impls

    name = "fig1 MLP step" + (" +BN" if batch_norm else "") + (" jit" if compiled else "")
    return Case(name, "60x784 sigmoid 3x100 SGD", setup)


# ---------------------------------------------------------------- engine overhead

ENGINE_OPS = 100  # ops per timed call: a case's time / 100 is the cost of one op


def _engine_case(kind):
    """The Python engine's own cost on 1-element tensors, where the arithmetic is free:
    "apply" times 100 Function.apply calls (a + b with the graph recorded) against the bare
    NumPy adds; "backward" times the backward walk over a prebuilt chain of 100 ops against
    the bare NumPy ops that walk runs, and torch's autograd over the same chain; "door" times
    100 kernels.matmul calls on 1x1 matrices against bare `@`; "jit" times a tg.jit replay
    of 50 multiplications and their backward (100 ops) against the bare NumPy ops, and torch
    eager doing the same."""

    def setup():
        from . import tensor
        from .jit import jit

        a = tensor.Tensor(np.ones(1, np.float32), requires_grad=True)
        b = tensor.Tensor(np.ones(1, np.float32), requires_grad=True)
        ad, bd = a.data, b.data
        torch = _torch()
        if kind == "door":
            m = np.ones((1, 1), np.float32)
            impls = {
                "ours": lambda: [kernels.matmul(m, m) for _ in range(ENGINE_OPS)],
                "numpy": lambda: [m @ m for _ in range(ENGINE_OPS)],
            }
            if torch is not None:
                tm = torch.ones(1, 1)
                impls["torch"] = lambda: [torch.mm(tm, tm) for _ in range(ENGINE_OPS)]
            return impls
        if kind == "jit":

            def chain(x):
                for _ in range(ENGINE_OPS // 2):
                    x = x * 1.5
                x.backward()

            replay = jit(chain)

            def bare():
                x, g, c = ad.copy(), np.ones_like(ad), np.float32(1.5)
                for _ in range(ENGINE_OPS // 2):
                    x = x * c
                for _ in range(ENGINE_OPS // 2):
                    g = g * c

            impls = {"ours": lambda: replay(a), "numpy": bare}
            if torch is not None:

                def torch_chain():
                    x = torch.ones(1, requires_grad=True)
                    y = x
                    for _ in range(ENGINE_OPS // 2):
                        y = y * 1.5
                    y.backward()

                impls["torch"] = torch_chain
            return impls
        if kind == "apply":

            def ours():
                for _ in range(ENGINE_OPS):
                    a + b

            def bare():
                for _ in range(ENGINE_OPS):
                    ad + bd

            impls = {"ours": ours, "numpy": bare}
            if torch is not None:
                ta, tb = (torch.ones(1, requires_grad=True) for _ in range(2))

                def torch_fn():
                    for _ in range(ENGINE_OPS):
                        ta + tb

                impls["torch"] = torch_fn
            return impls
        root = a
        for _ in range(ENGINE_OPS):
            root = -root

        def bare():
            g = np.ones_like(ad)
            for _ in range(ENGINE_OPS):
                g = -g

        impls = {"ours": root.backward, "numpy": bare}
        if torch is not None:
            troot = ta = torch.ones(1, requires_grad=True)
            for _ in range(ENGINE_OPS):
                troot = -troot
            impls["torch"] = lambda: troot.backward(retain_graph=True)
        return impls

    names = {"apply": "op apply", "backward": "backward walk", "door": "kernel door"}
    return Case("engine: " + names.get(kind, "jit replay"), f"{ENGINE_OPS} ops on (1,)", setup)


def all_cases():
    return (
        _matmul_cases()
        + _conv_cases()
        + _bn_cases()
        + [_mlp_case(bn, compiled) for compiled in (False, True) for bn in (False, True)]
        + [_engine_case(kind) for kind in ("apply", "backward", "door", "jit")]
    )


# ---------------------------------------------------------------- environment


def environment(threads):
    """The shared environment record, plus the thread settings of the other implementations."""
    torch = _torch()
    return {
        **_environment.environment(threads),
        "blas": _blas_info(threads),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        # with threadpoolctl installed the run limits NumPy's BLAS to `threads`; without
        # it, BLAS keeps what OPENBLAS_NUM_THREADS said at import (default: all cores)
        "openblas_num_threads": (
            str(threads) if _has_threadpoolctl() else os.environ.get("OPENBLAS_NUM_THREADS")
        ),
    }


def _blas_info(threads):
    """NumPy's BLAS as it runs under this benchmark, e.g. 'openblas 0.3.31 SkylakeX, 1 thread'
    (the kernel OpenBLAS picked names the instruction set it uses; OPENBLAS_CORETYPE forces it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (install threadpoolctl: pip install tinygrad_bn[bench])"
    with _blas_threads(threads):
        pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    return (
        "; ".join(
            f"{p['internal_api']} {p['version']} {p.get('architecture') or ''}, "
            f"{p['num_threads']} thread{'s' if p['num_threads'] != 1 else ''}"
            for p in pools
        )
        or "none found"
    )


# ---------------------------------------------------------------- running and reporting


def run_case(case, threads, warmup, repeats, budget_s):
    impls = case.setup()
    result = {
        "case": case.name,
        "shape": case.shape,
        "dtype": case.dtype,
        "threads": threads,
        "median_s": {},
        "min_s": {},
        "calls": {},
        "ratios": {},
        "gflops": None,
    }
    for impl in IMPLS:
        result["median_s"][impl] = result["min_s"][impl] = None
        if impl == "ours" and not kernels.info()["compiled_kernels"]:
            continue  # nothing compiled: "ours" would only time the reference again
        if impl in impls:
            backend = BACKENDS[impl] or kernels.get_backend()
            with kernels.backend(backend):
                median, fastest, calls = time_block(impls[impl], warmup, repeats, budget_s)
            result["median_s"][impl] = median
            result["min_s"][impl] = fastest
            result["calls"][impl] = calls
    ours = result["median_s"]["ours"]
    for other in ("numpy", "torch"):
        t = result["median_s"][other]
        result["ratios"][f"{other}/ours"] = t / ours if ours and t else None
    if case.flops:
        result["gflops"] = {k: case.flops / t / 1e9 for k, t in result["median_s"].items() if t}
    return result


def _ms(t):
    return "n/a" if t is None else f"{t * 1e3:.3f}"


def _ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def format_table(env, results, quick=False):
    title = "tinygrad_bn bench"
    if quick:
        title += " --quick: a smoke run (1 timed call each), not a measurement"
    lines = [
        f"{title} | {env['cpu']} | cores {env['cores']} | threads {env['threads']} | "
        f"OpenMP {env['openmp']} | flags {env['compiler_flags']}",
        f"GEMM path {env['gemm_path']} | CPU ISA {' '.join(env['cpu_isa']) or 'n/a'} | "
        f"NumPy's BLAS {env['blas']}",
        f"numpy {env['numpy']} (BLAS threads: OPENBLAS_NUM_THREADS="
        f"{env['openblas_num_threads'] or 'unset, all cores'}) | torch "
        f"{env['torch'] or 'not installed'} | python {env['python']}",
        f"kernels on NumPy fallback: {', '.join(env['numpy_fallback']) or 'none'} | "
        f"malloc {env['malloc']}",
        "ratio = other time / our time (> 1: ours faster); times are medians in ms",
        "",
    ]
    header = (
        f"{'numpy/ours':>10} {'torch/ours':>10}  {'case':<24} {'shape':<26} "
        f"{'ours ms':>9} {'numpy ms':>9} {'torch ms':>9} {'GFLOP/s':>8}"
    )
    lines += [header, "-" * len(header)]
    for r in results:
        t = r["median_s"]
        gf = r["gflops"].get("ours") if r["gflops"] else None
        lines.append(
            f"{_ratio(r['ratios']['numpy/ours']):>10} {_ratio(r['ratios']['torch/ours']):>10}  "
            f"{r['case']:<24} {r['shape']:<26} {_ms(t['ours']):>9} {_ms(t['numpy']):>9} "
            f"{_ms(t['torch']):>9} {'' if gf is None else f'{gf:.1f}':>8}"
        )
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tinygrad-bn bench", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 warm-up call and 1 timed call per implementation",
    )
    p.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="threads for our kernels and torch (default: kernels' current count)",
    )
    p.add_argument(
        "--filter",
        default="",
        metavar="SUBSTR",
        help="run only cases whose name or shape contains SUBSTR",
    )
    p.add_argument(
        "--json",
        type=new_file,  # checked now, not after the whole benchmark
        default=None,
        metavar="PATH",
        help="also write the results here (its folder must exist)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="timed seconds per implementation and case (default 0.5)",
    )
    return p.parse_args(argv)


def _has_threadpoolctl():
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def _blas_threads(n):
    """Limit NumPy's BLAS to n threads when threadpoolctl is installed (else unchanged)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def main(argv=None):
    """Run the benchmarks, print the table, optionally write JSON. Returns 0."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cases = [c for c in all_cases() if args.filter in c.name or args.filter in c.shape]
    if not cases:
        raise SystemExit(f"tinygrad-bn bench: no case matches --filter {args.filter!r}")
    threads = args.threads or kernels.get_num_threads()
    kernels.set_num_threads(threads)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    warmup, repeats, budget = (1, 1, 0.0) if args.quick else (5, 10, args.budget)
    env = environment(threads)
    results = []
    with _blas_threads(threads):  # NumPy's BLAS gets the same thread count as ours
        for case in cases:
            results.append(run_case(case, threads, warmup, repeats, budget))
            print(f"  {case.name} {case.shape}: done", file=sys.stderr, flush=True)
    print(format_table(env, results, quick=args.quick))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "quick": args.quick, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
