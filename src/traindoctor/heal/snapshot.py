"""Last-known-good states of a training run, to roll back to when a step goes wrong.

A snapshot holds what the next steps depend on: the model's parameters and buffers, the optimizer's
state and group settings (learning rates included), the LR schedulers' and the GradScaler's state and the
RNGs (torch CPU and CUDA, NumPy, ``random``). Restoring copies the values back into the *same* tensor
objects and loads the optimizer, scheduler and scaler state in place, so every reference the user holds
(``model.fc.weight``, the optimizer, the scheduler) stays valid, and the model then equals the snapshot
bit for bit.

Small states are cloned in memory (on their own device); a state larger than a limit (256 MiB by
default) is written with ``torch.save`` into a private temporary directory instead, and read back only
on a rollback. A store keeps two at most: the newest, and the one before it for when the newest already
carried the fault.

Cost: a snapshot is one copy of the parameters, buffers and optimizer state (for Adam, three times the
parameters): about the cost of one optimizer step on the same device, once per period.
"""
from __future__ import annotations

import copy
import itertools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..inspect.state import OptimizerState, RngState, same_state_dict

DEFAULT_MEMORY_LIMIT = 256 * 2**20  # bytes: a larger state goes to disk


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes a snapshot of this model and optimizer holds (their tensors' storage)."""
    ts = model_tensors(model)
    if optimizer is not None:
        ts += OptimizerState.take(optimizer, clone=False).tensors()
    return sum(t.numel() * t.element_size() for t in ts)


@dataclass
class TrainingState:
    """One snapshot: ``restore()`` puts it back in place, ``identical()`` proves it.

    ``lr_scale`` is the product of the LR treatments in force when it was taken: a rollback to it
    keeps the treatments given since (the healer rescales the restored LRs by the ratio).
    """

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    schedulers: list[Any]
    scaler: Any
    lr_scale: float
    values: list[torch.Tensor] | None  # None while on disk
    opt_state: OptimizerState | None
    sched_states: list[dict[str, Any]]
    scaler_state: dict[str, Any] | None
    rng: RngState
    path: Path | None = None

    @classmethod
    def take(cls, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
             schedulers: list[Any] = (), scaler: Any = None, lr_scale: float = 1.0,  # type: ignore[assignment]
             path: Path | None = None) -> TrainingState:
        """Copy the state now; with ``path``, write the tensors there instead of keeping them in memory."""
        on_disk = path is not None
        with torch.no_grad():
            values = [t.detach() if on_disk else t.detach().clone() for t in model_tensors(model)]
        opt_state = OptimizerState.take(optimizer, clone=not on_disk) if optimizer is not None else None
        snap = cls(
            step=step, model=model, optimizer=optimizer, schedulers=list(schedulers), scaler=scaler,
            lr_scale=lr_scale, values=values, opt_state=opt_state,
            sched_states=[copy.deepcopy(s.state_dict()) for s in schedulers],
            scaler_state=copy.deepcopy(scaler.state_dict()) if scaler is not None else None,
            rng=RngState.take(),
        )
        if on_disk:
            torch.save({"values": values, "groups": opt_state.groups if opt_state else None,
                        "state": opt_state.state if opt_state else None}, path)
            snap.values, snap.path = None, path
            if opt_state is not None:
                opt_state.groups, opt_state.state = [], []
        return snap

    def _loaded(self) -> tuple[list[torch.Tensor], OptimizerState | None]:
        if self.path is None:
            return self.values or [], self.opt_state
        blob = torch.load(self.path, weights_only=False)
        opt = OptimizerState(self.optimizer, blob["groups"], blob["state"]) if self.optimizer is not None else None
        return blob["values"], opt

    def restore(self, rng: bool = True) -> None:
        """Put everything back into the same objects; ``rng=False`` leaves the RNGs where they are
        (a skipped batch must not come back: the data order moves on)."""
        values, opt_state = self._loaded()
        with torch.no_grad():
            for t, v in zip(model_tensors(self.model), values):
                if t.shape == v.shape and t.dtype == v.dtype:
                    t.copy_(v)
                else:
                    t.data = v.clone()
        if opt_state is not None:
            opt_state.restore()
        for s, sd in zip(self.schedulers, self.sched_states):
            s.load_state_dict(copy.deepcopy(sd))
        if self.scaler is not None and self.scaler_state is not None:
            self.scaler.load_state_dict(copy.deepcopy(self.scaler_state))
        if rng:
            self.rng.restore()

    def identical(self) -> bool:
        """Bitwise: the model's parameters and buffers and the optimizer's state as saved."""
        values, opt_state = self._loaded()
        ts = model_tensors(self.model)
        return (len(ts) == len(values) and all(same_state_dict(t.detach(), v) for t, v in zip(ts, values))
                and (opt_state is None or opt_state.identical()))

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class SnapshotStore:
    """The last two good states of one run (in memory, or on disk past ``memory_limit`` bytes)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, schedulers: list[Any],
                 scaler: Any, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        self.model, self.optimizer, self.schedulers, self.scaler = model, optimizer, schedulers, scaler
        self.memory_limit = memory_limit
        self.kept: list[TrainingState] = []  # oldest first, two at most
        self._dir: Path | None = None
        self._names = itertools.count()

    @property
    def on_disk(self) -> bool:
        return state_bytes(self.model, self.optimizer) > self.memory_limit

    def take(self, step: int, lr_scale: float) -> TrainingState:
        path = None
        if self.on_disk:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="traindoctor-heal-"))
            path = self._dir / f"state-{next(self._names)}.pt"
        snap = TrainingState.take(step, self.model, self.optimizer, self.schedulers, self.scaler, lr_scale, path)
        self.kept.append(snap)
        while len(self.kept) > 2:
            self.kept.pop(0).drop()
        return snap

    def take_model(self, step: int) -> TrainingState:
        """The model's weights alone (the best-validation weights), not one of the two kept."""
        path = None
        if state_bytes(self.model, None) > self.memory_limit:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="traindoctor-heal-"))
            path = self._dir / f"model-{next(self._names)}.pt"
        return TrainingState.take(step, self.model, path=path)

    def newest(self) -> TrainingState | None:
        return self.kept[-1] if self.kept else None

    def at_or_before(self, step: int) -> TrainingState | None:
        """The newest snapshot taken at or before ``step`` (the state before something that began then)."""
        return next((s for s in reversed(self.kept) if s.step <= step), None)

    def target(self, suspect: TrainingState | None) -> TrainingState | None:
        """Where to roll back to: the newest snapshot, or the one before it when the newest is
        ``suspect`` (the run was rolled back to it and the fault came back before a newer one)."""
        if len(self.kept) >= 2 and self.kept[-1] is suspect:
            return self.kept[-2]
        return self.newest()

    def keep_until(self, snap: TrainingState | None) -> None:
        """Forget the snapshots newer than ``snap`` (None: all of them): after rolling back to it they
        belong to a trajectory the run has left."""
        while self.kept and self.kept[-1] is not snap:
            self.kept.pop().drop()

    def close(self) -> None:
        for s in self.kept:
            s.drop()
        self.kept = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
