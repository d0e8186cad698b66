"""How sure to be of a cause: a small model fitted on the clinic's development half.

A candidate cause is supported by findings, each pointing at it with the weight its rule gave from
the run's context; ``w_code`` is the strongest weight of one symptom code. The confidence is one of
two explainable forms, whichever did better in leave-one-task-out cross-validation on the
clinic's development half (``python -m benchmarks.clinic calibrate --split dev``):

* ``platt``: ``σ(a · logit(noisy-OR of the weights) + b)`` — the rules' own ranking, with the
  confidence calibrated by two numbers;
* ``per_code``: ``σ(b + Σ_code a_code · w_code)`` with every ``a_code ≥ 0`` (more evidence never
  lowers a cause): a symptom whose pointing is often wrong earns a smaller ``a``.

There is no per-cause bias, so the fit cannot learn the clinic's mix of faults as a prior. The
fitted numbers ship in ``calibration.json`` beside this module, with the cross-validation that
chose them; a cause reported at 0.7 should be right about 70 % of the time on runs the fit never
saw (the held-out half; the reliability table is in benchmarks/README.md). Without the file (or
with ``TRAINDOCTOR_CALIBRATION=off``) the confidence is the noisy-OR of the weights: independent
evidence adds up and never passes 1. :meth:`Model.explain` gives each term.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

FILE = "calibration.json"


def _noisy_or(support: list[tuple[float, str]]) -> float:
    return 1.0 - math.prod(1.0 - min(max(w, 0.0), 0.99) for w, _ in support)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


@dataclass
class Model:
    form: str = "noisy_or"  # "noisy_or" (unfitted), "platt" or "per_code"
    a: float = 1.0
    b: float = 0.0
    code_weight: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fitted(self) -> bool:
        return self.form != "noisy_or"

    @staticmethod
    def features(support: list[tuple[float, str]]) -> dict[str, float]:
        """Strongest weight per symptom code among the findings that point at one cause."""
        out: dict[str, float] = {}
        for w, code in support:
            if w > out.get(code, 0.0):
                out[code] = w
        return out

    def logit(self, cause_id: str, support: list[tuple[float, str]]) -> float:
        if self.form == "per_code":
            return self.b + sum(self.code_weight.get(k, 0.0) * v for k, v in self.features(support).items())
        p = min(max(_noisy_or(list((w, k) for k, w in self.features(support).items())), 1e-6), 1 - 1e-6)
        return self.a * math.log(p / (1 - p)) + self.b

    def confidence(self, cause_id: str, support: list[tuple[float, str]]) -> float:
        if not self.fitted:
            return _noisy_or(support)
        return _sigmoid(self.logit(cause_id, support))

    def explain(self, cause_id: str, support: list[tuple[float, str]]) -> list[tuple[str, float]]:
        """The terms of the logit, largest first: ("base", b), (code, a_code·w) … (noisy-OR: the weights)."""
        if self.form == "per_code":
            terms = [("base", self.b)] + [(k, self.code_weight.get(k, 0.0) * v)
                                          for k, v in self.features(support).items()]
            return sorted(terms, key=lambda t: -abs(t[1]))
        if self.form == "platt":
            p = min(max(_noisy_or(support), 1e-6), 1 - 1e-6)
            return [("a·logit(noisy-OR)", self.a * math.log(p / (1 - p))), ("base", self.b)]
        return [(code, w) for w, code in sorted(support, reverse=True)]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Model:
        form = d.get("form", "per_code")
        if form == "platt":
            return cls("platt", float(d["a"]), float(d["b"]), {}, dict(d.get("info") or {}))
        return cls("per_code", 1.0, float(d["intercept"]), {k: float(v) for k, v in d["code_weight"].items()},
                   dict(d.get("info") or {}))

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
