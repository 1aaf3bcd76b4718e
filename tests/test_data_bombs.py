"""Decompression bombs and damaged IDX files: refused with IDXError, memory bounded by the header.

A gzip file may hold many members, each inflating 1 MiB of zeros from ~1 KB, so a bomb of any
size is cheap to build: the old reader inflated all of it before judging the size.
"""

import gzip
import hashlib
import os
import random
import tracemalloc

import numpy as np
import pytest

from tinygrad_bn.data import IDXError, read_idx, write_idx
from tinygrad_bn.data import idx as idx_module
from tinygrad_bn.data import mnist as mnist_module

_MIB_OF_ZEROS = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)


def _bomb(header_images, inflated_mib):
    """A gzip file: an IDX header for ``header_images`` 28x28 images, their pixels, then
    ``inflated_mib`` MiB of zeros (trailing data the header does not declare)."""
    n = header_images
    head = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
    return gzip.compress(head + bytes(n * 784), mtime=0) + _MIB_OF_ZEROS * inflated_mib


def _peak(fn, *args, **kwargs):
    """(peak traced bytes, the IDXError message) of a call that must raise IDXError."""
    tracemalloc.start()
    try:
        with pytest.raises(IDXError) as info:
            fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1], str(info.value)
    finally:
        tracemalloc.stop()


def test_gzip_bomb_is_refused_after_the_declared_size(tmp_path):
    bomb = _bomb(10, 200)  # 10 images declared (7,856 bytes), 200 MiB inflated, ~200 KB on disk
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bomb)
    peak, message = _peak(read_idx, path)
    assert str(path) in message and "trailing bytes" in message
    assert peak < 2 << 20, peak  # the file itself and a few reads, not 200 MiB
    # the same bound for content already in memory (a download)
    peak, message = _peak(idx_module.decompress, bomb, name="https://mirror/x.gz")
    assert "https://mirror/x.gz" in message
    assert peak < len(bomb) + (2 << 20), peak


def test_declared_size_beyond_what_the_file_can_hold_is_refused_unread(tmp_path):
    head = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (10**6, 1000, 1000))
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip.compress(head + bytes(100)))
    with pytest.raises(
        IDXError,
        match=r"expected at most \d+ bytes, the most \d+ gzipped bytes hold \(got 1000000000016\)",
    ):
        read_idx(path)
    with pytest.raises(
        IDXError, match="expected at most 100 bytes, the size this file is known to have"
    ):
        idx_module.read_decompressed(tmp_path / "huge.gz", max_size=100)


def test_honest_large_declared_sizes_still_read(tmp_path):
    array = np.zeros((2000, 28, 28), np.uint8)  # 1.5 MB of zeros: a ~1000x ratio
    write_idx(tmp_path / "zeros.idx.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "zeros.idx.gz"), array)


def test_damaged_idx_files_raise_only_idx_error(tmp_path):
    rng = random.Random(0)
    array = np.arange(3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7)
    path = tmp_path / "x.idx.gz"
    for suffix in (".gz", ""):
        good = tmp_path / f"good.idx{suffix}"
        write_idx(good, array)
        data = good.read_bytes()
        for _ in range(150):
            damaged = bytearray(data)
            pos = rng.randrange(len(damaged))
            damaged[pos] ^= 1 << rng.randrange(8)
            if rng.random() < 0.3:
                damaged = damaged[: rng.randrange(len(damaged))]
            path.write_bytes(bytes(damaged))
            try:
                out = read_idx(path)
            except IDXError as e:
                assert str(path) in str(e)
                continue
            if suffix:  # the CRC guards the content: a flip that passes was in the gzip header
                np.testing.assert_array_equal(out, array)
            else:  # a raw file has no checksum, but the sizes must still agree
                assert out.size == array.size


def _serve(tmp_path, monkeypatch, name, content):
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    (mirror / f"{name}.gz").write_bytes(content)
    monkeypatch.setattr(mnist_module, "MIRRORS", (mirror.as_uri() + "/",))
    return tmp_path / "root"


def test_download_of_a_bomb_is_refused_and_not_kept(tmp_path, monkeypatch, capsys):
    name = "t10k-labels-idx1-ubyte"
    head = bytes([0, 0, 8, 1]) + (10000).to_bytes(4, "big")
    bomb = gzip.compress(head + bytes(10000)) + _MIB_OF_ZEROS * 10  # ~10 KB: fits the limit
    root = _serve(tmp_path, monkeypatch, name, bomb)
    tracemalloc.start()
    try:
        with pytest.raises(FileNotFoundError, match="trailing bytes"):
            mnist_module._download(str(root), name, [name])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak
    assert not root.exists()  # nothing kept
    # a header declaring more than the file can be, and a file larger than the file can be
    head = bytes([0, 0, 8, 1]) + (10**6).to_bytes(4, "big")
    _serve(tmp_path, monkeypatch, name, gzip.compress(head + bytes(10**6)))
    with pytest.raises(FileNotFoundError, match="expected at most 10008 bytes"):
        mnist_module._download(str(root), name, [name])
    _serve(tmp_path, monkeypatch, name, os.urandom(20_000))
    with pytest.raises(FileNotFoundError, match="expected at most 11042 bytes"):
        mnist_module._download(str(root), name, [name])


def test_digest_cache_is_used_only_when_the_stat_did_not_change_during_the_read(
    tmp_path, monkeypatch
):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(path, np.arange(10, dtype=np.uint8))
    key = mnist_module._stat_key(os.stat(path))
    monkeypatch.setitem(mnist_module._DIGEST_CACHE, key, "stale digest of the old content")
    calls = []

    def stat_key(st):  # the file changes while it is read: the second stat differs
        calls.append(st)
        return key if len(calls) == 1 else key[:-1] + (key[-1] + 1,)

    monkeypatch.setattr(mnist_module, "_stat_key", stat_key)
    data, digest = mnist_module._read_and_hash(str(path))
    assert digest == hashlib.sha256(data).hexdigest()
    calls.clear()
    monkeypatch.setattr(mnist_module, "_stat_key", lambda st: key)  # unchanged: cache used
    assert mnist_module._read_and_hash(str(path))[1] == "stale digest of the old content"
