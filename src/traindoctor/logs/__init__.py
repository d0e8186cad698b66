"""Training logs → :class:`~traindoctor.run.Run`: one entry point, :func:`load`, for every format."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from ..errors import LogError
from ..run import Run
from ..store import SQLITE_MAGIC, is_store, load_store
from .csvlog import METRIC_ROLES, read_csv

__all__ = ["is_store", "load", "load_store", "read_csv"]


def _looks_like_csv(path: Path) -> bool:
    """Text (no NUL bytes, decodes) whose first line has a comma, tab or semicolon."""
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    if not head or b"\x00" in head:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return bool(lines) and any(sep in lines[0] for sep in (",", "\t", ";"))


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


def load(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    """Read any supported log: a traindoctor run store, or a CSV/TSV log.

    ``overrides`` (role → column name, from ``--metric ROLE=NAME``) picks a CSV log's columns, or
    for a store the series read as that role. A ``.csv``/``.tsv`` file is always read as CSV; any
    other name (``.txt``, none) when its first line holds a comma, tab or semicolon.
    ``meta["source"]`` is set to ``path`` for every format. Raises :class:`LogError`.
    """
    p = Path(path)
    if not p.exists():
        raise LogError("no such file", path=path)
    if p.is_dir():
        raise LogError(
            "is a directory; reading a directory of logs is not supported yet, name the log file", path=path
        )
    try:
        with open(p, "rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
    if magic == SQLITE_MAGIC:
        # load_store says precisely what is wrong with an SQLite file that is not a readable store
        run = _apply_overrides(load_store(path), overrides, path)
    elif p.suffix.lower() in (".csv", ".tsv") or _looks_like_csv(p):
        run = read_csv(path, overrides)
    elif p.stat().st_size == 0:
        raise LogError("is empty", path=path)
    else:
        raise LogError("unknown log format (expected a traindoctor run store or a CSV/TSV log)", path=path)
    run.meta["source"] = os.fspath(path)
    return run
