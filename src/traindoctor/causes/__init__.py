"""Root causes, each defined once: its fixes, the fixes made from the run's numbers, and the facts
of a run that rule it out.

A cause is a hypothesis. The rules say which causes their findings point at (``@rule(...,
causes=...)``); here each cause says what it would take to be wrong about it. ``against(facts)``
returns the measured facts of this run that contradict the cause — an LR schedule that decayed
rules out "LR never decays", a first step that fed log_softmax to nll_loss rules out a double
softmax, a balanced data profile rules out class imbalance — and a cause so contradicted is not
offered; the diagnosis lists it under "ruled out" with those words. A fact that was not measured
never rules anything out.

The vocabulary (ids and titles) is the catalogue's; the symptoms that support a cause are the
rules that declare it (:func:`traindoctor.rules.symptoms_of`); everything else about a cause lives
in its class here, one class per id::

    class LrTooHigh(Cause):
        id = "lr-too-high"
        fixes = ("lower LR ×0.1 …", "add warm-up", …)   # general advice, most effective first

        def concrete(self, f: Facts) -> list[str]:      # with this run's numbers
            ...

        def against(self, f: Facts) -> list[str]:       # this run's facts that rule it out
            ...
"""
from __future__ import annotations

import re
from typing import ClassVar

from ..catalogue import CAUSES as VOCABULARY
from .facts import Facts

REGISTRY: dict[str, Cause] = {}


class Cause:
    id: ClassVar[str]
    fixes: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        if cls.id not in VOCABULARY:
            raise KeyError(f"cause {cls.id!r} ({cls.__name__}) is not in the catalogue")
        if cls.id in REGISTRY:
            raise KeyError(f"cause {cls.id!r} defined twice ({type(REGISTRY[cls.id]).__name__}, {cls.__name__})")
        REGISTRY[cls.id] = cls()

    @property
    def title(self) -> str:
        return VOCABULARY[self.id].title

    def concrete(self, f: Facts) -> list[str]:
        """Fixes made from the run's own numbers and names, most effective first."""
        return []

    def against(self, f: Facts) -> list[str]:
        """The measured facts of this run that rule the cause out, in words (empty: not ruled out)."""
        return []

    def all_fixes(self, f: Facts) -> list[str]:
        """The concrete fixes, then the general advice a concrete fix does not already say."""
        out = list(self.concrete(f))
        for fix in self.fixes:
            words = _words(fix)
            first = fix.split(" ", 1)[0].lower()
            if not any(words & _words(o) or o.split(" ", 1)[0].lower() == first for o in out):
                out.append(fix)
        return out


_COMMON = {"learning", "rate", "model", "layer", "layers", "with", "when", "from", "that", "the", "than", "data",
           "more", "smaller", "larger", "each", "every", "them", "only", "once", "train", "training", "loss"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z_]{4,}", text.lower())} - _COMMON


def all_causes() -> dict[str, Cause]:
    # importing the modules defines the causes
    from . import data, learning, model  # noqa: F401

    return REGISTRY


def get(cause_id: str) -> Cause:
    return all_causes()[cause_id]


__all__ = ["Cause", "Facts", "REGISTRY", "all_causes", "get"]
