"""The CPU's instruction-set flags, and those the kernels were compiled for.

This module alone is compiled without -march (setup.py), so it runs on any CPU of its
architecture; tinygrad_bn/_ext/__init__.py asks it, before any kernel module is loaded,
whether this CPU has every feature the kernels' -march may have used, and refuses with an
ImportError (the NumPy backend takes over) instead of dying of an illegal instruction.
"""

cdef extern from *:
    """
    /* x86 features that -march can turn on and the compiler may use in float kernels;
       the names are __builtin_cpu_supports's (those gcc >= 9 and clang >= 9 both know:
       f16c, movbe, lzcnt come with every AVX2 CPU), the macros are __NAME__, '.' -> '_' */
    #define TGBN_ISA(X) X("sse3") X("ssse3") X("sse4.1") X("sse4.2") X("popcnt") \
        X("avx") X("avx2") X("fma") X("bmi") X("bmi2") \
        X("avx512f") X("avx512cd") X("avx512vl") X("avx512bw") X("avx512dq") \
        X("avx512ifma") X("avx512vbmi") X("avx512vbmi2") X("avx512vnni") \
        X("avx512bitalg") X("avx512vpopcntdq") X("avx512bf16") X("gfni") \
        X("vpclmulqdq") X("aes") X("pclmul")
    #define TGBN_NAME(s) s,
    static const char* tgbn_isa_names[] = { TGBN_ISA(TGBN_NAME) };
    static const int tgbn_isa_count = sizeof(tgbn_isa_names) / sizeof(tgbn_isa_names[0]);
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    #define TGBN_HAS(s) (__builtin_cpu_supports(s) != 0),
    static int tgbn_isa_has(int i) {
        __builtin_cpu_init();
        int has[] = { TGBN_ISA(TGBN_HAS) };
        return has[i];
    }
    #else
    static int tgbn_isa_has(int i) { (void)i; return 0; }  /* not x86: nothing to check */
    #endif
    #ifndef TGBN_TARGET_MACROS
    #define TGBN_TARGET_MACROS ""
    #endif
    """
    const char* tgbn_isa_names[]
    const int tgbn_isa_count
    int tgbn_isa_has(int i)
    const char* TGBN_TARGET_MACROS


cdef tuple _NAMES = tuple(tgbn_isa_names[i].decode("ascii") for i in range(tgbn_isa_count))


def cpu_isa():
    """The x86 features this CPU has, e.g. ('sse3', ..., 'avx2', 'fma', 'avx512f', ...)."""
    return tuple(name for i, name in enumerate(_NAMES) if tgbn_isa_has(i))


def target_isa():
    """The x86 features the kernels' compiler target enables (setup.py passes its macros)."""
    macros = set(TGBN_TARGET_MACROS.decode("ascii").split())
    return tuple(n for n in _NAMES if "__%s__" % n.upper().replace(".", "_") in macros)


def missing_isa():
    """Features the kernels may use that this CPU lacks (empty: safe to load them)."""
    have = set(cpu_isa())
    return tuple(n for n in target_isa() if n not in have)
