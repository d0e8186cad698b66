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

The cause a pruned trial is given is the differential diagnosis's, with what the study's other trials
show (:class:`StudyFacts`). A trial whose network learned nothing (L005, L007) next to trials that trained
the same model on the same data to their end cannot blame the data or the code: label noise, class
imbalance, the output activation, a double softmax or the wrong loss are ruled out. A trial at a higher
learning rate that trained rules out "learning rate too high" (one at a lower rate, "too low"); when every
trial that trained ran at a higher rate and none at this rate or below, "learning rate too low" is offered
even where the run's own step size (≥ 3e-4 of the weights' norm, an adaptive optimizer's usual pace) would
rule it out: the study's comparison is the stronger fact. The mirror case (every trial that trained ran at a
lower rate) supports "too high" where the finding names it (L007: units killed, the loss back at chance).
``study.steer`` moves the learning rate by these causes, so a wrong one
would send the search the wrong way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..calibration import Model
from ..diagnosis import check_rules, consequences, rank_causes
from ..findings import Finding
from ..run import Run

AT_ONCE = frozenset({"L001", "G003", "L008"})
CONFIRMED = frozenset({"L002", "L004", "L005", "L007", "A001"})
PRUNE_CODES = AT_ONCE | CONFIRMED
NO_LEARNING = frozenset({"L005", "L007"})  # the network learned nothing: the study's other trials say why
# causes in the data or the training code, the same in every trial of a study: a trial that trained to its end
# with them shows they do not stop this model learning this data
DATA_CAUSES = ("label-noise", "class-imbalance", "wrong-output-activation", "double-softmax", "wrong-loss-function")


@dataclass(frozen=True)
class Sibling:
    """Another trial of the study that trained to its end (completed, finite value; the doctor did not prune
    it): its number, its learning rate (None: none searched) and its value."""

    number: int
    lr: float | None
    value: float


@dataclass
class StudyFacts:
    """What the study's other trials show about this one's sickness: ``siblings`` trained the same model on
    the same data (another stage's subsample or length included: a short training that learned shows the
    data can be learned); ``lr`` is this trial's learning rate, ``lr_name`` its parameter's name."""

    siblings: list[Sibling]
    lr: float | None = None
    lr_name: str = "lr"

    def judge(self, code: str) -> tuple[dict[str, str], dict[str, str]]:
        """(causes ruled out, causes supported), each with the fact, for a finding of ``code``."""
        out: dict[str, str] = {}
        support: dict[str, str] = {}
        if code not in NO_LEARNING or not self.siblings:
            return out, support
        best = min(self.siblings, key=lambda s: (s.value, s.number))
        for c in DATA_CAUSES:
            out[c] = f"trial #{best.number} learned the same data with the same model ({best.value:.4g})"
        lr = self.lr
        if lr is None or not math.isfinite(lr) or lr <= 0:
            return out, support
        with_lr = [s for s in self.siblings if s.lr is not None and math.isfinite(s.lr) and s.lr > 0]
        higher = [s for s in with_lr if s.lr > lr]  # type: ignore[operator]
        lower = [s for s in with_lr if s.lr < lr]  # type: ignore[operator]
        same = [s for s in with_lr if s.lr == lr]
        n = self.lr_name
        if higher:
            h = min(higher, key=lambda s: (s.lr, s.number))
            out["lr-too-high"] = f"trial #{h.number} at a higher {n} ({h.lr:.3g}) trained"
            if not lower and not same:
                support["lr-too-low"] = (f"trials at {n} ≥ {h.lr:.3g} trained (#{h.number}"
                                         f"{f' and {len(higher) - 1} more' if len(higher) > 1 else ''}), none at "
                                         f"{lr:.3g} or below")
        if lower:
            low = max(lower, key=lambda s: (s.lr, -s.number))
            out["lr-too-low"] = f"trial #{low.number} at a lower {n} ({low.lr:.3g}) trained"
            if not higher and not same:  # the units this rate killed, the chance level it fell back to
                support["lr-too-high"] = (f"trials at {n} ≤ {low.lr:.3g} trained (#{low.number}"
                                          f"{f' and {len(lower) - 1} more' if len(lower) > 1 else ''}), none at "
                                          f"{lr:.3g} or above")
        return out, support


@dataclass
class Verdict:
    """Why a trial was pruned: the finding that decided it, and the others seen with it."""

    code: str
    name: str
    step: int | None
    message: str
    others: list[str] = field(default_factory=list)
    cause: str | None = None
    study: list[str] = field(default_factory=list)  # what the study's other trials showed about the cause

    def reason(self) -> str:
        cause = f" → {self.cause}" if self.cause else ""
        at = f" at step {self.step}" if self.step is not None else ""
        said = f" ({'; '.join(self.study)})" if self.study else ""
        return f"{self.code} {self.name}{at}{cause}{said}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "step": self.step, "message": self.message,
                "others": self.others, "cause": self.cause, "study": self.study}


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

    def __init__(self, only_nonfinite: bool = False, study: StudyFacts | None = None) -> None:
        self._first: dict[str, int] = {}  # code -> the run's length when it was first seen (and ever since)
        self._codes = AT_ONCE if only_nonfinite else PRUNE_CODES
        self.study = study

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
        cause, said = leading_cause(first, found, run, self.study)
        return Verdict(first.code, first.name, first.step, first.message, sorted(codes - {first.code}), cause, said)


def leading_cause(first: Finding, found: list[Finding], run: Run,
                  study: StudyFacts | None = None) -> tuple[str | None, list[str]]:
    """The cause the differential diagnosis ranks first among those ``first`` points at, and the study's facts
    that decided it. The causes the run's own facts rule out (:func:`~traindoctor.diagnosis.rank_causes`) are not
    named (a flat loss at a learning rate whose steps move the weights by 1e-2 of their norm is not "learning
    rate too low"), nor those the study's other trials rule out (:meth:`StudyFacts.judge`); a cause the study
    supports is ranked by the finding's own weight for it even when the run's facts alone ruled it out."""
    scored, _ = rank_causes(found, run)
    mine = {c: w for c, w in first.causes if w > 0}
    out, support = study.judge(first.code) if study is not None else ({}, {})
    ranked = [(c.confidence, c.id) for c in scored if c.id in mine and c.id not in out]
    have = {cid for _, cid in ranked}
    readmit = [cid for cid in support if cid in mine and cid not in have]  # the run's facts alone ruled them out
    if readmit:
        model = Model.load()
        ranked += [(model.confidence(cid, [(min(mine[cid], 0.99), first.code)]), cid) for cid in readmit]
    if not ranked:
        return None, []
    ranked.sort(key=lambda t: (-t[0], t[1]))
    cause = ranked[0][1]
    said = [support[cause]] if cause in support else []
    alone = next((c.id for c in scored if c.id in mine), None)  # the run's own leading cause
    if alone is not None and alone in out:
        said.append(f"not {alone}: {out[alone]}")
    return cause, said
