"""Proving a fix before prescribing it: replay a short window from a snapshot with the fix applied.

A prescription nobody tried is a guess. Here the doctor tries it: the training steps since a snapshot
(the batches recorded as references while the run went on) are trained again from that snapshot, once
as they were (the control: does the symptom come back?) and once per candidate fix (LR ×0.1, clipping
at the healthy gradient level, a warm-up, skipping the batches with non-finite inputs …), and each fix is
judged by what the loss did: ``verified`` when the treated window stays finite and its loss falls while
the control's blows up, ``did not help`` when it does not, ``not reproduced`` when the control itself
was fine (then nothing can be verified from this window).

The replay runs on the user's own model and optimizer — their custom layers, hooks and
parametrisations behave as in training — between a save and a bitwise restore: the state now (model,
optimizer, schedulers, GradScaler, RNGs) is taken, the snapshot's is put back, the window is trained,
and the state now comes back bit for bit. The caller keeps the watcher quiet meanwhile (``quiet``), so
nothing the replay does is recorded as the run's. Its cost is bounded by a time budget, and stated.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..inspect.tensors import tensors_of
from ..numfmt import fmt
from .snapshot import TrainingState

MIN_STEPS = 20  # a window shorter than this is cycled: a fix needs some steps to show an effect


@dataclass
class StepRecord:
    """One training step as it can be trained again: the model's inputs and the loss's other arguments
    (references to the tensors the script used, not copies), and whether the inputs held NaN/Inf."""

    step: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    loss_fn: Callable[..., Any]
    target: Any
    loss_kwargs: dict[str, Any]
    nonfinite_inputs: bool = False
    autocast: tuple[str, torch.dtype] | None = None  # (device type, dtype) when the step ran under autocast
    lrs: tuple[float, ...] | None = None  # each group's learning rate at this step (a schedule replayed as it ran)

    def loss(self, model: nn.Module, float32: bool = False) -> torch.Tensor:
        """The step's loss again, in the precision the step ran in (``float32``: with autocast off)."""
        ctx = torch.autocast(self.autocast[0], dtype=self.autocast[1]) if self.autocast and not float32 \
            else contextlib.nullcontext()
        with ctx:
            return self.loss_fn(model(*self.args, **self.kwargs), self.target, **self.loss_kwargs)


def autocast_of(model: nn.Module) -> tuple[str, torch.dtype] | None:
    """The autocast in force now for ``model``'s device, or None."""
    dev = next((p.device.type for p in model.parameters()), "cpu")
    try:
        return (dev, torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else None
    except (TypeError, RuntimeError):  # a device type autocast does not know
        return None


class WindowRecorder:
    """The last replayable training steps: at most ``capacity`` of them and ``max_bytes`` of tensors
    held (references keep the batches alive), dropped from the front as the run moves on."""

    def __init__(self, capacity: int = 400, max_bytes: int = 256 * 2**20) -> None:
        self.steps: deque[tuple[StepRecord, int]] = deque()
        self.capacity, self.max_bytes, self.bytes = capacity, max_bytes, 0

    def add(self, rec: StepRecord) -> None:
        while self.steps and self.steps[-1][0].step >= rec.step:  # a rollback trains those steps again
            self._drop(self.steps.pop())
        size = sum(t.numel() * t.element_size() for t in tensors_of((rec.args, rec.kwargs, rec.target)))
        self.steps.append((rec, size))
        self.bytes += size
        while self.steps and (len(self.steps) > self.capacity or self.bytes > self.max_bytes):
            self._drop(self.steps.popleft())

    def _drop(self, item: tuple[StepRecord, int]) -> None:
        self.bytes -= item[1]

    def discard(self, step: int) -> None:
        """``step`` is not replayable after all (its loss had another term)."""
        for item in [i for i in self.steps if i[0].step == step]:
            self.steps.remove(item)
            self._drop(item)

    def since(self, step: int, until: int) -> list[StepRecord]:
        """The recorded steps in [step, until], oldest first; empty unless every one of them is there."""
        out = [r for r, _ in self.steps if step <= r.step <= until]
        return out if out and out[0].step == step and len(out) == until - step + 1 else []


def group_lrs(optimizer: torch.optim.Optimizer | None) -> tuple[float, ...] | None:
    """The learning rate of each parameter group now (plain numbers), or None."""
    if optimizer is None:
        return None
    lrs = [g.get("lr") for g in optimizer.param_groups]
    return tuple(float(x) for x in lrs) if all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                               for x in lrs) else None


def inputs_nonfinite(args: Any) -> bool:
    """Whether any floating-point input holds NaN/Inf (one fused check)."""
    ts = [t for t in tensors_of(args) if t.is_floating_point() and t.numel()]
    return bool(ts) and not bool(torch.stack([torch.isfinite(t).all() for t in ts]).all())


# ------------------------------------------------------------------------------------------ fixes
@dataclass(frozen=True)
class Fix:
    """A candidate change for a cause, as the replay applies it: scale the LR, clip the gradient
    norm, warm the LR up over the window, skip the batches whose inputs hold NaN/Inf."""

    cause: str
    name: str
    lr_factor: float = 1.0
    clip: float | None = None
    warmup: bool = False
    skip_nonfinite: bool = False
    float32: bool = False  # the forward with autocast off
    lr_cap: float | None = None  # the first group's LR held at or below this (the others in proportion)
    # a change of the model (--heal=arch): applied to the model after the snapshot is restored, returns
    # what undoes it (the weights it re-initialises come back with the state restored after the replay)
    arch: Callable[[nn.Module], Callable[[], None]] | None = field(default=None, compare=False)


def candidates(cause: str, healthy_norms: list[float]) -> list[Fix]:
    """The fixes worth trying for ``cause``, in the order they are prescribed."""
    out: list[Fix] = []
    if cause == "lr-too-high":
        out += [Fix(cause, "lower the learning rate ×0.1", lr_factor=0.1),
                Fix(cause, "warm the learning rate up over the window", warmup=True)]
    if cause in ("lr-too-high", "exploding-gradient") and healthy_norms:
        level = sorted(healthy_norms)[int(0.9 * (len(healthy_norms) - 1))]
        if math.isfinite(level) and level > 0:
            out.append(Fix(cause, f"clip the gradient norm at {fmt(level)} (90th percentile of healthy steps)",
                           clip=level))
    if cause == "exploding-gradient":
        out.append(Fix(cause, "lower the learning rate ×0.1", lr_factor=0.1))
    if cause == "nonfinite-data":
        out.append(Fix(cause, "skip the batches whose inputs hold NaN/Inf", skip_nonfinite=True))
    if cause == "precision-overflow":
        out.append(Fix(cause, "run the model's forward in float32 (autocast off inside it)", float32=True))
    return out


# ------------------------------------------------------------------------------------------ replay
@dataclass
class Replay:
    """What the loss did over one replay of the window (``losses`` up to the first non-finite one)."""

    losses: list[float] = field(default_factory=list)
    finite: bool = True
    ratios: list[float] = field(default_factory=list)  # per step, median ‖Δw‖/‖w‖ over weight matrices (when measured)
    steps: int = 0
    seconds: float = 0.0

    def level(self, end: bool) -> float:
        """The mean of the first (or last) fifth of the losses: robust to one noisy batch."""
        if not self.losses:
            return math.nan
        k = max(1, len(self.losses) // 5)
        part = self.losses[-k:] if end else self.losses[:k]
        return sum(part) / len(part)

    @property
    def blew_up(self) -> bool:
        """Non-finite, or a loss ten times the window's first at any step (a jump, as L002 reads one) or
        at its end (a divergence without a NaN)."""
        if not self.finite:
            return True
        if len(self.losses) < 2:
            return False
        first = max(self.losses[0], 1e-12)
        return max(self.losses) > 10 * first or self.level(True) > 10 * max(self.level(False), 1e-12)

    def describe(self) -> str:
        if not self.losses:
            return "no step"
        tail = "NaN/Inf" if not self.finite else fmt(self.level(True))
        return f"{fmt(self.level(False))} → {tail}"


def _window(records: list[StepRecord], minimum: int) -> list[StepRecord]:
    if not records:
        return []
    out = list(records)
    while len(out) < minimum:
        out += records
    return out


def replay(state: TrainingState, records: list[StepRecord], fix: Fix | None, *, max_steps: int,
           quiet: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
           measure_updates: bool = False) -> Replay:
    """Train ``records`` again from ``state`` (cycled to ``MIN_STEPS``, at most ``max_steps``) with
    ``fix``, and put everything back as it was, bitwise. The model and optimizer are the snapshot's own.
    ``measure_updates``: each step's update/weight ratio too (a copy of the weight matrices a step)."""
    model, opt = state.model, state.optimizer
    assert opt is not None, "a replay needs the optimizer"
    now = TrainingState.take(-1, model, opt, state.schedulers, state.scaler)
    params = [p for g in opt.param_groups for p in g["params"]]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    was_training = model.training
    out = Replay()
    undo: Callable[[], None] | None = None
    t0 = time.perf_counter()
    try:
        with quiet():
            state.restore(rng=True)
            if fix is not None and fix.arch is not None:
                undo = fix.arch(model)
            base = [g["lr"] for g in opt.param_groups]
            window = _window(records, MIN_STEPS)[:max_steps]
            model.train()
            for i, rec in enumerate(window):
                if fix is not None and fix.skip_nonfinite and rec.nonfinite_inputs:
                    continue
                scale = fix.lr_factor if fix is not None else 1.0
                if fix is not None and fix.warmup:
                    scale *= (i + 1) / len(window)
                lrs = rec.lrs if rec.lrs and len(rec.lrs) == len(base) else base
                if fix is not None and fix.lr_cap is not None and lrs and lrs[0] * scale > fix.lr_cap:
                    scale = fix.lr_cap / lrs[0]
                for g, lr in zip(opt.param_groups, lrs):
                    g["lr"] = lr * scale
                opt.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    loss = rec.loss(model, float32=fix is not None and fix.float32)
                    v = float(loss.detach())
                    out.steps += 1
                    if not math.isfinite(v):
                        out.finite = False
                        break
                    out.losses.append(v)
                    loss.backward()
                if fix is not None and fix.clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, fix.clip)
                mats = [p for p in params if p.dim() >= 2 and p.grad is not None] if measure_updates else []
                before = torch._foreach_mul([p.detach() for p in mats], 1.0) if mats else []
                opt.step()
                if mats:
                    with torch.no_grad():
                        upd = torch.stack(torch._foreach_norm(torch._foreach_sub([p.detach() for p in mats], before)))
                        wn = torch.stack(torch._foreach_norm(before))
                        keep = wn > 0
                        if bool(keep.any()):
                            out.ratios.append(float((upd[keep].float() / wn[keep].float()).median()))
    finally:
        out.seconds = time.perf_counter() - t0
        if undo is not None:
            undo()
        now.restore(rng=True)
        for p, g in zip(params, grads):  # the gradients as the script left them (it may accumulate)
            p.grad = g
        model.train(was_training)
        now.drop()
    return out


# what a replay must show of the symptom: a blow-up of the loss (L001/L002/L008/G001/G003), a loss that
# rose after the schedule raised the LR (L003), updates the size of the weights (G004)
SYMPTOMS = ("blow-up", "rise", "updates", "stuck")
BIG_UPDATE = 0.5  # G004's bar: an update of half the weights' own norm
RISE = 2.0  # the healer's bar for a loss that rose with a raised LR


def big_updates(r: Replay) -> int:
    """Steps of the replay (past its first: an adaptive optimizer's first step from a fresh state is
    about lr everywhere) whose update moved the weights by half their norm or more."""
    return sum(x >= BIG_UPDATE for x in r.ratios[1:])


def reproduced(control: Replay, symptom: str) -> bool:
    if symptom == "stuck":
        # dead units, vanishing gradients: the evidence is the activations' and gradients', not a shape of
        # the loss (a dead network still learns its output bias); the control is the reference to beat
        return control.finite and len(control.losses) >= 2
    if symptom == "updates":
        return big_updates(control) >= 2
    if symptom == "rise":
        return control.blew_up or (control.finite and len(control.losses) >= 2
                                   and control.level(True) >= RISE * max(control.level(False), 1e-12))
    return control.blew_up


@dataclass
class Verdict:
    """A fix's measured effect: ``result`` is ``verified``, ``did not help`` or ``not reproduced``."""

    fix: Fix
    result: str
    control: Replay
    treated: Replay
    symptom: str = "blow-up"

    @property
    def helped(self) -> bool:
        return self.result == "verified"

    def summary(self, first: int, last: int) -> str:
        absent = {"blow-up": "did not blow up", "rise": "did not see the loss rise",
                  "updates": "did not move the weights by half their size",
                  "stuck": "could not be trained"}[self.symptom]
        what = {"verified": "verified", "did not help": "tried, did not help",
                "not reproduced": f"not verified: the replay without it {absent}"}[self.result]
        n = max(self.treated.steps, self.control.steps)
        cycled = f" ({n} steps: the window repeated)" if n > last - first + 1 else ""
        text = (f"{self.fix.name}: {what} — replaying steps {first}–{last}{cycled} from the snapshot at step {first}, "
                f"the loss went {self.treated.describe()} with it and {self.control.describe()} without")
        if self.symptom == "updates" and self.treated.ratios and self.control.ratios:
            text += (f"; updates of up to {fmt(max(self.treated.ratios[1:] or self.treated.ratios))} of the weights "
                     f"with it, {fmt(max(self.control.ratios[1:] or self.control.ratios))} without")
        return text

    def to_json(self, first: int, last: int) -> dict[str, Any]:
        return {"cause": self.fix.cause, "fix": self.fix.name, "result": self.result, "summary": self.summary(first, last),
                "window": [first, last], "steps": self.treated.steps, "symptom": self.symptom,
                "control": [self.control.level(False), self.control.level(True) if self.control.finite else "nan"],
                "treated": [self.treated.level(False), self.treated.level(True) if self.treated.finite else "nan"],
                "seconds": round(self.control.seconds + self.treated.seconds, 4)}


def judge(fix: Fix, control: Replay, treated: Replay, symptom: str = "blow-up") -> Verdict:
    """``verified`` when the control shows the symptom and the treated replay does not: it stays finite,
    does not blow up, and its loss falls (a blow-up, a rise), its updates are back under the bar with a
    loss no worse than the control's (updates the size of the weights), or its loss falls by 5 % of its
    start and twice as much as the control's (``stuck``: dead units, vanishing gradients — a change of the
    model, which may restart from a higher loss)."""
    if not reproduced(control, symptom):
        return Verdict(fix, "not reproduced", control, treated, symptom)
    ok = treated.finite and not treated.blew_up and bool(treated.losses)
    if symptom == "updates":
        ok = ok and big_updates(treated) < 2 and (not control.finite or not control.losses
                                                  or treated.level(True) <= control.level(True))
    elif symptom == "stuck":
        # a changed model may restart from a higher loss: what counts is that it learns, and learns faster
        # than the model without the change (its fall ≥ 5 % of its start, and twice the control's)
        t_drop = treated.level(False) - treated.level(True)
        c_drop = control.level(False) - control.level(True) if control.losses else 0.0
        ok = ok and t_drop >= 0.05 * treated.level(False) and t_drop > 2 * max(c_drop, 0.0)
    else:
        ok = ok and treated.level(True) < treated.level(False)
    return Verdict(fix, "verified" if ok else "did not help", control, treated, symptom)


@dataclass
class Verification:
    """Every candidate tried for one symptom, best first, with the cost."""

    verdicts: list[Verdict]
    first: int
    last: int
    seconds: float
    skipped: list[str] = field(default_factory=list)  # fixes not tried for the budget

    @property
    def best(self) -> Verdict | None:
        return self.verdicts[0] if self.verdicts else None

    def to_json(self) -> dict[str, Any]:
        """What a treatment event carries: the best fix's verdict, every one tried, the cost."""
        best = self.best
        return {"result": best.result if best else None,
                "summary": best.summary(self.first, self.last) if best else "",
                "tried": [v.to_json(self.first, self.last) for v in self.verdicts],
                "skipped": self.skipped, "seconds": round(self.seconds, 4)}


def verify(state: TrainingState, records: list[StepRecord], fixes: list[Fix], *, budget_s: float,
           max_steps: int = 200,
           quiet: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
           symptom: str = "blow-up") -> Verification:
    """Replay the window without a fix (the control), then with each fix while the budget lasts; the
    verdicts ranked by measured effect: verified first, then by the treated window's final loss.
    ``symptom``: what the control must show and the fix remove (``SYMPTOMS``)."""
    if symptom not in SYMPTOMS:
        raise ValueError(f"symptom must be one of {SYMPTOMS}, got {symptom!r}")
    measure = symptom == "updates"
    t0 = time.perf_counter()
    first, last = (records[0].step, records[-1].step) if records else (state.step, state.step)
    control = replay(state, records, None, max_steps=max_steps, quiet=quiet, measure_updates=measure)
    verdicts: list[Verdict] = []
    skipped: list[str] = []
    for fx in fixes:
        spent = time.perf_counter() - t0
        per = control.seconds if control.seconds > 0 else 0.0
        if spent + per > budget_s and verdicts:
            skipped.append(fx.name)
            continue
        verdicts.append(judge(fx, control, replay(state, records, fx, max_steps=max_steps, quiet=quiet,
                                                  measure_updates=measure), symptom))
    rank = {"verified": 0, "did not help": 1, "not reproduced": 2}

    def key(v: Verdict) -> tuple[int, float]:
        end = v.treated.level(True) if v.treated.finite and v.treated.losses else math.inf
        return rank[v.result], end

    verdicts.sort(key=key)
    return Verification(verdicts, first, last, time.perf_counter() - t0, skipped)
