"""The writer thread: pending values turned into numbers and written to the run store, off the training thread."""
from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

import torch

from ..inspect.tensors import dtype_name
from ..numfmt import fmt
from ..retention import SeriesTable
from ..run import Event


class StoreWriter:
    """Materialises pending tensors every ``flush_interval`` seconds and writes the run store.

    The points are kept in a :class:`~traindoctor.retention.SeriesTable`, bounded by the monitor's
    ``retention``: what it thins from the older stretches of a long run is deleted from the store too,
    so neither the process's memory nor the store file grows with the run's length.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_writer(self) -> None:
        """What is recorded (points and events), what awaits the writer thread, and its lock."""
        self._table = SeriesTable(self.retention)  # materialised points, for the Run
        self._events: list[Event] = []
        self._pending: deque[tuple[str, int, Any]] = deque()  # (name, step, tensor | float | names)
        self._pending_events: deque[Event] = deque()
        self._lock = threading.Lock()
        # one materialisation at a time (the writer thread's, a snapshot's): the store then deletes only
        # points it was already given, and gets them in the order the table took them
        self._write_lock = threading.RLock()
        self._val_note_done = False

    def _materialise(self) -> None:
        with self._write_lock:
            self._materialise_now()

    def _materialise_now(self) -> None:
        items = []
        while self._pending:
            items.append(self._pending.popleft())
        points: list[tuple[str, int, float]] = []
        isfinite = math.isfinite
        for item in items:
            name, step, value = item
            if type(value) is float:  # most points: a CPU loss, an LR
                if name == "loss" and not isfinite(value) and self.nonfinite_loss_step is None:
                    self._late_nonfinite_loss(step, value, None)
                points.append(item)
            elif name == "@grad_norms":
                names, g = value
                gl = g.tolist()
                total = math.sqrt(sum(x * x for x in gl)) if all(math.isfinite(x) for x in gl) else float("nan")
                if any(not math.isfinite(x) for x in gl):
                    total = float("inf") if all(not math.isnan(x) for x in gl) else float("nan")
                    bad = [n for n, x in zip(names, gl) if not math.isfinite(x)]
                    self._nonfinite_grads(step, bad)
                points.append(("grad_norm", step, total))
                points.extend((f"grad_norm/{n}", step, x) for n, x in zip(names, gl))
            elif name == "@updates":
                names, u, w = value
                for n, uu, ww in zip(names, u.tolist(), w.tolist()):
                    # a weight of norm 0 (zero init) has no meaningful ratio
                    ratio = uu / ww if ww > 0 else float("nan")
                    points.append((f"update_ratio/{n}", step, ratio))
                    points.append((f"weight_norm/{n}", step, ww))
            elif name == "@stale":
                names, mask, where = value
                hit = [n for n, b in zip(names, mask.tolist()) if b]
                if hit:
                    self.event("stale_grad", {"count": len(hit), "of": len(names), "params": hit[:20], "where": where},
                               step)
            elif name == "@loss_block":
                # the losses of the last steps, kept on their device (devicebuffer.py): one read, here
                steps, vals, ready, dtype = value
                if ready is not None:
                    ready.synchronize()
                for st, v in zip(steps, vals.tolist()):
                    if not math.isfinite(v) and self.nonfinite_loss_step is None:
                        self._late_nonfinite_loss(st, v, dtype)
                    points.append(("loss", st, v))
            else:
                v = float(value) if not isinstance(value, float) else value
                if name == "loss" and not math.isfinite(v) and self.nonfinite_loss_step is None:
                    self._late_nonfinite_loss(step, v, value.dtype if isinstance(value, torch.Tensor) else None)
                points.append((name, step, v))
        dropped: list[tuple[str, int]] = []
        dropped_events: list[Event] = []
        with self._lock:
            table = self._table
            table.add(points)
            if table.due():
                dropped, kept, dropped_events = table.compact(self._events)
                if dropped_events:
                    self._events[:] = kept
                if table.thinned_before and self.retention is not None:
                    self.meta["retention"] = {**self.retention.as_meta(), "thinned_before_step": table.thinned_before}
            events = list(self._pending_events)
            self._pending_events.clear()
        store = self.store
        if store is not None:
            try:
                store.add_points(points)
                for ev in events:
                    store.add_event(ev.step, ev.kind, ev.data)
                if dropped:
                    store.delete_points(dropped)
                if dropped_events:
                    store.delete_events((ev.step, ev.kind) for ev in dropped_events)
                store.flush()
            except Exception as exc:  # noqa: BLE001 - a store that cannot be written never stops the run
                self._store_failed(exc)

    def _late_nonfinite_loss(self, step: int, v: float, dtype: Any) -> None:
        """A non-finite loss read off an accelerator by the writer thread: too late to replay, not to report
        (its exact step is known: every step's loss is read)."""
        self.nonfinite_loss_step = step
        self._forensics_done = True
        late: dict[str, Any] = {"value": v, "late": True}
        if isinstance(dtype, torch.dtype):
            late["dtype"] = dtype_name(dtype)
        self.event("nonfinite_loss", late, step)
        self.on_critical(f"traindoctor: L001 nonfinite-loss — the loss is {v} at step {step}")

    def _store_failed(self, exc: BaseException) -> None:
        """The run store cannot be written (disk full, its directory gone): said once, never tried
        again; the run goes on, kept in memory."""
        store, self.store = self.store, None
        if store is None:
            return
        try:
            store.close()
        except Exception:  # noqa: BLE001 - the same failure again
            pass
        why = " ".join(str(exc).split()) or type(exc).__name__
        self.contain("store", exc, f"cannot write the run store {getattr(store, 'path', '')} ({why}): "
                                   "keeping this run in memory")

    def _close_store(self) -> None:
        store = self.store
        if store is None:
            return
        try:
            self._write_meta()
            store.close()
        except Exception as exc:  # noqa: BLE001
            self._store_failed(exc)

    def _nonfinite_grads(self, step: int, params: list[str]) -> None:
        if any(e.kind == "nonfinite_grad" for e in self._events):
            return
        self.event("nonfinite_grad", {"params": params[:20], "count": len(params)}, step)
        if self.nonfinite_loss_step is not None and step >= self.nonfinite_loss_step:
            return  # an echo of the non-finite loss, already reported
        self.on_critical(
            f"traindoctor: G003 nonfinite-gradients — non-finite gradient at step {step} in {', '.join(params[:3])}"
        )

    def _writer_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._guard("writer", self._materialise)

    def _writer_main(self) -> None:
        try:
            self._writer_loop()
        except BaseException as exc:  # noqa: BLE001 - a dead writer is said once; close() still materialises
            self.contain("writer-thread", exc)

    def _check_val_sources(self) -> None:
        """One note when the loss functions and the script's printout disagree on a validation loss.

        ``snapshot()`` keeps the precedence (logged > loss functions > printed); the note says which
        value was used, the other one, and why, once per run, at the first evaluation they disagree.
        """
        if self._val_note_done:
            return
        with self._lock:
            got = {n: self._table.series(n) for n in ("val_loss", "val_loss@auto", "val_loss@printed")}
        auto = dict(zip(got["val_loss@auto"].steps.tolist(), got["val_loss@auto"].values.tolist())) \
            if got["val_loss@auto"] is not None else {}
        printed = dict(zip(got["val_loss@printed"].steps.tolist(), got["val_loss@printed"].values.tolist())) \
            if got["val_loss@printed"] is not None else {}
        logged = got["val_loss"] is not None
        for st in sorted(auto.keys() & printed.keys()):
            a, p = auto[st], printed[st]
            if not (math.isfinite(a) and math.isfinite(p)) or abs(a - p) <= 0.1 * max(abs(a), abs(p)):
                continue
            self._val_note_done = True
            used = ("the val_loss logged with doctor.log(), which always comes first" if logged else
                    f"{fmt(a)}, from the loss function (a loss function's value comes before a printed one)")
            self.meta.setdefault("notes", []).append(
                f"val_loss at step {st}: the evaluation's loss-function calls give {fmt(a)} (mean per element) but the "
                f"script printed {fmt(p)}; used {used}")
            return

    def _write_meta(self) -> None:
        for k, v in self.meta.items():
            self.store.set_meta(k, v)
