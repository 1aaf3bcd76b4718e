"""The environment record written beside every result: versions, machine, kernel build."""

import importlib.metadata
import os
import platform

from . import __version__, kernels

# versions read from package metadata, so recording them imports nothing
_PACKAGES = ("numpy", "matplotlib", "tqdm", "torch")


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores():
    """Cores this process may run on (its CPU affinity), else all of the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(threads):
    """One dict of versions and machine facts; ``threads`` is the kernel thread count used.

    Keys: tinygrad_bn, python, numpy, matplotlib, tqdm, torch (None when not installed),
    platform, cpu, cores, threads, backend, openmp, compiler_flags, gemm_path, cpu_isa (the
    CPU's vector-ISA flags), numpy_fallback (the kernels running on the NumPy reference),
    malloc (whether glibc's malloc is tuned), all from kernels.info() where it says them.
    """
    info = kernels.info()
    return {
        "tinygrad_bn": __version__,
        "python": platform.python_version(),
        **{package: _version(package) for package in _PACKAGES},
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "threads": threads,
        "backend": info["backend"],
        "openmp": info["openmp"],
        "compiler_flags": info["compiler_flags"],
        "gemm_path": info["gemm_path"],
        "cpu_isa": [f for f in info["cpu_isa"] if f in ("avx", "avx2", "fma", "avx512f")],
        "numpy_fallback": info["numpy_fallback"],
        "malloc": info["malloc"],
    }
