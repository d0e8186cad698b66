"""What every framework callback shares: a :class:`~traindoctor.watch.doctor.Doctor` fed from the
framework's events, and the rule that the doctor's own failures never reach the training.

A framework never hands its callbacks the loss it backpropagated (Lightning's outputs are a copy taken
before accumulation, the Hugging Face Trainer gives none, Keras a running mean), so the step's loss is
read where a training loop's would be: at ``backward()``, by the Doctor's monitor. The callback sums
what the micro-batches since the last optimizer step backpropagated — the loss each framework scales
for gradient accumulation, so the sum is the step's loss, the number the framework itself logs — and
records it as the step's (``doctor.step``).

Every callback method goes through :meth:`Bridge.guard`: an exception of the doctor's is contained
(said once, recorded in the run as a ``doctor_error``, and that part of the callback turned off); the
framework never sees it. A failure to start the doctor at all is said once and leaves the training as
it would be without the callback.
"""
from __future__ import annotations

import enum
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch
from torch import nn

from ..diagnosis import Diagnosis
from ..heal import HealPolicy
from ..inspect.crash import crash_event_data
from ..report.safe import safe
from ..watch.doctor import Doctor
from ..watch.monitor import DEFAULT_CADENCE

# evaluation metrics as frameworks name them → the run's names: val_loss, eval_loss (Hugging Face),
# valid/acc, val_accuracy, val_sparse_categorical_accuracy (Keras), val_loss_epoch (Lightning's on_epoch)
_EVAL = re.compile(r"^(?:val|valid|validation|eval|dev)[_/ -]?(?:(?:sparse_)?(?:categorical|binary)_)?"
                   r"(loss|acc|accuracy)(?:_epoch)?$", re.IGNORECASE)


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``val_loss``/``val_accuracy`` from a framework's metrics dict (other keys left out, the first of
    several spellings kept); values that are not numbers are skipped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        m = _EVAL.match(str(key))
        if m is None:
            continue
        name = "val_loss" if m.group(1).lower() == "loss" else "val_accuracy"
        if name in out:
            continue
        try:
            v = float(value.detach().reshape(-1)[0]) if isinstance(value, torch.Tensor) else float(value)
        except (TypeError, ValueError, IndexError):
            continue
        out[name] = v
    return out


def plain(value: Any) -> Any:
    """A setting as JSON holds it: numbers, strings, bools and None as they are, an enum as its value,
    anything else as its ``str``."""
    if isinstance(value, enum.Enum):  # Hugging Face's SchedulerType, OptimizerNames (str enums)
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    return str(value)


class Bridge:
    """One Doctor fed by a framework's callback: started when training starts, closed (and its diagnosis
    reported) when it ends; every call contained."""

    def __init__(self, framework: str, *, heal: bool | str = False, cadence: int = DEFAULT_CADENCE,
                 store: Any = None, live: bool = True, report: bool = True, report_file: IO[str] | None = None,
                 heal_every: int | None = None, heal_policy: HealPolicy | None = None) -> None:
        if heal not in (True, False, "arch"):
            raise ValueError(f"heal must be True, False or 'arch', got {heal!r}")
        if cadence < 1:
            raise ValueError(f"cadence must be a positive number of steps, got {cadence}")
        self.framework = framework
        self.heal = heal
        self.cadence = cadence
        self.store = store
        self.live = live
        self.report = report
        self.report_file = report_file
        self.heal_every = heal_every
        self.heal_policy = heal_policy
        self.doctor: Doctor | None = None
        self.diagnosis: Diagnosis | None = None
        self._failed: set[str] = set()
        self._said: set[str] = set()
        self._seen: Any = None  # the last backward() counted (Doctor.last_backward's tuple)
        self._acc: list[Any] = []  # the losses backpropagated since the last step
        self._finished = False

    # containment -------------------------------------------------------------------------------

    def guard(self, part: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; an exception is the doctor's: contained, said once, and ``part`` turned off."""
        if part in self._failed:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the doctor must never break the training
            self._failed.add(part)
            self.contain(part, exc)
            return None

    def contain(self, part: str, exc: BaseException) -> None:
        name = f"{self.framework}-callback:{part}"
        d = self.doctor
        if d is not None:
            try:
                d.monitor.contain(name, exc)
                return
            except Exception:  # noqa: BLE001 - the monitor itself is broken: say it here
                pass
        if name in self._said:
            return
        self._said.add(name)
        tbs = traceback.extract_tb(exc.__traceback__)
        at = f" ({tbs[-1].filename}:{tbs[-1].lineno})" if tbs else ""
        print(safe(f"traindoctor: internal error contained, training goes on — {name} failed and was turned off: "
                   f"{type(exc).__name__}: {exc}{at}"), file=sys.stderr, flush=True)

    @property
    def active(self) -> bool:
        return self.doctor is not None and not self._finished

    # the run -----------------------------------------------------------------------------------

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, **kwargs: Any) -> Doctor:
        """A Doctor on ``model`` and ``optimizer`` (a fresh one for each training run the callback sees)."""
        if self.doctor is not None and not self._finished:
            return self.doctor
        self.doctor, self.diagnosis, self._finished = None, None, False
        self._seen, self._acc = None, []
        self._failed.clear()
        heal = self.heal if optimizer is not None else False
        self.doctor = Doctor(model, optimizer, cadence=self.cadence, store=self.store, live=self.live,
                             report_file=self.report_file, heal=heal, heal_every=self.heal_every,
                             heal_policy=self.heal_policy, **kwargs)
        self.doctor.monitor.meta["framework"] = self.framework
        return self.doctor

    def set_args(self, args: Mapping[str, Any]) -> None:
        """The framework's settings the fixes are said in (``meta["framework_args"]``), None values left out."""
        if self.doctor is not None:
            self.doctor.monitor.meta["framework_args"] = {k: plain(v) for k, v in args.items() if v is not None}

    def note_backward(self) -> None:
        """After a micro-batch: the loss its ``backward()`` carried, counted once."""
        d = self.doctor
        if d is None or self._finished:
            return
        seen = d.last_backward
        if seen is not None and seen is not self._seen:
            self._seen = seen
            self._acc.append(seen[1])

    def step_loss(self) -> Any:
        """The loss of the step just taken: the sum of what its micro-batches backpropagated (a float, or a
        0-d tensor on an accelerator), None when none did."""
        self.note_backward()
        acc, self._acc = self._acc, []
        if not acc:
            return None
        if len(acc) == 1:
            return acc[0]
        if all(isinstance(a, float) for a in acc):
            return float(sum(acc))
        return torch.stack([torch.as_tensor(a, dtype=torch.float64).reshape(()) for a in acc]).sum()

    def step(self, inputs: Any = None) -> Any:
        """Record the step just taken (its loss, from the backward passes), judged and treated with ``heal``;
        returns the loss recorded, or None."""
        d = self.doctor
        if d is None or self._finished:
            return None
        loss = self.step_loss()
        if loss is None:
            return None
        d.step(loss, inputs=inputs)
        return loss

    @property
    def should_stop(self) -> bool:
        return self.doctor is not None and self.doctor.should_stop

    def log(self, metrics: Mapping[str, Any]) -> None:
        """Evaluation metrics (the framework's names) as ``val_loss``/``val_accuracy`` at the last step."""
        if self.doctor is None or self._finished:
            return
        vals = eval_metrics(metrics)
        if vals:
            self.doctor.log(**vals)

    def crash(self, exc: BaseException) -> None:
        """The training raised: the run says where (as a script's crash), then ends."""
        if self.doctor is not None and not self._finished and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.doctor.monitor.event("crash", crash_event_data(exc))

    def finish(self) -> Diagnosis | None:
        """Close the Doctor (hooks off, store flushed), diagnose the run, print the report; the Diagnosis."""
        if self.doctor is None or self._finished:
            return self.diagnosis
        self._finished = True
        d = self.doctor
        try:
            d.close()
            self.diagnosis = d.diagnose()
        except Exception as exc:  # noqa: BLE001 - the doctor must never break the training
            self.contain("report", exc)
            return None
        if self.report:
            try:
                from ..report import render

                render(self.diagnosis, file=self.report_file or sys.stderr, title=f"traindoctor ({self.framework})")
            except Exception as exc:  # noqa: BLE001
                self.contain("report", exc)
        return self.diagnosis


class BridgeViews:
    """What every framework callback shows of its Bridge (``self.bridge``): the Doctor, the diagnosis,
    the treatments, and ``report()`` to end the run by hand."""

    bridge: Bridge

    @property
    def doctor(self) -> Any:
        """The Doctor of the current (or last) training; None before it starts."""
        return self.bridge.doctor

    @property
    def diagnosis(self) -> Diagnosis | None:
        """The diagnosis at the end of the last training (None before it ends)."""
        return self.bridge.diagnosis

    @property
    def treatments(self) -> list[dict[str, Any]]:
        """What healing did, in order."""
        return self.bridge.doctor.treatments if self.bridge.doctor is not None else []

    def report(self) -> Diagnosis | None:
        """End the run now if it is still going (hooks off) and return its diagnosis (printed unless
        ``report=False``); frameworks that call no callback when training raises need it then."""
        return self.bridge.finish()
