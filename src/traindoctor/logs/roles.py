"""Which logged metric plays which role: one name matcher for every log format.

The rules read series by role (``loss``, ``val_loss``, ``accuracy``, ``val_accuracy``, ``lr``,
``grad_norm``) and index them by ``step`` (or ``epoch``). Logs name them in many ways
(``train/loss``, ``Loss/train``, ``train_loss_step``, ``eval_loss``, ``lr-Adam``,
``train/learning_rate`` ...); :func:`assign_columns` picks one name per role, the same way for
a CSV column, a JSON key, a TensorBoard tag or an MLflow metric, and the user's
``--metric ROLE=NAME`` overrides win. :func:`build_run` turns name → points into a Run with
``meta["columns"]`` saying which names were used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import LogError
from ..run import Run, Series

# role → series name in the Run (the same, today)
METRIC_ROLES = ("loss", "val_loss", "accuracy", "val_accuracy", "lr", "grad_norm")
INDEX_ROLES = ("step", "epoch")
ROLES = METRIC_ROLES + INDEX_ROLES

# aliases as normalised names (lower case, separators → "_"), in order of preference
ALIASES: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "train_loss", "training_loss", "trn_loss", "loss_train", "loss_training", "train_total_loss"),
    "val_loss": (
        "val_loss",
        "valid_loss",
        "validation_loss",
        "eval_loss",
        "loss_val",
        "loss_valid",
        "loss_validation",
        "loss_eval",
        "val_total_loss",
    ),
    "accuracy": (
        "acc",
        "accuracy",
        "train_acc",
        "train_accuracy",
        "training_acc",
        "training_accuracy",
        "acc_train",
        "accuracy_train",
    ),
    "val_accuracy": (
        "val_acc",
        "val_accuracy",
        "valid_acc",
        "valid_accuracy",
        "validation_acc",
        "validation_accuracy",
        "eval_acc",
        "eval_accuracy",
        "acc_val",
        "accuracy_val",
        "acc_valid",
        "accuracy_valid",
        "accuracy_validation",
        "acc_eval",
        "accuracy_eval",
    ),
    "lr": ("lr", "learning_rate", "train_lr", "train_learning_rate", "learningrate", "lr_train"),
    "grad_norm": (
        "grad_norm",
        "gradient_norm",
        "train_grad_norm",
        "grad_2_0_norm_total",
        "gradnorm",
        "global_grad_norm",
        "total_grad_norm",
        "grad_norm_total",
        "train_gradient_norm",
    ),
    "step": ("step", "global_step", "trainer_global_step", "iteration", "iter", "train_global_step"),
    "epoch": ("epoch", "train_epoch"),
}
# used for a role only when none of its own aliases is there
FALLBACK_ALIASES: dict[str, tuple[str, ...]] = {
    "val_loss": ("test_loss", "loss_test"),
    "val_accuracy": ("test_acc", "test_accuracy", "acc_test", "accuracy_test"),
}

# Lightning adds _step/_epoch when a metric is logged with on_step and on_epoch. Training metrics
# prefer the step-level name; validation metrics the epoch aggregate (the _step one holds one
# value per validation batch, all at the same global step).
_SUFFIX_RANK_TRAIN = {"": 0, "_step": 1, "_epoch": 2}
_SUFFIX_RANK_VAL = {"": 0, "_epoch": 1, "_step": 2}

_SEPARATORS = str.maketrans({c: "_" for c in " \t\r\n\f\v/-."})
_RUNS = re.compile(r"_{2,}")
_SHOWN = 20  # names listed in an error message


def norm_name(name: str) -> str:
    """``"Train/Loss"`` → ``"train_loss"``: lower case, separators as one ``_``, none at the ends."""
    n = str(name).strip().lower().translate(_SEPARATORS)
    if "__" in n:
        n = _RUNS.sub("_", n)
    return n.strip("_")


def _split_suffix(norm: str) -> tuple[str, str]:
    for suffix in ("_step", "_epoch"):
        if norm.endswith(suffix) and len(norm) > len(suffix):
            return norm[: -len(suffix)], suffix
    return norm, ""


def names_list(names: list[str] | tuple[str, ...]) -> str:
    """For messages: the names, comma-separated, at most 20 of them (then how many in all)."""
    if not names:
        return "(none)"
    shown = ", ".join(str(n) if len(str(n)) <= 60 else str(n)[:57] + "..." for n in names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown}, ... ({len(names)} in all)"


def _index() -> dict[str, list[tuple[str, int, int]]]:
    """alias → [(role, fallback level, alias rank)]."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for level, table in enumerate((ALIASES, FALLBACK_ALIASES)):
        for role, aliases in table.items():
            for rank, alias in enumerate(aliases):
                out.setdefault(alias, []).append((role, level, rank))
    return out


_ALIAS_INDEX = _index()


def assign_columns(
    columns: list[str],
    overrides: Mapping[str, str] | None = None,
    path: str | os.PathLike[str] = "<log>",
    what: str = "column",
) -> dict[str, str]:
    """Role → name for ``columns``: the user's overrides first, then found by name.

    One pass over the names (a header of a million columns takes about a second). Ties between
    names that fit a role equally go to the first. ``LogError`` for an unknown role or an
    overridden name that is not there; ``what`` names the kind of name in its message.
    """
    chosen: dict[str, str] = {}
    for role, name in (overrides or {}).items():
        if role not in ROLES:
            raise LogError(
                f"unknown metric role {role!r} in --metric {role}={name}; roles are: {', '.join(ROLES)}; "
                f"{what}s are: {names_list(columns)}",
                path=path,
            )
        col = name if name in columns else None
        if col is None:
            want = str(name).strip().lower()
            loose = [c for c in columns if c.strip().lower() == want]
            col = loose[0] if len(loose) == 1 else None
        if col is None:
            raise LogError(
                f"no {what} {name!r} for --metric {role}={name}; {what}s are: {names_list(columns)}",
                path=path,
            )
        chosen[role] = col

    taken = set(chosen.values())
    # role → best (level, suffix rank, alias rank, position, name)
    best: dict[str, tuple[int, int, int, int, str]] = {}
    for i in _candidates(columns):
        c = columns[i]
        if c in taken:
            continue
        n = norm_name(c)
        base, suffix = _split_suffix(n)
        for cand, sfx in ((n, ""), (base, suffix)) if suffix else ((n, ""),):
            for role, level, rank in _ALIAS_INDEX.get(cand, ()):
                if role in chosen or (sfx and role in INDEX_ROLES):
                    continue
                ranks = _SUFFIX_RANK_VAL if role.startswith("val_") else _SUFFIX_RANK_TRAIN
                key = (level, ranks[sfx], rank, i, c)
                if role not in best or key < best[role]:
                    best[role] = key
        if "lr" not in chosen and n.startswith("lr_"):
            # LearningRateMonitor: lr-Adam, lr-SGD-momentum, lr-AdamW/pg1 ...
            key = (0, 3, 0, i, c)
            if "lr" not in best or key < best["lr"]:
                best["lr"] = key
    # a name fits one role only: the roles in ROLES order take their best free name
    used = set(taken)
    for role in ROLES:
        if role in chosen or role not in best:
            continue
        if best[role][4] in used:
            # rare: the best name went to an earlier role; take the next best free one
            alt = _best_free(role, columns, used)
            if alt is None:
                continue
            chosen[role] = alt
        else:
            chosen[role] = best[role][4]
        used.add(chosen[role])
    return {role: chosen[role] for role in sorted(chosen, key=lambda r: _role_order(r, overrides))}


_KEYWORDS = re.compile(r"loss|acc|lr|learn|grad|step|iter|epoch")


def _candidates(columns: list[str]) -> range | list[int]:
    """Positions of the names that may fit a role: all, or for a huge header those holding a keyword."""
    if len(columns) <= 5000:
        return range(len(columns))
    blob = "\n".join(str(c).replace("\n", " ") for c in columns).lower()
    starts = np.cumsum([0] + [len(str(c)) + 1 for c in columns[:-1]])
    hits = [m.start() for m in _KEYWORDS.finditer(blob)]
    return sorted(set(np.searchsorted(starts, hits, side="right").astype(int) - 1))


def _role_order(role: str, overrides: Mapping[str, str] | None) -> tuple[int, int]:
    ov = list(overrides or {})
    return (0, ov.index(role)) if role in ov else (1, ROLES.index(role))


def _best_free(role: str, columns: list[str], used: set[str]) -> str | None:
    hits = []
    for i, c in enumerate(columns):
        if c in used:
            continue
        n = norm_name(c)
        base, suffix = _split_suffix(n)
        for cand, sfx in ((n, ""), (base, suffix)) if suffix else ((n, ""),):
            for r, level, rank in _ALIAS_INDEX.get(cand, ()):
                if r == role and not (sfx and role in INDEX_ROLES):
                    ranks = _SUFFIX_RANK_VAL if role.startswith("val_") else _SUFFIX_RANK_TRAIN
                    hits.append((level, ranks[sfx], rank, i, c))
        if role == "lr" and n.startswith("lr_"):
            hits.append((0, 3, 0, i, c))
    return min(hits)[4] if hits else None


class NoTrainingLoss(LogError):
    """The file reads fine but holds no training-loss metric: in a directory scan, not a training log."""


def first_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[0]) if finite.size else None


def build_run(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    path: str | os.PathLike[str],
    fmt: str,
    overrides: Mapping[str, str] | None = None,
    notes: list[str] | None = None,
    step_unit: str = "step",
    meta: dict[str, Any] | None = None,
) -> Run:
    """A Run from logged metrics ``name → (steps, values)``, each in log order.

    Picks the series for each role (:func:`assign_columns`), sorts each by step (stably: points
    logged at one step keep their order) and fills ``meta``: ``source``, ``format``, ``columns``
    (role → logged name), ``step_unit``, ``lr`` (the first finite learning rate) and ``notes``.
    Raises :class:`NoTrainingLoss` when no name fits the training loss, ``LogError`` when the
    chosen one holds no point.
    """
    names = list(series)
    roles = assign_columns(names, overrides, path=path, what="metric")
    roles.pop("step", None)  # every point already has its step
    if "loss" not in roles:
        raise NoTrainingLoss(
            f"no training-loss metric found; metrics are: {names_list(names)}; name one with --metric loss=NAME",
            path=path,
        )
    run = Run()
    for role in (*METRIC_ROLES, "epoch"):
        if role not in roles:
            continue
        steps, values = series[roles[role]]
        s = np.asarray(steps, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        if s.size > 1 and np.any(s[1:] < s[:-1]):
            order = np.argsort(s, kind="stable")
            s, v = s[order], v[order]
        if role == "epoch" and s.size > 1:
            last = np.append(s[1:] != s[:-1], True)  # one epoch value per step, the last logged
            s, v = s[last], v[last]
        run.series[role] = Series(s, v)
    if not len(run.series["loss"]):
        raise LogError(f"training-loss metric {roles['loss']!r} has no values", path=path)
    out: dict[str, Any] = dict(meta or {})
    out.update({"source": os.fspath(path), "format": fmt, "columns": dict(roles), "step_unit": step_unit})
    if "lr" in run.series:
        lr = first_finite(run.series["lr"].values)
        if lr is not None:
            out["lr"] = lr
    if notes:
        out["notes"] = list(out.get("notes", [])) + list(notes)
    run.meta = out
    return run
