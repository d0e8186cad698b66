"""Leslie Smith's LR range test as a sweep that can be fed one loss at a time.

The checkup's ``lr_range`` probe drives it with its own optimizer (:func:`traindoctor.checks.probes.
_experiments.lr_range_test`); ``traindoctor tune`` drives it inside the user's own training (its first,
``probe`` trial), setting the learning rate before each of the user's optimizer steps. Both read it the same
way: step ``i`` trains one batch at ``lr_i = start·(end/start)^(i/(n−1))``; the batch's loss is smoothed
exponentially; the sweep stops once the smoothed loss exceeds ``diverge_th`` times its best value, or the loss
is not finite (tune's probe also stops once the smoothed loss, having fallen, is back above where it started).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LRRange:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested: float | None
    min_loss_lr: float | None
    diverged_at: float | None
    optimizer: str
    rule: str = ("steepest descent: the LR where the smoothed loss falls fastest per unit of log(LR), between the "
                 "10th point and the loss minimum (torch-lr-finder's rule, which searches up to the 5th-last point, "
                 "restricted to before the minimum)")


class RangeSweep:
    """An exponential LR sweep from ``start`` to ``end`` over ``num_iter`` steps, read one loss at a time:
    :meth:`lr` gives step ``i``'s learning rate, :meth:`add` takes its loss and says whether the sweep is over."""

    def __init__(self, start: float, end: float, num_iter: int = 100, *, smooth_f: float = 0.05,
                 diverge_th: float = 5.0, back_to_start: bool = False) -> None:
        if not (start > 0 and end > start and num_iter >= 2):
            raise ValueError(f"an LR sweep needs 0 < start < end and at least 2 steps, got {start}, {end}, {num_iter}")
        self.start, self.end, self.num_iter = float(start), float(end), int(num_iter)
        self.smooth_f, self.diverge_th = smooth_f, diverge_th
        # also over when the smoothed loss, having fallen 10 % below its start, climbs back above the start: a
        # classifier whose units die at a high rate settles near chance instead of exploding 5× past its best
        self.back_to_start = back_to_start
        self.lrs: list[float] = []
        self.raw: list[float] = []
        self.smoothed: list[float] = []
        self.diverged: float | None = None
        self.reached = 0  # the sweep's steps so far (the index of the last loss read, plus one)
        self._best = math.inf

    def lr(self, i: int) -> float:
        """Step ``i``'s learning rate (held at ``end`` past the sweep's last step)."""
        i = min(max(0, i), self.num_iter - 1)
        return self.start * (self.end / self.start) ** (i / (self.num_iter - 1))

    @property
    def done(self) -> bool:
        return self.diverged is not None or self.reached >= self.num_iter

    def add(self, loss: float, index: int | None = None) -> bool:
        """The loss of step ``index`` (default: the step after the last one read), trained at :meth:`lr` of it;
        True when the sweep is over. A log that records the loss every k steps gives its steps' indices."""
        if self.done:
            return True
        i = self.reached if index is None else max(int(index), self.reached)
        self.reached = i + 1
        lr = self.lr(i)
        v = float(loss)
        self.lrs.append(lr)
        self.raw.append(v)
        if not math.isfinite(v):
            self.diverged = lr
            return True
        s = v if not self.smoothed else self.smooth_f * v + (1 - self.smooth_f) * self.smoothed[-1]
        self.smoothed.append(s)
        self._best = min(self._best, s)
        first = self.smoothed[0]
        if s > self.diverge_th * self._best or (self.back_to_start and 0 < self._best < 0.9 * first and s > first):
            self.diverged = lr
        return self.done

    def result(self, optimizer: str = "", *, skip_start: int = 10, skip_end: int = 5,
               min_fall: float = 0.1) -> LRRange:
        """What the sweep found. No LR is suggested unless the smoothed loss fell by at least ``min_fall``
        (10 %) somewhere in it: on a flat sweep the steepest point is noise."""
        sm = self.smoothed
        fin = len(sm)
        suggested = min_lr = None
        if fin and min(sm) < (1 - min_fall) * sm[0]:
            j = min(range(fin), key=lambda k: sm[k])
            min_lr = self.lrs[j]
            # the steepest descent *before* the minimum: past it the loss is diverging, and a dip while
            # it diverges must not be read as learning
            lo, hi = min(skip_start, max(0, j - 3)), min(fin - skip_end, j + 1)
            if hi - lo >= 3:
                grad = np.gradient(np.asarray(sm[lo:hi]))
                suggested = self.lrs[lo + int(np.argmin(grad))]
        return LRRange(self.lrs[:fin], self.raw[:fin], list(sm), suggested, min_lr, self.diverged, optimizer)


ENV = "TRAINDOCTOR_LR_SWEEP"  # "START:END:NUM_ITER:GIVEN": `traindoctor run` sweeps the script's LR (tune's probe)


def install(sweep: RangeSweep, given: float, step_of: Any = None) -> Any:
    """Sweep the learning rate of the training in this process: before every ``torch.optim`` optimizer step
    (PyTorch's global step pre-hook), each param group's LR is set to the sweep's for the step, keeping the
    groups' ratios to ``given`` (the LR the training was given: a head trained at 10× stays at 10×).
    ``step_of()`` gives the step's index; None: the hook counts the steps of the first optimizer it sees.
    Returns the hook's handle (``.remove()`` ends the sweep)."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    bases: list[tuple[dict[str, Any], float]] = []
    seen: set[int] = set()
    count = {"first": None, "n": 0}

    def set_lr(optimizer: Any, args: Any, kwargs: Any) -> None:
        for g in optimizer.param_groups:
            if id(g) not in seen:
                seen.add(id(g))
                lr0 = g.get("initial_lr", g.get("lr"))
                try:
                    ratio = float(lr0) / float(given)
                except (TypeError, ValueError, ZeroDivisionError):
                    ratio = 1.0
                bases.append((g, ratio if math.isfinite(ratio) and ratio > 0 else 1.0))
        if step_of is not None:
            i = int(step_of())
        else:
            if count["first"] is None:
                count["first"] = id(optimizer)
            i = count["n"]
            if id(optimizer) == count["first"]:
                count["n"] += 1
        target = sweep.lr(i)
        for g, ratio in bases:
            if any(g is q for q in optimizer.param_groups):
                g["lr"] = target * ratio

    return register_optimizer_step_pre_hook(set_lr)


def from_env(value: str | None) -> tuple[RangeSweep, float] | None:
    """The sweep ``TRAINDOCTOR_LR_SWEEP`` asks for, or None (unset or unreadable: the run is not changed)."""
    if not value:
        return None
    try:
        start, end, n, given = value.split(":")
        return RangeSweep(float(start), float(end), int(n)), float(given)
    except ValueError:
        return None
