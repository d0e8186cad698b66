"""CSV/TSV training logs → :class:`~traindoctor.run.Run`.

Reads both layouts seen in the wild: wide (one row per step, every column filled) and one row
per logged record with empty cells (PyTorch Lightning's ``CSVLogger`` ``metrics.csv``, where a
training row leaves the validation cells empty and vice versa). Each series keeps only the rows
where its cell is non-empty; a literal ``nan``/``inf`` cell is a logged value and is kept.

Columns are given roles by name (``train/loss``, ``train_loss_step``, ``lr-Adam`` ...) unless
the user names them (``--metric loss=COLUMN``). Parsing is vectorised: pandas' C parser reads
every number; only a column holding a ``nan`` text or a non-number takes a slower, still
vectorised, path.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LogError
from ..run import Run, Series
from .files import check_regular
from .roles import (  # noqa: F401 - re-exported: the role names were first defined here
    INDEX_ROLES,
    METRIC_ROLES,
    ROLES,
    NoTrainingLoss,
    assign_columns,
    names_list,
)
from .roles import norm_name as _norm

_NAN_WORDS = ("nan", "+nan", "-nan")
_SNIFF_BYTES = 8192
# a header wider than this is read column-selectively (pandas builds every column otherwise: a
# million-column header took two minutes); ragged rows are not checked then
_WIDE = 1000
_MAX_HEADER_BYTES = 64 << 20


def _cols_list(columns: list[str]) -> str:
    return names_list(columns)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # as pandas splits lines


def _sniff(path: Path) -> tuple[str, str, int]:
    """(encoding, delimiter, blank lines before the header) from the first bytes.

    LogError for a binary file or one with nothing but blank lines.
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
        while head and not head.strip() and len(head) < (1 << 20):
            more = f.read(_SNIFF_BYTES)  # a long run of blank lines above the header
            if not more:
                break
            head += more
    if b"\x00" in head:
        raise LogError("is a binary file, not a CSV log", path=path)
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
        encoding = "utf-8-sig"
    except UnicodeDecodeError:
        text = head.decode("latin-1")
        encoding = "latin-1"
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if text and controls > 0.05 * len(text):
        raise LogError("is a binary file, not a CSV log", path=path)
    all_lines = _LINE_BREAK.split(text)
    lead = next((i for i, ln in enumerate(all_lines) if ln.strip()), None)
    if lead is None:
        raise LogError("is empty", path=path)
    header = all_lines[lead]
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    sep = max(counts, key=lambda s: counts[s])  # ties: tab, comma, semicolon (dict order)
    if counts[sep] == 0:
        sep = ","
    return encoding, sep, lead


_LINE_BREAK_B = re.compile(rb"\r\n|\r|\n")


def _header(path: Path, encoding: str, sep: str, lead: int) -> list[str]:
    """The header's field names, read whole however long the line (the sniff saw 8 KB of it)."""
    line = b""
    with open(path, "rb") as f:
        data, pos, skipped = b"", 0, 0
        while True:
            m = _LINE_BREAK_B.search(data, pos)
            if m is None or (m.group() == b"\r" and m.end() == len(data)):
                more = f.read(1 << 20)
                if more:
                    if len(data) - pos > _MAX_HEADER_BYTES:
                        raise LogError(
                            f"header line is longer than {_MAX_HEADER_BYTES >> 20} MiB, expected a CSV header",
                            path=path,
                            line=lead + 1,
                        )
                    data, pos = data[pos:] + more, 0
                    continue
                if m is None:
                    line = data[pos:] if skipped == lead else b""
                    break
            if skipped == lead:
                line = data[pos : m.start()]
                break
            pos, skipped = m.end(), skipped + 1
    text = line.decode(encoding, errors="replace")
    try:
        fields = next(csv.reader([text], delimiter=sep, skipinitialspace=True), [])
    except csv.Error:
        fields = text.split(sep)
    return [str(c).strip() for c in fields]


def _incomplete_tail(path: Path, sep: str, header: list[str], role_cols: list[str]) -> tuple[int, str] | None:
    """(line number, why) of a last line left unfinished by a writer still at work, else None.

    Only a last line with no line end can be unfinished: one with fewer fields than the header,
    an open quote, or a cell of a used column that is not (yet) a number. A complete last line
    that merely lacks its line end is kept.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - (1 << 16)))
        tail = f.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return None
    cut = max(tail.rfind(b"\n"), tail.rfind(b"\r"))
    if cut < 0 and size > len(tail):
        return None  # a last line over 64 KiB: leave it to the parser
    last = tail[cut + 1 :].decode("latin-1")
    if not last.strip():
        return None
    with open(path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) + 1
    if tail.count(b"\n") == 0 and tail.count(b"\r") > 0:
        lines = tail.count(b"\r") + 1
    if last.count('"') % 2:
        return lines, "an open quote"
    try:
        cells = next(csv.reader([last], delimiter=sep, skipinitialspace=True), [])
    except csv.Error:
        return lines, "a broken field"
    if len(cells) < len(header):
        return lines, f"{len(cells)} of {len(header)} fields"
    for col in role_cols:
        if col in header:
            i = header.index(col)
            cell = cells[i].strip() if i < len(cells) else ""
            if cell:
                try:
                    float(cell.replace(",", ".") if sep == ";" else cell)
                except ValueError:
                    return lines, f"column {col!r} holds {cell[:40]!r}"
    return None


# A logged NaN written as text ("nan", "NaN", "-nan") makes pandas' C parser keep the whole column
# as Python strings (seconds for a million rows), because an empty cell (nothing logged) must stay
# told apart from a NaN (logged). Such cells are rewritten, in the bytes, to this number, which
# parses exactly and nobody logs; after parsing it is turned back into a logged NaN.
_NAN_MARK = -9007199254740991.0
_NAN_MARK_B = b"-9007199254740991"


def _mark_nans(data: bytes, sep: str, body: int) -> bytes | None:
    """``data`` with every whole cell ``[+-]nan`` (any case) after byte ``body`` as :data:`_NAN_MARK`.

    None when there is none. Vectorised: numpy finds the cells, one join rebuilds the bytes.
    """
    u8 = np.frombuffer(data, dtype=np.uint8)
    n = u8.shape[0]
    if n < 3:
        return None
    low = u8 | np.uint8(0x20)
    at = np.flatnonzero((low[:-2] == ord("n")) & (low[1:-1] == ord("a")) & (low[2:] == ord("n")))
    at = at[at >= body]
    if at.size == 0:
        return None
    signed = (at > 0) & np.isin(u8[np.maximum(at - 1, 0)], np.frombuffer(b"+-", dtype=np.uint8))
    start = at - signed
    ends = at + 3
    bounds = np.frombuffer(sep.encode("latin-1") + b"\n\r", dtype=np.uint8)
    before = np.where(start > 0, u8[np.maximum(start - 1, 0)], ord("\n"))
    after = np.where(ends < n, u8[np.minimum(ends, n - 1)], ord("\n"))
    whole = np.isin(before, bounds) & np.isin(after, bounds)
    start, ends = start[whole], ends[whole]
    if start.size == 0:
        return None
    pieces = []
    prev = 0
    for a, b in zip(start.tolist(), ends.tolist()):
        pieces.append(data[prev:a])
        pieces.append(_NAN_MARK_B)
        prev = b
    pieces.append(data[prev:])
    return b"".join(pieces)


def _body_offset(data: bytes, lead: int) -> int:
    """Byte offset just past the header line (``lead`` blank lines above it)."""
    pos = 0
    for _ in range(lead + 1):
        m = _LINE_BREAK_B.search(data, pos)
        if m is None:
            return len(data)
        pos = m.end()
    return pos


def _parse_error(path: Path, e: Exception) -> LogError:
    # pandas numbers lines in the file (skipped rows included), as an editor does
    msg = " ".join(str(e).split())
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
    if m:
        return LogError(
            f"row has {m.group(3)} fields, the header has {m.group(1)}",
            path=path,
            line=int(m.group(2)),
        )
    return LogError(f"cannot parse as CSV: {msg}", path=path)


def _read_frame(
    source: Path | io.BytesIO,
    path: Path,
    encoding: str,
    sep: str,
    lead: int,
    usecols: list[int] | None = None,
) -> pd.DataFrame:
    kwargs: dict[str, Any] = {
        "sep": sep,
        "keep_default_na": False,  # "nan" stays a text, so a logged NaN is told from an empty cell
        "na_values": [""],  # an empty cell: nothing logged
        "skip_blank_lines": False,  # data row i is line lead + i + 2, for error messages
        "skipinitialspace": True,
        "low_memory": False,
    }
    if usecols is None:
        kwargs["skiprows"] = lead  # blank lines above the header
    else:
        kwargs.update(skiprows=lead + 1, header=None, usecols=usecols)
    try:
        try:
            return pd.read_csv(source, encoding=encoding, **kwargs)
        except UnicodeDecodeError:
            if encoding == "latin-1":
                raise
            if isinstance(source, io.BytesIO):
                source.seek(0)
            return pd.read_csv(source, encoding="latin-1", **kwargs)
    except pd.errors.EmptyDataError as e:
        raise LogError("is empty", path=path) from e
    except pd.errors.ParserError as e:
        raise _parse_error(path, e) from e
    except (UnicodeDecodeError, ValueError, OverflowError, MemoryError) as e:
        if isinstance(e, UnicodeDecodeError):
            raise LogError("is not a text file, not a CSV log", path=path) from e
        raise LogError(f"cannot parse as CSV: {' '.join(str(e).split())[:200]}", path=path) from e


def _to_float(
    col: pd.Series, name: str, path: Path, sep: str, first_line: int, marked: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(values, logged) of one column: ``logged`` is False where the cell is empty.

    ``marked``: NaN cells were rewritten to :data:`_NAN_MARK` (see :func:`_mark_nans`).
    """
    values, logged = _to_float_raw(col, name, path, sep, first_line)
    if marked:
        values = np.where(values == _NAN_MARK, np.nan, values)
    return values, logged


def _to_float_raw(
    col: pd.Series, name: str, path: Path, sep: str, first_line: int
) -> tuple[np.ndarray, np.ndarray]:
    if col.dtype.kind in "iuf":
        values = col.to_numpy(dtype=np.float64)
        # the C parser returns NaN only for an empty cell: a "nan" text keeps the column textual
        return values, ~np.isnan(values)
    if col.dtype.kind == "b":
        raw = col.astype(object).astype(str)
    else:
        raw = col
    missing = raw.isna().to_numpy()
    obj = raw.to_numpy(dtype=object, na_value=np.nan)
    try:
        # float() per cell in C: reads nan, inf, -inf, Infinity and surrounding blanks
        values = obj.astype(np.float64)
        return values, ~missing
    except (ValueError, TypeError):
        pass
    # slow path: blank cells, or a cell that is not a number somewhere
    text = raw.astype(object).where(~missing, "").astype(str).str.strip()
    logged = (text != "").to_numpy()
    num = pd.to_numeric(text.where(logged, "nan"), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    nan_word = text.str.lower().isin(_NAN_WORDS).to_numpy()
    bad = logged & np.isnan(num) & ~nan_word
    if bad.any() and sep == ";":
        # semicolon logs often use a decimal comma: 0,25
        alt = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        fixed = bad & ~np.isnan(alt)
        num = np.where(fixed, alt, num)
        bad &= ~fixed
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        cell = str(raw.iloc[i])
        shown = cell if len(cell) <= 40 else cell[:37] + "..."
        raise LogError(f"column {name!r} holds {shown!r}, expected a number", path=path, line=first_line + i)
    return num, logged


def _index(
    df: pd.DataFrame, col: str, path: Path, sep: str, first_line: int, strict: bool, marked: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps int64, usable rows) from an index column; None when not whole numbers and not strict."""
    values, logged = _to_float(df[col], col, path, sep, first_line, marked)
    bad = logged & ~np.isfinite(values)
    if not bad.any():
        bad = logged & ((values != np.round(values)) | (np.abs(values) > 2.0**62))
    if bad.any():
        if not strict:
            return None
        i = int(np.flatnonzero(bad)[0])
        cell = "nan" if np.isnan(values[i]) and marked else str(df[col].iloc[i])
        cell = cell if len(cell) <= 40 else cell[:37] + "..."
        raise LogError(
            f"column {col!r} holds {cell!r}, expected a whole number (the step index)",
            path=path,
            line=first_line + i,
        )
    steps = np.where(logged, values, 0).astype(np.int64)
    return steps, logged


def read_csv(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    """Read a CSV/TSV training log into a :class:`Run`.

    Series ``loss``, ``val_loss``, ``accuracy``, ``val_accuracy``, ``lr``, ``grad_norm`` (those
    found) and ``epoch`` (when a step column is there too), indexed by the ``step`` column, else
    ``epoch`` (``meta["step_unit"] == "epoch"``), else the data row number (``"row"``). Rows with
    an empty step cell are left out. ``overrides`` maps role → column name.

    A last line left unfinished by a writer still at work (no line end, and too few fields or a
    number cut short) is left out, with a note in ``meta["notes"]``.

    meta: ``source``, ``format`` (``csv``/``tsv``), ``columns`` (role → column), ``step_unit``,
    ``lr`` (the first finite learning rate) when there is an lr column, ``notes`` when any.
    Raises :class:`LogError` (:class:`NoTrainingLoss` when no column is a training loss).
    """
    p = Path(path)
    st = check_regular(p)
    if p.is_dir():
        raise LogError("is a directory, expected a CSV log file", path=path)
    if st.st_size == 0:
        raise LogError("is empty", path=path)
    encoding, sep, lead = _sniff(p)
    header = _header(p, encoding, sep, lead)
    fmt = "tsv" if sep == "\t" else "csv"
    # the roles from the header alone: a CSV that is not a training log is told before its body is read
    early = assign_columns(header, overrides, path=path)
    if "loss" not in early:
        raise NoTrainingLoss(
            f"no training-loss column found; columns are: {_cols_list(header)}; "
            "name one with --metric loss=COLUMN",
            path=path,
        )
    notes: list[str] = []
    try:
        data = p.read_bytes()
    except OSError as e:
        raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
    tail = _incomplete_tail(p, sep, header, list(early.values()))
    if tail is not None:
        line, why = tail
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        data = data[: cut + 1]
        notes.append(
            f"the last line ({line}) is unfinished ({why}, no line end): read up to line {line - 1}; "
            "the log may still be being written"
        )
    marked_data = _mark_nans(data, sep, _body_offset(data, lead))
    marked = marked_data is not None
    source = io.BytesIO(marked_data if marked_data is not None else data)
    del data, marked_data
    wide = len(header) > _WIDE
    if wide:
        positions = sorted({header.index(c) for c in early.values()})
        df = _read_frame(source, p, encoding, sep, lead, usecols=positions)
        df.columns = [header[i] for i in positions]
    else:
        df = _read_frame(source, p, encoding, sep, lead)
        df.columns = [str(c).strip() for c in df.columns]
    first_line = lead + 2  # the file line of data row 0, as an editor numbers it
    columns = header if wide else list(df.columns)
    if len(df) == 0 or not df.notna().to_numpy().any():
        raise LogError(f"has no data rows (header only: {_cols_list(columns)})", path=path)

    roles = early if wide else assign_columns(columns, overrides, path=path)
    if "loss" not in roles:
        raise NoTrainingLoss(
            f"no training-loss column found; columns are: {_cols_list(columns)}; "
            "name one with --metric loss=COLUMN",
            path=path,
        )

    n = len(df)
    step_unit = "row"
    idx: tuple[np.ndarray, np.ndarray] | None = None
    if "step" in roles:
        idx = _index(df, roles["step"], p, sep, first_line, strict=True, marked=marked)
        step_unit = "epoch" if _norm(roles["step"]) == "epoch" else "step"
    elif "epoch" in roles:
        idx = _index(df, roles["epoch"], p, sep, first_line, strict=False, marked=marked)
        if idx is not None:
            step_unit = "epoch"
    if idx is None:
        steps, usable = np.arange(n, dtype=np.int64), np.ones(n, dtype=bool)
    else:
        steps, usable = idx

    # steps already in order (the usual case): no series taken from these rows needs sorting
    in_order = bool(np.all(np.diff(steps[usable]) >= 0))
    run = Run()
    series_cols = [(role, roles[role]) for role in METRIC_ROLES if role in roles]
    if "epoch" in roles and step_unit != "epoch":
        series_cols.append(("epoch", roles["epoch"]))
    for role, col in series_cols:
        values, logged = _to_float(df[col], col, p, sep, first_line, marked)
        keep = logged & usable
        s, v = steps[keep], values[keep]
        if not in_order and s.size > 1 and np.any(np.diff(s) < 0):
            order = np.argsort(s, kind="stable")
            s, v = s[order], v[order]
        if role == "epoch" and s.size > 1:
            # Lightning repeats the epoch on every row: one value per step (the last written)
            last = np.append(s[1:] != s[:-1], True)
            s, v = s[last], v[last]
        run.series[role] = Series(s, v)

    if not len(run.series["loss"]):
        raise LogError(f"training-loss column {roles['loss']!r} has no values", path=path)

    meta: dict[str, Any] = {
        "source": os.fspath(path),
        "format": fmt,
        "columns": dict(roles),
        "step_unit": step_unit,
    }
    lr = run.series.get("lr")
    if lr is not None:
        finite = lr.values[np.isfinite(lr.values)]
        if finite.size:
            meta["lr"] = float(finite[0])
    if notes:
        meta["notes"] = notes
    run.meta = meta
    return run
