"""Tests for tinygrad_bn.checkpoint: round trips, atomic writes, and clear errors on bad files."""

import json
import os
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_bn import checkpoint
from tinygrad_bn.checkpoint import CheckpointError, load, save
from tinygrad_bn.tensor import Tensor


def assert_same(a, b):
    """Deep equality that also demands the same types, dtypes and shapes (NaN equals NaN)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, Tensor):
        assert a.requires_grad == b.requires_grad
        a, b = a.numpy(), b.numpy()
    if isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit-exact
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(key, [k for k in b if k == key][0])
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float):
        assert repr(a) == repr(b)  # tells -0.0 from 0.0, and nan equals nan
    else:
        assert a == b


def round_trip(obj, tmp_path):
    path = tmp_path / "ckpt.npz"
    save(obj, path)
    return load(path)


def test_nested_state_round_trip(tmp_path):
    obj = {
        "model": {
            "fc1.weight": Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True),
            "bn.running_var": np.ones(3, np.float32),
            "bn.num_batches_tracked": np.int64(12),
        },
        "optim": {
            "lr": 0.1,
            "momentum_buffers": [np.zeros((2, 3)), None],
            0: "int key",
            2.5: None,
            None: True,
        },
        "step": 50000,
        "history": [(1, 0.5), (2, float("nan")), (3, float("-inf")), (4, -0.0)],
        "name": "bn-sigmoid ünïcode",
        "empty": {"list": [], "tuple": (), "dict": {}, "array": np.zeros((0, 4))},
    }
    assert_same(round_trip(obj, tmp_path), obj)


@pytest.mark.parametrize(
    "bit_generator", [np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64]
)
def test_rng_state_round_trip(tmp_path, bit_generator):
    rng = np.random.Generator(bit_generator(2015))
    rng.normal(size=7)  # move off the seed state
    state = round_trip({"rng": rng.bit_generator.state}, tmp_path)["rng"]
    restored = np.random.Generator(bit_generator())
    restored.bit_generator.state = state
    np.testing.assert_array_equal(restored.normal(size=20), rng.normal(size=20))


def test_big_ints_and_float_edge_values(tmp_path):
    obj = [2**200, -(2**127) - 1, 0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, float("inf")]
    assert_same(round_trip(obj, tmp_path), obj)


def test_tensor_round_trip(tmp_path):
    obj = [
        Tensor(np.float32([1.5, -2]), requires_grad=False),
        Tensor(np.float64([[3.0]]), requires_grad=True),
    ]
    out = round_trip(obj, tmp_path)
    assert_same(out, obj)
    assert out[1].grad is None


def test_dict_subclass_and_namedtuple_come_back_plain(tmp_path):
    out = round_trip({"sd": OrderedDict(b=1, a=2), "shape": np.zeros((2, 3)).shape}, tmp_path)
    assert type(out["sd"]) is dict and list(out["sd"]) == ["b", "a"]
    assert out["shape"] == (2, 3)


ARRAY_DTYPES = [
    np.bool_,
    np.int8,
    np.uint16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.complex128,
]


@settings(max_examples=30, deadline=None)
@given(
    array=st.sampled_from(ARRAY_DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    ),
    fortran=st.booleans(),
)
def test_array_round_trip(tmp_path_factory, array, fortran):
    if fortran:
        array = np.asfortranarray(array)
    out = round_trip({"a": array, "s": array.reshape(-1)[:1]}, tmp_path_factory.mktemp("ck"))
    assert_same(out["a"], array)
    assert out["a"].flags.writeable


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
structures = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.integers(-5, 5), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=30, deadline=None)
@given(obj=structures)
def test_structure_round_trip(tmp_path_factory, obj):
    assert_same(round_trip(obj, tmp_path_factory.mktemp("ck")), obj)


def test_file_is_a_plain_npz_with_a_json_manifest(tmp_path):
    path = tmp_path / "ckpt.npz"
    save({"w": np.arange(4.0), "step": 3}, path)
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"manifest.json", "arr_0"}
        np.testing.assert_array_equal(npz["arr_0"], np.arange(4.0))
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "tinygrad_bn.checkpoint" and manifest["version"] == 1
    assert manifest["root"]["type"] == "dict"


def test_overwrite_replaces_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    save({"step": 1}, path)
    save({"step": 2}, path)
    assert load(path) == {"step": 2}
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_interrupted_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    old = {"w": np.arange(1000.0), "step": 1}
    save(old, path)
    before = path.read_bytes()

    def crash_mid_array(file, array):
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(checkpoint, "_write_array", crash_mid_array)
    with pytest.raises(KeyboardInterrupt):
        save({"w": np.zeros(1000), "step": 2}, path)
    with pytest.raises(KeyboardInterrupt):
        save({"w": np.zeros(1000)}, tmp_path / "new.npz")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temp file, no half-written new.npz
    assert_same(load(path), old)


class Unsupported:
    pass


@pytest.mark.parametrize(
    "obj, error, message",
    [
        ({"a": [1, {2}]}, TypeError, r"cannot store set at obj\['a'\]\[1\]"),
        ({"a": Unsupported()}, TypeError, "cannot store Unsupported"),
        (
            {"a": np.array([1, "x"], dtype=object)},
            TypeError,
            r"obj\['a'\] is an array of dtype object",
        ),
        ({(1, 2): 3}, TypeError, "dict key of type tuple"),
        ({"f": len}, TypeError, "cannot store builtin_function_or_method"),
    ],
)
def test_save_rejects_unsupported_before_writing(tmp_path, obj, error, message):
    with pytest.raises(error, match=message):
        save(obj, tmp_path / "ckpt.npz")
    assert os.listdir(tmp_path) == []


def test_save_rejects_cycles(tmp_path):
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match=r"reference cycle at obj\['a'\]\[0\]"):
        save(loop, tmp_path / "ckpt.npz")
    shared = np.zeros(2)
    assert_same(
        round_trip([shared, shared], tmp_path), [shared, shared]
    )  # shared, not cyclic: fine


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save({}, tmp_path / "nope" / "ckpt.npz")


def write_manifest(path, manifest, members=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "manifest.json",
            manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest),
        )
        for name, data in members:
            zf.writestr(name, data)


def test_load_rejects_wrong_or_damaged_files(tmp_path):
    good = tmp_path / "good.npz"
    save({"a": np.full(1000, 7, np.uint8), "b": 1}, good)
    data = good.read_bytes()
    flipped = bytearray(data)
    flipped[data.index(b"\x07" * 1000) + 500] = 8  # one byte of array data: CRC mismatch

    cases = {
        "random.npz": (os.urandom(300), "not a valid npz/zip"),
        "truncated.npz": (data[: len(data) // 2], "not a valid npz/zip"),
        "flipped.npz": (bytes(flipped), "arr_0.npy cannot be read .*CRC"),
        "empty.npz": (b"", "not a valid npz/zip"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message) as info:
            load(tmp_path / name)
        assert name in str(info.value)

    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="no manifest.json member"):
        load(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("{not json", "cannot read manifest.json"),
        (b"\xff\xfe", "cannot read manifest.json"),
        ({"format": "other", "version": 1, "root": {"type": "none"}}, "no format"),
        (
            {"format": "tinygrad_bn.checkpoint", "version": 99, "root": {"type": "none"}},
            "version 99",
        ),
        (
            {"format": "tinygrad_bn.checkpoint", "version": 1, "root": {"type": "set"}},
            "unknown type 'set'",
        ),
        (
            {"format": "tinygrad_bn.checkpoint", "version": 1, "root": [1]},
            "not an object with a type",
        ),
        (
            {
                "format": "tinygrad_bn.checkpoint",
                "version": 1,
                "root": {"type": "int", "value": "7"},
            },
            "int node",
        ),
        (
            {
                "format": "tinygrad_bn.checkpoint",
                "version": 1,
                "root": {"type": "float", "value": "x"},
            },
            "float node",
        ),
        (
            {
                "format": "tinygrad_bn.checkpoint",
                "version": 1,
                "root": {"type": "ndarray", "member": "arr_9"},
            },
            "arr_9.npy is missing",
        ),
        (
            {
                "format": "tinygrad_bn.checkpoint",
                "version": 1,
                "root": {"type": "dict", "items": [[{"type": "none"}]]},
            },
            "not a \\[key, value\\] pair",
        ),
        (
            {
                "format": "tinygrad_bn.checkpoint",
                "version": 1,
                "root": {
                    "type": "dict",
                    "items": [[{"type": "list", "items": []}, {"type": "none"}]],
                },
            },
            "dict key",
        ),
        (
            {"format": "tinygrad_bn.checkpoint", "version": 1, "root": {"type": "list"}},
            "unknown type 'list'",
        ),
    ],
)
def test_load_rejects_bad_manifest(tmp_path, manifest, message):
    path = tmp_path / "bad.npz"
    write_manifest(path, manifest)
    with pytest.raises(CheckpointError, match=message) as info:
        load(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)


def test_load_never_unpickles(tmp_path):
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    path = tmp_path / "pickled.npz"
    write_manifest(
        path,
        {
            "format": "tinygrad_bn.checkpoint",
            "version": 1,
            "root": {"type": "ndarray", "member": "arr_0"},
        },
        [("arr_0.npy", buffer.getvalue())],
    )
    with pytest.raises(CheckpointError, match="arr_0.npy cannot be read"):
        load(path)
