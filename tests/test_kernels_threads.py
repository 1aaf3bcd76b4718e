"""Process-wide kernel state: the thread count (bounded, one per process, fork-safe) and
the backend(...) context manager (reentrant, per thread)."""

import argparse
import os
import platform
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from tinygrad_bn import _argtypes
from tinygrad_bn import kernels as K

K.require_extension()


def _conv_dw(seed=0):
    """A conv weight gradient over 16 images: its bits depend on the thread count."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    g = rng.standard_normal((16, 16, 12, 12)).astype(np.float32)
    return K.conv2d_backward(x, w, g, 1, 1)[1]


@pytest.mark.parametrize("bad", [0, -1, 257, 100000, 2**31, 1.5, True, "2", None])
def test_set_num_threads_bound_checked_before_any_change(bad):
    before = K.get_num_threads()
    with pytest.raises(ValueError, match=rf"expected an integer in \[1, {K.MAX_THREADS}\]"):
        K.set_num_threads(bad)
    assert K.get_num_threads() == before


def test_cli_threads_option_uses_the_same_bound():
    assert _argtypes.MAX_THREADS is K.MAX_THREADS
    assert _argtypes.thread_count(str(K.MAX_THREADS)) == K.MAX_THREADS
    for bad in ("0", str(K.MAX_THREADS + 1), "100000", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer in \[1, "):
            _argtypes.thread_count(bad)


def test_thread_count_belongs_to_the_process_not_the_os_thread():
    """Was: a threading.Thread kept OpenMP's default (2) after set_num_threads(1), and its
    conv gradients differed bitwise from the main thread's."""
    from tinygrad_bn._ext import _config

    before = K.get_num_threads()
    try:
        with K.backend("cython"):
            for n in (1, 2):
                K.set_num_threads(n)
                want = _conv_dw()
                seen = {}

                def work():
                    seen["threads"] = _config.get_max_threads()
                    seen["dw"] = _conv_dw()

                t = threading.Thread(target=work)
                t.start()
                t.join()
                assert seen["threads"] == n
                assert seen["dw"].tobytes() == want.tobytes()
    finally:
        K.set_num_threads(before)


FORK_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, sys
    import numpy as np
    from tinygrad_bn import kernels as K

    def work(seed):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((300, 300)).astype(np.float32)
        x = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
        w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
        xb = rng.standard_normal((256, 512)).astype(np.float32)
        c = np.ones(512, np.float32)
        y = K.conv2d_forward(x, w, 1, 1)
        out = [K.matmul(a, a), y, K.conv2d_backward(x, w, y, 1, 1)[1],
               K.batch_norm_forward_train(xb, c, c, 1e-5)[0]]
        return K.get_num_threads(), [o.tobytes() for o in out]

    if __name__ == "__main__":
        K.set_num_threads(2)
        work(0)                                    # the parent runs threaded kernels first
        K.set_num_threads(1)
        serial = work(1)[1]
        K.set_num_threads(2)
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map_async(work, [1, 1]).get(timeout=60)
        assert K.get_num_threads() == 2, "the parent keeps its count"
        for threads, outs in results:
            assert threads == 1, threads           # the children run serially
            assert outs == serial                  # ... with the 1-thread bits
        print("ok")
    """
)


def test_forked_children_run_kernels_serially_instead_of_hanging(tmp_path):
    """Was: a child forked after a threaded kernel ran hung in libgomp forever."""
    script = tmp_path / "fork_pool.py"
    script.write_text(FORK_SCRIPT)
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a forked child hung in a threaded kernel")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# ---------------------------------------------------------------- backend(...)


def test_backend_blocks_nest_and_restore():
    start = K.get_backend()
    with K.backend("numpy"):
        with K.backend("cython"):
            with K.backend("numpy"):
                assert K.get_backend() == "numpy"
            assert K.get_backend() == "cython"
        assert K.get_backend() == "numpy"
    assert K.get_backend() == start


def test_backend_as_decorator_on_a_recursive_function():
    """Every level enters and leaves its own block; the default comes back at the end."""
    start = K.get_backend()
    seen = []

    @K.backend("numpy")
    def down(n):
        seen.append(K.get_backend())
        if n:
            down(n - 1)
        seen.append(K.get_backend())

    with K.backend("cython"):
        down(3)
        assert K.get_backend() == "cython"
    assert seen == ["numpy"] * 8
    assert K.get_backend() == start


def test_backend_blocks_in_two_threads_do_not_mix():
    """Was: each block saved and restored one global, so two threads interleaving their
    blocks saw each other's backend and left the wrong one behind."""
    start = K.get_backend()
    step = threading.Barrier(2, timeout=30)
    seen, errors = {}, []

    def run(name):
        try:
            with K.backend(name):
                step.wait()  # both blocks are open
                seen[name, "inside"] = K.get_backend()
                step.wait()
            seen[name, "after"] = K.get_backend()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("numpy", "cython")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seen["numpy", "inside"] == "numpy" and seen["cython", "inside"] == "cython"
    assert seen["numpy", "after"] == seen["cython", "after"] == start
    assert K.get_backend() == start


def test_set_backend_inside_a_block_changes_the_default_and_the_block():
    start = K.get_backend()
    try:
        K.set_backend("cython")
        with K.backend("cython"):
            K.set_backend("numpy")
            assert K.get_backend() == "numpy"
        assert K.get_backend() == "numpy"
    finally:
        K.set_backend(start)


_FAULTS = """
import resource, sys
import numpy as np
import tinygrad_bn.kernels as K

def cycle():  # what a training step does: allocate and free the same few MiB of arrays
    arrays = [np.ones(1 << 18, np.float32) for _ in range(4)]  # 4 x 1 MiB, written
    del arrays

cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, K.info()["malloc"])
"""


def _page_faults(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    faults, state = out.stdout.split(" ", 1)
    return int(faults), state.strip()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="malloc tuning is glibc's (elsewhere the allocator is left alone)",
)
def test_malloc_tuned_at_import_so_a_repeated_step_maps_no_new_pages():
    tuned, state = _page_faults({})
    assert state.startswith("tuned"), state
    default, state = _page_faults({"TINYGRAD_BN_MALLOC": "default"})
    assert state.startswith("default"), state
    # glibc's defaults give each 1 MiB array back to the OS and fault it in again: 256 page
    # faults per array per cycle (80 x 256 = 20480); tuned, the memory is reused
    assert default > 10000 and tuned < 100, (default, tuned)
    _, state = _page_faults({"MALLOC_ARENA_MAX": "2"})
    assert state.startswith("default (MALLOC_*"), state  # the user's own setting wins
