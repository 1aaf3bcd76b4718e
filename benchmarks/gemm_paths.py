"""The compiled matmul against NumPy's BLAS at 1 thread: 1024^3 and the Figure 1 MLP's products.

    python benchmarks/gemm_paths.py [BLOCKS]        (needs threadpoolctl: pip install .[bench])

Each case alternates short blocks of ours (tinygrad_bn.kernels.matmul, the door the engine
calls) and NumPy's in one process, timed in thread CPU time, and prints medians and the
interquartile range of the per-pair ratio (numpy/ours > 1: ours is faster). To time another
GEMM path on the same machine, run it from a scratch copy built with TINYGRAD_BN_MARCH (the
copy's root on PYTHONPATH); OpenBLAS's kernel is printed (OPENBLAS_CORETYPE forces one).
"""

import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from tinygrad_bn import kernels
from tinygrad_bn._ext import matmul as ext


def _array(rng, shape):
    return rng.uniform(-1, 1, shape).astype(np.float32)


def cases(rng):
    """(name, A, B): 1024^3, then the MLP's products (784-100-100-100-10, batch 60) forward and
    backward, in the layouts the engine passes (`x @ W.T`, `grad @ W`, `grad.T @ x`)."""
    x = lambda *s: _array(rng, s)  # noqa: E731
    t = lambda *s: _array(rng, s).T  # noqa: E731  (a transposed view, as the engine passes)
    return [
        ("1024^3", x(1024, 1024), x(1024, 1024)),
        ("fwd 60x784 @ (100x784).T", x(60, 784), t(100, 784)),
        ("fwd 60x100 @ (100x100).T", x(60, 100), t(100, 100)),
        ("fwd 60x100 @ (10x100).T", x(60, 100), t(10, 100)),
        ("dX 60x100 @ 100x100", x(60, 100), x(100, 100)),
        ("dX 60x10 @ 10x100", x(60, 10), x(10, 100)),
        ("dW (60x100).T @ 60x784", t(60, 100), x(60, 784)),
        ("dW (60x100).T @ 60x100", t(60, 100), x(60, 100)),
        ("dW (60x10).T @ 60x100", t(60, 10), x(60, 100)),
    ]


def calls_for(fn, a, b, seconds):
    """How many calls of fn(a, b) take about `seconds` (at least 1)."""
    fn(a, b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 4:
        fn(a, b)
        n += 1
    return max(1, 4 * n)


def block(fn, a, b, calls):
    """Time of one call, averaged over a block of `calls` calls in this thread's CPU time
    (time.thread_time: a block another process preempted is not charged for the wait; the
    median over blocks drops the rest of the noise). The clock is read once per block: in
    this VM a read costs about a microsecond, a sixth of the MLP's 6 us products."""
    start = time.thread_time()
    for _ in range(calls):
        fn(a, b)
    return (time.thread_time() - start) / calls


def main(blocks=7):
    kernels.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        blas = [
            f"{p['internal_api']} {p['version']} {p.get('architecture')}, {p['num_threads']} thread"
            for p in threadpool_info()
            if p["user_api"] == "blas"
        ]
        info = kernels.info()
        print(f"GEMM path {ext.GEMM_PATH} {ext.GEMM_TILE} | {info['compiler_flags']} | {blas}")
        for name, a, b in cases(np.random.default_rng(0)):
            # many short interleaved blocks: ours (through the kernel door, as the engine
            # calls it), NumPy's, ours, ...
            seconds, pairs = (0.05, 4 * blocks) if name == "1024^3" else (0.002, 40 * blocks)
            n = calls_for(np.matmul, a, b, seconds)  # the same number of calls for both
            ours, theirs = [], []
            for _ in range(pairs):
                ours.append(block(kernels.matmul, a, b, n))
                theirs.append(block(np.matmul, a, b, n))
            np.testing.assert_allclose(kernels.matmul(a, b), a @ b, rtol=1e-3, atol=1e-3)
            ratio = np.array(theirs) / np.array(ours)
            flop = 2 * a.shape[0] * a.shape[1] * b.shape[1]
            to, tt = np.median(ours), np.median(theirs)
            lo, hi = np.percentile(ratio, [25, 75])
            print(
                f"{name:25} ours {to * 1e6:9.1f} us {flop / to / 1e9:6.1f} GFLOP/s | numpy "
                f"{tt * 1e6:9.1f} us {flop / tt / 1e9:6.1f} | numpy/ours {np.median(ratio):.2f}x "
                f"[{lo:.2f}-{hi:.2f}]",
                flush=True,
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
