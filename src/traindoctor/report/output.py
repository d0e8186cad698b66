"""Where ``--json`` writes: checked before any work, written into what is there.

A regular file (or a path that does not exist yet) is written atomically: a temporary file in the
same directory, renamed over it, so a reader never sees half a report; a symbolic link to one is
written through, the link stays a link. Anything else is opened and written as it is: a device
(``/dev/null``), a FIFO, or a descriptor of this process (``/dev/stdout``, ``/dev/fd/N``,
``/proc/self/fd/N``: written on that descriptor, after what is already there, never truncated).
``-`` is standard output.

:func:`json_destination` runs at argument parsing, in the directory the command was started in: it
resolves a relative path to an absolute one (a script under ``traindoctor run`` may chdir) and
raises a one-line :class:`~traindoctor.errors.TrainDoctorError` naming the path and what is wrong
with it. :func:`write_document` writes at the end and raises :class:`OSError` if that still fails.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import sys
from typing import Any

from ..errors import TrainDoctorError

_FD = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)$")
_STD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


class DestinationError(OSError):
    """A ``--json`` destination that cannot be written; ``str()`` says why, in a few words."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot be written"


def _fd_of(path: str) -> int | None:
    """The descriptor of this process that ``path`` names, or None when it names none."""
    norm = os.path.normpath(path)
    if norm in _STD:
        return _STD[norm]
    m = _FD.match(norm)
    if m is None or (m.group(1) is not None and int(m.group(1)) != os.getpid()):
        return None
    return int(m.group(2))


def _plan(path: str, shown: str) -> tuple[str, Any]:
    """How to write ``path`` (absolute): ``("fd", N)``, ``("atomic", target)``, ``("inplace", target)``
    or ``("open", path)``; :class:`DestinationError` when it cannot be written. ``shown`` is the path
    as the user gave it, for messages."""
    fd = _fd_of(path)
    if fd is not None:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            raise DestinationError(f"file descriptor {fd} is not open") from None
        if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
            raise DestinationError(f"file descriptor {fd} is not open for writing")
        return "fd", fd
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise DestinationError("a part of the path is not a directory") from None
    except PermissionError:
        raise DestinationError("permission denied (a directory on the way cannot be searched)") from None
    except OSError as exc:
        raise DestinationError(exc.strerror or str(exc)) from None
    if st is None:
        target = os.path.realpath(path)  # a dangling symbolic link: create what it points to
        parent = os.path.dirname(target)
        linked = os.path.islink(path)
        where = parent if linked else (os.path.dirname(shown) or ".")
        if not os.path.isdir(parent):
            if os.path.lexists(parent):
                raise DestinationError(f"{where} is not a directory")
            raise DestinationError(f"directory {where} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DestinationError(f"permission denied: cannot create a file in directory {where}")
        return "atomic", target
    if stat.S_ISDIR(st.st_mode):
        raise DestinationError("is a directory")
    if stat.S_ISREG(st.st_mode):
        target = os.path.realpath(path)
        if not os.access(target, os.W_OK):
            raise DestinationError("permission denied: the file is not writable")
        if os.access(os.path.dirname(target), os.W_OK | os.X_OK):
            return "atomic", target
        return "inplace", target  # a writable file in a directory we cannot add to: write it where it is
    if stat.S_ISSOCK(st.st_mode):
        raise DestinationError("is a socket, not a file")
    if not os.access(path, os.W_OK):
        raise DestinationError("permission denied")
    return "open", path  # a device or a FIFO: write into it


def json_destination(given: str, option: str = "--json") -> str:
    """``-``, or ``given`` as an absolute path once it is known to be writable; a one-line
    :class:`TrainDoctorError` (``--json x/y.json: directory x does not exist``) otherwise. ``option``
    names the flag in the message (``--html``)."""
    if given == "-":
        return given
    if not given:
        raise TrainDoctorError(f"{option}: an empty path; give a file name, or '-' for standard output")
    path = given if os.path.isabs(given) else os.path.join(os.getcwd(), given)
    try:
        _plan(path, given)
    except DestinationError as exc:
        raise TrainDoctorError(f"{option} {given}: {exc}") from None
    return path


def _dumps(obj: Any, ascii_only: bool = False) -> str:
    # allow_nan=False: evidence is cleaned to strings ("nan", "inf"), so the document is strict JSON
    return json.dumps(obj, indent=2, ensure_ascii=ascii_only, allow_nan=False) + "\n"


def _to_stream(obj: Any, stream: Any) -> None:
    """On a text stream, as JSON its encoding can carry (``\\uXXXX`` escapes on an ASCII one)."""
    text = _dumps(obj)
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = _dumps(obj, ascii_only=True)
    stream.write(text)
    stream.flush()


def _atomic(target: str, data: bytes) -> None:
    d, name = os.path.split(target)
    fd, tmp = -1, ""
    for i in range(1000):
        tmp = os.path.join(d, f".{name[:200]}.{os.getpid()}.{i}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise DestinationError(f"no free temporary name in {d}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))  # replacing a file keeps its mode
        except FileNotFoundError:
            pass
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_document(obj: Any, dest: str | os.PathLike[str]) -> None:
    """Write ``obj`` as JSON to ``dest`` (``-``: standard output) as the module docstring says;
    :class:`OSError` when it cannot."""
    if os.fspath(dest) == "-":
        _to_stream(obj, sys.stdout)
        return
    _write(dest, lambda stream: _to_stream(obj, stream), lambda: _dumps(obj).encode("utf-8"))


def write_text(text: str, dest: str | os.PathLike[str]) -> None:
    """Write a text document (an HTML page) to ``dest`` as :func:`write_document` writes JSON; UTF-8."""
    def to_stream(stream: Any) -> None:
        stream.flush()
        buf = getattr(stream, "buffer", None)
        if buf is not None:
            buf.write(text.encode("utf-8"))
            buf.flush()
        else:
            stream.write(text)
            stream.flush()

    if os.fspath(dest) == "-":
        to_stream(sys.stdout)
        return
    _write(dest, to_stream, lambda: text.encode("utf-8"))


def _write(dest: str | os.PathLike[str], to_stream: Any, data_of: Any) -> None:
    path = os.fspath(dest)
    if not os.path.isabs(path):
        path = os.path.abspath(path)
    how, where = _plan(path, os.fspath(dest))
    if how == "fd" and where in (1, 2):
        to_stream(sys.stdout if where == 1 else sys.stderr)
        return
    data = data_of()
    if how == "fd":
        view = memoryview(data)
        while view:
            view = view[os.write(where, view):]
    elif how == "atomic":
        _atomic(where, data)
    else:  # "inplace" or "open": a file we may only rewrite, a device, a FIFO
        with open(where, "wb") as f:
            f.write(data)
