"""Checkpoints: save and load nested state (model, optimizer, step, RNG state) as one .npz file.

The file is a standard npz (``numpy.load`` opens it): every array is an ``arr_<i>.npy`` member,
and the nesting, with the Python scalars, is a JSON ``manifest.json`` member. Nothing is pickled.
"""

import contextlib
import json
import math
import os
import zipfile
import zlib

import numpy as np

from ._atomic import atomic_write
from .tensor import Tensor

__all__ = ["CheckpointError", "save", "load"]

FORMAT = "tinygrad_bn.checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
_SUPPORTED = "dict, list, tuple, numpy array or scalar, Tensor, int, float, bool, str, None"
_KEY_TYPES = (str, int, float, type(None))  # bool is an int
# Nesting deeper than this is refused by save and load alike: a state dict is a few levels
# deep, and a bound keeps a crafted manifest from exhausting the stack.
MAX_DEPTH = 100
# The manifest holds the nesting and the Python scalars, not the arrays: it stays small.
MAX_MANIFEST_BYTES = 64 << 20
# No deflate stream inflates more than 1032-fold; a member declaring more is lying.
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A file is not a tinygrad_bn checkpoint, or is damaged."""


def save(obj, path):
    """Save ``obj`` to ``path`` (written as given, no suffix added), atomically.

    ``obj`` nests dicts (keys str, int, float, bool or None), lists and tuples of numpy arrays,
    numpy scalars, Tensors, int (any size, e.g. ``Generator.bit_generator.state``), float, bool,
    str and None. Dict subclasses come back as dict and namedtuples as tuple; an object reached
    twice is stored twice. Tensors keep their data and requires_grad, not .grad.
    The file is written to a temp file beside ``path``, fsynced and renamed over it, so ``path``
    holds either the old checkpoint or the new one, whatever happens during the save.
    Raises TypeError for an unsupported type or an object-dtype array, ValueError for a reference
    cycle, nesting deeper than MAX_DEPTH or a manifest over MAX_MANIFEST_BYTES (all name where
    in ``obj``, before anything is written), OSError when writing fails.
    """
    arrays = []
    root = _encode(obj, arrays, "obj", set())
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "root": root}, allow_nan=False)
    if len(manifest) > MAX_MANIFEST_BYTES:  # characters <= UTF-8 bytes; ensure_ascii: equal
        raise ValueError(
            f"save: manifest: expected at most {MAX_MANIFEST_BYTES} bytes of nesting and "
            f"Python scalars (got {len(manifest)}); store long lists of numbers as arrays"
        )
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(MANIFEST, manifest)
            for i, array in enumerate(arrays):
                with zf.open(f"arr_{i}.npy", "w", force_zip64=True) as member:
                    _write_array(member, array)


def _write_array(file, array):
    np.lib.format.write_array(file, array, allow_pickle=False)


def _add_array(arrays, array, where):
    if array.dtype.hasobject:
        raise TypeError(
            f"save: {where} is an array of dtype {array.dtype}; object arrays would need pickle"
        )
    arrays.append(array)
    return f"arr_{len(arrays) - 1}"


def _encode(v, arrays, where, active):
    """The JSON node for ``v``; arrays are appended to ``arrays`` and referenced by member name."""
    if v is None:
        return {"type": "none"}
    if isinstance(v, bool):
        return {"type": "bool", "value": v}
    if isinstance(v, np.generic):  # before int/float: np.float64 subclasses float
        return {"type": "numpy_scalar", "member": _add_array(arrays, np.asarray(v), where)}
    if isinstance(v, int):
        return {"type": "int", "value": int(v)}
    if isinstance(v, float):
        # Finite floats are exact in JSON (repr round-trips); nan/inf are not JSON, so strings.
        return {"type": "float", "value": float(v) if math.isfinite(v) else repr(float(v))}
    if isinstance(v, str):
        return {"type": "str", "value": str(v)}
    if isinstance(v, np.ndarray):
        return {"type": "ndarray", "member": _add_array(arrays, np.asarray(v), where)}
    if isinstance(v, Tensor):
        member = _add_array(arrays, np.asarray(v.numpy()), where)
        return {"type": "tensor", "member": member, "requires_grad": bool(v.requires_grad)}
    if not isinstance(v, (dict, list, tuple)):
        raise TypeError(
            f"save: cannot store {type(v).__name__} at {where} (supported: {_SUPPORTED})"
        )
    if id(v) in active:
        raise ValueError(f"save: reference cycle at {where}: it contains itself")
    if len(active) >= MAX_DEPTH:
        raise ValueError(
            f"save: {where}: expected at most {MAX_DEPTH} levels of nesting (got more)"
        )
    active.add(id(v))
    if isinstance(v, dict):
        items = []
        for key, value in v.items():
            if not isinstance(key, _KEY_TYPES):
                raise TypeError(
                    f"save: cannot store dict key of type {type(key).__name__} at {where} "
                    "(supported: str, int, float, bool, None)"
                )
            sub = f"{where}[{key!r}]"
            items.append([_encode(key, arrays, sub, active), _encode(value, arrays, sub, active)])
        node = {"type": "dict", "items": items}
    else:
        items = [_encode(x, arrays, f"{where}[{i}]", active) for i, x in enumerate(v)]
        node = {"type": "list" if isinstance(v, list) else "tuple", "items": items}
    active.discard(id(v))
    return node


def load(path):
    """Load a checkpoint written by save: the same nesting, arrays as writable numpy arrays,
    Tensors as ``tinygrad_bn.tensor.Tensor``. Never unpickles anything.

    Memory stays bounded by what the file declares: the manifest by MAX_MANIFEST_BYTES, each
    array by its npy header, which must agree with the zip entry's size before anything is
    inflated; a member is streamed into its array and refused the moment it disagrees.
    Raises FileNotFoundError for a missing file; CheckpointError (a ValueError) naming the file
    when it is not a checkpoint (not a zip/npz, no manifest, unknown format or version) or is
    damaged (bad CRC, truncated, bad compression, malformed manifest or array member).
    """
    name = os.fspath(path)
    with open(path, "rb") as f:  # OSError (missing, unreadable) is not about the content
        with _damaged(name, "not a valid npz/zip file", not_checkpoint=True):
            zf = zipfile.ZipFile(f)
        with zf:
            return _Decoder(zf, name, os.fstat(f.fileno()).st_size).load()


@contextlib.contextmanager
def _damaged(name, what, not_checkpoint=False):
    """Turn the errors of reading a zip member (zipfile, zlib, npy header) into one CheckpointError.

    The one place that knows how a damaged zip fails: a flipped bit can surface as any of these.
    """
    try:
        yield
    except CheckpointError:
        raise
    except (
        zipfile.BadZipFile,  # bad CRC, bad headers
        zlib.error,  # a corrupt deflate stream
        EOFError,  # a truncated one
        NotImplementedError,  # an unknown compression method
        RuntimeError,  # the encryption flag
        ValueError,  # bad npy header, bad JSON or UTF-8, negative offsets
        OverflowError,
        OSError,  # seeks past the end, read errors of a damaged member
        RecursionError,  # JSON nested past the interpreter's limit
        MemoryError,
    ) as e:
        kind = "not a tinygrad_bn checkpoint" if not_checkpoint else "damaged checkpoint"
        detail = str(e) if len(str(e)) <= 160 else str(e)[:157] + "..."  # may quote raw bytes
        raise CheckpointError(f"{name}: {kind}: {what} ({type(e).__name__}: {detail})") from None


class _Decoder:
    """One load: the manifest is checked node by node as it is decoded (depth bounded)."""

    def __init__(self, zf, name, size):
        self.zf, self.name, self.size = zf, name, size

    def fail(self, what):
        raise CheckpointError(f"{self.name}: damaged checkpoint: {what}")

    def load(self):
        try:
            info = self.zf.getinfo(MANIFEST)
        except KeyError:
            raise CheckpointError(
                f"{self.name}: not a tinygrad_bn checkpoint: no {MANIFEST} member "
                "(a plain np.savez file?)"
            ) from None
        if info.file_size > MAX_MANIFEST_BYTES:
            self.fail(
                f"{MANIFEST}: expected at most {MAX_MANIFEST_BYTES} bytes (got {info.file_size})"
            )
        with _damaged(self.name, f"cannot read {MANIFEST}"):
            with self.open(info) as member:
                data = member.read()
            manifest = json.loads(data)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(
                f"{self.name}: not a tinygrad_bn checkpoint: {MANIFEST} has no format {FORMAT!r}"
            )
        version = manifest.get("version")
        if type(version) is not int or version != VERSION:
            raise CheckpointError(
                f"{self.name}: checkpoint format version {_short(version)} is not supported "
                f"(this tinygrad_bn reads version {VERSION})"
            )
        return self.decode(manifest.get("root"), 0)

    def open(self, info):
        """The member's stream, after checking its declared sizes can be believed."""
        if info.header_offset + info.compress_size > self.size:
            self.fail(
                f"{info.filename}: expected the member to end within the file's {self.size} "
                f"bytes (got {info.compress_size} bytes at offset {info.header_offset})"
            )
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                self.fail(
                    f"{info.filename}: stored member: expected {info.file_size} bytes on disk "
                    f"(got {info.compress_size})"
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 64:
                self.fail(
                    f"{info.filename}: declares {info.file_size} bytes, more than "
                    f"{info.compress_size} deflated bytes can hold"
                )
        else:
            self.fail(
                f"{info.filename}: compression method: expected stored or deflated "
                f"(got method {info.compress_type})"
            )
        if info.flag_bits & 0x1:
            self.fail(f"{info.filename}: expected an unencrypted member (got an encrypted one)")
        return self.zf.open(info)  # zipfile caps what it inflates at info.file_size

    def array(self, node):
        member = node.get("member")
        if not isinstance(member, str):
            self.fail(f"manifest node {_short(node)} has no member name")
        member += ".npy"
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            self.fail(f"array member {member} is missing")
        with _damaged(self.name, f"array member {member} cannot be read"):
            with self.open(info) as f:
                return self.read_npy(f, info)

    def read_npy(self, f, info):
        """Read one npy stream into an array allocated once at the size its header declares."""

        def fail(what):
            self.fail(f"array member {info.filename} cannot be read ({what})")

        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            fail(f"npy version: expected 1.0 or 2.0 (got {version})")
        if dtype.hasobject:
            fail(f"dtype: expected a plain dtype (got {dtype}, which would need pickle)")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        header = f.tell()
        if header + nbytes != info.file_size:
            fail(
                f"npy header declares shape {shape} of {dtype}: expected "
                f"{header + nbytes} bytes (got {info.file_size})"
            )
        out = np.empty(count, dtype)
        view = memoryview(out.view(np.uint8)) if nbytes else memoryview(b"")
        done = 0
        while done < nbytes:
            n = f.readinto(view[done : done + _CHUNK])
            if not n:
                fail(f"truncated: expected {nbytes} data bytes (got {done})")
            done += n
        if f.read(1):  # also reads to the end, where zipfile checks the CRC
            fail(f"expected {nbytes} data bytes (got more)")
        return out.reshape(shape[::-1]).T if fortran else out.reshape(shape)

    def decode(self, node, depth):
        if depth > MAX_DEPTH:
            self.fail(f"manifest: expected at most {MAX_DEPTH} levels of nesting (got more)")
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            self.fail(f"manifest node {_short(node)} is not an object with a type")
        kind = node["type"]
        if kind == "none":
            return None
        if kind in ("bool", "int", "float", "str"):
            value = node.get("value")
            expected = {"bool": bool, "int": int, "float": (int, float, str), "str": str}[kind]
            if not isinstance(value, expected) or (kind != "bool" and isinstance(value, bool)):
                self.fail(f"manifest {kind} node holds {_short(value)}")
            if kind != "float":
                return value
            if isinstance(value, str) and value not in ("nan", "inf", "-inf"):
                self.fail(f"manifest float node holds {_short(value)}")
            try:
                return float(value)
            except OverflowError:  # an int too large for a float
                self.fail(f"manifest float node holds {_short(value)}")
        if kind == "ndarray":
            return self.array(node)
        if kind == "numpy_scalar":
            array = self.array(node)
            if array.ndim != 0:
                self.fail(f"numpy scalar member {node['member']}.npy has shape {array.shape}")
            return array[()]
        if kind == "tensor":
            array, requires_grad = self.array(node), node.get("requires_grad", False)
            if not isinstance(requires_grad, bool):
                self.fail(f"manifest tensor node has requires_grad {_short(requires_grad)}")
            try:
                return Tensor(array, requires_grad=requires_grad)
            except (TypeError, ValueError) as e:
                self.fail(f"tensor member {node['member']}.npy: {e}")
        items = node.get("items")
        if kind in ("list", "tuple") and isinstance(items, list):
            values = [self.decode(x, depth + 1) for x in items]
            return values if kind == "list" else tuple(values)
        if kind == "dict" and isinstance(items, list):
            out = {}
            for pair in items:
                if not isinstance(pair, list) or len(pair) != 2:
                    self.fail(f"manifest dict item {_short(pair)} is not a [key, value] pair")
                key = self.decode(pair[0], depth + 1)
                if not isinstance(key, _KEY_TYPES):
                    self.fail(
                        f"manifest dict key {_short(key)} is not a str, int, float, bool or None"
                    )
                out[key] = self.decode(pair[1], depth + 1)
            return out
        self.fail(f"manifest node of unknown type {_short(kind)}")


def _short(value, limit=80):
    """repr of a manifest value, cut short: a damaged manifest can hold anything, at any size."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # deep nesting; ints past the str-conversion limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
