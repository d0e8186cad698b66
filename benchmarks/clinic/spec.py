"""One clinic run, fully described: the task, the seed, the hyperparameters and the fault.

A :class:`Spec` determines its training script exactly (``render.render(spec)``), so the hash of
the script is the run's identity in the cache. Hyperparameters (``hp``) and the fault's concrete
settings (``knobs``) are plain JSON values.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Spec:
    task: str
    seed: int
    hp: dict[str, Any]
    fault: str | None = None
    severity: float | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # id of the healthy twin this faulty run was derived from
    tags: tuple[str, ...] = ()  # e.g. "hard-negative:deep-tanh"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"] = list(self.tags)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Spec:
        d = dict(d)
        d["tags"] = tuple(d.get("tags") or ())
        return cls(**d)

    @property
    def id(self) -> str:
        """Stable id from what determines the run (not its split or tags)."""
        key = {"task": self.task, "seed": self.seed, "hp": self.hp, "fault": self.fault, "knobs": self.knobs}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def healthy(self) -> bool:
        return self.fault is None

    def k(self, name: str, default: Any = None) -> Any:
        """A fault knob (what the operator changed), or ``default``."""
        return self.knobs.get(name, default)
