"""Damaged and hostile checkpoints: only CheckpointError escapes, memory stays bounded.

A real checkpoint (model, optimizer, RNG state, curves) is damaged every way a disk, a network
or a person can: flipped bits, truncation, rewritten manifests, deep nesting, deflate bombs.
"""

import copy
import io
import json
import os
import random
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_bn import checkpoint, nn, optim
from tinygrad_bn.checkpoint import CheckpointError, load, save

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state():
    model = nn.Sequential(nn.Linear(4, 3, generator=0), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(5)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rng.bit_generator.state,
        "step": 40,
        "curve": {"step": np.arange(3), "acc": np.array([0.1, float("nan"), 0.9])},
        "flags": [True, None, -0.0, "x"],
    }


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "real.ckpt"
    save(_state(), path)
    return path.read_bytes(), load(path)


def _same(a, b):
    """Deep equality of loaded checkpoints, NaN equal to NaN."""
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if hasattr(a, "numpy"):
        return hasattr(b, "numpy") and _same(a.numpy(), b.numpy())
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return repr(a) == repr(b)


def _load_or_error(path, expected):
    """Load a damaged file: CheckpointError naming it, or exactly the undamaged content."""
    try:
        out = load(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        assert len(str(e)) < 1000  # one readable line, not a dump of the damaged bytes
        return False
    assert _same(out, expected), "a damaged checkpoint loaded as something else"
    return True


def test_bit_flips_and_truncations_raise_checkpoint_error(real, tmp_path):
    data, expected = real
    rng = random.Random(0)
    path = tmp_path / "damaged.ckpt"
    # bytes of the zip structures (manifest, headers, central directory) and of the arrays,
    # each with one random bit flipped
    manifest_at = data.index(b"manifest.json")
    structure = list(range(manifest_at + 400)) + list(range(len(data) - 1200, len(data)))
    positions = set(rng.sample(structure, 300)) | set(rng.sample(range(len(data)), 100))
    for pos in sorted(p for p in positions if 0 <= p < len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        _load_or_error(path, expected)
    for cut in range(0, len(data), max(1, len(data) // 100)):
        path.write_bytes(data[:cut])
        assert not _load_or_error(path, expected)


def _manifest(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read("manifest.json"))


def _rewrite(data, path, manifest, compress=zipfile.ZIP_STORED):
    """The checkpoint ``data`` with its manifest replaced (text or a JSON value)."""
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "manifest.json":
                content = manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest)
            dst.writestr(info.filename, content, compress_type=compress)


def _locations(node, out):
    """Every (container, key) of a JSON value: the places a mutation can hit."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in list(items):
        out.append((node, key))
        if isinstance(child, (dict, list)):
            _locations(child, out)
    return out


_TYPES = ["none", "bool", "int", "float", "str", "ndarray", "numpy_scalar", "tensor", "list"]
_TYPES += ["tuple", "dict", "set"]
_KEYS = st.sampled_from(["type", "value", "items", "member", "requires_grad", "format", "root"])
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(_TYPES + ["arr_0", "arr_99", "nan", "1e999", "tinygrad_bn.checkpoint"])
    | st.sampled_from([10**400, -(2**70), 1e308, 2**63]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_KEYS | st.text(max_size=2), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_rewritten_manifests_raise_checkpoint_error(real, tmp_path_factory, data):
    raw, _ = real
    manifest = copy.deepcopy(_manifest(raw))
    for _ in range(data.draw(st.integers(1, 3))):
        places = _locations(manifest, [])
        container, key = data.draw(st.sampled_from(places))
        if data.draw(st.booleans()) and isinstance(container, dict):
            del container[key]
        else:
            container[key] = data.draw(_json)
    path = tmp_path_factory.mktemp("m") / "rewritten.ckpt"
    _rewrite(raw, path, json.dumps(manifest))
    try:
        load(path)
    except CheckpointError as e:
        assert str(path) in str(e)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "cannot read manifest.json"),
        ('{"format": "tinygrad_bn.checkpoint", "version": 1, "root": ' + "{" * 5000, "read"),
        ('{"format": "tinygrad_bn.checkpoint", "version": 1, "root": 1' + "0" * 5000 + "}", "read"),
        ('{"format": "tinygrad_bn.checkpoint", "version": true, "root": null}', "version True"),
        ('{"format": "tinygrad_bn.checkpoint", "version": 1.0, "root": null}', "version 1.0"),
        (b"\xff\xfe\x00", "cannot read manifest.json"),
    ],
)
def test_hostile_manifest_text(real, tmp_path, text, message):
    path = tmp_path / "hostile.ckpt"
    _rewrite(real[0], path, text)
    with pytest.raises(CheckpointError, match=message):
        load(path)


def _nested(depth):
    """Manifest text of ``depth`` nested lists (as text: json.dumps would recurse too deep)."""
    root = '{"type": "list", "items": [' * depth + '{"type": "none"}' + "]}" * depth
    return '{"format": "tinygrad_bn.checkpoint", "version": 1, "root": ' + root + "}"


def test_nesting_depth_is_bounded_the_same_on_save_and_load(tmp_path):
    deepest = 0
    for _ in range(checkpoint.MAX_DEPTH):
        deepest = [deepest]
    save(deepest, tmp_path / "ok.ckpt")
    assert load(tmp_path / "ok.ckpt") == deepest
    with pytest.raises(ValueError, match="levels of nesting"):
        save([deepest], tmp_path / "deep.ckpt")
    # what save refuses, load refuses too, long before the interpreter's stack runs out
    for depth in (checkpoint.MAX_DEPTH + 1, 50_000):
        path = tmp_path / f"deep{depth}.ckpt"
        _rewrite_members(path, _nested(depth))
        with pytest.raises(CheckpointError, match="levels of nesting|cannot read manifest"):
            load(path)


def _rewrite_members(path, manifest, members=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", manifest)
        for name, content, compress in members:
            zf.writestr(name, content, compress_type=compress)


_ROOT_ARRAY = {
    "format": "tinygrad_bn.checkpoint",
    "version": 1,
    "root": {"type": "ndarray", "member": "arr_0"},
}


def _npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_deflate_bomb_is_refused_without_inflating(tmp_path):
    # an npy header declaring 10 floats, then 200 MB of zeros: 200 KB on disk
    npy = _npy(np.zeros(10))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = [compressor.compress(npy)]
    stream += [compressor.compress(bytes(1 << 20)) for _ in range(200)]
    stream = b"".join(stream) + compressor.flush()
    path = tmp_path / "bomb.ckpt"
    # the zip entry honest about the npy (and its CRC), or about the whole stream
    for declared, crc in ((len(npy), zlib.crc32(npy)), (len(npy) + (200 << 20), 0)):
        _zip(path, [("manifest.json", json.dumps(_ROOT_ARRAY).encode(), 0, None, None)]
             + [("arr_0.npy", stream, 8, declared, crc)])  # fmt: skip
        result = {}

        def attempt():
            try:
                result["array"] = load(path)
            except CheckpointError as e:
                result["error"] = str(e)

        peak = _peak_bytes(attempt)
        assert peak < 4 << 20, peak  # a few MB, not the 200 MB the stream inflates to
        if "array" in result:  # only the declared 10 floats, never the rest
            np.testing.assert_array_equal(result["array"], np.zeros(10))
        else:
            assert str(path) in result["error"]


def _zip(path, members):
    """Write a zip by hand: (name, bytes on disk, method, declared size, CRC) per member, where
    None means the true value. zipfile itself cannot write an entry that lies about its size."""
    out = io.BytesIO()
    central = []
    for name, content, method, size, crc in members:
        size = len(content) if size is None else size
        crc = zlib.crc32(content) if crc is None else crc
        fields = (method, crc, len(content), size, name)
        central.append(_central_header(*fields, out.tell()))
        out.write(_local_header(*fields) + content)
    start = out.tell()
    out.write(b"".join(central))
    n = len(members)
    out.write(b"PK\x05\x06" + _u(0, 4) + _u(n, 2) + _u(n, 2) + _u(out.tell() - start, 4)
              + _u(start, 4) + _u(0, 2))  # fmt: skip
    path.write_bytes(out.getvalue())


def _u(n, width):
    return int(n).to_bytes(width, "little")


def _local_header(method, crc, csize, size, name):
    return (
        b"PK\x03\x04" + _u(20, 2) + _u(0, 2) + _u(method, 2) + _u(0, 4) + _u(crc, 4)
        + _u(csize, 4) + _u(size, 4) + _u(len(name), 2) + _u(0, 2) + name.encode()
    )  # fmt: skip


def _central_header(method, crc, csize, size, name, offset):
    return (
        b"PK\x01\x02" + _u(20, 2) + _u(20, 2) + _u(0, 2) + _u(method, 2) + _u(0, 4)
        + _u(crc, 4) + _u(csize, 4) + _u(size, 4) + _u(len(name), 2) + _u(0, 2) + _u(0, 2)
        + _u(0, 2) + _u(0, 2) + _u(0, 4) + _u(offset, 4) + name.encode()
    )  # fmt: skip


def test_member_sizes_that_cannot_be_true_are_refused(tmp_path):
    path = tmp_path / "liar.ckpt"
    npy = _npy(np.arange(10.0))
    # declared far beyond what the deflated bytes can hold: refused before inflating
    manifest = ("manifest.json", json.dumps(_ROOT_ARRAY).encode(), 0, None, None)
    _zip(path, [manifest, ("arr_0.npy", zlib.compress(npy)[2:-4], 8, 1 << 31, 0)])
    with pytest.raises(CheckpointError, match="more than .* deflated bytes can hold"):
        load(path)
    # a stored member that claims more bytes than the file has
    _zip(path, [manifest, ("arr_0.npy", npy[:40], 0, 1 << 31, None)])
    with pytest.raises(CheckpointError, match="expected 2147483648 bytes on disk"):
        load(path)
    # an npy header that disagrees with the zip entry's size
    big = npy.replace(b"(10,)", b"(99,)")
    _rewrite_members(path, json.dumps(_ROOT_ARRAY), [("arr_0.npy", big, zipfile.ZIP_STORED)])
    with pytest.raises(CheckpointError, match=r"declares shape \(99,\)"):
        load(path)
    # an unsupported compression method (a bit flip in the method field)
    _rewrite_members(path, json.dumps(_ROOT_ARRAY), [("arr_0.npy", npy, zipfile.ZIP_BZIP2)])
    with pytest.raises(CheckpointError, match="compression method"):
        load(path)


def test_deflated_npz_written_by_numpy_still_loads(tmp_path):
    path = tmp_path / "deflated.ckpt"
    _rewrite_members(
        path, json.dumps(_ROOT_ARRAY), [("arr_0.npy", _npy(np.eye(3)), zipfile.ZIP_DEFLATED)]
    )
    np.testing.assert_array_equal(load(path), np.eye(3))


def test_resume_from_damaged_checkpoint_is_one_line(real, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    damaged = out / "checkpoints" / "fig1-vanilla-seed0.ckpt"
    damaged.write_bytes(real[0][: len(real[0]) // 2])
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "tinygrad_bn", "fig1", "--steps", "20", "--eval-every", "10"]
        + [
            "--eval-samples",
            "50",
            "--threads",
            "1",
            "--no-download",
            "--resume",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(damaged) in lines[0], proc.stderr
