"""What a path is before a reader opens it: only regular files (and directories) are logs.

Opening a FIFO blocks until someone writes to it and a device may never end, so every reader
asks :func:`check_regular` first; a symbolic link loop or a dangling link is said in words.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import LogError


def not_regular(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is neither a regular file nor a directory, else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def stat_error(path: Path, e: OSError) -> str:
    """Why ``path`` cannot be stat'ed, in words: a symbolic link loop, a dangling link, a denied read."""
    if e.errno == errno.ELOOP:
        return "is a symbolic link loop"
    if e.errno == errno.ENOENT:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"is a dangling symbolic link (to {target}, which does not exist)"
        return "no such file"
    if e.errno == errno.ENAMETOOLONG:
        return "has a name too long for this system"
    return f"cannot read: {e.strerror or e}"


def stat_of(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat(path)``, or a one-line :class:`LogError` saying why it cannot be had."""
    try:
        return os.stat(path)
    except OSError as e:
        raise LogError(stat_error(Path(path), e), path=path) from e
    except ValueError as e:  # a NUL byte in the name
        raise LogError(f"is not a valid path ({e})", path=repr(os.fspath(path))) from e


def check_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """The ``os.stat`` of ``path`` when it is a regular file or a directory; else a one-line
    :class:`LogError` (a FIFO, device or socket is never opened)."""
    st = stat_of(path)
    kind = not_regular(st.st_mode)
    if kind is not None:
        raise LogError(f"is {kind}, not a log file", path=path)
    return st


def is_dir(path: str | os.PathLike[str]) -> bool:
    """``Path.is_dir`` that is False, not a PermissionError, where this user may not look."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def is_file(path: str | os.PathLike[str]) -> bool:
    """``Path.is_file`` (a regular file) that is False, not a PermissionError, where this user may not look."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False
