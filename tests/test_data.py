"""Tests for tinygrad_bn.data: the IDX reader/writer, load_mnist, batches and preprocessing."""

import gzip
import hashlib
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_bn.data import (
    MNIST,
    DatasetError,
    DatasetNotVerifiedWarning,
    IDXError,
    Split,
    batches,
    flatten,
    load_mnist,
    mnist_root,
    read_idx,
    to_float,
    write_idx,
)
from tinygrad_bn.data import mnist as mnist_module

FILES = mnist_module.FILES
IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.fixture(scope="session")
def mnist_dir():
    """The MNIST copy bundled with the package; a missing file is a failure, not a skip."""
    root = Path(mnist_module.BUNDLED)
    missing = [n for n in FILES if not (root / f"{n}.gz").is_file()]
    if missing:
        pytest.fail(f"the bundled MNIST copy {root} lacks {missing}: reinstall the package")
    return root


def idx_bytes(code, shape, payload):
    """An IDX file built by hand, independently of write_idx."""
    header = bytes([0, 0, code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    return header + payload


def link_mnist(src, dst, skip=()):
    """A directory of symlinks to the real MNIST files (fast: nothing is copied)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if name not in skip:
            os.symlink(src / f"{name}.gz", dst / f"{name}.gz")
    return dst


def write_small_dataset(root, n_train=20, n_test=7, hw=(8, 6), seed=0, gz=True):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, array) in enumerate(arrays.items()):
        # Mix raw and gzipped names: both must be found.
        write_idx(root / (name + (".gz" if gz and i % 2 == 0 else "")), array)
    return arrays


def no_temp_files(directory):
    return not [p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------ IDX


def test_read_idx_hand_built_files(tmp_path):
    cases = [
        (0x08, (2, 3), bytes(range(6)), np.arange(6, dtype=np.uint8).reshape(2, 3)),
        (0x09, (3,), b"\x7f\x80\xff", np.array([127, -128, -1], np.int8)),
        (0x0B, (1, 2), b"\x00\x01\xff\xfe", np.array([[1, -2]], np.int16)),
        (0x0C, (2,), b"\x00\x00\x01\x00\x80\x00\x00\x00", np.array([256, -(2**31)], np.int32)),
        (
            0x0D,
            (1, 1, 2),
            b"\x3f\x80\x00\x00\xc0\x00\x00\x00",
            np.array([[[1.0, -2.0]]], np.float32),
        ),
        (0x0E, (1,), b"\x3f\xd0\x00\x00\x00\x00\x00\x00", np.array([0.25], np.float64)),
    ]
    for code, shape, payload, expected in cases:
        raw = idx_bytes(code, shape, payload)
        (tmp_path / "a.idx").write_bytes(raw)
        (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw))
        for name in ("a.idx", "a.idx.gz"):
            got = read_idx(tmp_path / name)
            assert got.dtype == expected.dtype and got.dtype.isnative
            np.testing.assert_array_equal(got, expected)
            assert got.flags.writeable and got.flags.c_contiguous
        # The writer produces exactly the hand-built bytes.
        write_idx(tmp_path / "w.idx", expected)
        assert (tmp_path / "w.idx").read_bytes() == raw


def test_gzip_detected_by_content_not_extension(tmp_path):
    raw = idx_bytes(0x08, (3,), b"\x01\x02\x03")
    (tmp_path / "gz-without-suffix").write_bytes(gzip.compress(raw))
    (tmp_path / "raw-with-suffix.gz").write_bytes(raw)
    for name in ("gz-without-suffix", "raw-with-suffix.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), [1, 2, 3])


@settings(max_examples=40, deadline=None)
@given(
    array=st.sampled_from(IDX_DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    ),
    gz=st.booleans(),
)
def test_idx_round_trip(tmp_path_factory, array, gz):
    path = tmp_path_factory.mktemp("idx") / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, array)
    got = read_idx(path)
    assert got.shape == array.shape and got.dtype == array.dtype
    assert got.tobytes() == array.tobytes()  # bit-exact, NaN payloads and -0.0 included


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "at least a 4-byte header"),
        (b"\x00\x00\x08", "at least a 4-byte header"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "two zero bytes"),
        (b"PK\x03\x04" + b"\x00" * 10, "two zero bytes"),
        (b"\x00\x00\x0a\x01" + b"\x00\x00\x00\x01" + b"\x05", "type code 0x0A"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x01", "truncated IDX header"),
        (idx_bytes(0x08, (2, 3), bytes(5)), "truncated"),
        (idx_bytes(0x0C, (2,), bytes(7)), "truncated"),
        (idx_bytes(0x08, (2, 3), bytes(7)), "1 unexpected trailing bytes"),
        (idx_bytes(0x0D, (1,), bytes(8)), "4 unexpected trailing bytes"),
    ],
)
def test_bad_idx_raises_naming_file(tmp_path, content, message):
    for path, data in (
        (tmp_path / "bad.idx", content),
        (tmp_path / "bad.idx.gz", gzip.compress(content)),
    ):
        path.write_bytes(data)
        with pytest.raises(IDXError, match=message) as info:
            read_idx(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)


def test_corrupted_or_truncated_gzip(tmp_path):
    good = gzip.compress(idx_bytes(0x08, (500,), bytes(range(250)) * 2))
    crc = bytearray(good)
    crc[-6] ^= 0xFF  # inside the CRC-32 trailer
    stream = bytearray(good)
    stream[12] ^= 0xFF  # inside the deflate stream
    cases = {"crc.gz": bytes(crc), "stream.gz": bytes(stream), "cut.gz": good[: len(good) // 2]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(IDXError, match="gzip") as info:
            read_idx(tmp_path / name)
        assert name in str(info.value)


def test_write_idx_rejects_bad_input(tmp_path):
    for dtype in (np.int64, np.bool_, np.float16, np.uint16):
        with pytest.raises(TypeError, match="IDX type code"):
            write_idx(tmp_path / "x.idx", np.zeros(3, dtype))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "x.idx", np.zeros((), np.uint8))
    assert not (tmp_path / "x.idx").exists()


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")


# ---------------------------------------------------------------------------------- MNIST


def test_load_mnist_real_data(mnist_dir, monkeypatch):
    # no argument, no TINYGRAD_BN_DATA: the bundled copy, verified, offline
    monkeypatch.delenv("TINYGRAD_BN_DATA", raising=False)
    monkeypatch.setattr(mnist_module, "MIRRORS", ())  # nothing may be downloaded
    assert mnist_root() == str(mnist_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified MNIST loads without the not-verified notice
        ds = load_mnist()
    assert isinstance(ds, MNIST) and isinstance(ds.train, Split)
    (x_train, y_train), (x_test, y_test) = ds
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.dtype == y_test.dtype == np.int64
    for labels in (y_train, y_test):
        assert set(np.unique(labels)) == set(range(10))
    assert ds.train_images is x_train and ds.train_labels is y_train
    assert ds.test_images is x_test and ds.test_labels is y_test
    assert "uint8(60000, 28, 28)" in repr(ds)


def test_bundled_checksum_manifest_matches_the_verified_sums(mnist_dir):
    lines = (mnist_dir / "SHA256SUMS.uncompressed").read_text().split("\n")
    assert dict(reversed(line.split()) for line in lines if line) == mnist_module.SHA256


def test_tampered_bundled_copy_is_refused(mnist_dir, tmp_path, monkeypatch):
    bundle = link_mnist(mnist_dir, tmp_path / "bundle", skip=["train-labels-idx1-ubyte"])
    labels = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    labels[-1] = (labels[-1] + 1) % 10
    labels_gz = "train-labels-idx1-ubyte.gz"
    write_idx(bundle / labels_gz, labels)
    monkeypatch.setattr(mnist_module, "BUNDLED", str(bundle))
    monkeypatch.delenv("TINYGRAD_BN_DATA", raising=False)
    with pytest.raises(DatasetError) as info:
        load_mnist()
    message = str(info.value)
    assert str(bundle / labels_gz) in message and "reinstall" in message
    found = hashlib.sha256(gzip.decompress(bundle.joinpath(labels_gz).read_bytes())).hexdigest()
    assert found in message and mnist_module.SHA256["train-labels-idx1-ubyte"] in message


def test_data_environment_variable_wins_over_the_bundled_copy(tmp_path, monkeypatch):
    arrays = write_small_dataset(tmp_path / "env")
    monkeypatch.setenv("TINYGRAD_BN_DATA", str(tmp_path / "env"))
    with pytest.warns(DatasetNotVerifiedWarning):
        ds = load_mnist(download=False)
    np.testing.assert_array_equal(ds.test.images, arrays["t10k-images-idx3-ubyte"])


def test_altered_file_is_named(mnist_dir, tmp_path):
    root = link_mnist(mnist_dir, tmp_path / "copy", skip=["t10k-labels-idx1-ubyte"])
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    labels[0] = (labels[0] + 1) % 10  # one label changed: still a valid IDX file
    write_idx(root / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DatasetError) as info:
        load_mnist(root, download=False)
    message = str(info.value)
    assert str(root / "t10k-labels-idx1-ubyte") in message and "1 of them" in message
    assert "train-images" not in message and "t10k-images" not in message


def test_swapped_file_is_named(mnist_dir, tmp_path):
    root = link_mnist(mnist_dir, tmp_path / "copy", skip=["t10k-labels-idx1-ubyte"])
    os.symlink(mnist_dir / "train-labels-idx1-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError, match="that is MNIST's train-labels-idx1-ubyte") as info:
        load_mnist(root, download=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)


def test_other_mnist_format_dataset_loads_with_notice(tmp_path):
    arrays = write_small_dataset(tmp_path / "fashion")
    with pytest.warns(DatasetNotVerifiedWarning, match="unverified") as record:
        (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path / "fashion", download=False)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert y_train.dtype == np.int64 and x_train.shape == (20, 8, 6)


def test_inconsistent_dataset_is_rejected(tmp_path):
    write_small_dataset(tmp_path / "n")
    write_idx(
        tmp_path / "n" / "t10k-labels-idx1-ubyte", np.zeros(6, np.uint8)
    )  # 7 images, 6 labels
    with (
        pytest.warns(DatasetNotVerifiedWarning),
        pytest.raises(DatasetError, match="7 images .* 6 labels"),
    ):
        load_mnist(tmp_path / "n", download=False)

    write_small_dataset(tmp_path / "f")
    write_idx(tmp_path / "f" / "t10k-images-idx3-ubyte.gz", np.zeros((7, 8, 6), np.float32))
    with (
        pytest.warns(DatasetNotVerifiedWarning),
        pytest.raises(DatasetError, match="expected uint8 images"),
    ):
        load_mnist(tmp_path / "f", download=False)

    write_small_dataset(tmp_path / "hw")
    write_idx(tmp_path / "hw" / "t10k-images-idx3-ubyte.gz", np.zeros((7, 6, 8), np.uint8))
    with pytest.warns(DatasetNotVerifiedWarning), pytest.raises(DatasetError, match="same"):
        load_mnist(tmp_path / "hw", download=False)


def test_malformed_file_in_dataset_is_named(tmp_path):
    write_small_dataset(tmp_path / "d", gz=False)
    path = tmp_path / "d" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    # Verification (here: not MNIST, so a notice) comes before parsing.
    with (
        pytest.warns(DatasetNotVerifiedWarning),
        pytest.raises(IDXError, match="truncated") as info,
    ):
        load_mnist(tmp_path / "d", download=False)
    assert str(path) in str(info.value)


def test_download_from_file_mirror(mnist_dir, tmp_path, monkeypatch, capsys):
    # A wrong file on the first mirror must be rejected by checksum before it is kept.
    bad_mirror = tmp_path / "bad-mirror"
    write_small_dataset(bad_mirror, gz=False)
    for name in FILES:
        (bad_mirror / f"{name}.gz").write_bytes(gzip.compress((bad_mirror / name).read_bytes()))
    monkeypatch.setattr(
        mnist_module,
        "MIRRORS",
        ("file:///nonexistent-dir/", bad_mirror.as_uri() + "/", mnist_dir.as_uri()),
    )
    root = tmp_path / "cache" / "mnist"  # does not exist yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x_train, _), (x_test, y_test) = load_mnist(root)
    assert x_train.shape == (60000, 28, 28) and y_test.shape == (10000,)
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in FILES)
    for name in FILES:
        assert (root / f"{name}.gz").read_bytes() == (mnist_dir / f"{name}.gz").read_bytes()
    assert "downloading" in capsys.readouterr().err
    # Present files are not fetched again.
    monkeypatch.setattr(mnist_module, "MIRRORS", ("file:///nonexistent-dir/",))
    np.testing.assert_array_equal(load_mnist(root).test.labels, y_test)


def test_download_only_missing_file(mnist_dir, tmp_path, monkeypatch):
    root = link_mnist(mnist_dir, tmp_path / "partial", skip=["train-labels-idx1-ubyte"])
    monkeypatch.setattr(mnist_module, "MIRRORS", (mnist_dir.as_uri() + "/",))
    assert load_mnist(root).train.labels.shape == (60000,)
    assert (root / "train-labels-idx1-ubyte.gz").is_file() and not (
        root / "train-labels-idx1-ubyte.gz"
    ).is_symlink()
    assert no_temp_files(root)


def test_no_network_error_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setattr(
        mnist_module, "MIRRORS", ("file:///nonexistent-dir/", "http://127.0.0.1:9/")
    )
    monkeypatch.setattr(mnist_module, "DOWNLOAD_TIMEOUT", 3)  # bounded even behind an HTTP proxy
    root = tmp_path / "empty"
    for download in (True, False):
        with pytest.raises(FileNotFoundError) as info:
            load_mnist(root, download=download)
        message = str(info.value)
        assert str(root) in message
        for name in FILES:
            assert f"{name}.gz" in message
        tried = "failed from every mirror" in message and "http://127.0.0.1:9/" in message
        assert tried == download
    assert not root.exists()  # nothing created when nothing could be downloaded


def test_no_mnist_download_into_other_dataset(mnist_dir, tmp_path, monkeypatch):
    write_small_dataset(tmp_path / "other")
    os.remove(tmp_path / "other" / "t10k-labels-idx1-ubyte")
    monkeypatch.setattr(mnist_module, "MIRRORS", (mnist_dir.as_uri() + "/",))
    with pytest.raises(FileNotFoundError, match="matches no MNIST checksum"):
        load_mnist(tmp_path / "other")
    assert not (tmp_path / "other" / "t10k-labels-idx1-ubyte.gz").exists()


def test_root_resolution(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_BN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist_root(tmp_path / "arg") == str(tmp_path / "arg")
    assert mnist_root() == str(tmp_path / "env")
    monkeypatch.delenv("TINYGRAD_BN_DATA")
    assert mnist_root() == str(mnist_dir)
    # a package built without its data falls back to the per-user cache (and downloads)
    incomplete = link_mnist(mnist_dir, tmp_path / "incomplete", skip=["t10k-labels-idx1-ubyte"])
    monkeypatch.setattr(mnist_module, "BUNDLED", str(incomplete))
    assert mnist_root() == str(tmp_path / "xdg" / "tinygrad_bn" / "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert mnist_root() == str(tmp_path / "home" / ".cache" / "tinygrad_bn" / "mnist")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mnist_root() == str(tmp_path / "home" / ".cache" / "tinygrad_bn" / "mnist")


def test_digest_cache_notices_in_place_change(mnist_dir, tmp_path, monkeypatch):
    root = link_mnist(mnist_dir, tmp_path / "copy", skip=["t10k-labels-idx1-ubyte"])
    path = root / "t10k-labels-idx1-ubyte"
    shutil.copyfileobj(gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz"), path.open("wb"))
    # A fresh file is "racy" (changed within the timestamp granularity) and must not be cached.
    mnist_module._read_and_hash(str(path))
    key = mnist_module._stat_key(path.stat())
    assert key not in mnist_module._DIGEST_CACHE
    monkeypatch.setattr(mnist_module, "_RACY_SECONDS", 0.0)
    load_mnist(root, download=False)
    assert key in mnist_module._DIGEST_CACHE
    time.sleep(0.05)  # let the coarse filesystem clock tick, as the racy rule assumes
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # same size ...
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same mtime
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_mnist(root, download=False)


# -------------------------------------------------------------------------------- batches


@given(
    n=st.integers(0, 40),
    batch_size=st.integers(1, 12),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_batches_cover_the_data(n, batch_size, shuffle, drop_last, seed):
    x = np.arange(n * 2).reshape(n, 2)
    y = np.arange(n) * 10
    out = list(batches(x, y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last))
    sizes = [len(yb) for _, yb in out]
    if drop_last:
        assert sizes == [batch_size] * (n // batch_size)
    else:
        assert (
            sum(sizes) == n
            and all(s == batch_size for s in sizes[:-1])
            and all(s >= 1 for s in sizes)
        )
    for xb, yb in out:
        np.testing.assert_array_equal(xb[:, 0] * 5, yb)  # pairs stay together
    seen = np.concatenate([yb for _, yb in out]) // 10 if out else np.array([], int)
    assert len(set(seen.tolist())) == len(seen)  # each example at most once
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(n))
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(len(seen)))


def test_batches_reproducible():
    x, y = np.arange(50), np.arange(50)
    first = [yb for _, yb in batches(x, y, 7, seed=123)]
    again = [yb for _, yb in batches(x, y, 7, seed=123)]
    other = [yb for _, yb in batches(x, y, 7, seed=124)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    # A Generator is advanced: two epochs differ, yet the run repeats from the same seed.
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    run1 = [np.concatenate([yb for _, yb in batches(x, y, 7, seed=g1)]) for _ in range(2)]
    run2 = [np.concatenate([yb for _, yb in batches(x, y, 7, seed=g2)]) for _ in range(2)]
    assert not np.array_equal(run1[0], run1[1])
    assert all(np.array_equal(a, b) for a, b in zip(run1, run2))


def test_batches_are_copies():
    x, y = np.zeros((6, 2)), np.zeros(6)
    for shuffle in (True, False):
        for xb, yb in batches(x, y, 4, shuffle=shuffle):
            xb += 1
            yb += 1
    assert not x.any() and not y.any()


def test_batches_validate_arguments_eagerly():
    x, y = np.zeros((5, 2)), np.zeros(5)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"batch_size must be >= 1 \\(got {bad}\\)"):
            batches(x, y, bad)
    for bad in (2.5, "3", True, None):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            batches(x, y, bad)
    with pytest.raises(ValueError, match="same length \\(got 5 and 4\\)"):
        batches(x, y[:4], 2)
    with pytest.raises(ValueError, match="leading batch axis"):
        batches(np.float64(1.0), 1.0, 1)
    for bad in ("seed", 1.5, True):
        with pytest.raises(TypeError, match="seed must be"):
            batches(x, y, 2, seed=bad)
    assert len(list(batches(x, y, np.int64(2)))) == 3


# -------------------------------------------------------------------------- preprocessing


@given(images=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)))
def test_to_float(images):
    for dtype in (np.float32, np.float64):
        out = to_float(images, dtype)
        assert out.dtype == dtype and out.shape == images.shape
        np.testing.assert_allclose(
            out, images.astype(np.float64) / 255.0, rtol=1e-6 if dtype == np.float32 else 1e-15
        )
        assert ((out >= 0) & (out <= 1)).all()
    assert (to_float(np.array([0, 255], np.uint8)) == [0.0, 1.0]).all()


def test_to_float_rejects_bad_dtypes():
    with pytest.raises(TypeError, match="expected uint8 images \\(got float32\\)"):
        to_float(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="floating dtype"):
        to_float(np.zeros(3, np.uint8), np.int32)


def test_flatten():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    flat = flatten(images)
    assert flat.shape == (2, 12) and np.shares_memory(flat, images)
    np.testing.assert_array_equal(flat[1], np.arange(12, 24))
    assert flatten(np.zeros((0, 28, 28))).shape == (0, 784)
    assert flatten(np.zeros((5, 3))).shape == (5, 3)
    with pytest.raises(ValueError, match="got shape \\(4,\\)"):
        flatten(np.zeros(4))
