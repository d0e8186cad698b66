"""Healing: treating a failing run while it trains (``Doctor(model, optimizer, heal=True)``).

``snapshot.py`` keeps the last good states to roll back to, ``treatments.py`` holds what can be done for
each cause, and ``healer.py`` decides, at the step a symptom appears, which cause leads and what to do.
It sits beside ``watch/``: it acts on the user's objects, which watching never does.
"""
from __future__ import annotations

from .healer import Healer, HealPolicy
from .snapshot import SnapshotStore, TrainingState

__all__ = ["HealPolicy", "Healer", "SnapshotStore", "TrainingState"]
