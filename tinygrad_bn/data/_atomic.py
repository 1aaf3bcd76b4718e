"""Atomic file writing: a reader sees the old file or the complete new one, never half of one."""

import contextlib
import os
import secrets


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file on a temp file beside ``path``; on success fsync it and rename it over.

    The temp file lives in the same directory because ``os.replace`` is only atomic within one
    filesystem. If the body raises (or the process dies), ``path`` is untouched and the temp file
    is removed (or, after a crash, left as a hidden ``.<name>.<random>.tmp``).
    Raises FileNotFoundError when the directory of ``path`` does not exist.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the umask decide permissions, as open() would for the real file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


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
