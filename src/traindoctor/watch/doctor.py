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
"""
from __future__ import annotations

import os
import sys
from typing import IO, Any

import torch
from torch import nn

from ..diagnosis import Diagnosis, diagnose
from ..inspect.crash import crash_event_data
from ..run import Run
from .autohooks import add_listener, remove_listener
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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Doctor(model, ...) needs a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Doctor(..., optimizer) needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self._store = None
        if store is not None:
            from ..store import RunStore

            self._store = RunStore(store, meta={"source": str(store), "mode": "doctor"})
        self._report_file = report_file
        self.monitor = Monitor(
            cadence=cadence,
            store=self._store,
            explicit_steps=True,
            on_critical=(lambda m: print(m, file=report_file or sys.stderr, flush=True)) if live else (lambda m: None),
        )
        self.monitor.meta["mode"] = "doctor"
        self.monitor.attach_model(model)
        if optimizer is not None:
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

    def step(self, loss: torch.Tensor | float) -> None:
        """Record the loss of the step just taken (call it after ``optimizer.step()``)."""
        self.monitor.on_loss(loss)

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
        except Exception:  # noqa: BLE001
            pass
