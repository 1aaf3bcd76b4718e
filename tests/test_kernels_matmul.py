"""Compiled matmul (ext/matmul.pyx + ext/gemm.pxd) against NumPy, through tinygrad_bn.kernels.

Shapes straddle the GEMM's block sizes (register tile MR x NR, row block MC, depth KC and
the small-problem thresholds), layouts include transposed views, stepped slices, negative
and unaligned strides, and every case runs on 1 and 2 threads. The oracle is the float64
product of the same inputs; the allowed error scales with sum_k |a_ik||b_kj|.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_bn import kernels as K

K.require_extension()  # a missing build fails this module instead of testing NumPy against itself

from tinygrad_bn._ext import matmul as ext  # noqa: E402

MR, NR, NH = ext.GEMM_TILE  # the register tile of the path this build chose (microkernel.pxd.tp)
MC, KC, NC = 144, 256, 4096  # ext/gemm.pxd
PACK_A_MIN_M, DIRECT_B_MAX_M = 385, 96  # rows where float32 A gets packed (K >= KC)
EDGES = sorted(
    {
        0,
        1,
        2,
        MR - 1,
        MR,
        MR + 1,
        NR - 1,
        NR,
        NR + 1,
        NH - 1,
        NH,
        NH + 1,
        2 * NR + NH,
        2 * NR + NH + 1,
        DIRECT_B_MAX_M,
        DIRECT_B_MAX_M + 1,
        MC - 1,
        MC + 1,
        PACK_A_MIN_M,
        KC // 2 + 1,
        KC + 1,
    }
)
LAYOUTS = ("c", "f", "step", "neg", "unaligned")
# the paper's MLP (784-100-100-100-10, batch 60): forward and both backward products
MLP = [
    (60, 784, 100, "cc"),
    (60, 100, 100, "cc"),
    (60, 100, 10, "cc"),
    (60, 100, 784, "cf"),
    (60, 10, 100, "cf"),
    (60, 100, 100, "cf"),
    (784, 60, 100, "fc"),
    (100, 60, 100, "fc"),
    (100, 60, 10, "fc"),
]


def layout(a, how):
    """The values of `a` (2D or 3D) in another memory layout."""
    if how == "c":
        return np.ascontiguousarray(a)
    if how == "f":  # a transposed view of contiguous storage, as in `W.T`
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if how == "step":  # every other row and column of a bigger array
        big = np.zeros(a.shape[:-2] + (2 * a.shape[-2] + 1, 2 * a.shape[-1] + 1), a.dtype)
        big[..., 1::2, ::2][..., : a.shape[-2], : a.shape[-1]] = a
        return big[..., 1::2, ::2][..., : a.shape[-2], : a.shape[-1]]
    if how == "neg":
        return np.ascontiguousarray(a[..., ::-1, ::-1])[..., ::-1, ::-1]
    if how == "unaligned":  # data one byte off alignment: the wrapper must copy, not crash
        raw = np.zeros(a.nbytes + a.itemsize, dtype=np.uint8)
        out = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        out[...] = a
        return out
    raise ValueError(how)


def check(a, b, c):
    """c == a @ b up to rounding: |c - exact| <= rtol * (|a| @ |b|) elementwise."""
    k = a.shape[-1]
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    scale = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    rtol = 1e-12 if a.dtype == np.float64 else 2e-6 * np.sqrt(k + 1)
    assert c.shape == exact.shape and c.dtype == a.dtype, (c.shape, c.dtype, exact.shape, a.dtype)
    assert c.flags.c_contiguous
    err = np.abs(c.astype(np.float64) - exact)
    assert np.all(err <= rtol * scale + 1e-300), f"max error {err.max()} > {rtol} * scale"


def random(rng, shape, dtype):
    return rng.uniform(-1, 1, size=shape).astype(dtype)


dims = st.one_of(st.integers(0, 40), st.sampled_from(EDGES))


@settings(max_examples=60, deadline=None)
@given(
    m=dims,
    k=dims,
    n=dims,
    dtype=st.sampled_from([np.float32, np.float64]),
    la=st.sampled_from(LAYOUTS),
    lb=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_matmul_2d_matches_numpy(threads, m, k, n, dtype, la, lb, seed):
    rng = np.random.default_rng(seed)
    a0, b0 = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    a, b = layout(a0, la), layout(b0, lb)
    c = K.matmul(a, b)
    check(a0, b0, c)
    np.testing.assert_array_equal(a, a0)  # inputs are not written to
    np.testing.assert_array_equal(b, b0)


@settings(max_examples=30, deadline=None)
@given(
    nb=st.sampled_from([0, 1, 2, 3, 5]),
    m=dims,
    k=st.integers(0, 40),
    n=dims,
    dtype=st.sampled_from([np.float32, np.float64]),
    la=st.sampled_from(LAYOUTS),
    lb=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_matmul_batched_matches_numpy(threads, nb, m, k, n, dtype, la, lb, seed):
    rng = np.random.default_rng(seed)
    a0, b0 = random(rng, (nb, m, k), dtype), random(rng, (nb, k, n), dtype)
    c = K.matmul(layout(a0, la), layout(b0, lb))
    check(a0, b0, c)


def test_matmul_batched_strided_batch_axis(threads):
    """A batch axis with a step (a[::2]) and many small items (the per-item threaded path)."""
    rng = np.random.default_rng(0)
    a = random(rng, (16, 7, 33), np.float64)[::2]
    b = random(rng, (8, 33, 5), np.float64).transpose(0, 2, 1).copy().transpose(0, 2, 1)
    check(a, b, K.matmul(a, b))
    a = random(rng, (8, 60, 100), np.float32)[::2]  # enough work to thread over the items
    b = random(rng, (4, 100, 100), np.float32)
    check(a, b, K.matmul(a, b))


@settings(max_examples=60, deadline=None)
@given(
    m=st.one_of(st.integers(1, 40), st.sampled_from([MR, 2 * MR + 1, 60, 100])),
    k=st.one_of(st.integers(1, 70), st.sampled_from([KC - 1, KC + 3])),
    panels=st.integers(0, 3),
    tail=st.integers(1, NH),
    dtype=st.sampled_from([np.float32, np.float64]),
    la=st.sampled_from(LAYOUTS),
    lb=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_matmul_narrow_last_panel(threads, m, k, panels, tail, dtype, la, lb, seed):
    """N % NR <= NH / 2 (N = 100 = 3 * 32 + 4): the edge kernels take those columns, dot
    products for A with contiguous rows ("c"), vectors down the rows for contiguous columns
    ("f"), the tiles otherwise; up to NH for "c" @ "f" (both read in place); k past KC adds a
    second K slice into the same columns."""
    rng = np.random.default_rng(seed)
    n = panels * NR + tail
    a0, b0 = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    check(a0, b0, K.matmul(layout(a0, la), layout(b0, lb)))


@pytest.mark.parametrize("la", ["c", "f"])
@pytest.mark.parametrize("lb", ["c", "f"])
def test_matmul_narrow_last_panel_threaded(threads, la, lb):
    """Enough work to thread over the tiles: the edge columns are one more work item."""
    rng = np.random.default_rng(7)
    for m, k, n in [(150, 200, 3 * NR + 1), (90, KC + 20, 2 * NR + max(1, NH // 2))]:
        a0, b0 = random(rng, (m, k), np.float32), random(rng, (k, n), np.float32)
        check(a0, b0, K.matmul(layout(a0, la), layout(b0, lb)))


@pytest.mark.parametrize("m,k,n,lay", MLP)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_mlp_shapes(threads, m, k, n, lay, dtype):
    rng = np.random.default_rng(m * k + n)
    a0, b0 = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    check(
        a0,
        b0,
        K.matmul(
            layout(a0, "f" if lay[0] == "f" else "c"), layout(b0, "f" if lay[1] == "f" else "c")
        ),
    )


@pytest.mark.parametrize(
    "m,k,n",
    [
        (300, 600, 200),
        (257, 513, 65),
        (1, 1000, 1),
        (7, 33, NC + 4),
        (400, 300, NC + 1),
        # more than DIRECT_B_MAX_M rows: float32 B read in place up to a 64 KiB K slice
        (97, 128, 128),
        (97, 128, 129),
        (150, 60, 1024),
    ],
)
def test_matmul_large_blocks(threads, m, k, n):
    """Several K slices, row blocks and column blocks, ragged everywhere: the packed path."""
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        a0, b0 = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
        check(a0, b0, K.matmul(a0, b0))
        check(a0, b0, K.matmul(layout(a0, "f"), layout(b0, "f")))


@pytest.mark.parametrize(
    "shape_a,shape_b",
    [
        ((0, 5), (5, 3)),
        ((4, 0), (0, 3)),
        ((4, 5), (5, 0)),
        ((0, 0), (0, 0)),
        ((2, 3, 0), (2, 0, 4)),
        ((0, 3, 4), (0, 4, 2)),
    ],
)
def test_matmul_zero_size(threads, shape_a, shape_b):
    for dtype in (np.float32, np.float64):
        c = K.matmul(np.ones(shape_a, dtype), np.ones(shape_b, dtype))
        want = np.matmul(np.ones(shape_a), np.ones(shape_b))
        assert c.shape == want.shape and c.dtype == dtype
        np.testing.assert_array_equal(c, want)  # an empty sum is exactly 0


def test_matmul_deterministic_across_calls_and_threads():
    """Same inputs -> bit-identical output, and the K summation order never depends on threads."""
    rng = np.random.default_rng(2)
    before = K.get_num_threads()
    try:
        with K.backend("cython"):
            for m, k, n in [(60, 784, 100), (300, 600, 200)]:
                a, b = random(rng, (m, k), np.float32), random(rng, (k, n), np.float32)
                out = {}
                for t in (1, 2):
                    K.set_num_threads(t)
                    out[t] = K.matmul(a, b)
                    np.testing.assert_array_equal(K.matmul(a, b), out[t])
                np.testing.assert_array_equal(out[1], out[2])
    finally:
        K.set_num_threads(before)


def test_matmul_is_the_compiled_kernel():
    """The cython backend really calls the extension (not the NumPy fallback)."""
    assert "matmul" in K.info()["compiled_kernels"]
    a = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(ext.matmul(a, a.T), a @ a.T)


@pytest.mark.parametrize(
    "a,b,err",
    [
        ([[1.0]], [[2.0]], TypeError),
        (np.ones((2, 3)), np.ones((3, 2), np.float32), TypeError),
        (np.ones((2, 3), np.int64), np.ones((3, 2), np.int64), TypeError),
        (np.ones((2, 3)), np.ones((4, 2)), ValueError),
        (np.ones(3), np.ones(3), ValueError),
        (np.ones((2, 3, 4)), np.ones((3, 4, 5)), ValueError),
        # byte order: the GEMM reads raw native floats, so swapped bytes would be garbage
        (np.ones((2, 3), ">f4"), np.ones((3, 2), ">f4"), TypeError),
        (np.ones((2, 3), "<f4"), np.ones((3, 2), ">f4"), TypeError),
        (np.ones((2, 3), ">f8"), np.ones((3, 2), ">f8"), TypeError),
        (np.ones((2, 3, 4)), np.ones((4, 5)), ValueError),
        (np.ones((1, 2, 3, 4)), np.ones((1, 2, 4, 3)), ValueError),
        (np.float64(1.0), np.float64(1.0), TypeError),
        (np.ones(()), np.ones(()), ValueError),
        (np.ones((2, 3), np.float16), np.ones((3, 2), np.float16), TypeError),
        (np.ones((2, 3), np.complex64), np.ones((3, 2), np.complex64), TypeError),
    ],
)
def test_matmul_direct_call_validates(a, b, err):
    """The compiled function re-checks what it indexes with: a direct call errors, never crashes."""
    with pytest.raises(err, match="^matmul: expected"):
        ext.matmul(a, b)


def test_matmul_direct_call_any_strides(threads):
    """What the check lets through is safe: non-contiguous, negative, zero and odd-byte strides."""
    rng = np.random.default_rng(6)
    a0, b0 = random(rng, (37, 29), np.float32), random(rng, (29, 41), np.float32)
    for la in LAYOUTS:
        for lb in LAYOUTS:
            check(a0, b0, ext.matmul(layout(a0, la), layout(b0, lb)))
    raw = np.zeros(29 * 165 + 8, np.uint8)  # a row stride that is not whole elements
    odd = np.ndarray((29, 41), np.float32, raw.data, 2, (165, 4))
    odd[...] = b0
    check(a0, b0, ext.matmul(a0, odd))


def test_matmul_broadcast_views(threads):
    """Zero strides (np.broadcast_to views, read-only) are read in place like any other stride."""
    rng = np.random.default_rng(5)
    row = random(rng, (1, 50), np.float64)
    col = random(rng, (50, 1), np.float64)
    a = np.broadcast_to(row, (70, 50))
    b = np.broadcast_to(col, (50, 40))
    check(np.array(a), np.array(b), K.matmul(a, b))
    check(np.array(b.T), np.array(a.T), K.matmul(b.T, a.T))


def test_matmul_concurrent_python_threads_keep_their_own_buffers():
    """The packing buffers live per OS thread and grow on demand (ext/gemm.pxd): Python threads
    running products of different sizes at once, each growing and reusing its buffers, get
    exactly the products a lone thread gets (a shared or stale buffer would mix them up)."""
    import threading

    rng = np.random.default_rng(7)
    shapes = [(400, 300, 200), (7, 33, 5), (100, 60, 784), (60, 784, 100), (3, 2, 1)]
    pairs = []
    for m, k, n in shapes:  # packed A, in-place A, packed B (rows > 96 and transposed), M < MR
        pairs.append((random(rng, (m, k), np.float32), random(rng, (n, k), np.float32).T))
    before = K.get_num_threads()
    try:
        K.set_num_threads(1)
        with K.backend("cython"):
            want = [K.matmul(a, b) for a, b in pairs]
            errors = []

            def work(shift):
                try:
                    for i in range(20):
                        j = (i + shift) % len(pairs)
                        np.testing.assert_array_equal(K.matmul(*pairs[j]), want[j])
                except Exception as e:  # reported in the main thread
                    errors.append(e)

            workers = [threading.Thread(target=work, args=(s,)) for s in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    finally:
        K.set_num_threads(before)
    assert not errors, errors[0]
    for (a, b), c in zip(pairs, want):
        check(a, b, c)


@pytest.mark.parametrize(
    "a,b,err,match",
    [
        ([[1.0]], [[2.0]], TypeError, r"a: expected a numpy.ndarray \(got list\)"),
        (np.ones((2, 3)), [[1.0]] * 3, TypeError, r"b: expected a numpy.ndarray \(got list\)"),
        (np.ones((2, 3)), np.ones((3, 2), np.float32), TypeError, "one dtype"),
        (np.ones((2, 3), ">f4"), np.ones((3, 2), ">f4"), TypeError, "native byte order"),
        (np.ones((2, 3)), np.ones((4, 2)), ValueError, r"inner dims 3 != 4"),
        (np.ones(3), np.ones(3), ValueError, r"a: expected 2D or 3D \(got 1D"),
        (np.ones((2, 3, 4)), np.ones((3, 4, 5)), ValueError, "batch sizes 2 != 3"),
    ],
)
def test_matmul_door_errors_in_its_words(a, b, err, match):
    """The door lets the compiled kernel check first (it checks the same conditions in C) and
    then raises its own message; non-arrays are a TypeError (a float64-only check once let
    lists through, since np.dtype(None) is float64, to an AttributeError)."""
    for name in ("cython", "numpy"):
        with K.backend(name), pytest.raises(err, match="^matmul: " + ".*" + match):
            K.matmul(a, b)
