"""The run store: one SQLite file per run, written while training, read by any later diagnosis.

Layout (schema ``traindoctor-store/1``)::

    meta(key TEXT PRIMARY KEY, value TEXT)            -- value is JSON; row 'schema' marks the file
    series(id INTEGER PRIMARY KEY, name TEXT UNIQUE)
    points(series_id INTEGER, step INTEGER, value REAL)   -- index (series_id, step)
    events(id INTEGER PRIMARY KEY, step INTEGER, kind TEXT, data TEXT)   -- data is JSON

The file is opened in WAL mode with ``synchronous=NORMAL``: every :meth:`RunStore.flush` is one
transaction, so a writer killed at any moment (SIGKILL, OOM killer) leaves a valid file holding
everything up to its last flush, and other processes can read the store while it is written.

The writer keeps three reserved meta rows (``store:*``, never part of ``Run.meta``): ``store:writer``
(pid, host and process start time of the writing process), ``store:heartbeat`` (time of its last
commit) and ``store:closed``, written by a clean :meth:`RunStore.close`, which also checkpoints the
WAL into the ``.db`` so that file alone holds the whole run. A reader tells from them whether the run
is still being written, or whether its writer died without closing it (and then, where it may write,
checkpoints the store and records that, so a later copy of the ``.db`` is whole and still says so).

A store the reader may not write (a read-only directory, another user's file) is read without
creating anything beside it: as an immutable file, or, when a ``-wal`` holds committed points that
cannot be read in place, from a private copy. SQLite's own reports of damage (``database disk image
is malformed``) are raised as :class:`StoreDamaged`.

A live run's writer keeps the store bounded (``retention.py``): what the monitor's retention thins from
the older stretches of a long run is deleted here too (:meth:`RunStore.delete_points`,
:meth:`RunStore.delete_events`, in the transaction of the next flush); SQLite reuses the freed pages, and
``journal_size_limit`` truncates the ``-wal`` after each checkpoint, so neither file grows with the run's
length. Such a store says so in its meta row ``retention`` (with ``thinned_before_step``).

SQLite stores a NaN REAL as NULL, so a NULL ``value`` reads back as NaN; ±Inf are stored as is.
JSON (meta values, event data) is written with ``NaN``/``Infinity`` tokens, which :mod:`json`
reads back as floats.
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import LogError, TrainDoctorError
from .run import Event, Run, Series

if TYPE_CHECKING:
    from typing_extensions import Self

SCHEMA = "traindoctor-store/1"
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS points (series_id INTEGER, step INTEGER, value REAL);
CREATE INDEX IF NOT EXISTS points_series_step ON points (series_id, step);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, step INTEGER, kind TEXT, data TEXT);
"""

_BUSY_TIMEOUT_S = 30.0
_WAL_LIMIT = 8 * 2**20  # bytes
_CLOSE_CHECKPOINT_MS = 5000  # how long a closing writer waits for readers to let the WAL be checkpointed

# reserved meta rows, kept out of Run.meta
_RESERVED = "store:"
_WRITER = "store:writer"
_HEARTBEAT = "store:heartbeat"
_CLOSED = "store:closed"

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class StoreDamaged(LogError):
    """A run store (an SQLite file) that SQLite itself reports as damaged: cut short or overwritten."""


def _is_damage(e: BaseException | None) -> bool:
    """SQLite found the file damaged: SQLITE_CORRUPT ("database disk image is malformed"), or
    SQLITE_NOTADB ("file is not a database": SQLite's magic, then a header that is not SQLite's)."""
    if not isinstance(e, sqlite3.Error):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return "malformed" in str(e) or "not a database" in str(e)


def _read_error(path: str | os.PathLike[str], e: sqlite3.Error, doing: str) -> LogError:
    """SQLite's own words: :class:`StoreDamaged` for damage, else a LogError saying what failed."""
    if _is_damage(e):
        return StoreDamaged(f"is damaged ({e}); it was cut short or overwritten, e.g. by an incomplete copy",
                            path=path)
    return LogError(f"cannot {doing} run store: {e}", path=path)


def _proc_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
        return int(data.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _writer_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _proc_start(os.getpid()),
            "opened": time.time()}


def _writer_alive(writer: dict[str, Any]) -> bool | None:
    """Whether the store's writer process still runs: None when that cannot be told (another host)."""
    pid = writer.get("pid")
    if writer.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return None
    start = writer.get("start")
    now = _proc_start(pid)
    if isinstance(start, int) and now is not None and now != start:
        return False  # the pid was reused by another process
    return True


def _ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays (and anything else with .tolist(), e.g. a CPU tensor) become plain JSON
    if isinstance(obj, np.generic):
        return obj.item()
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    # allow_nan: a NaN/Inf in an event is evidence and must survive (written as NaN/Infinity tokens)
    return json.dumps(value, allow_nan=True, default=_json_default, separators=(",", ":"))


def _has_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def _connect_uri(path: Path, params: str) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?" + params
    conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
    conn.execute("PRAGMA query_only = 1")
    return conn


def _connect_rw(path: Path) -> sqlite3.Connection:
    """The writer's connection (one place, so a test can stand a failing disk in for it)."""
    return sqlite3.connect(os.fspath(path), timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)


def _wal_files(path: Path) -> bool:
    return Path(f"{path}-wal").exists() or Path(f"{path}-shm").exists()


def _writable(path: Path) -> bool:
    """Whether this process may write the store and create files beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent.resolve(), os.W_OK | os.X_OK)


class _ReadConn:
    """A read-only connection to a store that leaves nothing the reader cannot remove.

    Where the reader may write, SQLite's ``mode=ro`` (it also sees what a live writer committed to
    the WAL; :func:`_tidy` removes the -wal/-shm it may create). Where it may not (a read-only
    directory, another user's file): in place through the writer's existing ``-shm`` when there is
    one (a live run), else as an immutable file when no ``-wal`` holds anything, else from a private
    copy of the ``.db`` and its ``-wal`` (an immutable open would not see the ``-wal``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writable = _writable(path)
        self.wal_present = Path(f"{path}-wal").exists()
        self.had_files = _wal_files(path)
        self._tmp: str | None = None
        self.conn = self._open()

    def _open(self) -> sqlite3.Connection:
        p = self.path
        if self.writable:
            return _connect_uri(p, "mode=ro")
        if Path(f"{p}-shm").exists():
            conn = _connect_uri(p, "mode=ro")
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
                return conn
            except sqlite3.Error:
                conn.close()
        try:
            wal_size = Path(f"{p}-wal").stat().st_size
        except OSError:
            wal_size = 0
        if wal_size == 0:
            return _connect_uri(p, "mode=ro&immutable=1")
        self._tmp = tempfile.mkdtemp(prefix="traindoctor-store-")
        try:
            copy = Path(self._tmp) / "run.db"
            shutil.copyfile(p, copy)
            shutil.copyfile(f"{p}-wal", f"{copy}-wal")
            return _connect_uri(copy, "mode=ro")
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
            if self.writable and not self.had_files:
                _tidy(self.path)


def _open_read(path: Path) -> _ReadConn:
    try:
        return _ReadConn(path)
    except sqlite3.Error as e:
        raise _read_error(path, e, "open") from e
    except OSError as e:
        raise LogError(f"cannot read run store: {e.strerror or e}", path=path) from e


def _internal(conn: sqlite3.Connection) -> dict[str, Any]:
    """The reserved ``store:*`` meta rows (writer, heartbeat, closed), decoded; bad JSON is ignored."""
    out: dict[str, Any] = {}
    for key, value in conn.execute("SELECT key, value FROM meta WHERE key LIKE 'store:%'"):
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            continue
    return out


def _unclean(pid: Any, wal_present: bool) -> str:
    if wal_present:
        return (f"the store was not closed cleanly: its writer (pid {pid}) ended without closing it (killed?); "
                "it holds what was written up to its last flush")
    return (f"the store was not closed cleanly and its -wal file is missing: points may be lost "
            f"(its writer, pid {pid}, ended without closing it)")


def _state_notes(internal: dict[str, Any], wal_present: bool) -> tuple[list[str], bool]:
    """Notes on the writer's state, and whether the writer is known to be gone without closing."""
    writer = internal.get(_WRITER)
    if not isinstance(writer, dict):
        return [], False  # written by an older traindoctor: nothing can be told
    pid = writer.get("pid")
    closed = internal.get(_CLOSED)
    if closed is None:
        alive = _writer_alive(writer)
        if alive:
            hb = internal.get(_HEARTBEAT)
            last = f", last write {_ago(time.time() - hb)} ago" if isinstance(hb, (int, float)) else ""
            return [f"the run is still being written (pid {pid}{last}): this diagnosis covers the steps "
                    "stored so far"], False
        if alive is None:
            return [f"the store was not closed: its writer (pid {pid} on {writer.get('host')}) may still be "
                    "running, or ended without closing it"], False
        return [_unclean(pid, wal_present)], True
    if isinstance(closed, dict) and closed.get("stopped"):
        step = closed.get("step")
        where = f"at step {step}" if isinstance(step, int) else "before its first step"
        return [f"the store stopped {where} while the run went on ({closed['stopped']}): later steps are not in it"], False
    if isinstance(closed, dict) and closed.get("clean") is False:
        return [_unclean(pid, closed.get("wal") != "missing")], False
    return [], False


def _recover(path: Path, wal_present: bool, writer: Any) -> None:
    """A store whose writer died without closing it: record that, and checkpoint its -wal into the .db.

    Best effort, under SQLite's locks; a later copy of the .db alone is then whole, and still says
    the run did not end cleanly.
    """
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, timeout=1.0, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        now = _internal(conn)
        if _CLOSED not in now and now.get(_WRITER) == writer:  # still the dead writer's: no new one came
            mark = {"clean": False, "wal": "found" if wal_present else "missing", "time": time.time(),
                    "by": "reader"}
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_CLOSED, _dumps(mark)))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        conn.close()  # the last connection: SQLite removes the -wal and -shm


def _tidy(path: Path) -> None:
    """Remove the -wal/-shm files a read-only connection leaves behind, when no one else uses them.

    A read-only SQLite connection creates them but may not delete them; a read-write connection
    that is the last one to close checkpoints and deletes them (SQLite decides under its locks,
    so this is safe next to a live writer, which keeps them). Best effort: a read-only
    directory just keeps them.
    """
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, timeout=0.1)
        try:
            conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        finally:
            conn.close()
    except (sqlite3.Error, UnicodeDecodeError):  # a damaged schema's message may not be UTF-8
        pass


def _schema_of(conn: sqlite3.Connection) -> str | None:
    """The store schema named in the meta table, or None when the database is not a store."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e) or "no such column" in str(e):
            return None
        raise  # anything else is SQLite's to say (damage, I/O, locks)
    if row is None or not isinstance(row[0], str):
        return None
    try:
        value = json.loads(row[0])
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _check_schema(path: Path, schema: str | None) -> None:
    if schema == SCHEMA:
        return
    if isinstance(schema, str) and schema.startswith("traindoctor-store/"):
        raise LogError(
            f"is a run store of schema {schema!r}, this traindoctor reads {SCHEMA!r}; upgrade traindoctor",
            path=path,
        )
    raise LogError("is an SQLite database but not a traindoctor run store", path=path)


def _create_store(path: Path) -> None:
    """Create an empty store at ``path`` atomically: it appears with its schema or not at all.

    The schema is written to a temporary file beside ``path``, which is then hard-linked (or, where
    links are not supported, renamed) into place; a writer killed while creating leaves at most the
    temporary file, never a half-made store. When another process created ``path`` first, its
    store is kept.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        conn = sqlite3.connect(os.fspath(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file header
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA_SQL.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (_dumps(SCHEMA),))
            conn.execute("COMMIT")
        finally:
            conn.close()  # the last connection: checkpoints, removes tmp-wal and tmp-shm
        if path.exists() and path.stat().st_size == 0:
            os.replace(tmp, path)  # an empty file at the path becomes the store
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # created meanwhile by another writer: use that one
            except OSError:
                os.replace(tmp, path)  # no hard links on this file system
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass


_OPEN_STORES: weakref.WeakSet[RunStore] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """A process that ends normally closes the stores it left open (flushed, marked closed, checkpointed):
    SQLite would checkpoint and delete the -wal at exit anyway, and a reader must not then take the
    missing -wal for lost points. Only a killed process leaves a store unclosed."""
    for st in list(_OPEN_STORES):
        try:
            st.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class RunStore:
    """Writes one run into a store file; safe to call from several threads.

    Points and events are buffered and written in one transaction per :meth:`flush` (done
    automatically each ``batch_size`` buffered records, and by :meth:`close`). Opening an
    existing store appends to it; opening any other existing file raises :class:`LogError`.

    A failed write raises :class:`TrainDoctorError` and keeps the buffer for a later flush; with
    ``stop_on_error`` (a watched training run, which must go on) the first failed write stops the
    store instead: :attr:`stopped` becomes ``(last step stored, SQLite's reason)`` and every later
    write is dropped without an error.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: dict[str, Any] | None = None,
        batch_size: int = 2000,
        *,
        stop_on_error: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = Path(path)
        self.batch_size = int(batch_size)
        self._lock = threading.RLock()
        self._points: list[tuple[str, int, float | None]] = []
        self._events: list[tuple[int, str, str]] = []
        self._meta: dict[str, str] = {}
        # points and events dropped by a bounded retention (``retention.py``), deleted at the next flush
        self._drop_points: list[tuple[str, int]] = []
        self._drop_events: list[tuple[int, str]] = []
        self._series_ids: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None
        self.stop_on_error = bool(stop_on_error)
        self.stopped: tuple[int | None, str] | None = None
        self.stored_step: int | None = None  # the highest step of a point committed by this writer
        self._reopened = False

        if self.path.is_dir():
            raise LogError("is a directory, expected a run store file", path=self.path)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing and not _has_magic(self.path):
            raise LogError("exists and is not a traindoctor run store (not an SQLite file)", path=self.path)
        try:
            if not existing:
                _create_store(self.path)
            conn = _connect_rw(self.path)
        except (OSError, sqlite3.Error) as e:
            raise LogError(f"cannot create run store: {e}", path=self.path) from e
        try:
            _check_schema(self.path, _schema_of(conn))
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # the -wal is truncated back to this after a checkpoint (else it keeps its largest size for good)
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            self._series_ids = {name: sid for sid, name in conn.execute("SELECT id, name FROM series")}
        except sqlite3.DatabaseError as e:
            conn.close()
            raise _read_error(self.path, e, "open") from e
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        _OPEN_STORES.add(self)
        # who writes, in the same transaction as the run's meta; a clean close marks the store closed
        self._meta[_WRITER] = _dumps(_writer_info())
        self._reopened = existing
        for key, value in (meta or {}).items():
            self.set_meta(key, value)
        self.flush()
        if self._conn is not None and self.stopped is None:
            try:  # so a copy of the .db alone still names its writer
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass

    # ---- writing -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._conn is None:
            raise ValueError(f"run store {self.path} is closed")

    def _stop(self, reason: str) -> None:
        """The first failed write of a ``stop_on_error`` store: keep what is stored, drop the rest."""
        self.stopped = (self.stored_step, reason)
        self._points, self._events, self._meta = [], [], {}
        self._drop_points, self._drop_events = [], []

    def add_point(self, name: str, step: int, value: float) -> None:
        """Buffer one point of series ``name``."""
        self.add_points(((name, step, value),))

    def add_points(self, points: Iterable[tuple[str, int, float]]) -> None:
        """Buffer ``(name, step, value)`` points; flushes each time ``batch_size`` records are buffered."""
        with self._lock:
            self._check_open()
            if self.stopped is not None:
                return
            buf = self._points
            for name, step, value in points:
                v = float(value)
                buf.append((str(name), int(step), None if math.isnan(v) else v))
                if len(buf) + len(self._events) >= self.batch_size:
                    self.flush()
                    if self.stopped is not None:
                        return  # the rest is dropped: the store stopped
                    buf = self._points

    def add_event(self, step: int, kind: str, data: dict[str, Any] | None = None) -> None:
        """Buffer an event; ``data`` must be JSON-serialisable (NaN/Inf and numpy scalars are fine)."""
        with self._lock:
            self._check_open()
            if self.stopped is not None:
                return
            self._events.append((int(step), str(kind), _dumps(dict(data or {}))))
            if len(self._points) + len(self._events) >= self.batch_size:
                self.flush()

    def delete_points(self, points: Iterable[tuple[str, int]]) -> None:
        """Drop every point of series ``name`` at ``step``, for each ``(name, step)``, at the next flush (after
        that flush's inserts). A bounded retention thins old stretches this way; the freed pages are reused,
        so the file stops growing."""
        with self._lock:
            self._check_open()
            if self.stopped is None:
                self._drop_points.extend((str(n), int(s)) for n, s in points)

    def delete_events(self, events: Iterable[tuple[int, str]]) -> None:
        """Drop the events of ``kind`` at ``step``, for each ``(step, kind)``, at the next flush."""
        with self._lock:
            self._check_open()
            if self.stopped is None:
                self._drop_events.extend((int(s), str(k)) for s, k in events)

    def set_meta(self, key: str, value: Any) -> None:
        """Set run metadata ``key`` to a JSON-serialisable value; persisted by the next flush."""
        if key == "schema" or str(key).startswith(_RESERVED):
            raise ValueError(f"meta key {key!r} is reserved for the store format")
        with self._lock:
            self._check_open()
            if self.stopped is not None:
                return
            self._meta[str(key)] = _dumps(value)

    def flush(self) -> None:
        """Write everything buffered in one transaction and commit it."""
        with self._lock:
            self._check_open()
            if self.stopped is not None or not (self._points or self._events or self._meta or self._drop_points
                                                 or self._drop_events):
                return
            conn = self._conn
            assert conn is not None
            new_ids: dict[str, int] = {}
            self._meta[_HEARTBEAT] = _dumps(time.time())
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._reopened:  # a store written again is not closed until this writer closes it
                        conn.execute("DELETE FROM meta WHERE key = ?", (_CLOSED,))
                    ids = self._series_ids
                    new_names = list(dict.fromkeys(n for n, _, _ in self._points if n not in ids))
                    if new_names:
                        conn.executemany(
                            "INSERT OR IGNORE INTO series (name) VALUES (?)", [(n,) for n in new_names]
                        )
                        q = ",".join("?" * len(new_names)) if len(new_names) <= 900 else None
                        if q is None:
                            rows = conn.execute("SELECT id, name FROM series").fetchall()
                        else:
                            rows = conn.execute(
                                f"SELECT id, name FROM series WHERE name IN ({q})", new_names
                            ).fetchall()
                        new_ids = {name: sid for sid, name in rows}
                    if self._points:
                        all_ids = {**ids, **new_ids}
                        conn.executemany(
                            "INSERT INTO points (series_id, step, value) VALUES (?, ?, ?)",
                            [(all_ids[n], s, v) for n, s, v in self._points],
                        )
                    if self._events:
                        conn.executemany(
                            "INSERT INTO events (step, kind, data) VALUES (?, ?, ?)", self._events
                        )
                    if self._meta:
                        conn.executemany(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(self._meta.items())
                        )
                    if self._drop_points:
                        all_ids = {**ids, **new_ids}
                        conn.executemany(
                            "DELETE FROM points WHERE series_id = ? AND step = ?",
                            [(all_ids[n], s) for n, s in self._drop_points if n in all_ids],
                        )
                    if self._drop_events:
                        conn.executemany("DELETE FROM events WHERE step = ? AND kind = ?", self._drop_events)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                if self.stop_on_error:
                    self._stop(str(e))
                    return
                # the buffer is kept, so a later flush can still write it once the cause is gone
                raise TrainDoctorError(f"cannot write run store: {e}", path=self.path) from e
            self._reopened = False
            if self._points:
                top = max(s for _, s, _ in self._points)
                self.stored_step = top if self.stored_step is None else max(self.stored_step, top)
            self._series_ids.update(new_ids)
            self._points = []
            self._events = []
            self._meta = {}
            self._drop_points = []
            self._drop_events = []

    def close(self) -> None:
        """Flush, mark the store closed, checkpoint its WAL into the .db and close; again does nothing."""
        with self._lock:
            if self._conn is None:
                return
            try:
                if self.stopped is not None:
                    self._mark_stopped()
                else:
                    self._meta[_CLOSED] = _dumps({"clean": True, "time": time.time()})
                    self.flush()
                if self.stopped is None:
                    try:  # the .db alone then holds the whole run, even when a reader keeps the -wal open
                        self._conn.execute(f"PRAGMA busy_timeout = {_CLOSE_CHECKPOINT_MS}")
                        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    except sqlite3.Error:
                        pass
            finally:
                self._conn.close()
                self._conn = None

    def _mark_stopped(self) -> None:
        """Best effort, at close: record in the store that it stopped, and where (a full disk may refuse)."""
        conn = self._conn
        assert conn is not None and self.stopped is not None
        step, reason = self.stopped
        mark = {"clean": False, "stopped": reason, "step": step, "time": time.time()}
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_CLOSED, _dumps(mark)))
            conn.execute("COMMIT")
        except sqlite3.Error:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({os.fspath(self.path)!r}{', closed' if self.closed else ''})"


# ---- reading -----------------------------------------------------------------------------------


def is_store(path: str | os.PathLike[str], *, strict: bool = False) -> bool:
    """True when ``path`` is an SQLite file holding a traindoctor run store (of any schema version).

    An SQLite file that cannot be read is not a store, or, with ``strict``, raises: a
    :class:`StoreDamaged` when SQLite reports damage, a :class:`LogError` for any other failure.
    """
    p = Path(path)
    if not p.is_file() or not _has_magic(p):
        return False
    try:
        rc = _open_read(p)
    except LogError:
        if strict:
            raise
        return False
    try:
        schema = _schema_of(rc.conn)
    except sqlite3.Error as e:
        if strict:
            raise _read_error(p, e, "read") from e
        return False
    except UnicodeDecodeError as e:  # SQLite's own message about a damaged schema, not UTF-8
        if strict:
            raise StoreDamaged(f"is damaged (its schema is not UTF-8 text: {e.reason}); it was cut short or "
                               "overwritten", path=p) from e
        return False
    finally:
        rc.close()
    return isinstance(schema, str) and schema.startswith("traindoctor-store/")


def load_store(path: str | os.PathLike[str]) -> Run:
    """Read a run store (also one still being written) into a :class:`Run`.

    Series come in the order they were first written, each sorted by step (points of one step
    keep their write order); events come in write order; ``meta`` holds the stored metadata plus
    ``source`` (the path) and ``format`` (``"store"``), and in ``notes`` what the reader can tell of
    the writer: a run still being written, or one whose writer ended without closing the store.
    Raises :class:`LogError`; :class:`StoreDamaged` when SQLite reports the file damaged.
    """
    p = Path(path)
    if not p.exists():
        raise LogError("no such file", path=path)
    if p.is_dir():
        raise LogError("is a directory, expected a run store file", path=path)
    if p.stat().st_size == 0:
        raise LogError("is empty, not a traindoctor run store", path=path)
    if not _has_magic(p):
        raise LogError("is not a traindoctor run store (not an SQLite file)", path=path)
    rc = _open_read(p)
    conn = rc.conn
    try:
        # one read transaction: a consistent snapshot even while a writer commits
        conn.execute("BEGIN")
        _check_schema(p, _schema_of(conn))
        meta: dict[str, Any] = {}
        for key, value in conn.execute("SELECT key, value FROM meta"):
            if key == "schema" or key.startswith(_RESERVED):
                continue
            try:
                meta[key] = json.loads(value)
            except (TypeError, ValueError) as e:
                raise LogError(f"meta {key!r} is not valid JSON: {e}", path=path) from e
        internal = _internal(conn)
        run = Run(meta=meta)
        for sid, name in conn.execute("SELECT id, name FROM series ORDER BY id").fetchall():
            cur = conn.execute(
                "SELECT step, value FROM points WHERE series_id = ? ORDER BY step, rowid", (sid,)
            )
            # straight from the cursor into one array (no list of row tuples); NULL, which is how
            # SQLite keeps a NaN, becomes NaN; steps are exact below 2**53
            flat = np.fromiter(itertools.chain.from_iterable(cur), dtype=np.float64)
            arr = flat.reshape(-1, 2)
            steps = arr[:, 0].astype(np.int64)
            if steps.size > 1 and np.any(np.diff(steps) < 0):
                # a damaged index returns rows out of order despite ORDER BY: sort them here, stably
                order = np.argsort(steps, kind="stable")
                arr, steps = arr[order], steps[order]
            run.series[name] = Series(steps, arr[:, 1].copy())
        for eid, step, kind, data in conn.execute("SELECT id, step, kind, data FROM events ORDER BY id"):
            try:
                payload = json.loads(data) if data is not None else {}
            except ValueError as e:
                raise LogError(f"event {eid} ({kind}) holds invalid JSON: {e}", path=path) from e
            run.events.append(
                Event(int(step), str(kind), payload if isinstance(payload, dict) else {"value": payload})
            )
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        raise _read_error(path, e, "read") from e
    except (UnicodeDecodeError, TypeError, ValueError) as e:  # text not UTF-8, a NULL step: no writer stores these
        why = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise StoreDamaged(f"is damaged ({why}); it was cut short or overwritten", path=path) from e
    finally:
        rc.close()
    notes, gone = _state_notes(internal, rc.wal_present)
    if gone and rc.writable:
        _recover(p, rc.wal_present, internal.get(_WRITER))
    if notes:
        old = run.meta.get("notes")
        run.meta["notes"] = [*(old if isinstance(old, list) else []), *notes]
    run.meta["source"] = os.fspath(path)
    run.meta["format"] = "store"
    return run.resolve_captured()


def claim_store_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Make ``path`` ready for a new run, before it starts: a store already there is refused, or with
    ``overwrite`` removed (with its -wal/-shm); anything that is not a run store is never removed, nor
    is a store whose writer is still running."""
    p = Path(path)
    if p.is_dir():
        raise LogError("is a directory, expected a run store file", path=p)
    if not p.exists() or p.stat().st_size == 0:
        return
    if not _has_magic(p):
        raise LogError("exists and is not a traindoctor run store (not an SQLite file); choose another --store path",
                       path=p)
    if not is_store(p, strict=True):
        raise LogError("is an SQLite database but not a traindoctor run store; choose another --store path", path=p)
    rc = _open_read(p)
    try:
        internal = _internal(rc.conn)
    except sqlite3.Error as e:
        raise _read_error(p, e, "read") from e
    finally:
        rc.close()
    writer = internal.get(_WRITER)
    if isinstance(writer, dict) and internal.get(_CLOSED) is None and _writer_alive(writer):
        raise LogError(f"is being written by a running process (pid {writer.get('pid')}); choose another --store path",
                       path=p)
    if not overwrite:
        raise LogError("already holds a run store; pass --overwrite to replace it, or choose another --store path",
                       path=p)
    for f in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
        try:
            f.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise LogError(f"cannot remove the old run store: {e.strerror or e}", path=f) from e
