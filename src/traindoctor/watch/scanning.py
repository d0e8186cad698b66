"""The training set, scanned once in a background thread (``datascan.py``) and published on the training thread."""
from __future__ import annotations

import threading
import traceback
from typing import Any

from ..inspect.data import Leakage
from ..inspect.tensors import tensors_of
from .datascan import hash_rows, plan_for_loader, plan_for_slices, run_scan


class DatasetScan:
    """Starts the dataset scan at the first step and publishes its findings at the next batch.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_dataset_scan(self) -> None:
        """The dataset handed over by the loader, and the scan thread."""
        # the training set scanned once in the background (watch/datascan.py)
        self._loader_dataset: Any = None
        self._scan_state = "pending"  # pending → running → done
        self._scan_thread: threading.Thread | None = None
        self._scan_result: dict[str, Any] | None = None

    def _start_dataset_scan(self) -> None:
        """At the first training step: scan the in-memory training set for NaN/Inf rows in a thread."""
        self._scan_state = "done"  # one attempt per run
        ds, self._loader_dataset = self._loader_dataset, None
        plan: Any = None
        reason = None
        root = self._trace_root if self._trace_root is not None else next(iter(self._known_models()), None)
        captured = self._last_inputs.get(id(root)) if root is not None else None
        xs = [t for t in tensors_of(captured) if t.dim() >= 1] if captured is not None else []
        x0 = xs[0] if xs else None
        if ds is not None and self._loader_batch is not None:
            got = plan_for_loader(ds, self._loader_batch, self._batch_ids, model_input=x0)
            if isinstance(got, str):
                reason = got
            else:
                plan = got
        if plan is None:
            plan = plan_for_slices(x0, self._step_target)
        self._guard("leakage", self._note_train_identity, ds, x0, plan)
        if plan is None or plan.hash_array is None:
            self._leak_window = Leakage()  # the training side: the model's inputs in the data window
        if plan is not None and not plan.arrays and plan.skipped:
            reason = reason or plan.skipped
            self.meta["dataset_scan"] = {"skipped": reason}
            if plan.hash_array is None:
                return
        elif plan is None:
            if reason:
                self.meta["dataset_scan"] = {"skipped": reason}
            return
        self._scan_state = "running"
        self._scan_thread = threading.Thread(target=self._scan_worker, args=(plan,), name="traindoctor-datascan",
                                             daemon=True)
        self._scan_thread.start()

    def _scan_worker(self, plan: Any) -> None:
        if plan.arrays:
            try:
                result = run_scan(plan)
            except Exception as exc:  # noqa: BLE001 - reported on the training thread, by _publish_scan
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                result = {"error": f"{type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})"}
            self._scan_result = result  # published at the next batch, before the hashing below ends
        if plan.hash_array is not None:
            try:
                self._hash_result = hash_rows(plan)
            except Exception as exc:  # noqa: BLE001 - reported on the training thread, by _leak_decide
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                self._hash_result = {"error": f"{type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})"}
        del plan

    def _publish_scan(self) -> None:
        """Record the scan's findings (``data_nonfinite`` with ``scan: "dataset"``) and announce them."""
        res, self._scan_result = self._scan_result, None
        if res is None:
            return
        self._scan_state = "done"
        if "error" in res:
            raise RuntimeError(res["error"])
        self.meta["dataset_scan"] = {**res, "step": self.step}
        found = False
        for a in res["arrays"]:
            if a["nonfinite_rows"]:
                found = True
                self.event("data_nonfinite", {
                    "split": "train", "where": a["where"], "count": a["nonfinite_rows"], "sample_ids": a["sample_ids"],
                    "ids": res["ids"], "samples_scanned": res["rows_scanned"], "scan": "dataset",
                    "complete": res["complete"], "source": res["source"], "array": a["name"], "live": True})
        if found:
            self._guard("announce", self._announce)
