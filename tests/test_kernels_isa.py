"""The GEMM path the build chose, and the guard against a CPU that lacks the build's features.

Only the path this build chose runs here. To test another one on the same machine, build a
scratch copy for it and run the kernel tests there (an AVX-512 machine runs all three):

    TINYGRAD_BN_MARCH=haswell python setup.py build_ext --inplace   # avx2 (x86-64-v3 too)
    TINYGRAD_BN_MARCH=x86-64 python setup.py build_ext --inplace    # portable (SSE2)
    python -m pytest tests/test_kernels_*.py
"""

import os
import shutil
import subprocess
import sys

import pytest

from tinygrad_bn import kernels as K

K.require_extension()

from tinygrad_bn._ext import _cpu  # noqa: E402
from tinygrad_bn._ext import matmul as ext  # noqa: E402

TILES = {"avx512": (6, 32, 16), "avx2": (6, 16, 8), "portable": (6, 8, 4)}


def path_for(features):
    """The path ext/microkernel.pxd.tp picks for a target with these features."""
    if "avx512f" in features:
        return "avx512"
    if "avx2" in features and "fma" in features:
        return "avx2"
    return "portable"


def test_gemm_path_is_what_the_target_implies():
    want = path_for(_cpu.target_isa())
    assert ext.GEMM_PATH == want
    assert ext.GEMM_TILE == TILES[want]
    info = K.info()
    assert info["gemm_path"] == want
    assert set(info["cpu_isa"]) == set(_cpu.cpu_isa())


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs the C compiler")
def test_gemm_path_matches_the_compiler_flags():
    """Ask the compiler again with the flags the kernels were built with (not via setup.py)."""
    flags = [f for f in K.info()["compiler_flags"].split() if f.startswith("-m")]
    out = subprocess.run(
        ["cc", *flags, "-dM", "-E", "-x", "c", os.devnull], capture_output=True, text=True
    ).stdout
    macros = {line.split()[1] for line in out.splitlines() if line.startswith("#define")}
    features = {"avx512f": "__AVX512F__", "avx2": "__AVX2__", "fma": "__FMA__"}
    assert ext.GEMM_PATH == path_for({f for f, m in features.items() if m in macros})
    if "-march=native" in flags:  # built here for here: this CPU's own features
        assert ext.GEMM_PATH == path_for(_cpu.cpu_isa())


def test_cpu_isa_is_consistent():
    have = set(_cpu.cpu_isa())
    assert not _cpu.missing_isa()  # else the kernels would not have loaded
    assert set(_cpu.target_isa()) <= have
    if "avx512f" in have or "avx2" in have:  # every AVX CPU has the older extensions
        assert {"sse3", "ssse3", "sse4.1", "sse4.2", "avx"} <= have


GUARD = """
import sys, types
fake = types.ModuleType("tinygrad_bn._ext._cpu")  # a CPU without the build's AVX-512
fake.missing_isa = lambda: ("avx512f", "avx512bw")
fake.cpu_isa = lambda: ("sse3", "avx", "avx2", "fma")
sys.modules["tinygrad_bn._ext._cpu"] = fake
try:
    import tinygrad_bn._ext.matmul
except ImportError as e:
    assert "avx512f, avx512bw" in str(e) and "TINYGRAD_BN_MARCH" in str(e), e
else:
    raise SystemExit("the kernels loaded on a CPU that lacks their features")
from tinygrad_bn import kernels
import numpy as np
info = kernels.info()
assert info["backend"] == "numpy" and not info["compiled_kernels"], info
assert "avx512f" in str(info["import_errors"]) and info["gemm_path"] is None, info
assert info["cpu_isa"] == ["sse3", "avx", "avx2", "fma"], info
a = np.ones((3, 4), np.float32)
np.testing.assert_array_equal(kernels.matmul(a, a.T), a @ a.T)  # the NumPy backend serves
print("refused")
"""


def test_kernels_refuse_a_cpu_without_the_build_features():
    """No illegal instruction: the package refuses before loading a kernel, NumPy takes over."""
    r = subprocess.run([sys.executable, "-c", GUARD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "refused" in r.stdout, r.stdout + r.stderr
