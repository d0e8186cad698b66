"""The Run: the one record every source produces and every rule reads.

A Run holds named metric series indexed by step (``loss``, ``val_loss``, ``lr``,
``grad_norm``, ``grad_norm/<param>``, ``update_ratio/<param>``, ``dead_frac/<module>`` ...),
events (non-finite sightings, crashes, treatments) and metadata (model summary, optimizer,
loss kind, number of classes ...). Live monitoring, the run store and log readers all build
one, so every rule works the same on a live run and on a log read a year later.

Rules see numbers, never tensors: this module does not import torch.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .events import Fact, RunMeta

F = TypeVar("F", bound=Fact)


@dataclass
class Series:
    """One metric: steps (int64, ascending) and values (float64, NaN/Inf allowed)."""

    steps: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.steps.shape != self.values.shape or self.steps.ndim != 1:
            raise ValueError(
                f"series needs 1-d steps and values of one length, got {self.steps.shape} and {self.values.shape}"
            )

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def finite(self) -> Series:
        """The points whose value is finite."""
        ok = np.isfinite(self.values)
        return Series(self.steps[ok], self.values[ok])

    def last(self) -> float:
        return float(self.values[-1]) if len(self) else float("nan")


@dataclass
class Event:
    """Something that happened at a step: ``kind`` is a short id, ``data`` plain JSON values."""

    step: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """Everything known about one training run."""

    series: dict[str, Series] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Series | None:
        s = self.series.get(name)
        return s if s is not None and len(s) else None

    def names(self, prefix: str) -> list[str]:
        """Series names under ``prefix/`` (e.g. per-layer ``grad_norm/<param>``), in insertion order."""
        p = prefix + "/"
        return [n for n in self.series if n.startswith(p)]

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def facts(self, kind: type[F]) -> list[F]:
        """The events of ``kind`` read as typed facts, in order; an event whose data does not parse
        gives none. Read afresh on each call, so events appended later are seen."""
        out = []
        for e in self.events:
            if e.kind == kind.kind:
                f = kind.from_json(e.data, e.step)
                if f is not None:
                    out.append(f)
        return out

    @property
    def info(self) -> RunMeta:
        """The metadata as the rules read it (``meta`` stays the stored dict)."""
        return RunMeta.from_json(self.meta)

    @property
    def num_steps(self) -> int:
        loss = self.get("loss")
        return int(loss.steps[-1]) + 1 if loss is not None else 0

    def resolve_captured(self) -> Run:
        """Merge metrics captured automatically (``val_loss@auto``, ``val_loss@printed`` …) into
        their plain names, in place, with the precedence a live report uses: what the user logged
        (the plain name) wins, then what the loss functions computed (``@auto``), then what the
        script printed (``@printed``). The names used are listed in ``meta["auto_captured"]``.
        A stored run keeps the sources apart, so this is what makes its diagnosis the live one."""
        tagged = [n for n in self.series if n.rsplit("@", 1)[-1] in ("auto", "printed") and "@" in n]
        if not tagged:
            return self
        used: list[str] = list(self.meta.get("auto_captured") or [])
        for how in ("auto", "printed"):
            for n in tagged:
                base, h = n.rsplit("@", 1)
                if h != how:
                    continue
                s = self.series.pop(n)
                if base in self.series:
                    continue
                self.series[base] = s
                if base not in used:
                    used.append(base)
        if used:
            self.meta["auto_captured"] = used
        return self

    @classmethod
    def from_points(
        cls,
        points: Iterable[tuple[str, int, float]],
        events: Iterable[Event] = (),
        meta: dict[str, Any] | None = None,
    ) -> Run:
        """Build a Run from ``(name, step, value)`` triples in any order.

        Points of one name at one step are kept in arrival order; the series is sorted by step
        with a stable sort, so a log whose steps go backwards still yields ordered series.
        """
        cols: dict[str, tuple[list[int], list[float]]] = {}
        for name, step, value in points:
            st, va = cols.setdefault(name, ([], []))
            st.append(int(step))
            va.append(float(value))
        run = cls(events=list(events), meta=dict(meta or {}))
        for name, (st, va) in cols.items():
            s = np.asarray(st, dtype=np.int64)
            v = np.asarray(va, dtype=np.float64)
            if s.size > 1 and np.any(np.diff(s) < 0):
                order = np.argsort(s, kind="stable")
                s, v = s[order], v[order]
            run.series[name] = Series(s, v)
        return run
