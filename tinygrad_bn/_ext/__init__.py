"""The compiled kernels (built from ext/ by setup.py); import them through tinygrad_bn.kernels.

The kernel modules are compiled for one target (-march, TINYGRAD_BN_MARCH at build time).
Loading them on a CPU without one of its features would die of an illegal instruction, so
this package refuses first, with an ImportError naming the missing features; the kernel
door (tinygrad_bn.kernels) then falls back to the NumPy backend and reports why in info().
"""

try:
    from ._cpu import missing_isa
except ImportError:  # not built: the kernel modules are missing too, and say so themselves
    missing_isa = tuple
_missing = missing_isa()
if _missing:
    raise ImportError(
        "tinygrad_bn._ext: the kernels were compiled for CPU features this CPU lacks (%s); "
        "reinstall from source on this machine (pip install --no-binary tinygrad_bn tinygrad_bn) "
        "or build with TINYGRAD_BN_MARCH=x86-64-v2" % ", ".join(_missing)
    )
