"""Build facts and the process-wide thread count, shared by every compiled kernel module.

setup.py defines TGBN_OPENMP (0/1) and TGBN_CFLAGS (the flags used) for every extension.
The thread count lives here, once per process (see _openmp.pxd); every kernel module reads
it through the capsule `_state`. A fork handler makes a child forked after threaded kernels
ran serial: libgomp's thread pool does not survive fork (the child would hang).
`tune_malloc` sets glibc's malloc thresholds for the process (see its docstring).
"""
from cpython.pycapsule cimport PyCapsule_New
from _openmp cimport tgbn_state, tgbn_own_state, tgbn_max_threads

from tinygrad_bn._threads import MAX_THREADS

cdef extern from *:
    """
    #include <pthread.h>
    /* a child forked after threads ran must stay serial: libgomp's pool is not fork-safe */
    static void tgbn_after_fork_child(void) {
        if (tgbn_own_state.used) {
            tgbn_own_state.threads = 1;
            tgbn_own_state.forked = 1;
        }
    }
    static int tgbn_register_fork_handler(void) {
        return pthread_atfork(NULL, NULL, tgbn_after_fork_child);
    }
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int tgbn_mallopt(int mmap_threshold, int trim_threshold) {
        return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
            && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
    }
    #else
    static int tgbn_mallopt(int mmap_threshold, int trim_threshold) { return 0; }
    #endif
    """
    int TGBN_OPENMP
    const char *TGBN_CFLAGS
    int tgbn_register_fork_handler()
    int tgbn_mallopt(int mmap_threshold, int trim_threshold)

tgbn_state = &tgbn_own_state  # this module owns the process's state; the others look it up
_state = PyCapsule_New(<void*> tgbn_state, b"tinygrad_bn._ext._state", NULL)
if tgbn_register_fork_handler() != 0:
    raise ImportError("tinygrad_bn._ext._config: pthread_atfork failed")


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (prange loops run in parallel)."""
    return bool(TGBN_OPENMP)


def compiler_flags():
    """The optimization flags the kernels were compiled with, e.g. '-O3 -march=native -fopenmp'."""
    return TGBN_CFLAGS.decode("ascii")


MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its sliding threshold on 64-bit
TRIM_THRESHOLD = 256 << 20


def tune_malloc():
    """Keep freed memory in the heap for reuse instead of unmapping it; True when applied.

    glibc serves an allocation above its mmap threshold (128 KiB at start, then sliding up
    to the largest block freed so far) with a fresh mmap, and returns the top of the heap to
    the OS once it exceeds the trim threshold. A training step allocates and frees the same
    few-hundred-KiB to MiB arrays every step, so each step paid page faults on memory it had
    just given back: on Zen 5 (KVM) that was half the conv-net step (13.5 ms -> 7.0 ms) and a
    quarter of the Figure 1 step (0.50 -> 0.37 ms). Fixing the thresholds (which stops glibc's
    sliding) makes a steady-state step fault-free; the price is that up to TRIM_THRESHOLD of
    freed memory stays with the process. Only on glibc (elsewhere False, nothing changes).
    """
    return bool(tgbn_mallopt(MMAP_THRESHOLD, TRIM_THRESHOLD))


def set_num_threads(n):
    """Threads for every later kernel call, from any OS thread: 1 <= n <= MAX_THREADS (256).

    In a process forked after threaded kernels ran the count stays 1 (libgomp is not
    fork-safe); returns the count now in force. Raises ValueError for anything else.
    """
    if isinstance(n, bool) or not hasattr(n, "__index__") or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: expected an integer in [1, {MAX_THREADS}] (got {n!r})")
    if not tgbn_state.forked:
        tgbn_state.threads = int(n)  # without OpenMP the kernels ignore it (serial)
    return tgbn_state.threads


def get_num_threads():
    """The process-wide thread count (1 in a forked child; without OpenMP nothing threads)."""
    return tgbn_state.threads


def forked_serial():
    """True in a child forked after threaded kernels ran: kernels stay on one thread."""
    return bool(tgbn_state.forked)


def get_max_threads():
    """Threads the next kernel called from this OS thread will use (1 without OpenMP)."""
    return tgbn_max_threads()
