"""Bounded retention of a live run's series: every point where it matters, a sample elsewhere.

A watched run records the loss at every step and a few hundred per-layer statistics every ``cadence``
steps. Kept whole, a 10-million-step run would hold tens of millions of points in memory and in its
store. :class:`SeriesTable` keeps, for each series:

* **every point of the last** ``recent`` **steps** (what a live diagnosis judges most);
* **every point within** ``window`` **steps of an event** (a non-finite loss, a treatment, a crash …):
  the first and last ``landmarks`` event steps are protected, so the exact step of a finding and its
  surroundings survive; events that repeat at every sampled step (``no_grad``, ``stale_grad``) protect
  only their first occurrence;
* **older stretches downsampled** into buckets of ``stride`` steps, a power of two chosen from the run's
  length so that a series keeps between ``budget / 2`` and ``budget`` buckets (``layer_budget`` for a
  per-layer series, whose name holds a ``/``). Each bucket keeps its first point (a genuine sample: the
  curve's shape and noise level survive, not a mean that would smooth them away), and for run-level
  series (``loss``, ``grad_norm``, ``lr`` …) also its first non-finite point and its highest and lowest
  points when they stand out of the bucket (more than ``outlier_z`` robust deviations from its median,
  judged once on the full-resolution bucket): spikes and dips survive, ordinary noise is not doubled.

Per-layer series keep only what is decided by steps, never by values, so every layer keeps the same
steps and the rules that compare layers sample by sample still can. Retention is decided by steps, so
two series recorded at the same steps keep the same ones. The events that repeat at every sampled step
are thinned with the series they accompany (``no_grad`` with ``grad_norm``, whose sample count the G005
rule compares them with); all other events are kept.

Nothing is thinned before a run passes ``recent + budget`` steps (20 480 by default), so short runs are
kept whole. Compaction runs on the writer thread every ``recent // 4`` steps and touches only the stretch
that became old since the last one (the whole series when the stride doubles, a few times per run).
Numpy only: the rules' side of the package never imports torch.
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .run import Event, Series

# events written at every sampled step while their condition lasts: thinned, not landmarks
PER_SAMPLE_EVENTS = ("no_grad", "stale_grad")
# a per-sample event kind → the series whose kept steps it follows
_EVENT_FOLLOWS = {"no_grad": "grad_norm"}
_MIN_BUCKET = 8  # finite points a stretch needs before any of them can be called an outlier
_REF = 256  # consecutive points whose median and spread an outlier is judged against


@dataclass(frozen=True)
class Retention:
    """How much of each series a live run keeps (see the module docstring)."""

    recent: int = 4096  # steps: every point of the last this many
    window: int = 256  # steps either side of a landmark event: every point
    budget: int = 16384  # buckets of the older stretch, run-level series
    layer_budget: int = 2048  # buckets of the older stretch, per-layer series (name with '/')
    landmarks: int = 32  # the first and the last this many event steps are protected
    outlier_z: float = 6.0  # robust deviations (MAD × 1.4826) from a bucket's median that make an outlier

    def __post_init__(self) -> None:
        for k in ("recent", "window", "budget", "layer_budget", "landmarks"):
            if getattr(self, k) < 1:
                raise ValueError(f"Retention.{k} must be at least 1, got {getattr(self, k)}")

    def stride(self, boundary: int, layer: bool) -> int:
        """Bucket width (a power of two, ≥ 1) for the stretch before step ``boundary``."""
        per = math.ceil(max(0, boundary) / (self.layer_budget if layer else self.budget))
        return 1 if per <= 1 else 1 << (per - 1).bit_length()

    def as_meta(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_RETENTION = Retention()


class _Col:
    """One series: steps, values and outlier marks, appended in arrival order."""

    __slots__ = ("name", "steps", "values", "marks", "ordered", "settled", "stride", "layer")

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = array("q")
        self.values = array("d")
        self.marks = bytearray()  # 1: kept as a bucket's outlier (judged on the full-resolution bucket)
        self.ordered = True
        self.settled = 0  # points before this step are thinned at ``stride``
        self.stride = 1
        self.layer = "/" in name

    def add(self, step: int, value: float) -> None:
        if self.ordered and self.steps and step < self.steps[-1]:
            self.ordered = False
        self.steps.append(step)
        self.values.append(value)
        self.marks.append(0)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        st = np.array(self.steps, dtype=np.int64)
        va = np.array(self.values, dtype=np.float64)
        mk = np.frombuffer(bytes(self.marks), dtype=np.uint8).astype(bool)
        if not self.ordered:
            order = np.argsort(st, kind="stable")  # arrival order kept within a step
            st, va, mk = st[order], va[order], mk[order]
        return st, va, mk

    def tail(self, start: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """``(i0, steps, values, marks)`` from the first point at or after step ``start`` on (copies); the
        whole series, sorted, when it arrived out of order (``i0`` is then 0)."""
        if not self.ordered:
            st, va, mk = self.arrays()
            return 0, st, va, mk
        view = np.frombuffer(self.steps, dtype=np.int64) if self.steps else np.zeros(0, dtype=np.int64)
        i0 = int(np.searchsorted(view, start, side="left"))
        st = view[i0:].copy()
        del view  # no buffer export left: the arrays can be resized again
        va = np.frombuffer(self.values, dtype=np.float64)[i0:].copy() if self.values else np.zeros(0)
        mk = np.frombuffer(self.marks, dtype=np.uint8)[i0:].astype(bool) if self.marks else np.zeros(0, dtype=bool)
        return i0, st, va, mk

    def set_tail(self, i0: int, st: np.ndarray, va: np.ndarray, mk: np.ndarray) -> None:
        """Replace the points from index ``i0`` on (the series is sorted from then on)."""
        del self.steps[i0:]
        self.steps.frombytes(np.ascontiguousarray(st, dtype=np.int64).tobytes())
        del self.values[i0:]
        self.values.frombytes(np.ascontiguousarray(va, dtype=np.float64).tobytes())
        del self.marks[i0:]
        self.marks.extend(np.ascontiguousarray(mk, dtype=np.uint8).tobytes())
        self.ordered = True

    def __len__(self) -> int:
        return len(self.steps)


def _in_intervals(steps: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether each step lies in one of the sorted, disjoint closed intervals [lo, hi]."""
    if not lo.size:
        return np.zeros(steps.shape, dtype=bool)
    i = np.searchsorted(lo, steps, side="right") - 1
    ok = i >= 0
    out = np.zeros(steps.shape, dtype=bool)
    out[ok] = steps[ok] <= hi[i[ok]]
    return out


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` of an array already sorted."""
    if a.size < 2:
        return a.copy()
    return a[np.r_[True, a[1:] != a[:-1]]]


def _bucket_starts(b: np.ndarray) -> np.ndarray:
    """Indices where a new bucket begins in a sorted array of bucket numbers."""
    if not b.size:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, b[1:] != b[:-1]])


class SeriesTable:
    """A live run's series, kept bounded by a :class:`Retention` (``None``: everything is kept).

    ``add`` appends points; ``compact`` (called by the writer thread) thins what became old and says which
    ``(name, step)`` points and which events it dropped, so the run store can drop them too.
    """

    def __init__(self, retention: Retention | None = DEFAULT_RETENTION) -> None:
        self.retention = retention
        self._cols: dict[str, _Col] = {}
        self.top = -1  # the highest step seen
        self._compacted_at = -1
        self.thinned_before = 0  # steps before this were downsampled (0: nothing was)
        self.points = 0  # points held

    # ---- adding and reading -------------------------------------------------------------------
    def add(self, points: Iterable[tuple[str, int, float]]) -> None:
        cols = self._cols
        top = self.top
        n = 0
        col: _Col | None = None
        for name, step, value in points:
            if col is None or col.name != name:  # points come in runs of one series: one lookup per run
                col = cols.get(name)
                if col is None:
                    col = cols[name] = _Col(name)
            steps = col.steps
            if col.ordered and steps and step < steps[-1]:
                col.ordered = False
            steps.append(step)
            col.values.append(value)
            col.marks.append(0)
            if step > top:
                top = step
            n += 1
        self.top = top
        self.points += n

    def names(self) -> list[str]:
        return list(self._cols)

    def series(self, name: str) -> Series | None:
        col = self._cols.get(name)
        if col is None:
            return None
        st, va, _ = col.arrays()
        return Series(st, va)

    def all_series(self) -> dict[str, Series]:
        """Every series, in the order first written, each sorted by step (a step's points in arrival order)."""
        out = {}
        for name, col in self._cols.items():
            st, va, _ = col.arrays()
            out[name] = Series(st, va)
        return out

    # ---- compaction ---------------------------------------------------------------------------
    def due(self) -> bool:
        r = self.retention
        if r is None or self.top - r.recent <= min(r.budget, r.layer_budget):
            return False  # nothing can be thinned yet (every stride is 1 up to there)
        return self.top - self._compacted_at >= max(1, r.recent // 4)

    def _protected(self, events: list[Event]) -> tuple[np.ndarray, np.ndarray]:
        """Merged intervals [lo, hi] around the landmark events."""
        r = self.retention
        assert r is not None
        seen_kinds: set[str] = set()
        steps: list[int] = []
        for e in events:
            if e.kind in PER_SAMPLE_EVENTS:
                if e.kind in seen_kinds:
                    continue
                seen_kinds.add(e.kind)
            steps.append(int(e.step))
        marks = sorted(set(steps))
        if len(marks) > 2 * r.landmarks:
            marks = marks[: r.landmarks] + marks[-r.landmarks:]
        lo: list[int] = []
        hi: list[int] = []
        for s in marks:
            a, b = s - r.window, s + r.window
            if hi and a <= hi[-1] + 1:
                hi[-1] = max(hi[-1], b)
            else:
                lo.append(a)
                hi.append(b)
        return np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)

    def compact(self, events: list[Event]) -> tuple[list[tuple[str, int]], list[Event], list[Event]]:
        """Thin what became old. Returns (dropped (name, step) points, kept events, dropped events)."""
        r = self.retention
        if r is None:
            return [], events, []
        self._compacted_at = self.top
        boundary = self.top - r.recent
        lo, hi = self._protected(events)
        dropped: list[tuple[str, int]] = []
        kept_steps: dict[str, np.ndarray] = {}
        for name, col in self._cols.items():
            d = self._compact_col(col, boundary, lo, hi)
            if d is not None and d.size:
                dropped.extend((name, s) for s in d.tolist())
            if name in _EVENT_FOLLOWS.values():
                kept_steps[name] = _sorted_unique(col.arrays()[0])
        self.points = sum(len(c) for c in self._cols.values())
        kept_ev, dropped_ev = self._thin_events(events, boundary, lo, hi, kept_steps)
        return dropped, kept_ev, dropped_ev

    def _compact_col(self, col: _Col, boundary: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        r = self.retention
        assert r is not None
        s = r.stride(boundary, col.layer)
        if s <= 1:
            return None
        cut = (boundary // s) * s
        if cut <= 0 or (s == col.stride and cut <= col.settled):
            return None
        # from where the last pass left off; a doubled stride re-thins the whole old stretch
        i0, t_st, t_va, t_mk = col.tail(col.settled if s == col.stride else 0)
        cand = (t_st < cut) & ~_in_intervals(t_st, lo, hi)
        keep = ~cand
        idx = np.flatnonzero(cand)
        remarked = False
        if idx.size:
            b = t_st[idx] // s
            starts = _bucket_starts(b)
            keep[idx[starts]] = True  # each bucket's first point
            if not col.layer:
                fresh = idx[t_st[idx] >= col.settled]
                if fresh.size:
                    marked = int(t_mk.sum())
                    self._mark_outliers(t_va, t_mk, fresh, t_st[fresh] // s)
                    remarked = int(t_mk.sum()) != marked
                self._keep_extremes(t_va, t_mk, keep, idx, b, starts)
        # a doubled stride re-thinned everything before ``cut``: what lies after it is judged again next time
        settled = cut if s != col.stride else max(col.settled, cut)
        if keep.all():
            if remarked:  # nothing dropped, but outliers found: their marks count when buckets merge later
                col.set_tail(i0, t_st, t_va, t_mk)
            col.settled, col.stride = settled, s
            return None
        # points sharing a step go or stay together (the store drops a series' points by step)
        group = np.cumsum(np.r_[True, t_st[1:] != t_st[:-1]]) - 1
        held = np.zeros(int(group[-1]) + 1, dtype=bool)
        held[group[keep]] = True
        keep = held[group]
        dropped = _sorted_unique(t_st[~keep])
        col.set_tail(i0, t_st[keep], t_va[keep], t_mk[keep])
        col.settled, col.stride = settled, s
        self.thinned_before = max(self.thinned_before, cut)
        return dropped

    def _mark_outliers(self, va: np.ndarray, mk: np.ndarray, idx: np.ndarray, b: np.ndarray) -> None:
        """Mark each full-resolution bucket's highest and lowest point when it stands out: more than
        ``outlier_z`` robust deviations (MAD × 1.4826) from the median of the ``_REF`` consecutive points
        around it (the bucket itself when it is larger), so a spike is judged against the curve's level and
        noise there even where buckets hold two points."""
        z = self.retention.outlier_z if self.retention is not None else 6.0
        v = va[idx]
        ok = np.isfinite(v)
        n = int(ok.sum())
        if n < _MIN_BUCKET:
            return
        j, fv, fb = idx[ok], v[ok], b[ok]
        ref = max(_REF, int(np.bincount(fb - fb[0]).max()))
        chunk = np.arange(n) // ref
        if chunk[-1] > 0 and (chunk == chunk[-1]).sum() < ref // 2:
            chunk[chunk == chunk[-1]] = chunk[-1] - 1  # a short last stretch joins the one before
        med = np.empty(n)
        mad = np.empty(n)
        for c in np.unique(chunk).tolist():
            sel = chunk == c
            m = float(np.median(fv[sel]))
            med[sel] = m
            mad[sel] = float(np.median(np.abs(fv[sel] - m))) * 1.4826
        order = np.lexsort((fv, fb))  # by bucket, then value
        starts = _bucket_starts(fb[order])
        ends = np.r_[starts[1:], n] - 1
        for pick in (order[starts], order[ends]):
            dev = np.abs(fv[pick] - med[pick])
            out = (dev > 0) & ((mad[pick] == 0) | (dev > z * mad[pick]))
            mk[j[pick[out]]] = True

    @staticmethod
    def _keep_extremes(va: np.ndarray, mk: np.ndarray, keep: np.ndarray, idx: np.ndarray, b: np.ndarray,
                       starts: np.ndarray) -> None:
        """In each bucket keep its first non-finite point and its highest and lowest marked outliers."""
        v = va[idx]
        bad = ~np.isfinite(v)
        if bad.any():
            bi = np.flatnonzero(bad)
            first_bad = bi[_bucket_starts(b[bi])]
            keep[idx[first_bad]] = True
        m = mk[idx] & ~bad
        if not m.any():
            return
        mi = np.flatnonzero(m)
        mb = b[mi]
        ms = _bucket_starts(mb)
        me = np.r_[ms[1:], mi.size]
        for a, e in zip(ms.tolist(), me.tolist()):
            group = mi[a:e]
            gv = v[group]
            keep[idx[group[int(np.argmax(gv))]]] = True
            keep[idx[group[int(np.argmin(gv))]]] = True  # (the other marked points are dropped)

    def _thin_events(self, events: list[Event], boundary: int, lo: np.ndarray, hi: np.ndarray,
                     kept_steps: dict[str, np.ndarray]) -> tuple[list[Event], list[Event]]:
        r = self.retention
        assert r is not None
        if not any(e.kind in PER_SAMPLE_EVENTS for e in events):
            return events, []
        s = r.stride(boundary, False)
        cut = (boundary // s) * s
        if s <= 1 or cut <= 0:
            return events, []
        kept: list[Event] = []
        dropped: list[Event] = []
        first: set[str] = set()
        last_bucket: dict[str, int] = {}
        for e in events:
            k = e.kind
            if k not in PER_SAMPLE_EVENTS or k not in first:
                first.add(k)
                kept.append(e)
                if k in PER_SAMPLE_EVENTS:
                    last_bucket[k] = e.step // s
                continue
            st = int(e.step)
            if st >= cut or bool(_in_intervals(np.array([st]), lo, hi)[0]):
                kept.append(e)
                continue
            follows = kept_steps.get(_EVENT_FOLLOWS.get(k, ""))
            if follows is not None:
                j = int(np.searchsorted(follows, st))
                ok = j < follows.size and int(follows[j]) == st
            else:
                ok = last_bucket.get(k) != st // s
            if ok:
                kept.append(e)
                last_bucket[k] = st // s
            else:
                dropped.append(e)
        return kept, dropped
