# The OpenMP shim shared by every kernel module (cimported; no module of its own).
#
# The thread count belongs to the process, not to an OS thread. OpenMP keeps its count
# (omp_set_num_threads) per calling thread, so a threading.Thread would run with the default
# whatever the main thread set. So one state per process lives in _config, and every module
# finds it through the capsule tinygrad_bn._ext._config._state on its first kernel call.
# tgbn_max_threads() reads the count, brings the calling thread's OpenMP count in line (for
# loops that pass no num_threads=) and returns it; a kernel reads it once per call and passes
# it on (prange's num_threads=, per-thread buffers), so a concurrent set_num_threads cannot
# change the team under a running kernel.
#
# libgomp is not fork-safe: a child forked after threads ran hangs in its first threaded
# region. _config's fork handler makes such a child serial; `used` records whether the
# process may have started threads (a kernel read a count above 1).
# Without OpenMP (TGBN_OPENMP=0, set by setup.py) everything is serial and the count is 1.

cdef extern from *:
    """
    #if TGBN_OPENMP
    #include <omp.h>
    #endif
    typedef struct { int threads; int used; int forked; } tgbn_state_t;
    static tgbn_state_t tgbn_own_state = {1, 0, 0};  /* _config's is the process's state */
    static tgbn_state_t *tgbn_state = NULL;

    static tgbn_state_t *tgbn_process_state(void) {
        tgbn_state_t *s = __atomic_load_n(&tgbn_state, __ATOMIC_ACQUIRE);
        if (s == NULL) {  /* first call in this module: look the state up once */
            PyGILState_STATE g = PyGILState_Ensure();
            PyObject *mod = PyImport_ImportModule("tinygrad_bn._ext._config");
            PyObject *cap = mod ? PyObject_GetAttrString(mod, "_state") : NULL;
            s = cap ? (tgbn_state_t *)PyCapsule_GetPointer(cap, "tinygrad_bn._ext._state") : NULL;
            if (s == NULL) {  /* cannot happen in a working install; serial is always safe */
                PyErr_Clear();
                s = &tgbn_own_state;
            }
            Py_XDECREF(cap);
            Py_XDECREF(mod);
            __atomic_store_n(&tgbn_state, s, __ATOMIC_RELEASE);
            PyGILState_Release(g);
        }
        return s;
    }

    static int tgbn_max_threads(void) {
    #if TGBN_OPENMP
        tgbn_state_t *s;
        int n;
        if (omp_in_parallel())
            return 1;  /* nested regions are inactive: one thread */
        s = tgbn_process_state();
        n = __atomic_load_n(&s->threads, __ATOMIC_RELAXED);
        if (n > 1 && !__atomic_load_n(&s->used, __ATOMIC_RELAXED))
            __atomic_store_n(&s->used, 1, __ATOMIC_RELAXED);
        if (omp_get_max_threads() != n)
            omp_set_num_threads(n);
        return omp_get_max_threads();
    #else
        return 1;
    #endif
    }
    """
    ctypedef struct tgbn_state_t:
        int threads
        int used
        int forked
    tgbn_state_t* tgbn_state
    tgbn_state_t tgbn_own_state
    int tgbn_max_threads() noexcept nogil
