"""Rules: one small pure function per symptom code, over a Run, with no torch import.

Each rule carries its code, name, severity and its documentation in fixed sections (What it
does / Why is this bad? / Evidence / Example / Use instead / Known false positives), the way a
linter's rule does, so ``traindoctor explain CODE`` and docs/rules.md come from the rule itself.

Each rule also declares the causes it may point at (``causes=``): registration checks them against
the catalogue, a finding that names an undeclared cause is refused, and the symptom → cause links
that ``explain`` and the docs show are read from these declarations, so they cannot drift from
what the rules do. A ``hazard`` rule reports a risk that may not have hurt this run (sigmoid into
``BCELoss``, raw inputs): the diagnosis says it as ``info`` unless another finding shows its
effect on the run.

A rule must survive any input: NaN/Inf values, empty or one-point series, missing metrics.
When it cannot judge, it returns no finding; ``not_judged`` in the diagnosis says why.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from ..catalogue import CAUSES, SYMPTOMS
from ..findings import Finding
from ..run import Run

Check = Callable[[Run], "list[Finding]"]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: str
    check: Check
    causes: tuple[str, ...] = ()
    hazard: bool = False

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.check.__doc__ or "")

    def finding(
        self,
        *,
        step: int | None,
        step_end: int | None,
        message: str,
        evidence: dict | None = None,
        causes: list[tuple[str, float]] | None = None,
        severity: str | None = None,
    ) -> Finding:
        undeclared = [c for c, _ in causes or [] if c not in self.causes]
        if undeclared:
            raise ValueError(f"rule {self.code} names causes it does not declare: {', '.join(undeclared)}")
        return Finding(
            code=self.code,
            name=self.name,
            severity=severity or self.severity,
            step=None if step is None else int(step),
            step_end=None if step_end is None else int(step_end),
            message=message,
            evidence=evidence or {},
            causes=causes or [],
        )


RULES: dict[str, Rule] = {}


def rule(
    code: str, severity: str, *, causes: tuple[str, ...], hazard: bool = False
) -> Callable[[Callable[[Run, Rule], list[Finding]]], Rule]:
    """Register ``fn(run, rule) -> findings`` as the rule for ``code`` (name from the catalogue),
    pointing at no cause outside ``causes``."""

    def wrap(fn: Callable[[Run, Rule], list[Finding]]) -> Rule:
        if code not in SYMPTOMS:
            raise KeyError(f"rule code {code} is not in the catalogue")
        unknown = [c for c in causes if c not in CAUSES]
        if unknown:
            raise KeyError(f"rule {code} declares unknown cause ids: {', '.join(unknown)}")
        if code in RULES:
            raise KeyError(f"rule {code} registered twice")
        if severity not in ("info", "warning", "error"):
            raise ValueError(f"rule {code}: severity must be info, warning or error, not {severity!r}")
        holder: dict[str, Rule] = {}

        def check(run: Run) -> list[Finding]:
            return fn(run, holder["rule"])

        check.__doc__ = fn.__doc__
        check.__name__ = fn.__name__
        r = Rule(code, SYMPTOMS[code].name, severity, check, tuple(causes), hazard)
        holder["rule"] = r
        RULES[code] = r
        return r

    return wrap


def causes_of(code: str) -> tuple[str, ...]:
    """The causes the rule for ``code`` may point at (empty for a code no rule detects)."""
    r = all_rules().get(code)
    return r.causes if r is not None else ()


def symptoms_of(cause_id: str) -> list[str]:
    """The symptom codes whose rules may point at ``cause_id``, in code order."""
    return [code for code, r in all_rules().items() if cause_id in r.causes]


def all_rules() -> dict[str, Rule]:
    # Importing the modules registers their rules.
    from . import activations, data, generalization, gradients, loss, model, probes, ranks  # noqa: F401

    return dict(sorted(RULES.items()))
