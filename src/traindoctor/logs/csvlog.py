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
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LogError
from ..run import Run, Series

# role → series name in the Run (the same, today)
METRIC_ROLES = ("loss", "val_loss", "accuracy", "val_accuracy", "lr", "grad_norm")
INDEX_ROLES = ("step", "epoch")
ROLES = METRIC_ROLES + INDEX_ROLES

# aliases as normalised names (lower case, separators → "_"), in order of preference
_ALIASES: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "train_loss", "training_loss", "trn_loss"),
    "val_loss": ("val_loss", "valid_loss", "validation_loss", "eval_loss"),
    "accuracy": ("acc", "accuracy", "train_acc", "train_accuracy", "training_acc", "training_accuracy"),
    "val_accuracy": (
        "val_acc",
        "val_accuracy",
        "valid_acc",
        "valid_accuracy",
        "validation_acc",
        "validation_accuracy",
        "eval_acc",
        "eval_accuracy",
    ),
    "lr": ("lr", "learning_rate", "train_lr", "train_learning_rate"),
    "grad_norm": ("grad_norm", "gradient_norm", "train_grad_norm", "grad_2_0_norm_total"),
    "step": ("step", "global_step", "trainer_global_step", "iteration", "iter"),
    "epoch": ("epoch",),
}
# used for val_loss only when no validation-loss column exists
_TEST_LOSS = ("test_loss",)

# Lightning adds _step/_epoch when a metric is logged with on_step and on_epoch. Training metrics
# prefer the step-level column; validation metrics the epoch aggregate (the _step one holds one
# value per validation batch, all at the same global step).
_SUFFIX_RANK_TRAIN = {"": 0, "_step": 1, "_epoch": 2}
_SUFFIX_RANK_VAL = {"": 0, "_epoch": 1, "_step": 2}

_NAN_WORDS = ("nan", "+nan", "-nan")
_SNIFF_BYTES = 8192


def _norm(name: str) -> str:
    return re.sub(r"[\s/\-._]+", "_", str(name).strip().lower()).strip("_")


def _split_suffix(norm: str) -> tuple[str, str]:
    for suffix in ("_step", "_epoch"):
        if norm.endswith(suffix) and len(norm) > len(suffix):
            return norm[: -len(suffix)], suffix
    return norm, ""


def _match_rank(role: str, norm: str, aliases: tuple[str, ...]) -> tuple[int, int] | None:
    """(suffix rank, alias rank) of column ``norm`` for ``role``; None when it does not match."""
    ranks = _SUFFIX_RANK_VAL if role.startswith("val_") else _SUFFIX_RANK_TRAIN
    if role in INDEX_ROLES:
        return (0, aliases.index(norm)) if norm in aliases else None
    base, suffix = _split_suffix(norm)
    for cand, sfx in ((norm, ""), (base, suffix)):
        if cand in aliases:
            return ranks[sfx], aliases.index(cand)
    if role == "lr" and norm.startswith("lr_"):
        # LearningRateMonitor: lr-Adam, lr-SGD-momentum, lr-AdamW/pg1 ...
        return 3, 0
    return None


def _cols_list(columns: list[str]) -> str:
    return ", ".join(columns) if columns else "(none)"


def assign_columns(
    columns: list[str], overrides: dict[str, str] | None = None, path: str | os.PathLike[str] = "<log>"
) -> dict[str, str]:
    """Role → column name for ``columns``: the user's overrides first, then found by name."""
    chosen: dict[str, str] = {}
    for role, name in (overrides or {}).items():
        if role not in ROLES:
            raise LogError(
                f"unknown metric role {role!r} in --metric {role}={name}; roles are: {', '.join(ROLES)}; "
                f"columns are: {_cols_list(columns)}",
                path=path,
            )
        col = name if name in columns else None
        if col is None:
            loose = [c for c in columns if c.strip().lower() == str(name).strip().lower()]
            col = loose[0] if len(loose) == 1 else None
        if col is None:
            raise LogError(
                f"no column {name!r} for --metric {role}={name}; columns are: {_cols_list(columns)}",
                path=path,
            )
        chosen[role] = col

    norms = {c: _norm(c) for c in columns}

    def best(role: str, aliases: tuple[str, ...]) -> str | None:
        taken = set(chosen.values())
        hits = []
        for i, c in enumerate(columns):
            if c in taken:
                continue
            rank = _match_rank(role, norms[c], aliases)
            if rank is not None:
                hits.append((rank, i, c))
        return min(hits)[2] if hits else None

    for role in ROLES:
        if role in chosen:
            continue
        col = best(role, _ALIASES[role])
        if col is None and role == "val_loss":
            col = best(role, _TEST_LOSS)
        if col is not None:
            chosen[role] = col
    return chosen


def _sniff(path: Path) -> tuple[str, str, int]:
    """(encoding, delimiter, blank lines before the header) from the first bytes.

    LogError for a binary file or one with nothing but blank lines.
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
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
    all_lines = text.splitlines()
    lines = [ln for ln in all_lines if ln.strip()]
    if not lines:
        raise LogError("is empty", path=path)
    header = lines[0]
    lead = all_lines.index(header)
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    sep = max(counts, key=lambda s: counts[s])  # ties: tab, comma, semicolon (dict order)
    if counts[sep] == 0:
        sep = ","
    return encoding, sep, lead


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


def _read_frame(path: Path, encoding: str, sep: str, lead: int) -> pd.DataFrame:
    kwargs: dict[str, Any] = {
        "sep": sep,
        "skiprows": lead,  # blank lines above the header
        "keep_default_na": False,  # "nan" stays a text, so a logged NaN is told from an empty cell
        "na_values": [""],  # an empty cell: nothing logged
        "skip_blank_lines": False,  # data row i is line lead + i + 2, for error messages
        "skipinitialspace": True,
        "low_memory": False,
    }
    try:
        try:
            return pd.read_csv(path, encoding=encoding, **kwargs)
        except UnicodeDecodeError:
            if encoding == "latin-1":
                raise
            return pd.read_csv(path, encoding="latin-1", **kwargs)
    except pd.errors.EmptyDataError as e:
        raise LogError("is empty", path=path) from e
    except pd.errors.ParserError as e:
        raise _parse_error(path, e) from e
    except UnicodeDecodeError as e:
        raise LogError("is not a text file, not a CSV log", path=path) from e


def _to_float(
    col: pd.Series, name: str, path: Path, sep: str, first_line: int
) -> tuple[np.ndarray, np.ndarray]:
    """(values, logged) of one column: ``logged`` is False where the cell is empty."""
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
    df: pd.DataFrame, col: str, path: Path, sep: str, first_line: int, strict: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps int64, usable rows) from an index column; None when not whole numbers and not strict."""
    values, logged = _to_float(df[col], col, path, sep, first_line)
    bad = logged & ~np.isfinite(values)
    if not bad.any():
        bad = logged & (values != np.round(values))
    if bad.any():
        if not strict:
            return None
        i = int(np.flatnonzero(bad)[0])
        raise LogError(
            f"column {col!r} holds {str(df[col].iloc[i])!r}, expected a whole number (the step index)",
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

    meta: ``source``, ``format`` (``csv``/``tsv``), ``columns`` (role → column), ``step_unit``,
    and ``lr`` (the first finite learning rate) when there is an lr column.
    """
    p = Path(path)
    if not p.exists():
        raise LogError("no such file", path=path)
    if p.is_dir():
        raise LogError("is a directory, expected a CSV log file", path=path)
    if p.stat().st_size == 0:
        raise LogError("is empty", path=path)
    encoding, sep, lead = _sniff(p)
    df = _read_frame(p, encoding, sep, lead)
    first_line = lead + 2  # the file line of data row 0, as an editor numbers it
    df.columns = [str(c).strip() for c in df.columns]
    columns = list(df.columns)
    fmt = "tsv" if sep == "\t" else "csv"
    if len(df) == 0 or not df.notna().to_numpy().any():
        raise LogError(f"has no data rows (header only: {_cols_list(columns)})", path=path)

    roles = assign_columns(columns, overrides, path=path)
    if "loss" not in roles:
        raise LogError(
            f"no training-loss column found; columns are: {_cols_list(columns)}; "
            "name one with --metric loss=COLUMN",
            path=path,
        )

    n = len(df)
    step_unit = "row"
    idx: tuple[np.ndarray, np.ndarray] | None = None
    if "step" in roles:
        idx = _index(df, roles["step"], p, sep, first_line, strict=True)
        step_unit = "epoch" if _norm(roles["step"]) == "epoch" else "step"
    elif "epoch" in roles:
        idx = _index(df, roles["epoch"], p, sep, first_line, strict=False)
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
        values, logged = _to_float(df[col], col, p, sep, first_line)
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
    run.meta = meta
    return run
