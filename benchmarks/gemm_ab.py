"""Two builds' compiled matmul and NumPy's, side by side in one process, at 1 thread.

    python benchmarks/gemm_ab.py OTHER_ROOT [NAME ...]    (needs threadpoolctl: .[bench])

OTHER_ROOT is another checkout with its extension built in place (e.g. `git worktree add
../base <rev>` and `python setup.py build_ext --inplace` there). Its matmul module is loaded
beside this tree's (extension modules load under any package name), and the two and NumPy
take turns in blocks of calls, timed in thread CPU time with one clock read per block. Each
line gives medians and the interquartile range of the per-block ratios. NAME keeps only the
cases whose name contains it. The kernels are called directly, without the door.
"""

import glob
import importlib.machinery
import importlib.util
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gemm_paths import calls_for, cases  # noqa: E402

from tinygrad_bn import kernels  # noqa: E402  (loads this tree's matmul first)
from tinygrad_bn._ext import matmul as ours  # noqa: E402


def load_matmul(root):
    """The compiled matmul module of the checkout at root, under another name."""
    paths = glob.glob(os.path.join(root, "tinygrad_bn", "_ext", "matmul*.so")) + glob.glob(
        os.path.join(root, "tinygrad_bn", "_ext", "matmul*.pyd")
    )
    if not paths:
        raise SystemExit(f"gemm_ab: no built matmul module under {root}/tinygrad_bn/_ext")
    loader = importlib.machinery.ExtensionFileLoader("other.matmul", paths[0])
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def quartiles(ratios):
    r = np.sort(ratios)
    return f"{np.median(r):.2f}x [{np.percentile(r, 25):.2f}-{np.percentile(r, 75):.2f}]"


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    other = load_matmul(argv[0])
    only = argv[1:]
    kernels.set_num_threads(1)
    print(f"this tree: {ours.__file__}\nother: {other.__file__}")
    with threadpool_limits(limits=1, user_api="blas"):
        for name, a, b in cases(np.random.default_rng(0)):
            if only and not any(o in name for o in only):
                continue
            np.testing.assert_allclose(ours.matmul(a, b), a @ b, rtol=1e-3, atol=1e-3)
            seconds, blocks = (0.05, 15) if name == "1024^3" else (0.004, 31)
            n = calls_for(np.matmul, a, b, seconds)
            fns = {"this": ours.matmul, "other": other.matmul, "numpy": np.matmul}
            times = {k: [] for k in fns}
            for _ in range(blocks):
                for k, fn in fns.items():
                    start = time.thread_time()
                    for _ in range(n):
                        fn(a, b)
                    times[k].append((time.thread_time() - start) / n)
            t = {k: np.array(v) for k, v in times.items()}
            print(
                f"{name:25} this {np.median(t['this']) * 1e6:9.2f} us  other "
                f"{np.median(t['other']) * 1e6:9.2f}  numpy {np.median(t['numpy']) * 1e6:9.2f} | "
                f"this/other speed {quartiles(t['other'] / t['this'])} | numpy/this "
                f"{quartiles(t['numpy'] / t['this'])} | numpy/other "
                f"{quartiles(t['numpy'] / t['other'])}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
