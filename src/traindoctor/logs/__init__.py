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
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LogError
from ..run import Run
from ..store import SQLITE_MAGIC, is_store, load_store
from .csvlog import read_csv
from .hf import STATE_FILE, read_trainer_state
from .jsonlog import read_jsonl
from .mlflow import _yaml_scalars, is_mlflow_run, read_mlflow
from .roles import METRIC_ROLES, NoTrainingLoss, assign_columns
from .tensorboard import EVENT_PREFIX, event_files, read_tensorboard

__all__ = [
    "FORMATS",
    "Found",
    "NoTrainingLoss",
    "RunRef",
    "assign_columns",
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
    if (p / STATE_FILE).is_file():
        return "huggingface"
    if (p / "metrics.csv").is_file():
        return "lightning-csv"
    return None


def detect_format(path: str | os.PathLike[str]) -> str | None:
    """The log format of a file or a single-run directory (one of :data:`FORMATS`), else None."""
    p = Path(path)
    if p.is_dir():
        return _dir_format(p)
    if not p.is_file():
        return None
    head = _head(p)
    name = p.name.lower()
    if head.startswith(SQLITE_MAGIC):
        return "store"
    if name.startswith(EVENT_PREFIX):
        return "tensorboard"
    if name == STATE_FILE:
        return "huggingface"
    if name == "metrics.csv" and (p.parent / "hparams.yaml").is_file():
        return "lightning-csv"
    ext = p.suffix.lower()
    if ext in _TEXT_EXT:
        return _TEXT_EXT[ext]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if ext == ".json" or text.startswith((b"{", b"[")):
        if text.startswith(b"["):
            return "json"
        if b'"log_history"' in head or (ext == ".json" and _has_log_history(p)):
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
    try:
        return _load(path, overrides)
    except LogError:
        raise
    except MemoryError as e:
        raise LogError("is too large to read in this machine's memory", path=path) from e
    except RecursionError as e:
        raise LogError("is nested too deeply to read", path=path) from e
    except Exception as e:  # noqa: BLE001 - bad input must never end in a traceback
        msg = " ".join(str(e).split())[:160]
        raise LogError(
            f"could not be read ({type(e).__name__}: {msg}); this is a traindoctor bug, please report it",
            path=path,
        ) from e


def _load(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    p = Path(path)
    if not p.exists():
        raise LogError("no such file", path=path)
    if p.is_dir():
        fmt = _dir_format(p)
        if fmt is None:
            found = find_runs(p)
            if len(found.runs) == 1:
                return _load(found.runs[0].path, overrides)
            what = f"holds {len(found.runs)} runs" if found.runs else "holds no training log"
            raise LogError(f"is a directory that {what}; name one log, or diagnose the directory", path=path)
    else:
        try:
            with open(p, "rb") as f:
                f.read(1)
        except OSError as e:
            raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
        if p.stat().st_size == 0:
            raise LogError("is empty", path=path)
        fmt = detect_format(p)
    if fmt == "store":
        # load_store says precisely what is wrong with an SQLite file that is not a readable store
        run = _apply_overrides(load_store(path), overrides, path)
    elif fmt == "csv":
        run = read_csv(path, overrides)
    elif fmt == "lightning-csv":
        csv_path = p / "metrics.csv" if p.is_dir() else p
        run = _lightning_meta(read_csv(csv_path, overrides), csv_path)
    elif fmt in ("jsonl", "json"):
        run = read_jsonl(path, overrides)
    elif fmt == "tensorboard":
        run = read_tensorboard(path, overrides)
    elif fmt == "huggingface":
        run = read_trainer_state(path, overrides)
    elif fmt == "mlflow":
        run = read_mlflow(p if p.is_dir() else p.parent.parent, overrides)
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
    """One run found in a directory tree: its file or directory, and its format."""

    path: Path
    format: str


@dataclass
class Found:
    """What :func:`find_runs` found: the runs, and what was passed over (path, why)."""

    runs: list[RunRef] = field(default_factory=list)
    passed_over: list[tuple[Path, str]] = field(default_factory=list)


def find_runs(root: str | os.PathLike[str]) -> Found:
    """Every run in the tree under ``root``, in path order.

    A run is: a traindoctor store (``*.db``, ``*.sqlite``), a CSV/TSV or JSON Lines log, a
    directory of TensorBoard event files, the newest ``trainer_state.json`` of a Hugging Face
    output directory (the final one, else the highest ``checkpoint-N``), or an MLflow run
    directory. Hidden directories (but ``.traindoctor``), virtual environments and MLflow's
    ``.trash`` are not searched; symbolic links to directories are not followed. Whether a CSV
    or JSON file is a training log at all is known only when it is read (:class:`NoTrainingLoss`).
    """
    base = Path(root)
    found = Found()
    hf: dict[Path, list[tuple[int, Path]]] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = sorted(
            n for n in dirnames if n not in _SKIP_DIRS and (not n.startswith(".") or n == ".traindoctor")
        )
        if is_mlflow_run(d):
            found.runs.append(RunRef(d, "mlflow"))
            dirnames[:] = []  # metrics/, params/, tags/, artifacts/ belong to this run
            continue
        names = sorted(filenames)
        if any(n.startswith(EVENT_PREFIX) for n in names):
            found.runs.append(RunRef(d, "tensorboard"))
        for n in names:
            f = d / n
            low = n.lower()
            if n == STATE_FILE:
                m = _CHECKPOINT.match(d.name)
                key, rank = (d.parent, int(m.group(1))) if m else (d, 1 << 62)
                hf.setdefault(key, []).append((rank, f))
            elif low == "metrics.csv" and (d / "hparams.yaml").is_file():
                found.runs.append(RunRef(f, "lightning-csv"))
            elif Path(low).suffix in _TEXT_EXT:
                found.runs.append(RunRef(f, _TEXT_EXT[Path(low).suffix]))
            elif low.endswith(_STORE_EXT) and _head(f, len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                if is_store(f):
                    found.runs.append(RunRef(f, "store"))
                else:
                    found.passed_over.append((f, "an SQLite file, not a traindoctor run store"))
    for _key, cands in hf.items():
        cands.sort()
        found.runs.append(RunRef(cands[-1][1], "huggingface"))
        for _, older in cands[:-1]:
            found.passed_over.append((older, f"an earlier checkpoint of {cands[-1][1]}"))
    found.runs.sort(key=lambda r: r.path.as_posix())
    return found
