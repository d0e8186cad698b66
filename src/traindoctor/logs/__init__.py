"""Training logs → :class:`~traindoctor.run.Run`: one entry point, :func:`load`, for every format.

Formats: traindoctor's run store, CSV/TSV (Lightning's ``CSVLogger`` ``metrics.csv`` included),
JSON Lines, TensorBoard event files, Hugging Face ``trainer_state.json`` and MLflow's file store.
:func:`find_runs` finds every run in a directory tree. Metric names are matched to roles the same
way for all of them (:mod:`.roles`), with ``--metric ROLE=NAME`` overrides.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LogError
from ..run import Run
from ..store import SQLITE_MAGIC, is_store, load_store
from .csvlog import read_csv
from .files import check_regular, is_dir, is_file, stat_of
from .files import not_regular as _not_regular
from .files import stat_error as _stat_error
from .hf import STATE_FILE, read_trainer_state
from .jsonlog import read_jsonl
from .mlflow import _yaml_scalars, is_mlflow_run, read_mlflow
from .roles import METRIC_ROLES, NoTrainingLoss, assign_columns
from .tensorboard import EVENT_PREFIX, event_files, read_tensorboard

__all__ = [
    "FORMATS",
    "TreeScan",
    "NoTrainingLoss",
    "RunRef",
    "assign_columns",
    "check_regular",
    "detect_format",
    "find_runs",
    "is_store",
    "load",
    "load_store",
    "read_csv",
    "read_jsonl",
    "read_mlflow",
    "read_tensorboard",
    "read_trainer_state",
]

FORMATS = ("store", "csv", "lightning-csv", "jsonl", "json", "tensorboard", "huggingface", "mlflow")

_TEXT_EXT = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl"}
_STORE_EXT = (".db", ".sqlite", ".sqlite3")
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", ".git", ".hg", ".svn", ".venv", "venv", ".trash"}
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

# a pipe (``diagnose -``, ``/dev/stdin``, ``<(cat log)``, a named FIFO) is read once, up to this many
# bytes, waiting at most this long for each chunk: a named FIFO nobody writes to is an error, not a
# hang; an anonymous pipe's writer is a process of the user's own pipeline, given longer
PIPE_CAP = 1 << 30
PIPE_WAIT_S = 10.0
STDIN_WAIT_S = 300.0


def _read_pipe(fd: int, shown: str, dest: Path, named: bool) -> None:
    """Copy what a pipe (or any stream) gives into ``dest``, up to :data:`PIPE_CAP` bytes."""
    wait_s = PIPE_WAIT_S if named else STDIN_WAIT_S
    poll = select.poll()
    poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    total = 0
    got_any = False
    with open(dest, "wb") as out:
        while True:
            if not poll.poll(int(wait_s * 1000)):
                what = "nothing was written to it" if not got_any else "its writer stopped writing"
                kind = "a named pipe (FIFO)" if named else "a pipe"
                raise LogError(f"is {kind} and {what} for {wait_s:g} s; write the log to a file and name that",
                               path=shown)
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:  # ready, yet nothing to read: wait again
                time.sleep(0.01)
                continue
            if not chunk:
                return
            got_any = True
            total += len(chunk)
            if total > PIPE_CAP:
                raise LogError(f"gave more than {PIPE_CAP} bytes on a pipe; write the log to a file", path=shown)
            out.write(chunk)


def _load_pipe(fd: int, shown: str, name: str, overrides: dict[str, str] | None, named: bool = False) -> Run:
    """A log arriving on a pipe: read once into a temporary file named ``name`` and parsed by its
    content like a file; errors name ``shown`` (``<stdin>``, the FIFO's path), not the copy."""
    if os.isatty(fd):
        raise LogError("is a terminal; pipe a log in (cat log.csv | traindoctor diagnose -)", path=shown)
    with tempfile.TemporaryDirectory(prefix="traindoctor-pipe-") as tmp:
        copy = Path(tmp) / (name or "stdin")
        try:
            _read_pipe(fd, shown, copy, named)
            if copy.stat().st_size == 0:
                raise LogError("is empty", path=shown)
            run = _load(copy, overrides)
        except LogError as e:
            if e.path is not None and os.fspath(copy) in e.path:
                e.path = e.path.replace(os.fspath(copy), shown)
            e.message = e.message.replace(os.fspath(copy), shown)
            e.args = (str(e),)
            raise
        except OSError as e:
            raise LogError(f"cannot read: {e.strerror or e}", path=shown) from e
    run.meta["source"] = shown
    return run


def _head(path: Path, size: int = 8192) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _looks_like_csv(head: bytes) -> bool:
    """Text (no NUL bytes, decodes) whose first line has a comma, tab or semicolon."""
    if not head or b"\x00" in head:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return bool(lines) and any(sep in lines[0] for sep in (",", "\t", ";"))


def _looks_like_tfrecord(head: bytes) -> bool:
    if len(head) < 12:
        return False
    from .tensorboard import masked_crc32c

    return masked_crc32c(head[:8]) == int.from_bytes(head[8:12], "little")


def _dir_format(p: Path) -> str | None:
    if is_mlflow_run(p):
        return "mlflow"
    if event_files(p):
        return "tensorboard"
    if is_file(p / STATE_FILE):
        return "huggingface"
    if is_file(p / "metrics.csv"):
        return "lightning-csv"
    return None


def detect_format(path: str | os.PathLike[str]) -> str | None:
    """The log format of a file or a single-run directory (one of :data:`FORMATS`), else None."""
    p = Path(path)
    if is_dir(p):
        return _dir_format(p)
    if not is_file(p):
        return None
    head = _head(p)
    name = p.name.lower()
    if head.startswith(SQLITE_MAGIC):
        return "store"
    if name.startswith(EVENT_PREFIX):
        return "tensorboard"
    if name == STATE_FILE:
        return "huggingface"
    if name == "metrics.csv" and is_file(p.parent / "hparams.yaml"):
        return "lightning-csv"
    ext = p.suffix.lower()
    if ext in _TEXT_EXT:
        return _TEXT_EXT[ext]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if ext == ".json" or text.startswith((b"{", b"[")):
        if text.startswith(b"["):
            return "json"
        # a file without a name to go by (a pipe's copy): its content says, as for a .json
        if b'"log_history"' in head or (ext in (".json", "") and text.startswith(b"{") and _has_log_history(p)):
            return "huggingface"
        if text.startswith(b"{"):
            return "jsonl"
        return "json" if ext == ".json" else None
    if p.parent.name == "metrics" and is_mlflow_run(p.parent.parent):
        return "mlflow"
    if _looks_like_tfrecord(head):
        return "tensorboard"
    if _looks_like_csv(head):
        return "csv"
    return None


def _has_log_history(p: Path) -> bool:
    try:
        if p.stat().st_size > 256 << 20:
            return False
        return b'"log_history"' in p.read_bytes()
    except OSError:
        return False


def _apply_overrides(run: Run, overrides: dict[str, str] | None, path: str | os.PathLike[str]) -> Run:
    """For a store: ``--metric ROLE=NAME`` makes series NAME the one the rules read as ROLE."""
    for role, name in (overrides or {}).items():
        if role not in METRIC_ROLES:
            raise LogError(
                f"--metric {role}={name}: a run store's series can be renamed only to one of "
                f"{', '.join(METRIC_ROLES)}; series are: {', '.join(run.series) or '(none)'}",
                path=path,
            )
        if name not in run.series:
            raise LogError(
                f"no series {name!r} for --metric {role}={name}; "
                f"series are: {', '.join(run.series) or '(none)'}",
                path=path,
            )
    renamed = {role: run.series[name] for role, name in (overrides or {}).items()}
    run.series.update(renamed)
    if renamed:
        run.meta["columns"] = dict(overrides or {})
    return run


def _lightning_meta(run: Run, csv_path: Path) -> Run:
    """Lightning's hparams.yaml beside metrics.csv: the learning rate and batch size, when logged."""
    hp = _yaml_scalars(csv_path.parent / "hparams.yaml")
    run.meta["format"] = "lightning-csv"
    run.meta["framework"] = "lightning"
    try:
        clip = float(hp["gradient_clip_val"]) if "gradient_clip_val" in hp else None
    except ValueError:
        clip = None
    if clip is not None and clip > 0:
        run.meta["framework_args"] = {"gradient_clip_val": clip}
    for keys, meta_key, kind in ((("lr", "learning_rate"), "lr", float), (("batch_size",), "batch_size", int)):
        if meta_key in run.meta:
            continue
        for k in keys:
            try:
                v = kind(float(hp[k])) if k in hp else None
            except ValueError:
                v = None
            if v is not None and v > 0:
                run.meta[meta_key] = v
                break
    return run


def load(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    """Read any supported log into a :class:`Run`: a file, or a directory holding one run.

    The format is told from the file's name and first bytes (:func:`detect_format`).
    ``overrides`` (role → logged name, from ``--metric ROLE=NAME``) picks the metrics; for a run
    store, the series read as that role. ``meta["source"]`` is ``path`` for every format.
    A directory holding several runs is a :class:`LogError`: use :func:`find_runs`.
    Raises :class:`LogError` (:class:`NoTrainingLoss` when the log has no training loss) and
    nothing else: an unexpected failure of a reader (a bug) becomes a one-line LogError too.
    """
    shown = "<stdin>" if isinstance(path, str) and path == "-" else path
    try:
        return _load(path, overrides)
    except LogError as e:
        _shorten(e)
        raise
    except MemoryError as e:
        raise LogError("is too large to read in this machine's memory", path=shown) from e
    except RecursionError as e:
        raise LogError("is nested too deeply to read", path=shown) from e
    except Exception as e:  # noqa: BLE001 - bad input must never end in a traceback
        msg = " ".join(str(e).split())[:160]
        raise LogError(
            f"could not be read ({type(e).__name__}: {msg}); this is a traindoctor bug, please report it",
            path=shown,
        ) from e


_LONG_QUOTED = re.compile(r"'([^'\n]{80,})'")
_MAX_MESSAGE = 600


def _shorten(e: LogError) -> None:
    """A message quoting a multi-megabyte cell or name keeps its head: one readable line, not megabytes."""
    if len(e.message) <= _MAX_MESSAGE:
        return
    msg = _LONG_QUOTED.sub(lambda m: f"'{m.group(1)[:40]}...' ({len(m.group(1))} characters)", e.message)
    if len(msg) > _MAX_MESSAGE:
        msg = f"{msg[:400]} ... ({len(msg) - 520} characters) ... {msg[-120:]}"
    e.message = msg
    e.args = (str(e),)


def _load(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    if isinstance(path, str) and path == "-":
        return _load_pipe(0, "<stdin>", "stdin", overrides)
    p = Path(path)
    st = stat_of(path)
    if stat.S_ISFIFO(st.st_mode):
        # /dev/stdin, <(cat log.csv), a named FIFO: opened without waiting for a writer
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
        try:  # an anonymous pipe (/dev/stdin, /dev/fd/N) resolves to "pipe:[inode]", a named FIFO to its path
            named = "pipe:[" not in os.path.realpath(p)
            return _load_pipe(fd, os.fspath(path), p.name, overrides, named)
        finally:
            os.close(fd)
    kind = _not_regular(st.st_mode)
    if kind is not None:
        if os.path.realpath(p).startswith(("/dev/pts/", "/dev/tty")):
            raise LogError("is a terminal; pipe a log in (cat log.csv | traindoctor diagnose -)", path=path)
        raise LogError(f"is {kind}, not a log file", path=path)
    if stat.S_ISDIR(st.st_mode):
        fmt = _dir_format(p)
        found = find_runs(p)
        if fmt is None or len(found.runs) > 1:
            if fmt is None and len(found.runs) == 1:
                return _load(found.runs[0].path, overrides)
            what = f"holds {len(found.runs)} runs" if found.runs else "holds no training log"
            raise LogError(f"is a directory that {what}; name one log, or diagnose the directory", path=path)
    else:
        try:
            with open(p, "rb") as f:
                f.read(1)
        except OSError as e:
            raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
        if st.st_size == 0:
            raise LogError("is empty", path=path)
        fmt = detect_format(p)
    if fmt == "store":
        # load_store says precisely what is wrong with an SQLite file that is not a readable store
        run = _apply_overrides(load_store(path), overrides, path)
    elif fmt == "csv":
        run = read_csv(path, overrides)
    elif fmt == "lightning-csv":
        csv_path = p / "metrics.csv" if is_dir(p) else p
        run = _lightning_meta(read_csv(csv_path, overrides), csv_path)
    elif fmt in ("jsonl", "json"):
        run = read_jsonl(path, overrides)
    elif fmt == "tensorboard":
        run = read_tensorboard(path, overrides)
    elif fmt == "huggingface":
        run = read_trainer_state(path, overrides)
    elif fmt == "mlflow":
        run = read_mlflow(p if is_dir(p) else p.parent.parent, overrides)
    else:
        raise LogError(
            "unknown log format (expected a traindoctor run store, CSV/TSV, JSON Lines, a TensorBoard "
            "event file, a Hugging Face trainer_state.json or an MLflow run)",
            path=path,
        )
    run.meta["source"] = os.fspath(path)
    return run


@dataclass(frozen=True)
class RunRef:
    """One run found in a directory tree: its file or directory, its format, and a note (a
    symbolic link that leads out of the tree)."""

    path: Path
    format: str
    note: str | None = None


@dataclass
class TreeScan:
    """What :func:`find_runs` found: the runs, what was passed over (path, why), and the entries
    that could not be read (path, format its name suggests, why: a symbolic link loop, a dangling
    link, a file or directory the user may not read)."""

    runs: list[RunRef] = field(default_factory=list)
    passed_over: list[tuple[Path, str]] = field(default_factory=list)
    unreadable: list[tuple[Path, str, str]] = field(default_factory=list)


def _candidate(name: str) -> str | None:
    """The format a file's name says it may hold (before it is read), else None."""
    low = name.lower()
    if name == STATE_FILE:
        return "huggingface"
    if name.startswith(EVENT_PREFIX):
        return "tensorboard"
    if low.endswith(_STORE_EXT):
        return "store"
    return _TEXT_EXT.get(os.path.splitext(low)[1])


def _outside(path: Path, real_root: str) -> str | None:
    """A note when ``path`` is a symbolic link whose target lies outside the tree."""
    if not path.is_symlink():
        return None
    target = os.path.realpath(path)
    if target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return f"a symbolic link to {target}, outside the tree"


def _probe(path: Path, found: TreeScan, fmt: str) -> bool:
    """Whether ``path`` is a regular file this user can open; else it is recorded (unreadable, or
    passed over when it is a FIFO, device or socket, which are never opened)."""
    try:
        st = os.stat(path)
    except OSError as e:
        found.unreadable.append((path, fmt, _stat_error(path, e)))
        return False
    if stat.S_ISDIR(st.st_mode):
        return False
    kind = _not_regular(st.st_mode)
    if kind is not None:
        found.passed_over.append((path, f"{kind}, not a regular file: not opened"))
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        found.unreadable.append((path, fmt, f"cannot read: {e.strerror or e}"))
        return False
    os.close(fd)
    return True


def find_runs(root: str | os.PathLike[str]) -> TreeScan:
    """Every run in the tree under ``root``, in path order.

    A run is: a traindoctor store (``*.db``, ``*.sqlite``), a CSV/TSV or JSON Lines log, a
    directory of TensorBoard event files, the newest ``trainer_state.json`` of a Hugging Face
    output directory (the final one, else the highest ``checkpoint-N``), or an MLflow run
    directory. A log at the top of the tree hides nothing below it: every run is listed. Hidden
    directories (but ``.traindoctor``), virtual environments and MLflow's ``.trash`` are not
    searched; symbolic links to directories are not followed (so a link loop cannot recurse), links
    to files are (a note says when one leads out of the tree). Only regular files are opened: a
    FIFO, device or socket is passed over. Symbolic link loops, dangling links and files or
    directories this user may not read are listed in :attr:`TreeScan.unreadable`. Whether a CSV or
    JSON file is a training log at all is known only when it is read (:class:`NoTrainingLoss`).
    """
    base = Path(root)
    real_root = os.path.realpath(base)
    found = TreeScan()
    hf: dict[Path, list[tuple[int, Path]]] = {}
    stack = [base]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            found.unreadable.append((d, "directory", f"cannot read the directory: {e.strerror or e}"))
            continue
        if is_mlflow_run(d):
            found.runs.append(RunRef(d, "mlflow"))
            continue  # metrics/, params/, tags/, artifacts/ belong to this run
        subdirs: list[Path] = []
        events = False
        for entry in entries:
            n = entry.name
            f = d / n
            try:
                entry_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                entry_dir = False
            if entry_dir:
                if n not in _SKIP_DIRS and (not n.startswith(".") or n == ".traindoctor"):
                    subdirs.append(f)
                continue
            fmt = _candidate(n)
            if fmt is None:
                continue
            if entry.is_symlink() and is_dir(f):
                found.passed_over.append((f, "a symbolic link to a directory: not followed"))
                continue
            if not _probe(f, found, fmt):
                continue
            low = n.lower()
            if fmt == "tensorboard":
                events = True
            elif fmt == "huggingface":
                m = _CHECKPOINT.match(d.name)
                key, rank = (d.parent, int(m.group(1))) if m else (d, 1 << 62)
                hf.setdefault(key, []).append((rank, f))
            elif low == "metrics.csv" and is_file(d / "hparams.yaml"):
                found.runs.append(RunRef(f, "lightning-csv", _outside(f, real_root)))
            elif fmt == "store":
                if _head(f, len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    continue
                try:
                    ok = is_store(f, strict=True)
                except LogError as e:  # a damaged store: an error row, with the store's own words
                    found.unreadable.append((f, "store", e.message))
                    continue
                except Exception as e:  # noqa: BLE001 - a reader's bug must not end the scan: a row says it
                    msg = " ".join(str(e).split())[:160]
                    found.unreadable.append((f, "store", f"could not be read ({type(e).__name__}: {msg}); "
                                                         "this is a traindoctor bug, please report it"))
                    continue
                if ok:
                    found.runs.append(RunRef(f, "store", _outside(f, real_root)))
                else:
                    found.passed_over.append((f, "an SQLite file, not a traindoctor run store"))
            else:
                found.runs.append(RunRef(f, fmt, _outside(f, real_root)))
        if events:
            found.runs.append(RunRef(d, "tensorboard"))
        stack.extend(reversed(subdirs))
    for _key, cands in hf.items():
        cands.sort()
        newest = cands[-1][1]
        found.runs.append(RunRef(newest, "huggingface", _outside(newest, real_root)))
        for _, older in cands[:-1]:
            found.passed_over.append((older, f"an earlier checkpoint of {newest}"))
    found.runs.sort(key=lambda r: r.path.as_posix())
    found.unreadable.sort(key=lambda u: u[0].as_posix())
    return found
