"""Findings: a symptom code seen on a run, with the step range and the numbers behind it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "error")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def clean(value: Any) -> Any:
    """Make evidence JSON-safe: numpy scalars to Python, NaN/Inf to strings ("nan", "inf", "-inf")."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(f"{value:.6g}")
    return value


@dataclass
class Finding:
    """One symptom: evidence plus a verdict, never a bare "something is wrong".

    ``causes`` lists ``(cause_id, weight)``: how strongly *this* finding, with its context,
    points at each cause. The diagnosis combines the weights of all findings.
    """

    code: str
    name: str
    severity: str
    step: int | None
    step_end: int | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    causes: list[tuple[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity,
            "step": self.step,
            "step_end": self.step_end,
            "message": self.message,
            "evidence": clean(self.evidence),
            "causes": [{"id": c, "confidence": round(float(w), 3)} for c, w in self.causes],
        }
