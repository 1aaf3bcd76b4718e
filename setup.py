"""Build the Cython kernels in ext/ into tinygrad_bn._ext.<name>.

Every ext/*.pyx becomes one extension module. OpenMP is probed once: when the compiler
accepts -fopenmp the kernels run their prange loops in parallel, otherwise they build
serially and a warning says so. Compiler directives are set here, once, for all kernels.

Environment switches (read at build time):
  TINYGRAD_BN_DEBUG=1      bounds checks and wraparound back on, -O0 -g, AddressSanitizer and
                           UBSan (slow, for debugging; README "Developing" says how to run it)
  TINYGRAD_BN_NO_OPENMP=1  build without OpenMP even when the compiler has it
  TINYGRAD_BN_MARCH=...    value for -march: see the instruction-set block below
"""

import os
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("TINYGRAD_BN_DEBUG", "") not in ("", "0")


def _compiler_accepts(flags, code="int main(void){return 0;}\n", link_flags=()):
    """True when the C compiler builds and links a tiny program with these flags."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = cc.split() + list(flags) + [src, "-o", os.path.join(tmp, "probe")] + list(link_flags)
        try:
            return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


OPENMP_PROBE = """#include <omp.h>
int main(void){int n=0;
#pragma omp parallel reduction(+:n)
n += 1;
return omp_get_max_threads() > 0 ? 0 : 1;}
"""


def _openmp_flags():
    if os.environ.get("TINYGRAD_BN_NO_OPENMP", "") not in ("", "0"):
        return None
    if _compiler_accepts(["-fopenmp"], OPENMP_PROBE, ["-fopenmp"]):
        return ["-fopenmp"]
    warnings.warn(
        "tinygrad_bn: the C compiler does not support OpenMP; "
        "the kernels are built serially (single-threaded)."
    )
    return None


# ---- debug build: the kernels index raw pointers, so bounds checks alone see nothing;
# the sanitizers do. Python itself is not instrumented: libasan must be LD_PRELOADed.
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]


def _debug_flags():
    """(compile, link) flags of TINYGRAD_BN_DEBUG=1, or None for a normal build."""
    if not DEBUG:
        return None
    return ["-O0", "-g"] + SANITIZE, SANITIZE


def _compile_flags():
    if DEBUG:
        return _debug_flags()[0]
    return ["-O3", "-fno-math-errno"]  # no kernel reads errno; lets sqrt/div vectorize


# ---------------------------------------------------------------- instruction set
# The target decides the GEMM's register tile: ext/microkernel.pxd.tp picks the AVX-512, the
# AVX2+FMA or the portable tile from the macros the compiler defines for -march, so one
# generated C file serves every target. A source install builds for the CPU it runs on
# (-march=native); a wheel meant for other machines sets a baseline with TINYGRAD_BN_MARCH
# (x86-64-v3: the AVX2 path; x86-64: the portable one; empty: the compiler's default), and
# cibuildwheel builds default to x86-64-v3. Whatever was chosen, ext/_cpu.pyx (compiled
# without -march) lets tinygrad_bn._ext refuse to load the kernels on a CPU that lacks a
# feature the target enabled, instead of dying of an illegal instruction.
def _march_flags():
    default = "x86-64-v3" if os.environ.get("CIBUILDWHEEL") == "1" else "native"
    march = os.environ.get("TINYGRAD_BN_MARCH", default).strip()
    if march and _compiler_accepts([f"-march={march}"]):
        return [f"-march={march}"]
    if march:
        warnings.warn(f"tinygrad_bn: the C compiler rejects -march={march}; using its default")
    return []


def _predefined_macros(flags):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        out = subprocess.run(
            cc.split() + list(flags) + ["-dM", "-E", "-x", "c", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (AttributeError, OSError, subprocess.SubprocessError):
        return set()
    return {line.split()[1] for line in out.splitlines() if line.startswith("#define ")}


def _target_macros(flags):
    """The macros these flags add to the compiler's default target (__AVX2__, __FMA__, ...)."""
    return " ".join(sorted(_predefined_macros(flags) - _predefined_macros(_compile_flags())))


def _render_templates():
    """ext/*.tp -> ext/* (Tempita); a file is rewritten only when its text changes."""
    from Cython import Tempita

    for tp in glob(os.path.join("ext", "*.tp")):
        with open(tp) as f:
            text = Tempita.Template(f.read(), name=tp).substitute()
        out = tp[: -len(".tp")]
        if os.path.exists(out):
            with open(out) as f:
                if f.read() == text:
                    continue  # unchanged: keeps the timestamps that spare a rebuild
        with open(out, "w") as f:
            f.write(text)


class BuildExt(build_ext):
    """Probe the compiler lazily, when an extension is really being built."""

    def build_extensions(self):
        omp = _openmp_flags()
        march = _march_flags()
        cflags = _compile_flags() + march + (omp or [])
        flag_string = " ".join(cflags)
        for ext in self.extensions:
            ext.extra_compile_args = cflags + ["-Wno-unused-function", "-Wno-unreachable-code"]
            ext.extra_link_args = list(omp or []) + (_debug_flags()[1] if DEBUG else [])
            ext.define_macros = ext.define_macros + [
                ("TGBN_OPENMP", "1" if omp else "0"),
                ("TGBN_CFLAGS", '"%s"' % flag_string),
            ]
            if ext.name == "tinygrad_bn._ext._cpu":  # runs on any CPU: no -march, no OpenMP
                ext.extra_compile_args = _compile_flags()
                ext.extra_link_args = _debug_flags()[1] if DEBUG else []
                ext.define_macros.append(("TGBN_TARGET_MACROS", '"%s"' % _target_macros(cflags)))
        super().build_extensions()

    def copy_extensions_to_source(self):
        # `build_ext --inplace` would rewrite a loaded .so under a running process (a crash);
        # unlinking first lets running processes keep their mapped copy
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for ext in self.extensions:
            target = os.path.join(HERE, *ext.name.split(".")) + suffix
            if os.path.exists(target):
                os.unlink(target)
        super().copy_extensions_to_source()


def _extensions():
    directives = {
        "language_level": "3",
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": True,
        "nonecheck": False,
        "embedsignature": True,
    }
    _render_templates()
    exts = []
    for pyx in sorted(glob(os.path.join("ext", "*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        exts.append(
            Extension(
                f"tinygrad_bn._ext.{name}",
                [pyx],
                include_dirs=[np.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(exts, compiler_directives=directives, quiet=True, force=DEBUG)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
