"""How sure to be of a cause: a small logistic model fitted on the clinic's development half.

A candidate cause is supported by findings, each pointing at it with the weight its rule gave
from the run's context. The confidence is

    P(cause | findings) = σ(b + b_cause + Σ_code a_code · w_code)

where ``w_code`` is the strongest weight any finding of that symptom code gave the cause (0 when
none did). ``a_code`` says how much a symptom's pointing is worth (a rule that often points the
wrong way earns a small ``a``), ``b_cause`` how common the cause is among runs with findings. The
coefficients are fitted by L2-regularised logistic regression on every (run, candidate cause) pair
of the clinic's development half — the true cause is 1, every other candidate 0 —
(``python -m benchmarks.clinic calibrate``) and stored in ``calibration.json`` beside this module,
so that a cause reported at 0.7 is right about 70 % of the time on runs the fit never saw (the
held-out half; the table is in benchmarks/README.md).

Without the file, the confidence is the noisy-OR of the weights: independent evidence adds up and
never passes 1. Everything stays explainable: :meth:`Model.explain` gives each term.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

FILE = "calibration.json"


@dataclass
class Model:
    intercept: float = 0.0
    cause_bias: dict[str, float] = field(default_factory=dict)
    code_weight: dict[str, float] = field(default_factory=dict)
    fitted: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def features(support: list[tuple[float, str]]) -> dict[str, float]:
        """Strongest weight per symptom code among the findings that point at one cause."""
        out: dict[str, float] = {}
        for w, code in support:
            if w > out.get(code, 0.0):
                out[code] = w
        return out

    def logit(self, cause_id: str, support: list[tuple[float, str]]) -> float:
        x = self.features(support)
        return self.intercept + self.cause_bias.get(cause_id, 0.0) + sum(
            self.code_weight.get(k, 0.0) * v for k, v in x.items())

    def confidence(self, cause_id: str, support: list[tuple[float, str]]) -> float:
        if not self.fitted:
            return 1.0 - math.prod(1.0 - min(max(w, 0.0), 0.99) for w, _ in support)
        z = self.logit(cause_id, support)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def explain(self, cause_id: str, support: list[tuple[float, str]]) -> list[tuple[str, float]]:
        """The terms of the logit, largest first: ("base", b), ("cause", b_cause), (code, a·w) …"""
        if not self.fitted:
            return [(code, w) for w, code in sorted(support, reverse=True)]
        x = self.features(support)
        terms = [("base", self.intercept), (f"cause {cause_id}", self.cause_bias.get(cause_id, 0.0))]
        terms += [(k, self.code_weight.get(k, 0.0) * v) for k, v in x.items()]
        return sorted(terms, key=lambda t: -abs(t[1]))

    def to_json(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "cause_bias": self.cause_bias, "code_weight": self.code_weight,
                "info": self.info}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Model:
        return cls(float(d["intercept"]), {k: float(v) for k, v in d["cause_bias"].items()},
                   {k: float(v) for k, v in d["code_weight"].items()}, True, dict(d.get("info") or {}))

    _cached: ClassVar[Model | None] = None

    @classmethod
    def load(cls) -> Model:
        """The fitted model shipped with the package (noisy-OR when there is none, or when
        ``TRAINDOCTOR_CALIBRATION=off``)."""
        if os.environ.get("TRAINDOCTOR_CALIBRATION", "").lower() == "off":
            return cls()
        if cls._cached is None:
            try:
                text = resources.files("traindoctor").joinpath(FILE).read_text(encoding="utf-8")
                cls._cached = cls.from_json(json.loads(text))
            except (FileNotFoundError, OSError, ValueError, KeyError):
                cls._cached = cls()
        return cls._cached
