"""Hugging Face ``trainer_state.json`` → :class:`~traindoctor.run.Run`.

``transformers.Trainer`` saves its state with every checkpoint (``checkpoint-N/trainer_state.json``)
and, on ``save_state()``, in the output directory. Its ``log_history`` is a list of records:
training logs (``loss``, ``learning_rate``, ``grad_norm``, ``epoch``, ``step``), evaluation logs
(``eval_loss``, ``eval_accuracy`` ...) and one summary at the end of training (``train_loss``,
the mean over the whole run, with ``train_runtime``), which is left out: it is not a point of the
curve. ``train_batch_size`` becomes ``meta["batch_size"]``.

The file is written in one go at each checkpoint; one read while being written is cut short:
its complete ``log_history`` records are read, with a note.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import LogError
from ..run import Run
from .files import check_regular
from .jsonlog import _decode, series_from_records
from .roles import build_run

STATE_FILE = "trainer_state.json"


def _salvage(text: str) -> list[dict[str, Any]] | None:
    """The complete records of ``log_history`` in a cut-short file, or None."""
    at = text.find('"log_history"')
    if at < 0:
        return None
    at = text.find("[", at)
    if at < 0:
        return None
    dec = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    i = at + 1
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            break
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            break
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_trainer_state(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    """A ``trainer_state.json`` (or the checkpoint directory holding one) → :class:`Run`."""
    p = Path(path)
    if p.is_dir():
        p = p / STATE_FILE
    check_regular(p)
    if p.is_dir():
        raise LogError("is a directory, expected a trainer_state.json", path=p)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise LogError(f"cannot read: {e.strerror or e}", path=p) from e
    if not data.strip():
        raise LogError("is empty", path=p)
    text = _decode(data, p)
    notes: list[str] = []
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        history = _salvage(text)
        line = getattr(e, "lineno", None)
        if not history:
            raise LogError(
                f"is not valid JSON ({getattr(e, 'msg', type(e).__name__)}): expected a Hugging Face trainer state",
                path=p,
                line=line,
            ) from e
        notes.append(
            f"the file is cut short at line {line} (not valid JSON): read the {len(history)} complete "
            "log_history records before it; it may still be being written"
        )
        doc = {"log_history": history}
    if not isinstance(doc, dict) or not isinstance(doc.get("log_history"), list):
        raise LogError("has no \"log_history\" list: expected a Hugging Face trainer_state.json", path=p)
    history = doc["log_history"]
    bad = next((i for i, r in enumerate(history) if not isinstance(r, dict)), None)
    if bad is not None:
        raise LogError(f"log_history record {bad} is a {type(history[bad]).__name__}, expected an object", path=p)
    records = [r for r in history if "train_runtime" not in r]
    if not records:
        raise LogError("log_history holds no training log record (nothing was logged yet)", path=p)
    lines = [f"log_history record {i}" for i, r in enumerate(history) if "train_runtime" not in r]
    series, unit = series_from_records(records, lines, p, overrides, step_keys=("step",))
    meta: dict[str, Any] = {}
    for key, name in (("train_batch_size", "batch_size"), ("max_steps", "max_steps"), ("num_train_epochs", "epochs")):
        v = doc.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            meta[name] = v
    # fixes in the Trainer's own terms; it clips at max_grad_norm=1.0 unless told otherwise, and
    # trainer_state.json does not say whether it was, so the default is stated as such
    meta["framework"] = "huggingface"
    meta["framework_args"] = {"max_grad_norm": 1.0, "max_grad_norm_source": "the Trainer's default"}
    ov = {r: n for r, n in (overrides or {}).items() if r != "step"} or None
    return build_run(series, path=p, fmt="huggingface", overrides=ov, notes=notes, step_unit=unit, meta=meta)
