"""The writer thread: pending values turned into numbers and written to the run store, off the training thread."""
from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

import torch

from ..inspect.tensors import dtype_name
from ..numfmt import fmt
from ..run import Event


class StoreWriter:
    """Materialises pending tensors every ``flush_interval`` seconds and writes the run store.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_writer(self) -> None:
        """What is recorded (points and events), what awaits the writer thread, and its lock."""
        self._points: list[tuple[str, int, float]] = []  # materialised, for the final Run
        self._events: list[Event] = []
        self._pending: deque[tuple[str, int, Any]] = deque()  # (name, step, tensor | float | names)
        self._pending_events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._val_note_done = False

    def _materialise(self) -> None:
        items = []
        while self._pending:
            items.append(self._pending.popleft())
        points: list[tuple[str, int, float]] = []
        for name, step, value in items:
            if name == "@grad_norms":
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
            else:
                v = float(value) if not isinstance(value, float) else value
                if name == "loss" and not math.isfinite(v) and self.nonfinite_loss_step is None:
                    # loss read off an accelerator by this thread: too late to replay, not to report
                    self.nonfinite_loss_step = step
                    self._forensics_done = True
                    late: dict[str, Any] = {"value": v, "late": True}
                    if isinstance(value, torch.Tensor):
                        late["dtype"] = dtype_name(value.dtype)
                    self.event("nonfinite_loss", late, step)
                    self.on_critical(f"traindoctor: L001 nonfinite-loss — the loss is {v} at step {step}")
                points.append((name, step, v))
        with self._lock:
            self._points.extend(points)
            events = list(self._pending_events)
            self._pending_events.clear()
        store = self.store
        if store is not None:
            try:
                store.add_points(points)
                for ev in events:
                    store.add_event(ev.step, ev.kind, ev.data)
                store.flush()
            except Exception as exc:  # noqa: BLE001 - a store that cannot be written never stops the run
                self._store_failed(exc)

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
            pts = [(n, st, v) for n, st, v in self._points if n.startswith("val_loss")]
        auto = {st: v for n, st, v in pts if n == "val_loss@auto"}
        printed = {st: v for n, st, v in pts if n == "val_loss@printed"}
        logged = any(n == "val_loss" for n, _, _ in pts)
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
