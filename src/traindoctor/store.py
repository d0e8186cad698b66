"""The run store: one SQLite file per run, written while training, read by any later diagnosis.

Layout (schema ``traindoctor-store/1``)::

    meta(key TEXT PRIMARY KEY, value TEXT)            -- value is JSON; row 'schema' marks the file
    series(id INTEGER PRIMARY KEY, name TEXT UNIQUE)
    points(series_id INTEGER, step INTEGER, value REAL)   -- index (series_id, step)
    events(id INTEGER PRIMARY KEY, step INTEGER, kind TEXT, data TEXT)   -- data is JSON

The file is opened in WAL mode with ``synchronous=NORMAL``: every :meth:`RunStore.flush` is one
transaction, so a writer killed at any moment (SIGKILL, OOM killer) leaves a valid file holding
everything up to its last flush, and other processes can read the store while it is written.

SQLite stores a NaN REAL as NULL, so a NULL ``value`` reads back as NaN; ±Inf are stored as is.
JSON (meta values, event data) is written with ``NaN``/``Infinity`` tokens, which :mod:`json`
reads back as floats.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sqlite3
import threading
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


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that also sees what a live writer committed to the WAL."""
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
    conn.execute("PRAGMA query_only = 1")
    return conn


def _wal_files(path: Path) -> bool:
    return Path(f"{path}-wal").exists() or Path(f"{path}-shm").exists()


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
    except sqlite3.Error:
        pass


def _schema_of(conn: sqlite3.Connection) -> str | None:
    """The store schema named in the meta table, or None when the database is not a store."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.DatabaseError:
        return None
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


class RunStore:
    """Writes one run into a store file; safe to call from several threads.

    Points and events are buffered and written in one transaction per :meth:`flush` (done
    automatically each ``batch_size`` buffered records, and by :meth:`close`). Opening an
    existing store appends to it; opening any other existing file raises :class:`LogError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: dict[str, Any] | None = None,
        batch_size: int = 2000,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = Path(path)
        self.batch_size = int(batch_size)
        self._lock = threading.RLock()
        self._points: list[tuple[str, int, float | None]] = []
        self._events: list[tuple[int, str, str]] = []
        self._meta: dict[str, str] = {}
        self._series_ids: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None

        if self.path.is_dir():
            raise LogError("is a directory, expected a run store file", path=self.path)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing and not _has_magic(self.path):
            raise LogError("exists and is not a traindoctor run store (not an SQLite file)", path=self.path)
        try:
            if not existing:
                _create_store(self.path)
            conn = sqlite3.connect(
                os.fspath(self.path), timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as e:
            raise LogError(f"cannot create run store: {e}", path=self.path) from e
        try:
            _check_schema(self.path, _schema_of(conn))
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._series_ids = {name: sid for sid, name in conn.execute("SELECT id, name FROM series")}
        except sqlite3.DatabaseError as e:
            conn.close()
            raise LogError(f"cannot open run store: {e}", path=self.path) from e
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if meta:
            for key, value in meta.items():
                self.set_meta(key, value)
            self.flush()

    # ---- writing -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._conn is None:
            raise ValueError(f"run store {self.path} is closed")

    def add_point(self, name: str, step: int, value: float) -> None:
        """Buffer one point of series ``name``."""
        self.add_points(((name, step, value),))

    def add_points(self, points: Iterable[tuple[str, int, float]]) -> None:
        """Buffer ``(name, step, value)`` points; flushes each time ``batch_size`` records are buffered."""
        with self._lock:
            self._check_open()
            buf = self._points
            for name, step, value in points:
                v = float(value)
                buf.append((str(name), int(step), None if math.isnan(v) else v))
                if len(buf) + len(self._events) >= self.batch_size:
                    self.flush()
                    buf = self._points

    def add_event(self, step: int, kind: str, data: dict[str, Any] | None = None) -> None:
        """Buffer an event; ``data`` must be JSON-serialisable (NaN/Inf and numpy scalars are fine)."""
        with self._lock:
            self._check_open()
            self._events.append((int(step), str(kind), _dumps(dict(data or {}))))
            if len(self._points) + len(self._events) >= self.batch_size:
                self.flush()

    def set_meta(self, key: str, value: Any) -> None:
        """Set run metadata ``key`` to a JSON-serialisable value; persisted by the next flush."""
        if key == "schema":
            raise ValueError("meta key 'schema' is reserved for the store format")
        with self._lock:
            self._check_open()
            self._meta[str(key)] = _dumps(value)

    def flush(self) -> None:
        """Write everything buffered in one transaction and commit it."""
        with self._lock:
            self._check_open()
            if not (self._points or self._events or self._meta):
                return
            conn = self._conn
            assert conn is not None
            new_ids: dict[str, int] = {}
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
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
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                # the buffer is kept, so a later flush can still write it once the cause is gone
                raise TrainDoctorError(f"cannot write run store: {e}", path=self.path) from e
            self._series_ids.update(new_ids)
            self._points = []
            self._events = []
            self._meta = {}

    def close(self) -> None:
        """Flush and close; closing again does nothing."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self.flush()
            finally:
                self._conn.close()
                self._conn = None

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


def is_store(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an SQLite file holding a traindoctor run store (of any schema version)."""
    p = Path(path)
    if not p.is_file() or not _has_magic(p):
        return False
    had_wal = _wal_files(p)
    try:
        conn = _connect_ro(p)
    except sqlite3.Error:
        return False
    try:
        schema = _schema_of(conn)
    finally:
        conn.close()
        if not had_wal:
            _tidy(p)
    return isinstance(schema, str) and schema.startswith("traindoctor-store/")


def load_store(path: str | os.PathLike[str]) -> Run:
    """Read a run store (also one still being written) into a :class:`Run`.

    Series come in the order they were first written, each sorted by step (points of one step
    keep their write order); events come in write order; ``meta`` holds the stored metadata plus
    ``source`` (the path) and ``format`` (``"store"``).
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
    had_wal = _wal_files(p)
    try:
        conn = _connect_ro(p)
    except sqlite3.Error as e:
        raise LogError(f"cannot open run store: {e}", path=path) from e
    try:
        # one read transaction: a consistent snapshot even while a writer commits
        conn.execute("BEGIN")
        _check_schema(p, _schema_of(conn))
        meta: dict[str, Any] = {}
        for key, value in conn.execute("SELECT key, value FROM meta"):
            if key == "schema":
                continue
            try:
                meta[key] = json.loads(value)
            except (TypeError, ValueError) as e:
                raise LogError(f"meta {key!r} is not valid JSON: {e}", path=path) from e
        run = Run(meta=meta)
        for sid, name in conn.execute("SELECT id, name FROM series ORDER BY id").fetchall():
            cur = conn.execute(
                "SELECT step, value FROM points WHERE series_id = ? ORDER BY step, rowid", (sid,)
            )
            # straight from the cursor into one array (no list of row tuples); NULL, which is how
            # SQLite keeps a NaN, becomes NaN; steps are exact below 2**53
            flat = np.fromiter(itertools.chain.from_iterable(cur), dtype=np.float64)
            arr = flat.reshape(-1, 2)
            run.series[name] = Series(arr[:, 0].astype(np.int64), arr[:, 1].copy())
        for eid, step, kind, data in conn.execute("SELECT id, step, kind, data FROM events ORDER BY id"):
            try:
                payload = json.loads(data) if data is not None else {}
            except ValueError as e:
                raise LogError(f"event {eid} ({kind}) holds invalid JSON: {e}", path=path) from e
            run.events.append(
                Event(int(step), str(kind), payload if isinstance(payload, dict) else {"value": payload})
            )
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        raise LogError(f"cannot read run store: {e}", path=path) from e
    finally:
        conn.close()
        if not had_wal:
            _tidy(p)
    run.meta["source"] = os.fspath(path)
    run.meta["format"] = "store"
    return run.resolve_captured()
