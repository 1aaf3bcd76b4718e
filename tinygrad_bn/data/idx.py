"""Reader and writer for the IDX format of the MNIST files (http://yann.lecun.com/exdb/mnist/).

An IDX file is a 4-byte magic number ``00 00 <type code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the data in big-endian C order. Files may be gzipped.
"""

import gzip
import math
import os
import zlib

import numpy as np

from .._atomic import atomic_write

GZIP_MAGIC = b"\x1f\x8b"

# type code -> big-endian dtype of the data on disk
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {
    0x08: "ubyte",
    0x09: "byte",
    0x0B: "short",
    0x0C: "int",
    0x0D: "float",
    0x0E: "double",
}
_EXPECTED_CODES = ", ".join(f"0x{c:02X} {n}" for c, n in _TYPE_NAMES.items())


class IDXError(ValueError):
    """An IDX file is truncated, corrupted, or not an IDX file at all."""


def read_idx(path):
    """Read an IDX file (gzipped or raw, judged by content) into a native-endian, writable array.

    Returns an array of shape given by the header and dtype uint8, int8, int16, int32, float32
    or float64 (type codes 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E).
    Raises IDXError (a ValueError) naming the file for a bad gzip stream (corrupt, failed CRC,
    truncated), a bad magic number, an unknown type code, or a data size that does not match the
    dimensions exactly (truncated or with trailing bytes); OSError if the file cannot be read.
    """
    return parse_idx(read_decompressed(path), name=os.fspath(path))


def read_decompressed(path):
    """Return the content of ``path``, gunzipped when it starts with the gzip magic bytes.

    Raises IDXError naming the file when the gzip stream is corrupt or truncated.
    """
    with open(path, "rb") as f:
        data = f.read()
    return decompress(data, name=os.fspath(path))


def decompress(data, name="<bytes>"):
    """Gunzip ``data`` when it starts with the gzip magic bytes, else return it unchanged."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except EOFError as e:
        raise IDXError(f"{name}: truncated gzip data ({e})") from None
    except (OSError, zlib.error) as e:  # BadGzipFile (bad header, CRC or length) is an OSError
        raise IDXError(f"{name}: corrupted gzip data ({e})") from None


def parse_idx(data, name="<bytes>"):
    """Parse the bytes of an uncompressed IDX file; read_idx says what is returned and raised."""
    if len(data) < 4:
        raise IDXError(
            f"{name}: not an IDX file: {len(data)} bytes, expected at least a 4-byte header"
        )
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00":
        raise IDXError(
            f"{name}: not an IDX file: magic number 0x{data[:4].hex().upper()} "
            "does not start with two zero bytes"
        )
    if code not in IDX_TYPES:
        raise IDXError(
            f"{name}: unknown IDX type code 0x{code:02X} (expected one of {_EXPECTED_CODES})"
        )
    if ndim == 0:
        raise IDXError(f"{name}: IDX header declares 0 dimensions (expected at least 1)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"{name}: truncated IDX header: {ndim} dimensions need {header} bytes, "
            f"file has {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else f"{got - expected} unexpected trailing bytes"
        raise IDXError(
            f"{name}: {what}: shape {shape} of {_TYPE_NAMES[code]} needs {expected} data bytes, "
            f"file has {got}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    # astype copies: the result is writable, owns its memory and is native-endian.
    return flat.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzipped when ``path`` ends with ``.gz``; written atomically.

    ``array`` must have 1 to 255 dimensions, each < 2**32, and dtype uint8, int8, int16, int32,
    float32 or float64. Raises TypeError for another dtype, ValueError for a bad shape.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): c for c, dt in IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(
            f"write_idx: dtype {array.dtype} has no IDX type code "
            "(expected uint8, int8, int16, int32, float32 or float64)"
        )
    if not 1 <= array.ndim <= 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(
            f"write_idx: expected 1 to 255 dimensions each < 2**32 (got shape {array.shape})"
        )
    payload = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    )
    if os.fspath(path).endswith(".gz"):
        # mtime=0: the same array always gives the same bytes, so file checksums are stable.
        payload = gzip.compress(payload, mtime=0)
    with atomic_write(path) as f:
        f.write(payload)
