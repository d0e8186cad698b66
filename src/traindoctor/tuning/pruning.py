"""The doctor as a pruner: a trial whose run shows a sickness is stopped at once, with its diagnosis.

Plain Optuna prunes a trial when its intermediate metric is worse than the others' (MedianPruner): it
must wait for a metric, and it cannot tell a trial that is slow from one that is broken. The doctor
reads the trial's own run (the loss at every step, gradients, activations) with the same rules as a
diagnosis and stops a trial that is *sick*:

========  ==========================  =====================================================
code      symptom                     when it prunes
========  ==========================  =====================================================
L001      non-finite loss             at once
G003      non-finite gradients        at once
L008      saturated loss (87.34 …)    at once
L002      divergence                  still seen 10 steps (or 5 % of the run) later
L004      oscillation                 still seen 10 steps (or 5 % of the run) later
L005      no progress                 still seen 10 steps (or 5 % of the run) later
L007      stuck at chance             still seen 10 steps (or 5 % of the run) later
A001      dead ReLUs                  ≥ 90 % of a module's units, held as long
========  ==========================  =====================================================

Dead units prune only when nearly all of a module is dead: with half of them dead (where the rule's
finding starts) a network still learns with the rest, and how well is for Optuna's pruner to judge on
the metric. A final re-run (a top-k set measured over seeds) is pruned only when its loss or gradients
go non-finite: its number cannot be computed then. A trial that ends before a finding was confirmed (a short one) is judged once more on its whole run, where one
sighting decides: a sick run's finite metric is not a result. A finding only prunes at severity warning or error (a hazard that did not hurt the run is info and
never prunes), after the same severity-from-consequences pass the diagnosis makes. The rules are the
diagnosis's, run on the run so far (:func:`~traindoctor.diagnosis.check_rules` restricted to these
codes), so a rule that cannot judge a short run yet says nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diagnosis import check_rules, consequences, rank_causes
from ..findings import Finding
from ..run import Run

AT_ONCE = frozenset({"L001", "G003", "L008"})
CONFIRMED = frozenset({"L002", "L004", "L005", "L007", "A001"})
PRUNE_CODES = AT_ONCE | CONFIRMED


@dataclass
class Verdict:
    """Why a trial was pruned: the finding that decided it, and the others seen with it."""

    code: str
    name: str
    step: int | None
    message: str
    others: list[str] = field(default_factory=list)
    cause: str | None = None

    def reason(self) -> str:
        cause = f" → {self.cause}" if self.cause else ""
        at = f" at step {self.step}" if self.step is not None else ""
        return f"{self.code} {self.name}{at}{cause}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "step": self.step, "message": self.message,
                "others": self.others, "cause": self.cause}


def sick_findings(run: Run) -> list[Finding]:
    """The findings among :data:`PRUNE_CODES` at warning or error on ``run`` (the run so far)."""
    findings, _ = check_rules(run, only=lambda code: code in PRUNE_CODES)
    consequences(findings)
    return [f for f in findings if f.severity in ("warning", "error")]


def confirm_after(steps: int) -> int:
    """Steps a finding must hold before it prunes: 10, or 5 % of the run so far when that is more."""
    return max(10, int(0.05 * steps))


DEAD_BEYOND = 0.9  # A001 prunes when at least this share of a module's units is dead


def _decides(f: Finding) -> bool:
    if f.code != "A001":
        return True
    frac = f.evidence.get("dead_fraction") if isinstance(f.evidence, dict) else None
    return isinstance(frac, (int, float)) and frac >= DEAD_BEYOND


class SickWatch:
    """Judges a trial at each check: :meth:`check` returns a :class:`Verdict` once the trial is sick.
    ``only_nonfinite``: a final re-run, pruned only when its numbers go non-finite."""

    def __init__(self, only_nonfinite: bool = False) -> None:
        self._first: dict[str, int] = {}  # code -> the run's length when it was first seen (and ever since)
        self._codes = AT_ONCE if only_nonfinite else PRUNE_CODES

    def check(self, run: Run, *, finished: bool = False) -> Verdict | None:
        """``finished``: the trial's whole run, its training over: a finding needs no second sighting then
        (the rule saw all the evidence there will be). Otherwise a confirmed-kind finding decides when it is
        still there :func:`confirm_after` steps after it was first seen: two sightings in steps, not in checks,
        so how often the run is checked (a fast machine, a slow trial) does not change what is pruned."""
        found = [f for f in sick_findings(run) if f.code in self._codes and _decides(f)]
        codes = {f.code for f in found}
        now = run.num_steps
        self._first = {c: self._first.get(c, now) for c in codes}
        decide = [f for f in found if f.code in AT_ONCE or (f.code in CONFIRMED and (
            finished or now - self._first[f.code] >= confirm_after(now)))]
        if not decide:
            return None
        first = min(decide, key=lambda f: (f.code not in AT_ONCE, f.step if f.step is not None else 1 << 62))
        return Verdict(first.code, first.name, first.step, first.message,
                       sorted(codes - {first.code}), leading_cause(first, found, run))


def leading_cause(first: Finding, found: list[Finding], run: Run) -> str | None:
    """The cause the differential diagnosis ranks first among those ``first`` points at: the causes the run's
    own facts rule out (:func:`~traindoctor.diagnosis.rank_causes`) are not named. A flat loss at a learning
    rate whose steps move the weights by 1e-2 of their norm is not "learning rate too low": the tuner steers the
    learning rate by this cause (``study.steer``), so a wrong one would send the search the wrong way."""
    scored, _ = rank_causes(found, run)
    mine = {c for c, w in first.causes if w > 0}
    for c in scored:
        if c.id in mine:
            return c.id
    return None
