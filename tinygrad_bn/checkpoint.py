"""Checkpoints: save and load nested state (model, optimizer, step, RNG state) as one .npz file.

The file is a standard npz (``numpy.load`` opens it): every array is an ``arr_<i>.npy`` member,
and the nesting, with the Python scalars, is a JSON ``manifest.json`` member. Nothing is pickled.
"""

import io
import json
import math
import os
import sys
import zipfile

import numpy as np

from .data._atomic import atomic_write

__all__ = ["CheckpointError", "save", "load"]

FORMAT = "tinygrad_bn.checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
_SUPPORTED = "dict, list, tuple, numpy array or scalar, Tensor, int, float, bool, str, None"
_KEY_TYPES = (str, int, float, type(None))  # bool is an int


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
    cycle (both name where in ``obj``, before anything is written), OSError when writing fails.
    """
    arrays = []
    root = _encode(obj, arrays, "obj", set())
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "root": root}, allow_nan=False)
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(MANIFEST, manifest)
            for i, array in enumerate(arrays):
                with zf.open(f"arr_{i}.npy", "w", force_zip64=True) as member:
                    _write_array(member, array)


def _write_array(file, array):
    np.lib.format.write_array(file, array, allow_pickle=False)


def _tensor_type():
    # No import: if tinygrad_bn.tensor was never imported, obj cannot hold a Tensor.
    return getattr(sys.modules.get("tinygrad_bn.tensor"), "Tensor", None)


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
    tensor = _tensor_type()
    if tensor is not None and isinstance(v, tensor):
        member = _add_array(arrays, np.asarray(v.numpy()), where)
        return {"type": "tensor", "member": member, "requires_grad": bool(v.requires_grad)}
    if not isinstance(v, (dict, list, tuple)):
        raise TypeError(
            f"save: cannot store {type(v).__name__} at {where} (supported: {_SUPPORTED})"
        )
    if id(v) in active:
        raise ValueError(f"save: reference cycle at {where}: it contains itself")
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

    Raises FileNotFoundError for a missing file; CheckpointError (a ValueError) naming the file
    when it is not a checkpoint (not a zip/npz, no manifest, unknown format or version) or is
    damaged (bad CRC, truncated, malformed manifest or array member).
    """
    name = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(
            f"{name}: not a tinygrad_bn checkpoint: not a valid npz/zip file ({e})"
        ) from None
    with zf:
        try:
            manifest = json.loads(zf.read(MANIFEST))
        except KeyError:
            raise CheckpointError(
                f"{name}: not a tinygrad_bn checkpoint: no {MANIFEST} member "
                "(a plain np.savez file?)"
            ) from None
        except (
            zipfile.BadZipFile,
            ValueError,
            EOFError,
        ) as e:  # bad CRC, bad JSON/UTF-8, truncated
            raise CheckpointError(
                f"{name}: damaged checkpoint: cannot read {MANIFEST} ({e})"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(
                f"{name}: not a tinygrad_bn checkpoint: {MANIFEST} has no format {FORMAT!r}"
            )
        if manifest.get("version") != VERSION:
            raise CheckpointError(
                f"{name}: checkpoint format version {manifest.get('version')!r} is not supported "
                f"(this tinygrad_bn reads version {VERSION})"
            )
        return _Decoder(zf, name).decode(manifest.get("root"))


class _Decoder:
    def __init__(self, zf, name):
        self.zf, self.name = zf, name

    def fail(self, what):
        raise CheckpointError(f"{self.name}: damaged checkpoint: {what}")

    def array(self, node):
        member = node.get("member")
        if not isinstance(member, str):
            self.fail(f"manifest node {node} has no member name")
        try:
            data = self.zf.read(member + ".npy")  # reading the whole member checks its CRC
            return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        except KeyError:
            self.fail(f"array member {member}.npy is missing")
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            self.fail(f"array member {member}.npy cannot be read ({e})")

    def decode(self, node):
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            self.fail(f"manifest node {node!r} is not an object with a type")
        kind = node["type"]
        if kind == "none":
            return None
        if kind in ("bool", "int", "float", "str"):
            value = node.get("value")
            expected = {"bool": bool, "int": int, "float": (int, float, str), "str": str}[kind]
            if not isinstance(value, expected) or (kind == "int" and isinstance(value, bool)):
                self.fail(f"manifest {kind} node holds {value!r}")
            try:
                return float(value) if kind == "float" else value
            except ValueError:
                self.fail(f"manifest float node holds {value!r}")
        if kind == "ndarray":
            return self.array(node)
        if kind == "numpy_scalar":
            array = self.array(node)
            if array.ndim != 0:
                self.fail(f"numpy scalar member {node['member']}.npy has shape {array.shape}")
            return array[()]
        if kind == "tensor":
            from .tensor import Tensor  # lazy: checkpoint must not need the tensor module to import

            return Tensor(self.array(node), requires_grad=bool(node.get("requires_grad", False)))
        items = node.get("items")
        if kind in ("list", "tuple") and isinstance(items, list):
            values = [self.decode(x) for x in items]
            return values if kind == "list" else tuple(values)
        if kind == "dict" and isinstance(items, list):
            out = {}
            for pair in items:
                if not isinstance(pair, list) or len(pair) != 2:
                    self.fail(f"manifest dict item {pair!r} is not a [key, value] pair")
                key = self.decode(pair[0])
                if not isinstance(key, _KEY_TYPES):
                    self.fail(f"manifest dict key {key!r} is not a str, int, float, bool or None")
                out[key] = self.decode(pair[1])
            return out
        self.fail(f"manifest node of unknown type {kind!r}")
