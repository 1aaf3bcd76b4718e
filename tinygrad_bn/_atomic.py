"""Atomic file writing: a reader sees the old file or the complete new one, never half of one."""

import contextlib
import os
import re
import secrets

try:
    import fcntl
except ImportError:  # Windows: no flock, so orphaned temp files are not cleaned up there
    fcntl = None


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file on a temp file beside ``path``; on success fsync it and rename it over.

    The temp file lives in the same directory because ``os.replace`` is only atomic within one
    filesystem. If the body raises, ``path`` is untouched and the temp file is removed. A process
    killed mid-write leaves its hidden ``.<name>.<random>.tmp``; the next write to the same
    ``path`` removes it (each writer holds a lock on its temp file, so a temp file nobody holds
    is an orphan, and one a live writer holds is left alone).
    Raises FileNotFoundError when the directory of ``path`` does not exist.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    base = os.path.basename(path)
    fd, tmp = _create_locked(directory, base)
    try:
        with os.fdopen(fd, "wb") as f:
            _remove_orphans(directory, base)
            yield f
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, path)  # while still locked, so no cleaner takes it first
        if fcntl is None:
            os.replace(tmp, path)  # Windows cannot rename an open file
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))


def _tmp_pattern(base):
    return re.compile(rf"\.{re.escape(base)}\.[0-9a-f]{{12}}\.tmp")


def _create_locked(directory, base):
    """(fd, name) of a new temp file, exclusively locked by this open file."""
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        # mode 0o666 lets the umask decide permissions, as open() would for the real file
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        # a cleaner may have taken the file between creation and lock: then it is gone
        if _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)


def _same_file(fd, name):
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _remove_orphans(directory, base):
    """Remove the temp files of earlier writes to ``base`` that no live writer holds."""
    if fcntl is None:
        return
    pattern = _tmp_pattern(base)
    try:
        names = [n for n in os.listdir(directory) if pattern.fullmatch(n)]
    except OSError:
        return
    for name in names:
        tmp = os.path.join(directory, name)
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live writer (this process's own temp file among them)
            os.close(fd)
            continue
        try:
            if _same_file(fd, tmp):
                os.unlink(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)


def _fsync_directory(directory):
    # Makes the rename itself durable on POSIX; directories cannot be opened this way on Windows.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
