"""The data window: the first steps' batches profiled (``checks.data.DataProfile``), then nothing.

The batches come from the model's input and the judged loss's targets (or the loader's), with their
dataset indices when the loader tells them.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..inspect.batches import Batch
from ..inspect.data import DataProfile, sample_hashes
from ..inspect.losses import WRAPPED_LOSSES
from ..inspect.tensors import tensors_of
from .leakage import LEAK_WINDOW_BYTES
from .losscalls import _layout
from .shift import FeatureMoments

# the data seen live: the first PROFILE_STEPS steps, extended until PROFILE_SAMPLES samples (at most
# PROFILE_MAX_STEPS steps); afterwards nothing is measured per batch
PROFILE_STEPS, PROFILE_SAMPLES, PROFILE_MAX_STEPS = 20, 1024, 100


# the inputs' scale is measured on the first few batches (the costly part); labels and NaN rows on all
PROFILE_INPUT_BATCHES = 4


class DataWindow:
    """Profiles the first steps' batches and records their data facts (live).

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_data_window(self) -> None:
        """The data window's profile and the batch of the step being built."""
        self._profile: Any = None
        self._profiling = False
        self._profile_steps = 0
        self._profile_positions = 0
        self._step_target: Any = None
        self._loader_batch: Any = None
        # the data profile judges one loss: its function and prediction layout (None: the first call's)
        self._profile_match: tuple[str, int, int | None] | None = None

    def _start_profile(self, loss_facts: dict[str, Any] | None, tensors: tuple[Any, Any] = (None, None)) -> None:
        """The data profile judges the first loss of the traced step, with that loss's own targets.

        Later steps give it the targets of the call of the same loss function on a prediction of the
        same layout, not the first loss call of the step: with two models trained side by side
        (a classifier and a regressor, an autoencoder and a head), the other loss's targets would
        be judged against this loss's domain.
        """
        kind = out_shape = None
        ignore = None
        if loss_facts is not None:
            kind = loss_facts["kind"]  # the trace names losses with the data checks' kinds
            ps = loss_facts.get("pred_shape")
            out_shape = tuple(ps[1:]) if ps else None
            ig = loss_facts.get("ignore_index")
            ignore = ig if isinstance(ig, int) and kind in ("cross_entropy", "nll") else None

            pred, target = tensors
            fn = str(loss_facts.get("function"))
            if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor):
                self._step_target = target  # this step's targets of the judged loss, not the first call's
                if fn in WRAPPED_LOSSES:  # (only a wrapped loss function's calls are seen at later steps)
                    self._profile_match = (fn, *_layout(pred))
        self._profile = DataProfile("train", kind, out_shape, ignore, ids_kind="dataset indices",
                                    input_moment_batches=PROFILE_INPUT_BATCHES)
        self._profile_positions = 0
        self._profiling = True

    def _profile_step(self) -> None:
        """Feed this step's batch (the model's input, the loss's targets) to the data profile."""
        prof = self._profile
        root = self._trace_root
        y, self._step_target = self._step_target, None
        loader, self._loader_batch = self._loader_batch, None
        captured = self._last_inputs.get(id(root)) if root is not None else None
        xs = [t for t in tensors_of(captured) if t.dim() >= 1] if captured is not None else []
        if not xs:
            return
        x = xs[0].detach()
        rows = int(x.shape[0])
        if y is None and isinstance(loader, (list, tuple)) and len(loader) == 2 and isinstance(loader[1], torch.Tensor):
            y = loader[1]  # a hand-written loss: the loader's targets
        if isinstance(y, torch.Tensor) and (y.dim() == 0 or int(y.shape[0]) != rows):
            y = None  # targets flattened over a sequence (language models): not per sample
        ids = self._batch_ids
        if ids is None or len(ids) != rows:
            if prof.batches == 0:
                prof.ids_kind = "positions in the stream"
            ids = list(range(self._profile_positions, self._profile_positions + rows))
        self._profile_positions += rows
        if self._leak_window is not None and self._leak_window_bytes < LEAK_WINDOW_BYTES:
            self._leak_window.add_train_hashes(sample_hashes(x), ids)
            self._leak_window_bytes += x.numel() * x.element_size()
        prof.update(Batch(x, y.detach() if isinstance(y, torch.Tensor) else None, ids))
        if not self._shift_done:
            if self._shift_train is None:
                self._shift_train = FeatureMoments()
            self._shift_train.update(x)
        self._profile_steps += 1
        done = (self._profile_steps >= PROFILE_STEPS and prof.samples >= PROFILE_SAMPLES) \
            or self._profile_steps >= PROFILE_MAX_STEPS
        if done:
            self._finish_profile()

    def _record_profile(self, first_batch: bool) -> None:
        """The data facts as known now: after the first batch (step 0), then over the whole window."""
        prof = self._profile
        if prof is None or not prof.batches:
            return
        for kind, data in prof.events():
            data["live"] = True
            if first_batch:
                data["first_batch"] = True
            self.event(kind, data, step=0 if first_batch else max(0, self.step))

    def _finish_profile(self) -> None:
        self._profiling = False
        self._record_profile(False)
        self._profile = None
        self._step_target = self._loader_batch = None  # hold no batch past the window
        if self._leak_window is not None:  # the training side of the leakage check: the window's samples
            self._leak_train, self._leak_window = self._leak_window, None
            self._leak_train_info = {"train_source": "first batches", "train_complete": False}
            self._guard("leakage", self._leak_decide)
        self._announce()

    def set_batch_ids(self, ids: Iterable[int] | None) -> None:
        self._batch_ids = list(ids) if ids is not None else None
        if self._scan_result is not None:  # the dataset scan finished: say it before this batch is used
            self._guard("dataset-scan", self._publish_scan)

    @property
    def wants_batches(self) -> bool:
        """Whether the loader's batches are still of interest (the first steps' data profile)."""
        return self._profiling or self._trace_state != "done"

    def set_loader_batch(self, data: Any, dataset: Any = None) -> None:
        self._loader_batch = data
        if self._scan_state == "pending":
            self._loader_dataset = dataset
