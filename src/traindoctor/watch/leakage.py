"""Train/validation leakage and covariate shift, decided once, at the first evaluation.

The training side is hashed by the dataset scan's thread (or from the data window's batches); the first
evaluation's inputs are hashed on the training thread (bounded), then one ``data_leakage`` event and one
``input_shift`` event are recorded.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from ..inspect.data import sample_hashes
from ..inspect.tensors import tensors_of
from .datascan import _base_rows
from .shift import FeatureMoments, compare

# the training samples hashed from the data window when the dataset itself is not hashed, and the
# validation samples of the first evaluation: bounded (hashing runs on the training thread)
LEAK_WINDOW_BYTES = 64 << 20


LEAK_VAL_BYTES, LEAK_VAL_ROWS = 64 << 20, 100_000


# an "evaluation" holding this much of the training set is a pass over the training data, not a validation
LEAK_TRAIN_PASS = 0.9


def _region(t: torch.Tensor) -> tuple[int, int, int] | None:
    """The element range of ``t``'s rows in its storage: (storage, first, end)."""
    if t.dim() < 1 or t.shape[0] == 0 or t.stride(0) <= 0:
        return None
    start = t.storage_offset()
    return t.untyped_storage().data_ptr(), start, start + (t.shape[0] - 1) * t.stride(0) + 1


class LeakageCheck:
    """The leakage and input-shift checks: the training data's identity, validation samples hashed.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_leakage(self) -> None:
        """Both sides of the leakage and input-shift checks, and what tells the training data."""
        # train/validation leakage: the training side (a Leakage), hashed by the scan's thread or from
        # the data window; the first evaluation's validation samples; then one event
        self._leak_train: Any = None
        self._leak_train_info: dict[str, Any] = {}
        self._leak_window: Any = None
        self._leak_window_bytes = 0
        self._hash_result: dict[str, Any] | None = None
        self._leak_state = "waiting"  # waiting → collecting → collected → done
        self._leak_val: list[tuple[bytes, int]] = []
        self._leak_val_bytes = 0
        self._leak_val_step = 0
        self._leak_val_positions = 0
        self._leak_skipped = 0  # evaluation samples recognised as the training data itself
        # covariate shift: per-feature moments of the data window's inputs and the first evaluation's
        self._shift_train: Any = None
        self._shift_val: Any = None
        self._shift_done = False
        self._train_regions: list[tuple[int, int, int]] = []  # (storage, first, end) element ranges
        self._train_dataset: Any = None  # weak reference to the training loader's dataset
        self._src_batch: tuple[Any, Any, list[int] | None] | None = None  # the loader's last batch

    @property
    def wants_batch_source(self) -> bool:
        """Whether each loader batch should be remembered (which dataset it came from), for the leakage check."""
        return self._leak_state in ("waiting", "collecting")

    def set_batch_source(self, data: Any, dataset: Any) -> None:
        """The loader's batch: a weak reference to its input element and its dataset's identity."""
        x = data[0] if isinstance(data, (list, tuple)) and data else data
        self._src_batch = (weakref.ref(x) if isinstance(x, torch.Tensor) else None,
                           id(dataset) if dataset is not None else None, self._batch_ids)

    def _note_train_identity(self, dataset: Any, x0: Any, plan: Any) -> None:
        """What the training data is, to tell an evaluation over it from a validation: the training
        loader's dataset, and the storage ranges of the tensors the training batches are cut from."""
        if dataset is not None:
            try:
                self._train_dataset = weakref.ref(dataset)
            except TypeError:
                self._train_dataset = (lambda d=dataset: d)
        cands: list[Any] = []
        if isinstance(x0, torch.Tensor):
            cands.append(x0._base if x0._base is not None else x0)
        if plan is not None:
            cands += [a.data for a in [*plan.arrays, plan.hash_array] if a is not None]
        for t in cands:
            r = _region(t) if isinstance(t, torch.Tensor) else None
            if r is not None and r not in self._train_regions:
                self._train_regions.append(r)

    def _is_training_data(self, x: torch.Tensor) -> bool:
        r = _region(x)
        return r is not None and any(r[0] == p and a <= r[1] and r[2] <= b for p, a, b in self._train_regions)

    def _collect_val(self, captured: tuple[nn.Module, tuple, dict]) -> None:
        """The evaluation forward's input, hashed per sample (bounded), with validation ids: the
        loader's dataset indices, rows of the tensor it is sliced from, or positions in the stream.
        Inputs that are the training data itself (its loader, its tensors) are not validation."""
        xs = [t for t in tensors_of((captured[1], captured[2])) if t.dim() >= 1]
        if not xs or self._leak_val_bytes >= LEAK_VAL_BYTES or len(self._leak_val) >= LEAK_VAL_ROWS:
            return
        x = xs[0]
        rows = int(x.shape[0])
        if self._leak_state == "waiting":
            self._leak_state = "collecting"
            self._leak_val_step = max(0, self.step - 1)
        ids: list[int] | None = None
        src = self._src_batch
        if src is not None and src[0] is not None and src[0]() is x:
            train = self._train_dataset() if self._train_dataset is not None else None
            if train is not None and src[1] == id(train):
                self._leak_skipped += rows
                return
            if src[2] is not None and len(src[2]) == rows:
                ids = list(src[2])
        elif self._is_training_data(x):
            self._leak_skipped += rows
            return
        if ids is None:
            base = _base_rows(x)
            if base is not None:
                first = (x.storage_offset() - base.storage_offset()) // x.stride(0)
                ids = list(range(first, first + rows))
            else:
                ids = list(range(self._leak_val_positions, self._leak_val_positions + rows))
                self._leak_val_positions += rows
        self._leak_val.extend(zip(sample_hashes(x), ids))
        self._leak_val_bytes += x.numel() * x.element_size()
        if not self._shift_done and self._shift_train is not None:
            if self._shift_val is None:
                self._shift_val = FeatureMoments()
            self._shift_val.update(x)

    def _leak_decide(self) -> None:
        """Once both sides are known (the first evaluation is over, the training side hashed), the
        ``data_leakage`` event of ``checks.data.Leakage``, with ``live: True``, at the first evaluation."""
        if self._leak_state != "collected":
            return
        if self._leak_train is None and self._hash_result is not None:
            hr, self._hash_result = self._hash_result, None
            if "error" in hr:
                self._leak_state = "done"
                raise RuntimeError(hr["error"])
            self._leak_train = hr["leak"]
            self._leak_train_info = {"train_source": "dataset scan", "train_complete": hr["complete"]}
        leak = self._leak_train
        if leak is None:
            return  # the training side is still being hashed: at a later evaluation, or at the end
        self._leak_state = "done"
        val, self._leak_val = self._leak_val, []
        self._leak_train = None
        if not val:
            return
        hashes = [h for h, _ in val]
        cover = leak.train_coverage(set(hashes))
        if cover >= LEAK_TRAIN_PASS:
            self.meta["leakage_check"] = {
                "skipped": f"the evaluation holds {cover * 100:.0f} % of the {leak.distinct_train} training samples "
                           "hashed: a pass over the training data, not a validation"}
            return
        leak.add_val_hashes(hashes, [i for _, i in val])
        kind, data = leak.event()
        data.update({"live": True, **self._leak_train_info, "eval_samples_of_training_data": self._leak_skipped})
        self.event(kind, data, step=self._leak_val_step)

    def _leak_end_of_evaluation(self) -> None:
        if self._leak_state == "collecting":
            self._leak_state = "collected"
            self._guard("input-shift", self._shift_decide)
        self._leak_decide()

    def _shift_decide(self) -> None:
        """Once, at the end of the first evaluation: its inputs against the data window's, feature by
        feature (the ``input_shift`` event; nothing when either side is too small or not numeric)."""
        self._shift_done = True
        tr, va, self._shift_train, self._shift_val = self._shift_train, self._shift_val, None, None
        if tr is None or va is None:
            return
        data = compare(tr, va)
        if data is not None:
            self.event("input_shift", {"live": True, **data}, step=self._leak_val_step)
