"""Reader and writer for the IDX format of the MNIST files (http://yann.lecun.com/exdb/mnist/).

An IDX file is a 4-byte magic number ``00 00 <type code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the data in big-endian C order. Files may be gzipped.
"""

import gzip
import io
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
    Memory stays within a few hundred KB of the size the header declares, whatever the file
    inflates to.
    """
    return parse_idx(read_decompressed(path), name=os.fspath(path))


def read_decompressed(path, max_size=None):
    """The bytes of the IDX file ``path``, gunzipped when it starts with the gzip magic bytes.

    Reads no further than the IDX header declares (and at most ``max_size`` bytes when given),
    plus a little to report trailing bytes: a small file that inflates to gigabytes is refused
    after reading what its header promised. Returns a bytearray for parse_idx.
    Raises IDXError naming the file when the gzip stream is corrupt or truncated, or when the
    declared size is more than ``max_size`` or than the compressed file can hold.
    """
    with open(path, "rb") as f:
        return _read_bounded(f, os.fstat(f.fileno()).st_size, os.fspath(path), max_size)


def decompress(data, name="<bytes>", max_size=None):
    """read_decompressed for IDX content already in memory (``data``: bytes)."""
    return _read_bounded(io.BytesIO(data), len(data), name, max_size)


_CHUNK = 1 << 20
# bytes past the declared size that are still read, to say how many there are
_TRAILING_SHOWN = 1 << 16
# no deflate stream inflates more than 1032-fold (its longest match per bit is bounded)
_MAX_DEFLATE_RATIO = 1032


def _declared_size(prefix):
    """Total bytes (header + data) the header in ``prefix`` declares; None if it declares none
    (too short or malformed: parse_idx then says what is wrong)."""
    if len(prefix) < 4 or prefix[:2] != b"\x00\x00" or prefix[2] not in IDX_TYPES:
        return None
    header = 4 + 4 * prefix[3]
    if prefix[3] == 0 or len(prefix) < header:
        return None
    dims = np.frombuffer(bytes(prefix[4:header]), dtype=">u4")
    return header + math.prod(int(d) for d in dims) * IDX_TYPES[prefix[2]].itemsize


def _read_bounded(f, size, name, max_size):
    """The IDX content of ``f`` (``size`` bytes, maybe gzipped), read as far as its header says."""
    gzipped = f.read(2) == GZIP_MAGIC
    f.seek(0)
    if not gzipped:
        return _read_stream(f, name, max_size)
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as stream:
            return _read_stream(stream, name, max_size, gzip_size=size)
    except EOFError as e:
        raise IDXError(f"{name}: truncated gzip data ({e})") from None
    except (OSError, zlib.error) as e:  # BadGzipFile (bad header, CRC or length) is an OSError
        raise IDXError(f"{name}: corrupted gzip data ({e})") from None


def _read_stream(stream, name, max_size, gzip_size=None):
    out = bytearray(_read_at_most(stream, 4))
    out += _read_at_most(stream, 4 * out[3] if len(out) == 4 else 0)
    declared = _declared_size(out)
    if declared is None:
        return out
    bounds = [(max_size, "the size this file is known to have")] if max_size is not None else []
    if gzip_size is not None:
        bounds.append((gzip_size * _MAX_DEFLATE_RATIO, f"the most {gzip_size} gzipped bytes hold"))
    for bound, why in bounds:
        if declared > bound:
            raise IDXError(
                f"{name}: IDX header: expected at most {bound} bytes, {why} (got {declared})"
            )
    # read the declared bytes and one past the trailing bytes shown; to the end when shorter,
    # where gzip checks the CRC
    want = declared + _TRAILING_SHOWN + 1
    while len(out) < want:
        chunk = stream.read(min(_CHUNK, want - len(out)))
        if not chunk:
            return out
        out += chunk
    raise IDXError(
        f"{name}: more than {_TRAILING_SHOWN} unexpected trailing bytes after the "
        f"{declared} bytes the IDX header declares"
    )


def _read_at_most(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


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
