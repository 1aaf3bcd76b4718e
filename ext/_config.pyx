"""Build facts and the OpenMP thread count, shared by every compiled kernel module.

setup.py defines TGBN_OPENMP (0/1) and TGBN_CFLAGS (the flags used) for every extension.
All kernel modules link the same libgomp, so omp_set_num_threads here governs all of them.
"""

cdef extern from *:
    """
    #if TGBN_OPENMP
    #include <omp.h>
    static void tgbn_set_threads(int n) { omp_set_num_threads(n); }
    static int tgbn_max_threads(void) { return omp_get_max_threads(); }
    #else
    static void tgbn_set_threads(int n) { (void)n; }
    static int tgbn_max_threads(void) { return 1; }
    #endif
    """
    int TGBN_OPENMP
    const char *TGBN_CFLAGS
    void tgbn_set_threads(int n) nogil
    int tgbn_max_threads() nogil


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (prange loops run in parallel)."""
    return bool(TGBN_OPENMP)


def compiler_flags():
    """The optimization flags the kernels were compiled with, e.g. '-O3 -march=native -fopenmp'."""
    return TGBN_CFLAGS.decode("ascii")


def set_num_threads(int n):
    """Threads for later parallel regions (omp_set_num_threads); no-op without OpenMP."""
    if n < 1:
        raise ValueError(f"set_num_threads: expected an integer >= 1, got {n}")
    tgbn_set_threads(n)


def get_max_threads():
    """Threads the next parallel region would use (1 without OpenMP)."""
    return tgbn_max_threads()
