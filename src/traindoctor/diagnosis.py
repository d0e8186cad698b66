"""Findings → a differential diagnosis: ranked root causes with confidence, evidence and fixes,
and the causes the run's own facts rule out.

Each finding says how strongly it points at each cause (its ``causes`` weights, set by the rule
from the run's context: a NaN loss at step 0 with NaN inputs points at the data, a NaN loss after
the gradient norm grew 10^4× points at the learning rate). Each cause (:mod:`.causes`) says which
measured facts contradict it; the remaining candidates get a confidence from a model fitted on the
clinic's development half (:mod:`.calibration`). Fixes come from the cause, made concrete with the
run's own numbers (the learning rate it used, the step to roll back to) where the run tells them.
"""
from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .calibration import Model
from .causes.facts import SQUASH_MODULES, Facts
from .events import Crash, DoctorError, Exit, HealStopped, Interrupted, NotJudged, Treatment
from .findings import Finding, clean, severity_rank
from .run import Run

SCHEMA = "traindoctor/1"


@dataclass
class CauseScore:
    id: str
    title: str
    confidence: float
    evidence: list[str]
    chain: list[str]
    fixes: list[str]
    summary: str = ""
    support: dict[str, float] = field(default_factory=dict)  # code → strongest weight it gave this cause
    # what replaying a fix for this cause showed (``heal/verify.py``): a line per fix tried
    verification: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "title": self.title,
            "confidence": round(self.confidence, 3),
            "support": {k: round(v, 3) for k, v in self.support.items()},
            "evidence": self.evidence,
            "chain": self.chain,
            "summary": self.summary,
            "fixes": self.fixes,
        }
        if self.verification:
            out["verification"] = self.verification
        return out


@dataclass
class RuledOut:
    """A cause some finding pointed at that the run's own facts contradict."""

    id: str
    title: str
    reasons: list[str]
    evidence: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "reasons": self.reasons, "evidence": self.evidence}


@dataclass
class Diagnosis:
    findings: list[Finding]
    causes: list[CauseScore]
    not_judged: list[NotJudged] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    ruled_out: list[RuledOut] = field(default_factory=list)
    # how a watched script ended early ("the script crashed at step 12: ValueError: ...", "the script was
    # interrupted at step 5 (KeyboardInterrupt)", "the script exited with code 3 at step 9"); None when
    # it ran to its end
    ended: str | None = None
    # what healing did (``treatment`` events, in order) and, when it gave up, why
    treatments: list[Treatment] = field(default_factory=list)
    heal_stopped: HealStopped | None = None

    @property
    def judged(self) -> bool:
        """Whether the run held enough to judge it: no finding on a log too thin to judge trends
        (or with no finite loss), or on a run that crashed or was stopped, is "not judged", never
        "healthy"."""
        return bool(self.findings) or (self.ended is None and not any(n.scope == "loss" for n in self.not_judged))

    @property
    def healthy(self) -> bool:
        return not self.findings and self.judged

    @property
    def verdict(self) -> str:
        """``healthy``, ``not judged``, or the worst severity found (``info``/``warning``/``error``)."""
        if self.findings:
            return str(self.worst_severity)
        return "healthy" if self.judged else "not judged"

    @property
    def worst_severity(self) -> str | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=severity_rank)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "healthy": self.healthy,
            "ended": self.ended,
            "findings": [f.to_json() for f in self.findings],
            "causes": [c.to_json() for c in self.causes],
            "ruled_out": [r.to_json() for r in self.ruled_out],
            "not_judged": [str(n) for n in self.not_judged],
            "not_judged_detail": [n.to_json() for n in self.not_judged],
            "notes": self.notes,
            "treatments": [clean({"step": t.step, **t.to_json()}) for t in self.treatments],
            "heal_stopped": clean({"step": self.heal_stopped.step, **self.heal_stopped.to_json()})
            if self.heal_stopped is not None else None,
            "source": clean(self.source),
        }


# a cause whose fixes were all replayed and none helped keeps this share of its confidence
NOT_HELPED = 0.5


def verified(causes: list[CauseScore], treatments: list[Treatment]) -> list[CauseScore]:
    """The differential updated by its tested hypotheses: a fix verified on a replay (``--verify``)
    is said next to its cause; a cause every one of whose tried fixes did not help keeps half its
    confidence, and the causes are ranked again. Replays that did not reproduce the symptom say nothing."""
    tried: dict[str, list[dict[str, Any]]] = {}
    for t in treatments:
        for v in (t.verified or {}).get("tried") or []:
            if isinstance(v, dict) and isinstance(v.get("cause"), str):
                tried.setdefault(v["cause"], []).append(v)
    if not tried:
        return causes
    for c in causes:
        vs = tried.get(c.id, [])
        c.verification = [str(v.get("summary", "")) for v in vs if v.get("result") in ("verified", "did not help")]
        results = {v.get("result") for v in vs}
        if vs and results == {"did not help"}:
            c.confidence *= NOT_HELPED
    return sorted(causes, key=lambda c: -c.confidence)


def rank_causes(findings: list[Finding], run: Run, facts: Facts | None = None,
                model: Model | None = None) -> tuple[list[CauseScore], list[RuledOut]]:
    """Findings → the differential: causes ranked by confidence, and those the run's facts rule out.

    Each finding says how strongly it points at each cause (its ``causes`` weights, set by the rule
    from the run's context). A cause is a candidate when some finding points at it; its own
    ``against(facts)`` may rule it out with measured facts of this run, and then it is not offered
    but listed with the reasons. The confidence of the others comes from the calibrated model
    (:mod:`.calibration`, fitted on the clinic's development half); without it, from the noisy-OR of
    the weights, so independent evidence adds up but never passes 1.
    """
    from .causes import all_causes

    causes = all_causes()
    facts = facts or Facts(run, findings)
    model = model if model is not None else Model.load()
    weights: dict[str, list[tuple[float, Finding]]] = {}
    for f in findings:
        for cid, w in f.causes:
            if cid not in causes:
                raise KeyError(f"finding {f.code} names unknown cause id {cid!r}")
            w = min(max(float(w), 0.0), 0.99)
            if w > 0:
                weights.setdefault(cid, []).append((w, f))
    scored: list[CauseScore] = []
    ruled: list[RuledOut] = []
    for cid, ws in weights.items():
        cause = causes[cid]
        ws_sorted = sorted(ws, key=lambda t: -t[0])
        codes: list[str] = []
        for _, f in ws_sorted:
            if f.code not in codes:
                codes.append(f.code)
        reasons = cause.against(facts)
        if reasons:
            ruled.append(RuledOut(cid, cause.title, reasons, codes))
            continue
        support = [(w, f.code) for w, f in ws]
        conf = model.confidence(cid, support)
        chain = [f"{f.code} {f.message}" for _, f in ws_sorted]
        # the evidence chain in one line, in the order things happened
        seen: list[Finding] = []
        for _, f in sorted(ws_sorted, key=lambda t: (t[1].step if t[1].step is not None else -1)):
            if f not in seen:
                seen.append(f)
        summary = "; ".join(f.message.split("; ")[0] for f in seen[:4])
        summary += f" → {cause.title} ({conf:.2f})"
        scored.append(CauseScore(cid, cause.title, conf, codes, chain, cause.all_fixes(facts), summary,
                                 Model.features(support)))
    scored.sort(key=lambda c: (-c.confidence, c.id))
    ruled.sort(key=lambda r: r.id)
    return scored, ruled


def consequences(findings: list[Finding]) -> None:
    """Severity from consequences: a hazard (a risk found in the set-up or the data) that no other
    finding shows hurting this run is said as info; it stays a warning when the run shows its effect
    (another warning or error pointing at the same cause)."""
    from .rules import all_rules

    rules = all_rules()
    for f in findings:
        r = rules.get(f.code)
        if r is None or not r.hazard or f.severity == "info":
            continue
        mine = {c for c, w in f.causes if w > 0}
        harm = [g for g in findings if g is not f and g.severity != "info" and not getattr(rules.get(g.code), "hazard", True)
                and mine & {c for c, w in g.causes if w > 0}]
        if not harm:
            f.severity = "info"
            f.evidence.setdefault("effect", "no other finding shows it hurting this run")


def check_rules(run: Run, only: Callable[[str], bool] = lambda code: True) -> tuple[list[Finding], list[str]]:
    """Run the rules whose code ``only`` accepts (every rule by default); a rule that fails is contained
    and said in the second list, never fatal."""
    from .rules import all_rules

    findings: list[Finding] = []
    internal: list[str] = []
    for code, r in all_rules().items():
        if not only(code):
            continue
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                findings.extend(r.check(run))
        except Exception as exc:  # noqa: BLE001 - a broken rule must not hide the others
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            internal.append(f"rule {code} failed ({type(exc).__name__}: {exc} at {tb.filename}:{tb.lineno})")
    return findings, internal


def evaluate(run: Run) -> tuple[list[Finding], list[str]]:
    """Run every rule; a rule that fails is contained and reported, never fatal."""
    findings, internal = check_rules(run)
    consequences(findings)
    findings.sort(key=lambda f: (-severity_rank(f.severity), f.step if f.step is not None else 1 << 62, f.code))
    return findings, internal


def not_judged(run: Run, facts: Facts | None = None) -> list[NotJudged]:
    """What the run lacks for some rules to judge, and the checks that were blind: said plainly
    rather than guessed."""
    out = []
    loss = run.get("loss")
    if loss is None:
        out.append(NotJudged("loss", "no training loss series: the loss-curve rules (L) could not judge"))
    elif len(loss.finite()) == 0:
        n = len(loss)
        out.append(NotJudged("loss", f"the training loss is never finite ({n} point{'s' if n != 1 else ''}, all NaN/Inf): "
                                     "only L001 could judge it; trends, plateaus and spikes could not be judged"))
    elif len(loss.finite()) < 20:
        k = len(loss.finite())
        out.append(NotJudged("loss", f"only {k} finite loss point{'s' if k != 1 else ''}: too few to judge trends (need 20)"))
    if run.get("val_loss") is None and run.get("val_accuracy") is None:
        out.append(NotJudged("validation", "no validation metric (val_loss or val_accuracy): the train/validation rules "
                                           "(V) could not judge"))
    for name in ("val_loss", "val_accuracy", "accuracy", "grad_norm"):
        s = run.get(name)
        if s is not None and len(s.finite()) < 2:
            what = "no finite value" if len(s.finite()) == 0 else "a single finite point"
            out.append(NotJudged("metric", f"{name} has {what} ({len(s)} logged): the rules reading it could not judge"))
    if run.get("grad_norm") is None:
        out.append(NotJudged("gradients", "no gradient norms: G001 could not judge"))
    meta = run.info
    if meta.optimizers_stepping is not None and meta.optimizers_stepping >= 2:
        out.append(NotJudged("players", f"{meta.optimizers_stepping} optimizers step in turn (a GAN or another game): the "
                                        "logged loss mixes the players, so the progress rules (L005, L006, L007, V006) "
                                        "do not judge it"))
    if run.meta.get("num_classes") is None and run.meta.get("loss_kind") is None:
        out.append(NotJudged("loss_kind", "loss kind and class count unknown: L007 and L009 compare against ln(C) only "
                                          "when known"))
    f = facts or Facts(run, [])
    if f.traced and f.has_relu and not f.relu_hooked:
        out.append(NotJudged("activations", "the ReLUs are applied as functions (torch.relu, F.relu), not modules: dead "
                                            "units (A001) were not measured"))
    if f.traced and f.has_squash and not (f.module_types & SQUASH_MODULES) and not run.names("saturated_frac"):
        out.append(NotJudged("activations", "sigmoid/tanh are applied as functions, not modules: saturation (A002) was "
                                            "not measured"))
    return out


# how strongly a symptom the healer treated points at the cause it treated: as a rule's catastrophic
# evidence when a replay verified the fix, as a rule's usual weight when it rests on the healer's reading
HEALED_VERIFIED, HEALED = 0.85, 0.6


def healed(findings: list[Finding], treatments: list[Treatment]) -> list[Finding]:
    """Symptoms the healer treated before they could show in the record (a roll-back undoes what the
    rules would have read), as findings: the first treatment of each code no rule found, pointing at the
    cause it treated. A run healed at its first steps still names its disease."""
    from .rules import all_rules

    rules = all_rules()
    have = {f.code for f in findings}
    out: list[Finding] = []
    for t in treatments:
        if not t.code or t.code in have or t.code not in rules or not t.cause or t.source == "restore_best":
            continue
        have.add(t.code)
        ok = (t.verified or {}).get("result") == "verified"
        src = (t.source or "").removeprefix("evidence: ")
        msg = f"treated at step {t.step} ({t.action})" + (f": {src}" if src and src != "diagnosis" else "")
        out.append(Finding(t.code, rules[t.code].name, "warning", t.step, t.step, msg,
                           {"treatment_step": t.step, "healed": True, "verified": ok},
                           [(t.cause, HEALED_VERIFIED if ok else HEALED)]))
    return out


def diagnose(run: Run) -> Diagnosis:
    from .rules._signals import per_element

    run = per_element(run)
    findings, internal = evaluate(run)
    treatments = run.facts(Treatment)
    findings += healed(findings, treatments)
    facts = Facts(run, findings)
    with np.errstate(all="ignore"):  # fixes computed from extreme values (1e308 norms) overflow harmlessly
        try:
            causes, ruled = rank_causes(findings, run, facts)
        except Exception as exc:  # noqa: BLE001 - a broken cause must not hide the findings
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            internal.append(f"ranking causes failed ({type(exc).__name__}: {exc} at {tb.filename}:{tb.lineno})")
            causes, ruled = [], []
    causes = verified(causes, treatments)
    notes = list(run.meta.get("notes", []))
    notes += [f"internal error contained: {m}" for m in internal]
    for d in run.facts(DoctorError):
        notes.append(f"internal error contained at step {d.step}: {d.message}")
    crashes = run.facts(Crash)
    for c in crashes:
        notes.append(f"the script crashed at step {c.step}: {c.type}: {c.message}")
    source = {k: run.meta[k] for k in ("source", "format", "columns", "store") if k in run.meta}
    ended = None
    for i in run.facts(Interrupted):
        ended = f"the script was interrupted at step {i.step} ({i.type or 'KeyboardInterrupt'})"
        notes.append(ended)
    for x in run.facts(Exit):
        ended = f"the script exited with code {x.code} at step {x.step}"
        notes.append(ended)
    for c in crashes:
        ended = f"the script crashed at step {c.step}: {c.type}: {c.message}"
    stopped = run.facts(HealStopped)
    return Diagnosis(findings, causes, not_judged(run, facts), notes, source, ruled, ended,
                     treatments=treatments, heal_stopped=stopped[-1] if stopped else None)
