"""The one-line API: ``doctor = traindoctor.Doctor(model, optimizer)``.

    doctor = traindoctor.Doctor(model, optimizer)
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        doctor.step(loss)                 # after optimizer.step()
    doctor.log(val_loss=v, val_accuracy=a)  # evaluation metrics, when you have them
    doctor.report()

or as a context manager, which reports at the end (and on a crash, then re-raises):

    with traindoctor.Doctor(model, optimizer) as doctor:
        ...

With ``heal=True`` the Doctor also treats the run (``traindoctor.heal``): it rolls back to the last good
snapshot and lowers the LR, clips the gradients or skips a poisoned batch when the loss blows up, halves
the LR when it stalls, and keeps the best-validation weights when the run overfits; every treatment is an
event in the Run and in ``doctor.treatments``. Hand it the scheduler(s) and GradScaler so a rollback
restores them too, and the batch's inputs so a poisoned batch's rows can be named:

    doctor = traindoctor.Doctor(model, optimizer, heal=True, scheduler=sched)
    for x, y in loader:
        ...
        optimizer.step()
        doctor.step(loss, inputs=x)
        if doctor.should_stop:
            break

Healing costs one read of the loss per step (a device sync on an accelerator), one fused gradient norm
per step, and a copy of the model and optimizer state every ``heal_every`` healthy steps. Without
``heal`` none of it exists: observe mode trains bit for bit as it would without the Doctor.

An optimizer stepped with a closure (``optimizer.step(closure)``, as PyTorch Lightning does) computes its
gradients inside ``step()``, after the step's pre-hooks: for torch's own optimizers, which call the closure
once as the step begins, the Doctor calls it just before its hooks instead, and the step gets its result.
The same calls in the same order on the same tensors: the run is unchanged, and the hooks see this step's
gradients rather than the last one's.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import weakref
from collections.abc import Mapping
from typing import IO, Any

import torch
from torch import nn

from ..diagnosis import Diagnosis, diagnose
from ..heal import Healer, HealPolicy
from ..heal.verify import StepRecord, WindowRecorder, autocast_of, group_lrs, inputs_nonfinite
from ..inspect.crash import crash_event_data
from ..report.safe import safe
from ..run import Run
from .autohooks import add_listener, quiet, remove_listener
from .closures import calls_closure_once, closure_first
from .monitor import DEFAULT_CADENCE, Monitor


class Doctor:
    """Watches one model (and optionally its optimizer) from inside a training loop."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        cadence: int = DEFAULT_CADENCE,
        store: str | os.PathLike[str] | None = None,
        live: bool = True,
        report_file: IO[str] | None = None,
        heal: bool | str = False,
        scheduler: Any = None,
        scaler: Any = None,
        heal_every: int | None = None,
        heal_policy: HealPolicy | None = None,
        verify: bool = False,
        loss_fn: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Doctor(model, ...) needs a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Doctor(..., optimizer) needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if heal not in (True, False, "arch"):
            raise ValueError(f"heal must be True, False or 'arch' (also repair the model: dead ReLUs → LeakyReLU), "
                             f"got {heal!r}")
        if verify and loss_fn is None:
            raise ValueError("verify=True replays steps: give the loss function, Doctor(..., verify=True, loss_fn=...), "
                             "and each step's targets, doctor.step(loss, inputs=x, targets=y)")
        heal = heal or verify
        if heal and optimizer is None:
            raise ValueError("heal=True needs the optimizer: Doctor(model, optimizer, heal=True)")
        policy = heal_policy or HealPolicy()
        if heal == "arch":
            policy = dataclasses.replace(policy, arch=True)
        if heal_every is not None:
            policy = dataclasses.replace(policy, every=heal_every)
        self._store = None
        if store is not None:
            from ..store import RunStore

            self._store = RunStore(store, meta={"source": str(store), "mode": "doctor"})
        self._report_file = report_file
        self.monitor = Monitor(
            cadence=cadence,
            store=self._store,
            explicit_steps=True,
            # a live line can name the user's modules and samples: escaped for the terminal (report/safe.py)
            on_critical=(lambda m: print(safe(m), file=report_file or sys.stderr, flush=True)) if live else (lambda m: None),
        )
        self.monitor.meta["mode"] = "doctor"
        self.monitor.attach_model(model)
        self._closure_hook: Any = None
        if optimizer is not None:
            if calls_closure_once(optimizer):  # before the monitor's and the healer's hooks, which read gradients
                self._closure_hook = optimizer.register_step_pre_hook(closure_first)
            self.monitor.attach_optimizer(optimizer)
            g = optimizer.param_groups[0]
            self.monitor.meta["optimizer"] = {
                "class": type(optimizer).__name__,
                **{k: v for k, v in g.items() if k != "params" and isinstance(v, (int, float, bool, str))},
            }
            if isinstance(g.get("lr"), (int, float)):
                self.monitor.meta["lr"] = float(g["lr"])
        add_listener(self.monitor)
        self._run: Run | None = None
        self._healer: Healer | None = None
        self._recorder: WindowRecorder | None = None
        self._step_lrs: tuple[float, ...] | None = None
        self._lr_hook: Any = None
        self._loss_fn = loss_fn
        if heal and optimizer is not None:
            schedulers = list(scheduler) if isinstance(scheduler, (list, tuple)) else [] if scheduler is None else [scheduler]
            # the monitor's Run, not the Doctor's: the optimizer's hooks must not keep the Doctor alive
            self._recorder = WindowRecorder(capacity=2 * policy.every + 1) if verify else None
            if verify:  # the LR each step used, read as it starts (a schedule replayed as it ran)
                me = weakref.ref(self)  # the optimizer's hook must not keep the Doctor alive

                def note_lrs(o: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
                    doc = me()
                    if doc is not None:
                        doc._step_lrs = group_lrs(o)

                self._lr_hook = optimizer.register_step_pre_hook(note_lrs)
            self._healer = Healer(self.monitor, model, optimizer, schedulers, scaler, policy, self.monitor.snapshot,
                                  recorder=self._recorder, quiet=lambda: quiet(self.monitor))
            if policy.arch:
                h = self._healer
                self.monitor.on_activation = lambda step, kind, name, v: h.guarded(h.on_activation, step, kind, name, v)

    def step(self, loss: torch.Tensor | float, inputs: Any = None, ids: list[int] | None = None,
             targets: Any = None) -> None:
        """Record the loss of the step just taken (call it after ``optimizer.step()``).

        With ``heal=True`` the step is judged and treated here. ``inputs`` (the batch's input tensor, or a
        tuple or dict of tensors) lets a batch holding NaN/Inf be recognised and its rows named: by ``ids``
        (the samples' ids, one per row) or by the loader's indices when a DataLoader is watched, else by
        their positions in the batch. With ``verify=True``, ``inputs`` (the model's arguments: a tensor, a
        tuple, or a dict of keyword arguments) and ``targets`` record the step so it can be replayed: the
        model called on ``inputs``, then ``loss_fn(output, targets)``, as the step did.
        """
        rec = self._recorder
        if rec is not None and inputs is not None and targets is not None:
            args, kwargs = (inputs, {}) if isinstance(inputs, tuple) else ((), inputs) if isinstance(inputs, dict) \
                else ((inputs,), {})
            rec.add(StepRecord(self.monitor.step, args, kwargs, self._loss_fn, targets, {}, inputs_nonfinite(inputs),
                               autocast_of(self.monitor.models[0]), self._step_lrs))
        self.monitor.on_loss(loss)
        h = self._healer
        if h is not None:
            h.guarded(h.on_step, self.monitor.step - 1, loss, inputs, ids if ids is not None else self.monitor._batch_ids)

    @property
    def last_backward(self) -> tuple[Any, Any] | None:
        """The latest ``backward()`` this Doctor saw: ``(tensor, loss)``, the loss a float on the CPU (a 0-d
        tensor on an accelerator, not read), unscaled under a GradScaler; a new tuple at each backward, None
        before any or after ``step(tensor)`` took it. Lets a framework's callback, which is never handed the
        loss, sum what its micro-batches backpropagated into the step's loss."""
        return self.monitor._bw_seen

    def name_params(self, names: Mapping[int, str]) -> None:
        """Call the parameters ``names`` holds (by ``id(param)``) by those names in the run, in place of
        their attribute paths; meta's ``params`` follows, in the order of ``names``. For models whose
        parameters have better names than torch's (a Keras model's variable paths). Before the first step."""
        m = self.monitor
        pinfo = m.meta.get("params") or {}
        renamed: dict[str, Any] = {}
        for pid, new in names.items():
            old = m._param_names.get(pid)
            if old is None:
                continue
            m._param_names[pid] = new
            if old in pinfo:
                renamed[new] = pinfo.pop(old)
        m.meta["params"] = {**renamed, **pinfo}

    @property
    def should_stop(self) -> bool:
        """True once healing says the run should stop: it overfits, or its fault came back past the cap."""
        return self._healer is not None and self._healer.should_stop

    @property
    def treatments(self) -> list[dict[str, Any]]:
        """What healing did, in order (the data of each ``treatment`` event)."""
        return list(self._healer.treatments) if self._healer is not None else []

    @property
    def quarantined(self) -> list[int]:
        """Samples (ids, or batch positions) whose inputs held NaN/Inf, in the order they were met."""
        return self._healer.quarantined if self._healer is not None else []

    def restore_best(self) -> int | None:
        """Put the best-validation weights (from ``doctor.log(val_loss=...)``) back into the model, in
        place; returns the step they are from, None when none were kept. Needs ``heal=True``."""
        if self._healer is None:
            raise RuntimeError("restore_best() needs Doctor(..., heal=True): observe mode keeps no weights")
        return self._healer.guarded(self._healer.restore_best)

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Record evaluation metrics (``val_loss=``, ``val_accuracy=``, ``accuracy=`` ...) at a step.

        The default step is the last one recorded with ``step()``.
        """
        at = step if step is not None else max(0, self.monitor.step - 1)
        for name, value in metrics.items():
            try:
                v = float(value.detach().reshape(-1)[0]) if isinstance(value, torch.Tensor) else float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"doctor.log({name}=...) needs a number, got {value!r}") from exc
            self.monitor.record(name, v, at)
            if name == "val_loss" and self._healer is not None:
                self._healer.guarded(self._healer.on_val, at, v)

    def probe_hessian(self, inputs: Any, targets: Any, loss_fn: Any, *, iters: int = 30) -> dict[str, float]:
        """Extreme Hessian eigenvalues at the current weights, recorded for G007 (saddle or minimum).

        Costs ~2 × ``iters`` backward passes; the model, its buffers and the RNG are left as
        they were. Call it when the gradient has collapsed while the loss is still high.
        """
        from ..hessian import extreme_eigenvalues

        model = self.monitor.models[0]
        result = extreme_eigenvalues(model, loss_fn, inputs, targets, iters=iters)
        self.monitor.event("hessian", dict(result), step=max(0, self.monitor.step - 1))
        return result

    def run_record(self) -> Run:
        """The Run recorded so far."""
        return self._run if self._run is not None else self.monitor.snapshot()

    def diagnose(self) -> Diagnosis:
        return diagnose(self.run_record())

    def report(self, file: IO[str] | None = None) -> Diagnosis:
        """Print the diagnosis so far and return it."""
        from ..report import render

        d = self.diagnose()
        render(d, file=file or self._report_file or sys.stderr)
        return d

    def close(self) -> Run:
        """Remove every hook, flush the store; the Doctor keeps its Run for reports."""
        if self._run is None:
            if self._healer is not None:
                self._healer.close()
            if self._lr_hook is not None:
                self._lr_hook.remove()
                self._lr_hook = None
            if self._closure_hook is not None:
                self._closure_hook.remove()
                self._closure_hook = None
            remove_listener(self.monitor)
            self._run = self.monitor.close()
        return self._run

    def __enter__(self) -> Doctor:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.monitor.event("crash", crash_event_data(exc))
        self.close()
        self.report()

    def __del__(self) -> None:  # a forgotten close() must not leave hooks on torch
        try:
            if self._run is None:
                remove_listener(self.monitor)
                if self._healer is not None:
                    self._healer.remove_hooks()
                if self._closure_hook is not None:
                    self._closure_hook.remove()
        except Exception:  # noqa: BLE001
            pass
