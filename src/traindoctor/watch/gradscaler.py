"""The loss under a ``GradScaler``: the tensor backpropagated is the loss times the scale.

The wrapped ``GradScaler.scale`` tells which tensor carries which loss, so that the loss tap records the loss
unscaled, and finite when only its scaled value overflowed.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch

from ..inspect.tensors import first_child


class GradScalerTap:
    """Remembers each ``scaler.scale(loss)`` until its ``backward()`` and undoes the scale there.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_grad_scaler(self) -> None:
        """The scaled losses awaiting their ``backward()``."""
        # GradScaler.scale(loss) outputs awaiting their backward(): (scaled ref, loss ref, loss value,
        # scaled grad_fn, scaler ref); dropped at the match or at the end of the step
        self._scaled: list[tuple[Any, Any, torch.Tensor, Any, Any]] = []
        self._scaler_ref: Any = None  # a weak reference to the last GradScaler seen (healing restores it)
        self._steps_at_scale: int | None = None  # optimizer steps when this step's first loss was scaled

    @property
    def grad_scaler(self) -> Any:
        """The GradScaler the script last scaled a loss with (None: none, or it is gone)."""
        return self._scaler_ref() if self._scaler_ref is not None else None

    def on_grad_scale(self, loss: torch.Tensor, scaled: torch.Tensor, scaler: Any) -> None:
        """``GradScaler.scale(loss)`` returned ``scaled``: remember it until its ``backward()``."""
        if "loss" in self._disabled:
            return
        self._guard("grad-scaler", self._on_grad_scale, loss, scaled, scaler)

    def _on_grad_scale(self, loss: torch.Tensor, scaled: torch.Tensor, scaler: Any) -> None:
        if loss.numel() != 1 or not loss.is_floating_point():
            return
        if not self.meta.get("loss_scaled_by_grad_scaler"):
            self.meta["loss_scaled_by_grad_scaler"] = True
        # weak references to the tensors; the loss's value (one element, no graph); the scaled
        # output's graph node, to recognise ``(scaler.scale(loss) / k).backward()``
        entry = (weakref.ref(scaled), weakref.ref(loss), loss.detach(), scaled.grad_fn, weakref.ref(scaler))
        self._scaler_ref = entry[4]
        if self._steps_at_scale is None:
            self._steps_at_scale = self.opt_steps
        self._scaled.append(entry)
        if len(self._scaled) > 4:
            del self._scaled[0]

    def on_scaler_update(self, scaler: Any) -> None:
        """``GradScaler.update()`` ran: when no optimizer step came since this step's loss was scaled,
        the scaler skipped the update (inf/NaN gradients). The step is over all the same: its loss is
        emitted as its own step (not merged into the next one's), and healing is told."""
        self._guard("grad-scaler", self._on_scaler_update, scaler)

    def _on_scaler_update(self, scaler: Any) -> None:
        at, self._steps_at_scale = self._steps_at_scale, None
        if at is None or self.opt_steps != at or self.explicit_steps or self._primary_opt is None or not self._loss_acc:
            return
        self._scaled = []
        step, loss = self.step, self.pending_loss()
        self._emit_loss()
        self.step += 1
        self._terms_this_step = 0
        self._guard("activations", self._arm_activations)
        if self.on_skipped_step is not None:
            self._guard("skipped-step-listener", self.on_skipped_step, step, loss)

    def _unscaled(self, t: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The unscaled value of the tensor being backpropagated, and the loss the user scaled.

        The output of ``scale()`` itself: the loss it scaled (exact, and finite when the scaled
        value overflowed). A tensor computed from that output (``/ accumulation_steps``): its
        value divided by the scale, kept as a tensor (no device sync). Else (None, None).
        """
        for i, entry in enumerate(self._scaled):
            if entry[0]() is t:
                del self._scaled[i]
                return entry[2], entry[1]()
        node = t.grad_fn
        if node is None:
            return None, None
        for _ in range(4):
            node = first_child(node)
            if node is None:
                break
            for i, entry in enumerate(self._scaled):
                if entry[3] is not None and node is entry[3]:
                    del self._scaled[i]
                    scaler = entry[4]()
                    scale = getattr(scaler, "_scale", None) if scaler is not None else None
                    if not isinstance(scale, torch.Tensor):
                        return None, None
                    # in float32 at least: 65536 is inf in float16
                    dt = torch.promote_types(t.dtype, torch.float32)
                    return t.detach().to(dt) / scale.to(device=t.device, dtype=dt).reshape(()), None
        return None, None
