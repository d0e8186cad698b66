"""The loss tap: the loss of every step, read once at ``backward()`` (or handed by ``doctor.step``).

This is the per-step path: one scalar read on the CPU (on an accelerator a 0-d tensor, copied into the
monitor's device buffer and read every few steps by the writer thread: ``devicebuffer.py``), the
GradScaler's scaling undone, and the step counter advanced where no optimizer drives it.
The first ``backward()`` also starts the first-step inspection (trace, loss graph, data profile).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..inspect.tensors import dtype_name


class LossTap:
    """Reads the loss at ``backward()``, under a GradScaler too, and emits one ``loss`` point per step.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_loss_tap(self) -> None:
        """The loss of the step being built, and what ``backward()`` has seen of it."""
        self._loss_acc: list[Any] = []
        self._first_backward_seen = False
        self._bw_seen: tuple[torch.Tensor, Any] | None = None

    def on_backward(self, loss: torch.Tensor) -> None:
        """The launcher calls this from ``Tensor.backward``: the loss of the current step."""
        if self._stale is not None:  # a sampled step's backward(): were the gradients cleared since the step?
            self._guard("stale-grad", self._check_stale)
        if self._probe is not None:  # the forward raised past its hook: never leave the mode on
            self._guard("functional-activations", self._finish_probe, self.step)
        if "loss" in self._disabled:
            return
        try:  # inlined containment: this runs every step
            self._on_backward(loss)
        except Exception:  # noqa: BLE001
            self._guard("loss", self._raise_again)

    @staticmethod
    def _raise_again() -> None:
        raise  # re-raised inside _guard so it is reported and the part disabled like any other

    def _on_backward(self, loss: torch.Tensor) -> None:
        if loss.numel() != 1 or not loss.is_floating_point():
            return
        if self._scan_result is not None:
            self._guard("dataset-scan", self._publish_scan)
        if not self._first_backward_seen:
            self._first_backward_seen = True
            if self._trace_state == "active":
                self._guard("trace", self._end_trace, loss)
            self._guard("loss-graph", self._inspect_loss_graph, loss)
            if self._scan_state == "pending":
                self._guard("dataset-scan", self._start_dataset_scan)
            if self._profiling:
                self._guard("data-profile", self._profile_step)
                self._guard("data-profile", self._record_profile, True)
            self._guard("announce", self._announce)
        elif self._profiling and (self._profile_match is None or self._step_target is not None):
            # (a backward without a call of the judged loss is another model's: not this profile's batch)
            self._guard("data-profile", self._profile_step)
        # under a GradScaler the tensor backpropagated is the loss times the scale: read the loss
        true, given = (self._guard("grad-scaler", self._unscaled, loss) or (None, None)) if self._scaled else (None, None)
        value = self._read_loss(true if true is not None else loss, loss)
        if self._first_call_mean is not None:
            self._guard("loss-calls", self._loss_factor, value)
        if self.explicit_steps:
            # Doctor mode: doctor.step(loss) records the loss; here only the first sight of a
            # non-finite value matters, while the weights that produced it are still intact.
            self._bw_seen = (given if given is not None else loss, value)
            return
        if self._primary_opt is None and self._loss_acc:
            # no optimizer has stepped yet: one backward is one step (manual updates)
            self._emit_loss()
            self.step += 1
        self._loss_acc.append(value)

    def on_loss(self, loss: torch.Tensor | float) -> None:
        """Doctor mode: the user hands the loss of a finished step."""
        self._guard("loss", self._on_explicit_loss, loss)

    def _on_explicit_loss(self, loss: torch.Tensor | float) -> None:
        if not self._first_step_done:  # Doctor(model) without an optimizer: its first step is this one
            self._at_first_step()
        if isinstance(loss, torch.Tensor):
            if not self._first_backward_seen and loss.grad_fn is not None:
                self._first_backward_seen = True
                if self._trace_state == "active":
                    self._guard("trace", self._end_trace, loss)
                self._guard("loss-graph", self._inspect_loss_graph, loss)
                self._guard("announce", self._announce)
            seen = self._bw_seen
            if seen is not None and seen[0] is loss:
                self._loss_acc.append(seen[1])  # already read at backward(): no second read
            else:
                self._loss_acc.append(self._read_loss(loss.detach().reshape(-1)[0] if loss.numel() else loss))
            self._bw_seen = None
        else:
            v = float(loss)
            self._loss_acc.append(v)
            if not math.isfinite(v):
                self._nonfinite_loss(v, None)
        self._scaled = []  # the step is over: hold nothing of it
        self._emit_loss()
        self.step += 1
        if self._primary_opt is None:
            self._terms_this_step = 0
        self._arm_activations()

    def _read_loss(self, loss: torch.Tensor, graph: torch.Tensor | None = None) -> Any:
        """The loss as a float (CPU) or a 0-d tensor read later (accelerator); ``graph``: the tensor
        whose autograd graph tells where a non-finite value came from (the scaled loss under a GradScaler)."""
        # (every step, just after the forward pass has evicted the caches: each tensor call here costs
        # microseconds, so the CPU path makes two, `detach` (a scalar read of a tensor that requires grad
        # warns) and `float`, after the cheapest test of the device)
        if loss.is_cpu and not self.defer_loss_reads:
            v = float(loss.detach())
            if not math.isfinite(v):
                self._nonfinite_loss(v, graph if graph is not None else loss, dtype_name(loss.dtype))
                if self.on_nonfinite_loss is not None:
                    self._guard("nonfinite-listener", self.on_nonfinite_loss, self.step)
            return v
        return loss.detach().reshape(())  # kept in the device buffer, read by the writer thread: no sync here

    def pending_loss(self) -> Any:
        """The loss of the step being built, before the optimizer step ends it: a float (CPU), a 0-d
        tensor (accelerator, not read here), or None when no backward() has been seen this step."""
        acc = self._loss_acc
        if not acc:
            return None
        if len(acc) == 1:
            return acc[0]
        if all(isinstance(a, float) for a in acc):
            return sum(acc) / len(acc)
        return torch.stack([torch.as_tensor(a, dtype=torch.float64) for a in acc]).mean()

    def _emit_loss(self) -> None:
        value = self.pending_loss()
        self._loss_acc = []
        if value is not None:
            self.record("loss", value)
