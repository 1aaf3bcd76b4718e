# The GEMM core shared by matmul.pyx and conv2d.pyx (cimported; all inline, no module of its own).
#
#   C (+)= A @ B,  A (M, K), B (K, N), C (M, N) row-major with leading dimension ldc.
#
# A and B are read through element strides, so transposed views (the engine's
# `grad @ W.T`, `X.T @ grad`) are packed or read in place without a copy.
# Layout (Goto/BLIS style): columns in blocks of NC, K in KC-deep slices; per slice, B is
# packed once into NR-wide column panels shared by all threads; rows are cut into blocks
# (one per prange iteration), each thread packing its own A block into MR-row micro-panels;
# a 6 x NR register tile does the FMAs, a 6 x NH one the ragged last panel (NR and NH come
# from the compiler's target: microkernel.pxd.tp), or, when that panel is at most NH / 2 wide
# and A is read in place, an edge kernel whose vectors run along k or down the rows (N = 100
# = 3 * 32 + 4 on AVX-512). A transposed B (W.T) is packed through 8 x 8 register
# transposes. What does not pay is skipped: A is read in place (any strides) while its K
# slice fits L2, B too for few rows with contiguous rows; no threads are started below
# PAR_MIN_WORK multiply-adds (a serial call enters no OpenMP region). The packing buffers
# belong to the thread (tgbn_scratch below): kept across calls, grown on demand, freed at
# thread exit; at most KC x NC floats of B per calling thread (4 MiB) and an MC x KC block
# of A per thread that packs one (144 KiB).
# Every C element is summed in the same order whatever the thread count, so results are
# bit-identical for 1 or many threads.
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memset
from microkernel cimport MR, NR, NH, tile, dots, rows

from _openmp cimport tgbn_max_threads

cdef extern from *:
    """
    #include <pthread.h>
    #include <stdlib.h>
    #include <string.h>
    /* Packing buffers kept across calls, one set per OS thread (the GEMM runs on any Python
       thread and inside other kernels' prange workers), grown on demand, freed at thread
       exit. A fresh malloc per call was a fresh mmap for the larger ones: its page faults
       made dW of the MLP's first layer (B packed, 192 KB) 330 us instead of 57 (Zen 5).
       Slot 0: the calling thread's packed B; slot 1: each thread's packed A block. */
    typedef struct { void *p[2]; size_t n[2]; } tgbn_scratch_t;
    static pthread_key_t tgbn_scratch_key;
    static pthread_once_t tgbn_scratch_once = PTHREAD_ONCE_INIT;
    static int tgbn_scratch_ok = 0;

    static void tgbn_scratch_free(void *v) {
        tgbn_scratch_t *s = (tgbn_scratch_t *)v;
        free(s->p[0]);
        free(s->p[1]);
        free(s);
    }
    static void tgbn_scratch_init(void) {
        tgbn_scratch_ok = pthread_key_create(&tgbn_scratch_key, tgbn_scratch_free) == 0;
    }
    /* A 64-byte aligned buffer of at least `bytes` for this thread's `slot`, or NULL when
       out of memory; valid until this thread's next call for the same slot. */
    static void *tgbn_scratch(int slot, size_t bytes) {
        tgbn_scratch_t *s;
        void *p;
        pthread_once(&tgbn_scratch_once, tgbn_scratch_init);
        if (!tgbn_scratch_ok)
            return NULL;
        s = (tgbn_scratch_t *)pthread_getspecific(tgbn_scratch_key);
        if (s == NULL) {
            s = (tgbn_scratch_t *)calloc(1, sizeof *s);
            if (s == NULL)
                return NULL;
            if (pthread_setspecific(tgbn_scratch_key, s) != 0) {
                free(s);
                return NULL;
            }
        }
        if (s->n[slot] < bytes) {
            free(s->p[slot]);
            s->p[slot] = NULL;
            s->n[slot] = 0;
            if (posix_memalign(&p, 64, bytes) != 0)
                return NULL;
            s->p[slot] = p;
            s->n[slot] = bytes;
        }
        return s->p[slot];
    }

    /* o[k][i] = r[i][k]: an 8 x 8 block of floats transposed in registers, 24 shuffles (GCC
       lowers them to unpcklps / shufps / vperm2f128 or their 128-bit halves). */
    typedef float tgbn_f8 __attribute__((vector_size(32)));
    typedef float tgbn_f8u __attribute__((vector_size(32), aligned(4), may_alias));
    static inline void tgbn_transpose8(const tgbn_f8 r[8], tgbn_f8 o[8]) {
        tgbn_f8 t[8], u[8];
        for (int i = 0; i < 8; i += 2) {  /* pairs of rows interleaved, per 128 bits */
            t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
            t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
        }
        for (int i = 0; i < 8; i += 4) {  /* then 4 rows per column, per 128 bits */
            u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
            u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
        }
        for (int i = 0; i < 4; i++) {  /* and the halves of rows 0-3 and 4-7 joined */
            o[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
            o[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        }
    }

    /* bp[k*ld + j] = b[j*sb1 + k] for j < nr, k < kc: a transposed B (the engine's W.T, its
       columns contiguous) packed in 8 x 8 register transposes; element by element, the
       stores to bp at a stride of ld made packing W.T take a fifth of the first layer's
       forward product (60x784 @ 784x100: 75 us, 60 us with a contiguous B; Zen 5). Columns
       nr..ld-1 are the caller's. */
    static void tgbn_pack_transposed(Py_ssize_t kc, Py_ssize_t nr, const float *b,
                                     Py_ssize_t sb1, float *bp, Py_ssize_t ld) {
        Py_ssize_t j0 = 0, k0, k, j;
        for (; j0 + 8 <= nr; j0 += 8) {
            for (k0 = 0; k0 + 8 <= kc; k0 += 8) {
                tgbn_f8 r[8], o[8];
                for (int i = 0; i < 8; i++) r[i] = *(const tgbn_f8u *)(b + (j0 + i) * sb1 + k0);
                tgbn_transpose8(r, o);
                for (int i = 0; i < 8; i++) *(tgbn_f8u *)(bp + (k0 + i) * ld + j0) = o[i];
            }
            for (k = k0; k < kc; k++)
                for (j = j0; j < j0 + 8; j++) bp[k * ld + j] = b[j * sb1 + k];
        }
        for (j = j0; j < nr; j++)
            for (k = 0; k < kc; k++) bp[k * ld + j] = b[j * sb1 + k];
    }

    /* dst[k*6 + r] = a[r*sa0 + k] for r < 6, k < kc: a micro-panel of 6 rows of a row-major
       A, through the same transposes (rows 6 and 7 zero, 6 floats stored per k); element by
       element this packing was 6% of 1024^3's time. */
    static void tgbn_pack_rows6(Py_ssize_t kc, const float *a, Py_ssize_t sa0, float *dst) {
        Py_ssize_t k0 = 0, k;
        for (; k0 + 8 <= kc; k0 += 8) {
            tgbn_f8 r[8], o[8];
            for (int i = 0; i < 6; i++) r[i] = *(const tgbn_f8u *)(a + i * sa0 + k0);
            r[6] = r[7] = (tgbn_f8){0};
            tgbn_transpose8(r, o);
            for (int i = 0; i < 8; i++) memcpy(dst + (k0 + i) * 6, &o[i], 6 * sizeof(float));
        }
        for (k = k0; k < kc; k++)
            for (int i = 0; i < 6; i++) dst[k * 6 + i] = a[i * sa0 + k];
    }
    """
    void* tgbn_scratch(int slot, size_t nbytes) noexcept nogil
    void tgbn_pack_rows6(Py_ssize_t kc, const float* a, Py_ssize_t sa0, float* dst) noexcept nogil
    void tgbn_prefetch_w "__builtin_prefetch"(const void* p, int rw, int locality) noexcept nogil
    void tgbn_pack_transposed(Py_ssize_t kc, Py_ssize_t nr, const float* b, Py_ssize_t sb1,
                              float* bp, Py_ssize_t ld) noexcept nogil

cdef enum:
    MC = 144             # rows per packed A block (fits L2 with KC)
    NC = 4096            # columns per packed B block (multiple of NR)
    KC = 256             # depth of a K slice for float32 (float64 uses KC // 2: same bytes)
    PACK_A_MIN_BYTES = 384 * 1024  # A read in place while its K slice (M x KC) stays in L2
    DIRECT_B_MAX_M = 96  # up to this many rows a row-contiguous B is read in place,
    DIRECT_B_MAX_BYTES = 64 * 1024  # and for any rows when its K slice is this small: packing
                                    # costs more than it saves (dW of 100x100: 1.14x faster in
                                    # place; a 60x1024 slice: 1.5x slower, measured on Zen 5)
    PAR_MIN_WORK = 1 << 20   # multiply-adds (~30 us on one core) below which one thread wins:
                             # 60x100@100x100 ran 16 us on 1 thread, 24 us on 2 (measured)


cdef inline Py_ssize_t _cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline void pack_b_panel(Py_ssize_t kc, Py_ssize_t nr, const floating* b,
                              Py_ssize_t sb0, Py_ssize_t sb1, floating* bp) noexcept nogil:
    """bp[k*NR + j] = B(k, j) for j < nr, zero for nr <= j < NR (b points at the panel's B(0, 0))."""
    cdef Py_ssize_t k, j
    if nr < NR:
        # one memset for the padding: zeroing it row by row became a memset call per k
        memset(bp, 0, kc * NR * sizeof(floating))
    if sb1 == 1:
        for k in range(kc):
            for j in range(nr):
                bp[k * NR + j] = b[k * sb0 + j]
    elif floating is float and sb0 == 1:
        tgbn_pack_transposed(kc, nr, b, sb1, bp, NR)
    else:
        # transposed B: walk down each column, which is the contiguous direction in memory
        for j in range(nr):
            for k in range(kc):
                bp[k * NR + j] = b[k * sb0 + j * sb1]


cdef inline void pack_a_block(Py_ssize_t mc, Py_ssize_t kc, const floating* a,
                              Py_ssize_t sa0, Py_ssize_t sa1, floating* ap) noexcept nogil:
    """Micro-panels of MR rows: ap[i0*kc + k*MR + r] = A(i0 + r, k); rows past mc are zero."""
    cdef Py_ssize_t t, i0, k, r, mr
    cdef floating* dst
    for t in range(_cdiv(mc, MR)):
        i0 = t * MR
        mr = min(<Py_ssize_t>MR, mc - i0)
        dst = ap + i0 * kc
        if floating is float and MR == 6 and sa1 == 1 and mr == MR:
            tgbn_pack_rows6(kc, a + i0 * sa0, sa0, dst)
        elif sa1 == 1:
            for r in range(mr):
                for k in range(kc):
                    dst[k * MR + r] = a[(i0 + r) * sa0 + k]
        else:
            for k in range(kc):
                for r in range(mr):
                    dst[k * MR + r] = a[(i0 + r) * sa0 + k * sa1]
        for r in range(mr, MR):
            for k in range(kc):
                dst[k * MR + r] = 0


cdef inline void _a_block(Py_ssize_t blk, Py_ssize_t mc, Py_ssize_t M, Py_ssize_t kc,
                          Py_ssize_t npanel, Py_ssize_t nbw, const floating* a, Py_ssize_t sa0,
                          Py_ssize_t sa1, const floating* bbuf, floating* cj, Py_ssize_t ldc,
                          bint acc_on, floating* ap) noexcept nogil:
    """Row block blk of a packed-A K slice (a points at A(0, pc)): pack it into ap, then its
    tiles against every packed B panel."""
    cdef Py_ssize_t i0 = blk * mc, mcb = min(mc, M - i0), jp, t, ir, r, nrows
    cdef Py_ssize_t nt = _cdiv(mcb, MR)
    cdef const floating* bpanel
    cdef floating* nxt = NULL
    pack_a_block(mcb, kc, a + i0 * sa0, sa0, sa1, ap)
    for jp in range(npanel):
        bpanel = bbuf + jp * NR * kc
        for t in range(nt):
            ir = t * MR
            # the next tile's C rows, fetched from L3 while this tile runs: the C updates
            # were a sixth of 1024^3's time, waiting on C (4 MiB, read once per K slice)
            nrows = 0
            if t + 1 < nt:  # the tile below, same panel
                nxt, nrows = cj + (i0 + ir + MR) * ldc + jp * NR, min(<Py_ssize_t>MR, mcb - ir - MR)
            elif jp + 1 < npanel:  # the first tile of the next panel
                nxt, nrows = cj + i0 * ldc + (jp + 1) * NR, min(<Py_ssize_t>MR, mcb)
            for r in range(nrows):
                tgbn_prefetch_w(nxt + r * ldc, 1, 3)
                tgbn_prefetch_w(nxt + r * ldc + NR - 1, 1, 3)
            tile(kc, ap + ir * kc, 1, MR, 0, min(<Py_ssize_t>MR, mcb - ir),
                 bpanel, NR, cj + (i0 + ir) * ldc + jp * NR, ldc,
                 min(<Py_ssize_t>NR, nbw - jp * NR), acc_on)


cdef inline void _direct_tile(Py_ssize_t jp, Py_ssize_t ir, Py_ssize_t npanel,
                              Py_ssize_t n_tail, Py_ssize_t M, Py_ssize_t nbw, Py_ssize_t kc,
                              const floating* a, Py_ssize_t sa0, Py_ssize_t sa1,
                              const floating* b, Py_ssize_t sb0, bint pack_b,
                              const floating* bbuf, floating* cj, Py_ssize_t ldc,
                              bint acc_on) noexcept nogil:
    """The tile of rows ir.. in panel jp of a K slice with A read in place (a at A(0, pc), b
    at B(pc, j0)); B's panels are packed in bbuf when pack_b, else only its ragged last one."""
    cdef Py_ssize_t r0 = 0
    cdef const floating* bpanel
    cdef Py_ssize_t ldb_p
    if ir + MR > M:
        # the ragged last rows: the tile of the MR rows ending at M, storing only the new
        # ones (the tile reads all MR rows; the caller guarantees M >= MR)
        r0 = ir + MR - M
        ir = M - MR
    if pack_b:
        bpanel = bbuf + jp * NR * kc
        ldb_p = NR
    elif jp == npanel - 1 and n_tail < NR:
        bpanel = bbuf
        ldb_p = NR
    else:
        bpanel = b + jp * NR
        ldb_p = sb0
    tile(kc, a + ir * sa0, sa0, sa1, r0, MR,
         bpanel, ldb_p, cj + ir * ldc + jp * NR, ldc, min(<Py_ssize_t>NR, nbw - jp * NR), acc_on)


cdef inline void pack_bt(Py_ssize_t kc, Py_ssize_t nt, const floating* b, Py_ssize_t sb0,
                         Py_ssize_t sb1, floating* bt) noexcept nogil:
    """bt[j*kc + k] = B(k, j) for j < nt (the last columns as rows, for the dot-product kernel)."""
    cdef Py_ssize_t k, j
    for k in range(kc):
        for j in range(nt):
            bt[j * kc + k] = b[k * sb0 + j * sb1]


cdef inline void _edge(int edge, Py_ssize_t M, Py_ssize_t nt, Py_ssize_t kc,
                       const floating* a, Py_ssize_t sa0, Py_ssize_t sa1,
                       const floating* b, Py_ssize_t sb0, Py_ssize_t sb1, floating* bt,
                       floating* c, Py_ssize_t ldc, bint acc_on) noexcept nogil:
    """The last nt columns of a K slice with A in place (a at A(0, pc), b at B(pc, j), c at
    C(0, j)): dot products along k (edge 1: A's rows contiguous; B's columns packed into bt
    unless they are contiguous) or vectors down the rows (edge 2: A's columns contiguous)."""
    if edge == 2:
        rows(M, nt, kc, a, sa1, b, sb0, sb1, c, ldc, acc_on)
    elif sb0 == 1:
        dots(M, nt, kc, a, sa0, b, sb1, c, ldc, acc_on)
    else:
        pack_bt(kc, nt, b, sb0, sb1, bt)
        dots(M, nt, kc, a, sa0, bt, kc, c, ldc, acc_on)


cdef inline int gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* a, Py_ssize_t sa0, Py_ssize_t sa1,
                     const floating* b, Py_ssize_t sb0, Py_ssize_t sb1,
                     floating* c, Py_ssize_t ldc, bint add, bint threaded) noexcept nogil:
    """C (+)= A @ B with element strides for A and B; returns -1 when out of memory, else 0.

    threaded=False keeps everything on the calling thread (for callers already inside a prange).
    A serial call enters no OpenMP region at all (a region of one thread still cost about a
    microsecond per K slice, a visible share of the MLP's 2 us products).
    """
    cdef Py_ssize_t kc_max = KC if floating is float else KC // 2
    cdef bint pack_a, pack_b
    cdef bint par = threaded and M * N * K >= PAR_MIN_WORK and tgbn_max_threads() > 1
    cdef Py_ssize_t ks, pc, kc, i, r, jp, t, ntile_m
    cdef Py_ssize_t jb, j0, ncb, nbw, npanel, n_tail, nfull, ntile
    cdef int edge
    cdef Py_ssize_t nb = 0, mc = MR
    cdef int nt = 1
    cdef bint acc_on
    cdef int failed = 0
    cdef int* fail = &failed
    cdef floating* bbuf = NULL
    cdef floating* ap = NULL
    cdef floating* cj
    cdef const floating* bj

    if M <= 0 or N <= 0:
        return 0
    if K <= 0:
        if not add:
            for i in range(M):
                for r in range(N):
                    c[i * ldc + r] = 0
        return 0
    kc_max = min(kc_max, K)
    # in place A needs MR rows for its tile (fewer: the packed block pads them with zeros)
    pack_a = M < MR or M * kc_max * <Py_ssize_t> sizeof(floating) > PACK_A_MIN_BYTES
    pack_b = pack_a or sb1 != 1 or (
        M > DIRECT_B_MAX_M and kc_max * N * <Py_ssize_t> sizeof(floating) > DIRECT_B_MAX_BYTES)
    # columns go in blocks of NC: bounds the packed-B buffer (smaller NC measured no faster)
    ncb = NC
    npanel = _cdiv(min(ncb, N), NR)
    if pack_b:
        bbuf = <floating*> tgbn_scratch(0, kc_max * npanel * NR * sizeof(floating))
    elif N % NR:
        bbuf = <floating*> tgbn_scratch(0, kc_max * NR * sizeof(floating))  # ragged last panel
    if (pack_b or N % NR) and bbuf == NULL:
        return -1
    if pack_a:
        # as many row blocks as threads (or a multiple), each about MC rows, MR-aligned
        nt = tgbn_max_threads() if par else 1
        nb = _cdiv(_cdiv(M, MC), nt) * nt
        mc = _cdiv(_cdiv(M, nb), MR) * MR
        nb = _cdiv(M, mc)
    ntile_m = _cdiv(M, MR)

    for jb in range(_cdiv(N, ncb)):
        j0 = jb * ncb
        nbw = min(ncb, N - j0)
        npanel = _cdiv(nbw, NR)
        n_tail = nbw - (npanel - 1) * NR
        # a tile would spend at least half its lanes on nothing for a last panel this narrow
        # (N = 100 = 3 * 32 + 4): with A in place an edge kernel takes its columns instead;
        # and any last panel up to NH wide when the dot products read A and B (W.T) in place,
        # with nothing to pack (60x100 @ (10x100).T: 1.00-1.10x the packed half tile, Zen 5)
        edge = 0
        if not pack_a and (2 * n_tail <= NH or (n_tail <= NH and sb0 == 1 and sa1 == 1)):
            edge = 1 if sa1 == 1 else 2 if sa0 == 1 else 0
        nfull = npanel - (edge != 0)  # the panels the tiles do
        ntile = nfull * ntile_m
        bj = b + j0 * sb1
        cj = c + j0
        for ks in range(_cdiv(K, kc_max)):
            pc = ks * kc_max
            kc = min(kc_max, K - pc)
            acc_on = add or pc > 0
            if pack_b:
                if par and nfull > 1:
                    for jp in prange(nfull, schedule='static'):
                        pack_b_panel(kc, min(<Py_ssize_t>NR, nbw - jp * NR),
                                     bj + pc * sb0 + jp * NR * sb1, sb0, sb1, bbuf + jp * NR * kc)
                else:
                    for jp in range(nfull):
                        pack_b_panel(kc, min(<Py_ssize_t>NR, nbw - jp * NR),
                                     bj + pc * sb0 + jp * NR * sb1, sb0, sb1, bbuf + jp * NR * kc)
            elif n_tail < NR and not edge:
                pack_b_panel(kc, n_tail, bj + pc * sb0 + (npanel - 1) * NR * sb1, sb0, sb1, bbuf)

            if pack_a:
                if par:
                    with parallel():
                        ap = <floating*> tgbn_scratch(1, mc * kc_max * sizeof(floating))
                        for t in prange(nb, schedule='static'):
                            if ap == NULL:
                                fail[0] = 1
                            else:
                                _a_block(t, mc, M, kc, npanel, nbw, a + pc * sa1, sa0, sa1,
                                         bbuf, cj, ldc, acc_on, ap)
                else:
                    ap = <floating*> tgbn_scratch(1, mc * kc_max * sizeof(floating))
                    if ap == NULL:
                        return -1
                    for t in range(nb):
                        _a_block(t, mc, M, kc, npanel, nbw, a + pc * sa1, sa0, sa1,
                                 bbuf, cj, ldc, acc_on, ap)
                if failed:
                    return -1
            elif par:
                # tiles ordered panel-major so each thread's run of tiles shares one B panel;
                # the edge columns are one more work item
                for t in prange(ntile + (edge != 0), schedule='static'):
                    if t < ntile:
                        _direct_tile(t // ntile_m, (t % ntile_m) * MR, npanel, n_tail, M, nbw,
                                     kc, a + pc * sa1, sa0, sa1, bj + pc * sb0, sb0, pack_b, bbuf,
                                     cj, ldc, acc_on)
                    else:
                        _edge(edge, M, n_tail, kc, a + pc * sa1, sa0, sa1,
                              bj + pc * sb0 + nfull * NR * sb1, sb0, sb1, bbuf + pack_b * nfull * NR * kc,
                              cj + nfull * NR, ldc, acc_on)
            else:
                for jp in range(nfull):  # nested, not t // ntile_m: no division per tile
                    for t in range(ntile_m):
                        _direct_tile(jp, t * MR, npanel, n_tail, M, nbw, kc, a + pc * sa1, sa0,
                                     sa1, bj + pc * sb0, sb0, pack_b, bbuf, cj, ldc, acc_on)
                if edge:
                    _edge(edge, M, n_tail, kc, a + pc * sa1, sa0, sa1,
                          bj + pc * sb0 + nfull * NR * sb1, sb0, sb1, bbuf + pack_b * nfull * NR * kc,
                          cj + nfull * NR, ldc, acc_on)
    return 0
