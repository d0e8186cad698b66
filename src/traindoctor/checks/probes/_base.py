"""What every registered probe is, what it receives, and how the checkup runs it.

A probe is a small object — a name, whether it runs by default, a cost in training steps and
``run(ctx)`` — so the CLI's choices, the help text and the budget all read the same list
(:data:`~traindoctor.checks.probes.REGISTRY`, found by scanning this package) instead of tuples that drift apart. :func:`run_probe` is the one place a
probe is started: inside :func:`~traindoctor.inspect.state.rolled_back` (weights, buffers,
grads, optimizer state and RNGs back bitwise afterwards), timed, shortened or skipped to keep
the checkup within its budget, with a progress line on stderr, and with a crash turned into a
report line instead of hiding the probes after it.
"""
from __future__ import annotations

import sys
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, ClassVar

from ...errors import TrainDoctorError
from ...numfmt import fmt

if TYPE_CHECKING:
    from ...inspect.batches import Batch
    from ...inspect.state import Snapshot
    from ._experiments import Pipeline


def one_line(s: str, n: int = 200) -> str:
    return " ".join(str(s).split())[:n]


@dataclass
class ProbeContext:
    """What a probe may use: the pipeline, the probe batches and where to record what it measures.

    ``scale`` (0 < scale ≤ 1) is the fraction of its full length the budget allows this probe;
    a probe shortens its step counts with :meth:`steps`.
    """

    pipe: Pipeline
    pbatches: list[Batch]
    clean: list[Batch]
    rec: Any  # checkup._Recorder
    snapshot: Snapshot
    opts: Any  # checkup.Options
    out_shape: tuple[int, ...] | None
    train_loader: Any
    scale: float = 1.0

    def steps(self, full: int, minimum: int) -> int:
        """``full`` shortened by the budget's scale, never below ``minimum`` (nor above ``full``)."""
        return full if self.scale >= 1.0 else max(min(minimum, full), min(full, round(full * self.scale)))


class Probe(ABC):
    """One active experiment. Subclasses set the class attributes and implement :meth:`run`.

    ``cost(ctx)`` is the probe's length at full size in training-step equivalents (a forward
    pass counts a third of a step); the budget divides the time left between the probes still to
    run in proportion to it. ``min_scale`` is the shortest fraction that still answers the
    probe's question: below it the probe is skipped for the budget rather than run uselessly
    short. ``scalable = False`` probes are never shortened (they were asked for explicitly).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    order: ClassVar[int]  # where the checkup runs it among the others (ascending)
    default: ClassVar[bool] = True
    scalable: ClassVar[bool] = True
    min_scale: ClassVar[float] = 0.1
    help: ClassVar[str] = ""

    def enabled(self, ctx: ProbeContext) -> bool:
        """Whether to run at all, given the options (opt-in probes look at what asked for them)."""
        return self.name in ctx.opts.probes

    @abstractmethod
    def cost(self, ctx: ProbeContext) -> float:
        """The probe's length at full size, in training-step equivalents."""

    @abstractmethod
    def run(self, ctx: ProbeContext) -> None:
        """Measure, and record events, curves and a report line through ``ctx.rec``."""


@dataclass
class Budget:
    """The checkup's time budget: the seconds allowed since ``t0`` and one training step's time."""

    seconds: float
    t0: float
    step_s: float = 0.0
    plan: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def scale_for(self, probe: Probe, ctx: ProbeContext, later: list[Probe]) -> tuple[float, str | None]:
        """This probe's share of the time left, as a fraction of its full length (1 = not shortened).

        The time left is split between this probe and the ones after it in proportion to their
        costs, so a step that turned out slower than measured is absorbed by the probes after it.
        A share below the probe's ``min_scale`` is raised to it when this probe's and the later
        probes' shortest useful lengths still fit; otherwise the probe is skipped, so an early
        probe does not starve the rest. Returns ``(scale, why)``; ``scale == 0`` means skip.
        """
        if self.step_s <= 0 or not probe.scalable:
            return 1.0, None
        need = probe.cost(ctx) * self.step_s
        rest = [p for p in later if p.scalable]
        total = need + sum(p.cost(ctx) for p in rest) * self.step_s
        left = self.left()
        if total <= left:
            return 1.0, None
        share = max(0.0, left) * need / total if total > 0 else 0.0
        scale = share / need if need > 0 else 1.0
        why = (f"one training step ≈ {fmt(self.step_s * 1e3)} ms; at full length ≈ {fmt(need)} s, "
               f"{fmt(max(0.0, left))} s of the {self.seconds:g} s budget left for this and {len(rest)} more")
        if scale < probe.min_scale:
            floor_rest = sum(p.min_scale * p.cost(ctx) for p in rest) * self.step_s
            if probe.min_scale * need + floor_rest <= left:
                return probe.min_scale, why
            return 0.0, why
        return scale, why


def progress(msg: str, file: IO[str] | None = None) -> None:
    """One short progress line on stderr (the report itself comes at the end)."""
    try:
        print(f"traindoctor checkup: {msg}", file=file or sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed or broken stderr must not fail the checkup
        pass


def run_probe(probe: Probe, ctx: ProbeContext, budget: Budget | None = None, later: list[Probe] | None = None) -> None:
    """Run one probe inside the bitwise roll-back, within the budget, with progress on stderr."""
    from ...inspect.state import rolled_back

    rec = ctx.rec
    scale, why = budget.scale_for(probe, ctx, later or []) if budget is not None else (1.0, None)
    if scale == 0.0:
        rec.line(f"budget: {probe.title}", f"skipped for the budget ({why})", None)
        rec.not_checked.append(f"{probe.title} skipped for the time budget (budget_s={budget.seconds:g}; "  # type: ignore[union-attr]
                               "a larger budget runs it)")
        progress(f"{probe.title}: skipped for the budget")
        return
    ctx.scale = scale
    if scale < 1.0:
        rec.line(f"budget: {probe.title}", f"shortened to {scale:.0%} of its length ({why})", None)
        rec.meta.setdefault("budget_shortened", []).append({"probe": probe.name, "scale": round(scale, 3)})
    progress(f"{probe.title}…" + (f" (shortened to {scale:.0%} for the budget)" if scale < 1.0 else ""))
    t = time.perf_counter()
    try:
        with rolled_back(ctx.snapshot, ctx.opts.seed):
            probe.run(ctx)
    except TrainDoctorError:
        raise
    except Exception as exc:  # noqa: BLE001 - one probe failing must not hide the others
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        rec.notes.append(f"probe {probe.title} failed and was skipped: {type(exc).__name__}: {one_line(str(exc), 160)} "
                         f"({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})")
        rec.line(probe.title, f"failed: {type(exc).__name__}: {one_line(str(exc), 100)}", None)
    finally:
        ctx.scale = 1.0
        progress(f"{probe.title} done in {time.perf_counter() - t:.1f} s")
