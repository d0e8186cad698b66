"""JSON Lines training logs (one JSON object per line) → :class:`~traindoctor.run.Run`.

Two layouts are read:

- wide: ``{"step": 10, "loss": 0.52, "lr": 0.001}`` — each record holds the metrics of one step
  (nested objects are flattened with ``/``: ``{"train": {"loss": 1}}`` is ``train/loss``);
- long: ``{"step": 10, "name": "loss", "value": 0.52}`` — one metric per record (the name under
  ``name``, ``metric``, ``key`` or ``tag``).

A metric value is a number, ``NaN``/``Infinity`` (Python's json writes these), a string such as
``"nan"``/``"inf"``/``"0.5"``, or ``null`` (not logged). Anything else in a used metric — ``true``,
``"abc"``, a list — is a one-line :class:`LogError` naming the line. Records without a step take
their line order as step (``meta["step_unit"] == "record"``), unless no record has one.

The whole file is parsed by one ``json.loads`` call; only when that fails is it parsed line by
line, to name the bad line — or, when it is the last line and it has no line end, to leave it
out as a line a writer is still writing (with a note).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LogError
from ..run import Run
from .files import check_regular
from .roles import ALIASES, NoTrainingLoss, assign_columns, build_run, names_list, norm_name

_NAME_KEYS = ("name", "metric", "key", "tag")
_MAX_DEPTH = 8
_MAX_STEP = 2**62


def _flatten(obj: dict[str, Any], prefix: str = "", depth: int = 0, out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < _MAX_DEPTH:
            _flatten(v, key + "/", depth + 1, out)
        else:
            out[key] = v
    return out


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LogError(
            f"byte {e.start} (0x{data[e.start]:02x}) is not UTF-8: expected JSON Lines text (JSON is UTF-8)",
            path=path,
            line=line,
        ) from e


def _records(text: str, path: Path) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    """(records, their line numbers, notes)."""
    lines = text.split("\n")
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise LogError("is empty", path=path)
    notes: list[str] = []
    unfinished = not text.endswith(("\n", "\r"))
    try:
        parsed = json.loads("[" + ",".join(ln for _, ln in numbered) + "]")
        if len(parsed) != len(numbered) or not all(isinstance(r, dict) for r in parsed):
            raise ValueError("not one object per line")
        return parsed, [n for n, _ in numbered], notes
    except (ValueError, RecursionError):
        pass
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    for k, (n, ln) in enumerate(numbered):
        try:
            rec = json.loads(ln)
        except (ValueError, RecursionError) as e:
            if k == len(numbered) - 1 and unfinished and records:
                notes.append(
                    f"the last line ({n}) is unfinished (no line end, not yet valid JSON): read up to line "
                    f"{numbered[k - 1][0]}; the log may still be being written"
                )
                break
            msg = getattr(e, "msg", None) or type(e).__name__
            raise LogError(f"is not valid JSON ({msg}): expected one JSON object per line", path=path, line=n) from e
        if not isinstance(rec, dict):
            raise LogError(
                f"holds a JSON {type(rec).__name__}, expected one JSON object per line", path=path, line=n
            )
        records.append(rec)
        numbers.append(n)
    return records, numbers, notes


def _error(message: str, path: Path, loc: int | str) -> LogError:
    """A LogError at a line number, or at a named record (``"log_history record 3"``)."""
    if isinstance(loc, str):
        return LogError(f"{loc}: {message}", path=path)
    return LogError(message, path=path, line=loc)


def _number(v: Any, name: str, path: Path, line: int | str, what: str = "a number") -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise _error(f"{name!r} is {json.dumps(v)}, expected {what}", path, line)
    if isinstance(v, int):
        try:
            return float(v)
        except OverflowError:  # an integer beyond float range
            return math.inf if v > 0 else -math.inf
    if isinstance(v, float):
        return v
    if isinstance(v, str):
        t = v.strip()
        try:
            return float(t)
        except ValueError:
            low = t.lower()
            if low in ("nan", "+nan", "-nan"):
                return math.nan
            shown = v if len(v) <= 40 else v[:37] + "..."
            raise _error(f"{name!r} is {shown!r}, expected {what}", path, line) from None
    try:
        shown = json.dumps(v)[:40]
    except (TypeError, ValueError, RecursionError):
        shown = type(v).__name__
    raise _error(f"{name!r} is {shown}, expected {what}", path, line)


def _long_layout(records: list[dict[str, Any]]) -> str | None:
    """The key naming the metric when records are one metric each (``{"name": .., "value": ..}``)."""
    sample = records[: min(len(records), 200)]
    for key in _NAME_KEYS:
        if all("value" in r and isinstance(r.get(key), str) for r in sample):
            return key
    return None


def series_from_records(
    records: list[dict[str, Any]],
    lines: list[int] | list[str],
    path: Path,
    overrides: dict[str, str] | None,
    step_keys: tuple[str, ...] = (),
    nested: bool | None = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """name → (steps, values) of the metrics a role uses, and the step unit.

    ``nested=False`` says no record holds an object (so none needs flattening).

    Only metrics that fit a role (or are named in ``overrides``) are converted, so other
    fields (timestamps, strings) never need to be numbers.
    """
    name_key = _long_layout(records)
    if name_key is not None:
        return _long_series(records, lines, path, overrides, name_key)
    if nested is False:
        flat = records
    else:
        flat = [_flatten(r) if any(isinstance(v, dict) for v in r.values()) else r for r in records]
    keys = list(dict.fromkeys(k for r in flat[:10000] for k in r))
    if len(flat) > 10000:
        keys = list(dict.fromkeys(keys + [k for r in flat[10000:] for k in r]))
    roles = assign_columns(keys, overrides, path=path, what="key")
    _need_loss(roles, keys, path, "key")
    step_key = roles.get("step") or next((k for k in step_keys if k in keys), None)
    if step_key is None and "epoch" in roles and norm_name(roles["epoch"]) in ALIASES["epoch"]:
        unit = "epoch"
        step_key = roles["epoch"]
    else:
        unit = "step" if step_key is not None else "record"
    step_arr = _column(flat, step_key) if step_key is not None else None
    if step_arr is not None:
        sv, slogged = step_arr
        if unit == "epoch" and np.any(slogged & (~np.isfinite(sv) | (sv != np.round(sv)))):
            step_key, unit, step_arr = None, "record", None  # fractional epochs: record order
        elif np.any(slogged & (~np.isfinite(sv) | (sv != np.round(sv)) | (np.abs(sv) > _MAX_STEP))):
            step_arr = None  # a step that is not a whole number: the loop below names its line
    steps: list[int | None] = []
    if step_key is not None and step_arr is None:
        for r, n in zip(flat, lines):
            v = r.get(step_key)
            if v is None:
                steps.append(None)
                continue
            f = _number(v, step_key, path, n, "a whole number (the step)")
            if f is None or not math.isfinite(f) or f != int(f) or abs(f) > _MAX_STEP:
                if unit == "epoch":  # fractional epochs: fall back to record order
                    step_key, unit = None, "record"
                    steps = []
                    break
                raise _error(f"{step_key!r} is {v!r}, expected a whole number (the step)", path, n)
            steps.append(int(f))
    if step_arr is not None:
        step_vals = np.where(step_arr[1], step_arr[0], 0).astype(np.int64)
        has_step = step_arr[1]
    elif step_key is None:
        step_vals = np.arange(len(flat), dtype=np.int64)
        has_step = np.ones(len(flat), dtype=bool)
    else:
        has_step = np.array([x is not None for x in steps], dtype=bool)
        step_vals = np.array([0 if x is None else x for x in steps], dtype=np.int64)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for role, key in roles.items():
        if role == "step" or key in out or key == step_key:
            continue
        col = _column(flat, key)
        if col is not None:
            vals, logged = col
            keep = logged & has_step
            out[key] = (step_vals[keep], vals[keep])
            continue
        # a value that is not a number somewhere: find and name it
        st: list[int] = []
        va: list[float] = []
        for r, n, s, ok in zip(flat, lines, step_vals.tolist(), has_step.tolist()):
            if not ok or key not in r:
                continue
            f = _number(r[key], key, path, n)
            if f is not None:
                st.append(s)
                va.append(f)
        out[key] = (np.array(st, dtype=np.int64), np.array(va, dtype=np.float64))
    return out, unit


def _column(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, logged) of ``key`` over all records, all at once; None when a value is not simply a
    number, ``null`` or a NaN/Inf spelling (the caller then goes record by record, to name it)."""
    raw = [r.get(key) for r in records]
    if any(type(v) is bool for v in raw):
        return None
    logged = np.array([v is not None for v in raw], dtype=bool)
    try:
        # numpy reads ints, floats, None (as NaN) and the strings "nan", "inf", "-Infinity", "1.5"
        vals = np.array(raw, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if vals.shape != (len(records),):
        return None
    return vals, logged


def _need_loss(roles: dict[str, str], names: list[str], path: Path, what: str) -> None:
    if "loss" not in roles:
        raise NoTrainingLoss(
            f"no training-loss {what} found; {what}s are: {names_list(names)}; name one with --metric loss=NAME",
            path=path,
        )


def _long_series(
    records: list[dict[str, Any]],
    lines: list[int] | list[str],
    path: Path,
    overrides: dict[str, str] | None,
    name_key: str,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    names = list(dict.fromkeys(str(r[name_key]) for r in records))
    step_key = next((k for k in ("step", "global_step", "iteration", "iter", "_step") if k in records[0]), None)
    roles = assign_columns(names, overrides, path=path, what="metric")
    _need_loss(roles, names, path, "metric")
    used = set(roles.values())
    pts: dict[str, tuple[list[int], list[float]]] = {n: ([], []) for n in names if n in used}
    for k, (r, n) in enumerate(zip(records, lines)):
        name = str(r[name_key])
        if name not in pts:
            continue
        if step_key is not None:
            s = _number(r.get(step_key), step_key, path, n, "a whole number (the step)")
            if s is None:
                continue
            if not math.isfinite(s) or s != int(s) or abs(s) > _MAX_STEP:
                raise _error(f"{step_key!r} is {r.get(step_key)!r}, expected a whole number (the step)", path, n)
            step = int(s)
        else:
            step = k
        f = _number(r.get("value"), "value", path, n)
        if f is not None:
            pts[name][0].append(step)
            pts[name][1].append(f)
    out = {n: (np.array(s, dtype=np.int64), np.array(v, dtype=np.float64)) for n, (s, v) in pts.items()}
    return out, "step" if step_key is not None else "record"


def read_jsonl(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    """Read a JSON Lines log (or a JSON array of records) into a :class:`Run`."""
    p = Path(path)
    check_regular(p)
    if p.is_dir():
        raise LogError("is a directory, expected a JSON Lines log file", path=path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
    if not data.strip():
        raise LogError("is empty", path=path)
    if b"\x00" in data[:8192]:
        raise LogError("is a binary file, not a JSON Lines log", path=path)
    text = _decode(data, p)
    stripped = text.lstrip()
    records: list[dict[str, Any]]
    if stripped.startswith("["):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as e:
            line = getattr(e, "lineno", None)
            raise LogError(
                f"is not valid JSON ({getattr(e, 'msg', type(e).__name__)}): expected a JSON array of records",
                path=path,
                line=line,
            ) from e
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise LogError("is a JSON array but not of objects: expected one object per logged record", path=path)
        if not doc:
            raise LogError("is an empty JSON array: no records", path=path)
        records, lines, notes = doc, list(range(1, len(doc) + 1)), []
        fmt = "json"
    else:
        whole = _one_object(text)
        if whole is not None:
            # one JSON document: columns of values ({"loss": [...], "val_loss": [...]}, as Keras'
            # history.history is often saved), or a single record
            cols = {k: v for k, v in whole.items() if isinstance(v, list)}
            if cols:
                n = max(len(v) for v in cols.values())
                records = [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(n)]
                lines_: list[int] | list[str] = [f"element {i}" for i in range(n)]
            else:
                records, lines_ = [whole], [1]
            if not records:
                raise LogError("holds only empty lists: no records", path=path)
            series, unit = series_from_records(records, lines_, p, overrides)
            return build_run(
                series, path=path, fmt="json", overrides=_keep_metric_overrides(overrides), step_unit=unit
            )
        records, lines, notes = _records(text, p)
        fmt = "jsonl"
    # one "{" per record: no record holds a nested object (a "{" inside a string only costs the check)
    series, unit = series_from_records(records, lines, p, overrides, nested=text.count("{") > len(records))
    return build_run(series, path=path, fmt=fmt, overrides=_keep_metric_overrides(overrides), notes=notes, step_unit=unit)


def _one_object(text: str) -> dict[str, Any] | None:
    """The JSON object the whole text is, when it is one spread over several lines; else None."""
    body = text.strip()
    if not body.startswith("{") or "\n" not in body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _keep_metric_overrides(overrides: dict[str, str] | None) -> dict[str, str] | None:
    """The overrides :func:`build_run` applies again (the step is already in every point)."""
    if not overrides:
        return None
    return {r: n for r, n in overrides.items() if r != "step"} or None
