"""MLflow's file store (``mlruns/<experiment>/<run>/``) → :class:`~traindoctor.run.Run`.

A run directory holds ``meta.yaml`` (its status and name) and ``metrics/<name>``: one file per
metric (a name with ``/`` is a nested path), one line per logged point, ``timestamp value step``
(files from MLflow before 1.0 have no step; their line order is used). ``params/`` gives
``lr``/``learning_rate`` and ``batch_size`` when no series does. A run MLflow still marks
RUNNING, or FAILED/KILLED, gets a note.

Reading needs no MLflow install: the store is plain text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LogError
from ..run import Run
from .files import check_regular, is_dir, is_file
from .roles import build_run

_STATUS = {"1": "RUNNING", "2": "SCHEDULED", "3": "FINISHED", "4": "FAILED", "5": "KILLED"}


def is_mlflow_run(path: str | os.PathLike[str]) -> bool:
    """A directory with ``meta.yaml`` and a ``metrics/`` directory: one run of an MLflow file store."""
    p = Path(path)
    return is_dir(p) and is_dir(p / "metrics") and is_file(p / "meta.yaml")


def _yaml_scalars(path: Path) -> dict[str, str]:
    """Top-level ``key: value`` lines of a simple YAML file (all MLflow's meta.yaml holds)."""
    out: dict[str, str] = {}
    try:
        if not is_file(path):  # a FIFO or device is never opened: it may never end
            return out
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", errors="replace")  # the scalars are at the top
    except OSError:
        return out
    for line in text.splitlines()[:10000]:
        m = re.match(r"^([A-Za-z_][\w.-]*):\s*(.*?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2).strip("'\"")
    return out


def read_metric_file(path: Path, name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(steps, values, note) of one metric file."""
    check_regular(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
    if b"\x00" in data[:8192]:
        raise LogError(f"is a binary file, expected MLflow metric lines 'timestamp value step' for {name!r}", path=path)
    note = None
    lines = data.split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()
    elif lines:
        # no line end: the last line may be one MLflow is writing
        parts = lines[-1].split()
        ok = len(parts) == 3 or (len(parts) == 2 and all(len(ln.split()) == 2 for ln in lines[:1]))
        if ok:
            try:
                [float(x) for x in parts]
            except ValueError:
                ok = False
        if not ok:
            note = (
                f"metric {name!r}: the last line ({len(lines)}) is unfinished (no line end): read up to line "
                f"{len(lines) - 1}; the run may still be being written"
            )
            lines.pop()
    if not lines:
        return np.zeros(0, dtype=np.int64), np.zeros(0), note
    tokens = [ln.split() for ln in lines]
    width = len(tokens[0])
    if width not in (2, 3):
        raise LogError(
            f"holds {width} fields, expected 'timestamp value step' (metric {name!r})", path=path, line=1
        )
    bad = next((i for i, t in enumerate(tokens) if len(t) != width), None)
    if bad is not None:
        raise LogError(
            f"holds {len(tokens[bad])} fields, expected {width} ('timestamp value step') (metric {name!r})",
            path=path,
            line=bad + 1,
        )
    flat = np.array([x for t in tokens for x in t], dtype=object).reshape(-1, width)
    try:
        values = flat[:, 1].astype(np.float64)
    except (ValueError, TypeError):
        values = None
    if values is None:
        for i, t in enumerate(tokens):
            try:
                float(t[1])
            except ValueError:
                shown = t[1].decode("latin-1")[:40]
                raise LogError(f"value {shown!r} of metric {name!r} is not a number", path=path, line=i + 1) from None
    assert values is not None
    if width == 3:
        try:
            steps_f = flat[:, 2].astype(np.float64)
        except (ValueError, TypeError):
            steps_f = None
        if steps_f is None or not np.all(np.isfinite(steps_f)) or np.any(steps_f != np.round(steps_f)) or np.any(
            np.abs(steps_f) > 2**62
        ):
            for i, t in enumerate(tokens):
                try:
                    f = float(t[2])
                    good = f == int(f) and abs(f) <= 2**62
                except (ValueError, OverflowError):
                    good = False
                if not good:
                    shown = t[2].decode("latin-1")[:40]
                    raise LogError(
                        f"step {shown!r} of metric {name!r} is not a whole number", path=path, line=i + 1
                    ) from None
        assert steps_f is not None
        steps = steps_f.astype(np.int64)
    else:
        steps = np.arange(values.shape[0], dtype=np.int64)
    return steps, values, note


def read_mlflow(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    """One MLflow run directory (``mlruns/<experiment id>/<run id>``) → :class:`Run`."""
    p = Path(path)
    check_regular(p)
    if not is_mlflow_run(p):
        raise LogError("is not an MLflow run directory (expected meta.yaml and metrics/)", path=path)
    mdir = p / "metrics"
    files = sorted(f for f in mdir.rglob("*") if is_file(f))
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    notes: list[str] = []
    for f in files:
        name = f.relative_to(mdir).as_posix()
        steps, values, note = read_metric_file(f, name)
        series[name] = (steps, values)
        if note:
            notes.append(note)
    meta: dict[str, Any] = {}
    info = _yaml_scalars(p / "meta.yaml")
    status = _STATUS.get(info.get("status", ""), info.get("status"))
    if status:
        meta["mlflow_status"] = status
    if status == "RUNNING":
        notes.append("MLflow marks this run RUNNING: it may still be being written (or it died without ending)")
    elif status in ("FAILED", "KILLED"):
        notes.append(f"MLflow marks this run {status}")
    name = info.get("run_name") or _read_small(p / "tags" / "mlflow.runName")
    if name:
        meta["run_name"] = name
    params = p / "params"
    for key, meta_key in (("lr", "lr"), ("learning_rate", "lr"), ("batch_size", "batch_size")):
        v = _read_small(params / key)
        if v is None or meta_key in meta:
            continue
        try:
            num = float(v)
        except ValueError:
            continue
        if meta_key == "batch_size":
            if num == int(num) and num > 0:
                meta[meta_key] = int(num)
        elif np.isfinite(num) and num > 0:
            meta[meta_key] = num
    run = build_run(series, path=path, fmt="mlflow", overrides=overrides, notes=notes, meta=meta)
    return run


def _read_small(path: Path) -> str | None:
    try:
        if is_file(path) and path.stat().st_size < 4096:
            return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        pass
    return None
