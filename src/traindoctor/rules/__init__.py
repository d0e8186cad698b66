"""Rules: one small pure function per symptom code, over a Run, with no torch import.

Each rule carries its code, name, severity and its documentation in fixed sections (What it
does / Why is this bad? / Evidence / Example / Use instead / Known false positives), the way a
linter's rule does, so ``traindoctor explain CODE`` and docs/rules.md come from the rule itself.

A rule must survive any input: NaN/Inf values, empty or one-point series, missing metrics.
When it cannot judge, it returns no finding; ``not_judged`` in the diagnosis says why.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from ..catalogue import SYMPTOMS
from ..findings import Finding
from ..run import Run

Check = Callable[[Run], "list[Finding]"]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: str
    check: Check

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


def rule(code: str, severity: str) -> Callable[[Callable[[Run, Rule], list[Finding]]], Rule]:
    """Register ``fn(run, rule) -> findings`` as the rule for ``code`` (name from the catalogue)."""

    def wrap(fn: Callable[[Run, Rule], list[Finding]]) -> Rule:
        if code not in SYMPTOMS:
            raise KeyError(f"rule code {code} is not in the catalogue")
        if code in RULES:
            raise KeyError(f"rule {code} registered twice")
        holder: dict[str, Rule] = {}

        def check(run: Run) -> list[Finding]:
            return fn(run, holder["rule"])

        check.__doc__ = fn.__doc__
        check.__name__ = fn.__name__
        r = Rule(code, SYMPTOMS[code].name, severity, check)
        holder["rule"] = r
        RULES[code] = r
        return r

    return wrap


def all_rules() -> dict[str, Rule]:
    # Importing the modules registers their rules.
    from . import activations, data, generalization, gradients, loss, model, probes  # noqa: F401

    return dict(sorted(RULES.items()))
