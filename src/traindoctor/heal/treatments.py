"""The treatments: each names the cause it treats, changes one setting, and says what it changed.

A treatment acts on the user's own optimizer and schedulers and on the healer's step controls (the
gradient clip and the LR warm-up its optimizer hooks apply); ``apply`` returns what changed as
``{setting: [before, after]}``, plain JSON for the run's ``treatment`` event. The rollback that comes
before most of them is the healer's (``healer.py``): a treatment only changes what the next steps do.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..inspect.tensors import tensors_of

# the group keys that hold a learning rate: plain optimizers, then what schedulers add (OneCycleLR's
# max_lr/min_lr, every scheduler's initial_lr) so that a schedule cannot undo an LR treatment
LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


@dataclass
class Controls:
    """What the healer's optimizer hooks apply at every step, and the LR treatments so far."""

    optimizer: torch.optim.Optimizer
    schedulers: list[Any]
    clip: float | None = None  # clip the global gradient norm at this value
    warmup_total: int = 0  # a linear LR warm-up over this many steps ...
    warmup_done: int = 0  # ... of which this many are taken
    lr_scale: float = 1.0  # the product of the LR treatments given
    lr_cap: float | None = None  # the first group's LR is held at or below this inside each step (the others in proportion)
    healthy_norms: deque[float] = field(default_factory=lambda: deque(maxlen=100))  # recent healthy global grad norms
    quarantined: list[int] = field(default_factory=list)  # sample ids (or batch positions) that held NaN/Inf
    handles: list[Any] = field(default_factory=list)  # hooks a treatment put on the model (removed at close)

    def lr(self) -> float:
        v = self.optimizer.param_groups[0]["lr"]
        return float(v)


def scale_lr(optimizer: torch.optim.Optimizer, schedulers: list[Any], factor: float) -> None:
    """Every group's LR (and the schedulers' base LRs) × ``factor``, in place."""
    for g in optimizer.param_groups:
        for k in LR_KEYS:
            v = g.get(k)
            if isinstance(v, torch.Tensor):
                v.mul_(factor)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                g[k] = v * factor
    for s in schedulers:
        for attr in ("base_lrs", "_last_lr", "min_lrs"):
            vals = getattr(s, attr, None)
            if isinstance(vals, list):
                setattr(s, attr, [v * factor if isinstance(v, (int, float)) else v for v in vals])


class Treatment(ABC):
    """One treatment: the cause id it treats, the action in words, and ``apply`` (what changed)."""

    cause: str
    action: str

    @abstractmethod
    def apply(self, ctl: Controls) -> dict[str, Any]:
        """Change the run's settings; return ``{setting: [before, after]}``."""


@dataclass
class LowerLR(Treatment):
    """lr-too-high (×0.1 after a blow-up) or a stalled loss (×0.5): every group's LR, and the schedulers'
    base LRs so that the schedule carries on from the lower level."""

    cause: str = "lr-too-high"
    factor: float = 0.1

    @property
    def action(self) -> str:  # type: ignore[override]
        return f"learning rate ×{self.factor:.2g}"

    def apply(self, ctl: Controls) -> dict[str, Any]:
        before = ctl.lr()
        scale_lr(ctl.optimizer, ctl.schedulers, self.factor)
        ctl.lr_scale *= self.factor
        if ctl.lr_cap is not None:
            ctl.lr_cap *= self.factor
        return {"lr": [before, ctl.lr()]}


@dataclass
class CapLR(Treatment):
    """lr-too-high after the schedule raised the LR: the LR held at its level before the raise. Applied
    inside each optimizer step only (the schedule reads and writes its own LR and carries on; when it
    comes back under the cap, the cap no longer acts)."""

    cap: float = 0.0
    raised: float = 1.0  # by how much the schedule had raised it
    cause: str = "lr-too-high"

    @property
    def action(self) -> str:  # type: ignore[override]
        return f"hold the learning rate at or below {self.cap:.3g} (its level before the schedule raised it {self.raised:.3g}×)"

    def apply(self, ctl: Controls) -> dict[str, Any]:
        before = ctl.lr_cap
        ctl.lr_cap = self.cap if before is None else min(before, self.cap)
        return {"lr_cap": [before, ctl.lr_cap]}


@dataclass
class WarmUp(Treatment):
    """lr-too-high that came back after a lower LR: the LR ramps up linearly over the next ``steps``
    steps (applied inside each optimizer step only, so a scheduler reads and writes the real LR)."""

    steps: int = 100
    cause: str = "lr-too-high"

    @property
    def action(self) -> str:  # type: ignore[override]
        return f"linear LR warm-up over {self.steps} steps"

    def apply(self, ctl: Controls) -> dict[str, Any]:
        before = ctl.warmup_total - ctl.warmup_done
        ctl.warmup_total, ctl.warmup_done = self.steps, 0
        return {"warmup_steps": [before, self.steps]}


@dataclass
class ClipGradients(Treatment):
    """exploding-gradient: the global gradient norm clipped at a high percentile of the recent healthy
    ones (applied in an optimizer step pre-hook, removed when the Doctor closes)."""

    percentile: float = 90.0
    cause: str = "exploding-gradient"

    @property
    def action(self) -> str:  # type: ignore[override]
        return f"clip the gradient norm at the {self.percentile:g}th percentile of recent healthy steps"

    def apply(self, ctl: Controls) -> dict[str, Any]:
        before = ctl.clip
        at = float(np.percentile(ctl.healthy_norms, self.percentile))
        ctl.clip = at if before is None else min(before, at)
        return {"clip_grad_norm": [before, ctl.clip]}


@dataclass
class Float32Forward(Treatment):
    """precision-overflow: the model's forward runs with autocast off (float32) from here on, through a
    forward pre-hook that leaves autocast and a forward hook that restores it (removed at close)."""

    model: nn.Module
    cause: str = "precision-overflow"
    action: str = "run the model's forward in float32 (autocast off inside it)"

    def apply(self, ctl: Controls) -> dict[str, Any]:
        contexts: list[Any] = []

        def enter(module: nn.Module, args: Any) -> None:
            dev = next((p.device.type for p in module.parameters()), "cpu")
            ctx = torch.autocast(dev, enabled=False)
            ctx.__enter__()
            contexts.append(ctx)

        def leave(module: nn.Module, args: Any, out: Any) -> None:
            if contexts:
                contexts.pop().__exit__(None, None, None)

        ctl.handles += [self.model.register_forward_pre_hook(enter),
                        self.model.register_forward_hook(leave, always_call=True)]
        return {"forward_dtype": ["autocast", "float32"]}


@dataclass
class SkipBatch(Treatment):
    """nonfinite-data: the batch's step is not kept (dropped before it applies, or rolled back) and the
    rows that hold NaN/Inf are quarantined (listed by sample id when the ids are known)."""

    sample_ids: list[int] = field(default_factory=list)
    cause: str = "nonfinite-data"
    action: str = "skip the batch and quarantine its non-finite samples"

    def apply(self, ctl: Controls) -> dict[str, Any]:
        before = len(ctl.quarantined)
        ctl.quarantined += [i for i in self.sample_ids if i not in ctl.quarantined]
        return {"quarantined": [before, len(ctl.quarantined)]}


def nonfinite_rows(inputs: Any) -> list[int]:
    """Rows (dim 0) of a batch that hold NaN/Inf in any of its floating-point tensors (a tensor, or
    tuples, lists and dicts of them, nested: a forward's ``(args, kwargs)`` too)."""
    bad: set[int] = set()
    for t in tensors_of(inputs):
        if t.is_floating_point() and t.dim() > 0 and t.shape[0] > 0:
            rows = ~torch.isfinite(t.detach().reshape(t.shape[0], -1)).all(dim=1)
            bad.update(rows.nonzero().flatten().tolist())
    return sorted(bad)


def batch_rows(inputs: Any) -> int | None:
    """The batch's row count (dim 0 of its first tensor), None without one."""
    return next((int(t.shape[0]) for t in tensors_of(inputs) if t.dim() > 0), None)


def sample_ids(rows: list[int], ids: list[int] | None, inputs: Any) -> list[int]:
    """The batch rows ``rows`` named by the loader's sample ids when ``ids`` belong to this batch (as many
    as its rows: ids left from another loader, an evaluation's, say, do not), else by their positions."""
    if ids is not None and len(ids) == batch_rows(inputs):
        return [ids[r] for r in rows]
    return list(rows)


class _SafeSigmoidFn(torch.autograd.Function):
    """sigmoid forward; backward with sigmoid's derivative p(1 − p) floored at BCELoss's own 1e-12."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(z)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (p,) = ctx.saved_tensors
        return grad * (p * (1 - p)).clamp_min(SAFE_SIGMOID_FLOOR)


SAFE_SIGMOID_FLOOR = 1e-12  # BCELoss divides its gradient by p(1 − p) clamped at this (aten's EPSILON)


class SaturationSafeSigmoid(nn.Sigmoid):
    """``nn.Sigmoid`` whose gradient survives float32 saturation, for a sigmoid that feeds ``BCELoss``.

    The forward is the sigmoid, bit for bit: predictions, thresholds and the loss the script computes
    are unchanged. Where float32 rounds the sigmoid to exactly 0 or 1 its derivative p(1 − p) is 0 and
    no gradient passes, so a sample the model got confidently wrong can never be corrected. Here the
    derivative is floored at 1e-12, the floor BCELoss divides its own gradient by, so the two cancel:
    the gradient reaching the logit is p − y, exactly BCEWithLogitsLoss's, on saturated and unsaturated
    outputs alike (where p(1 − p) > 1e-12 nothing differs from ``nn.Sigmoid``). Behind another loss the
    floor only lets a 1e-12-sized gradient through where there was none."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _SafeSigmoidFn.apply(input)
