"""tinygrad_bn._atomic: a write is all or nothing, and a killed write's temp file is cleaned up."""

import fcntl
import os
import subprocess
import sys

import pytest

from tinygrad_bn import checkpoint
from tinygrad_bn._atomic import atomic_write, write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a save that is killed (SIGKILL: no cleanup code runs) halfway through writing its arrays
_KILLED_SAVE = """
import os, signal, sys
import numpy as np
from tinygrad_bn import checkpoint

def die(file, array):
    file.write(b"\\x93NUMPY half")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint._write_array = die
checkpoint.save({"w": np.zeros(1000)}, sys.argv[1])
"""


def test_killed_save_leaves_old_file_and_next_save_removes_its_temp_file(tmp_path):
    path = tmp_path / "run.ckpt"
    checkpoint.save({"step": 1}, path)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(path)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    orphans = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(orphans) == 1 and orphans[0].startswith(".run.ckpt.")
    assert checkpoint.load(path) == {"step": 1}  # the old checkpoint, whole
    (tmp_path / "other.ckpt").write_bytes(b"")  # another file's saves leave it alone ...
    checkpoint.save({"step": 1}, tmp_path / "other.ckpt")
    assert orphans[0] in os.listdir(tmp_path)
    checkpoint.save({"step": 2}, path)  # ... the next save to the same path removes it
    assert sorted(os.listdir(tmp_path)) == ["other.ckpt", "run.ckpt"]
    assert checkpoint.load(path) == {"step": 2}


def test_temp_file_of_a_live_writer_is_kept(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_write(path) as f:  # a write in progress, in this process ...
        f.write(b"first")
        live = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        write_text(path, "second")  # ... is not taken for an orphan by a concurrent write
        assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == live
    assert path.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.txt"]


def test_lock_held_by_another_process_protects_its_temp_file(tmp_path):
    held = tmp_path / ".x.json.0123456789ab.tmp"
    held.write_bytes(b"partial")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
            str(held),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        write_text(tmp_path / "x.json", "{}")
        assert held.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    write_text(tmp_path / "x.json", "{}")  # the holder is gone: now it is an orphan
    assert not held.exists()
    fd = os.open(tmp_path / "x.json", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the real file is never left locked
    os.close(fd)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_text(tmp_path / "missing" / "a.txt", "x")
