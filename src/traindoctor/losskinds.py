"""The loss kinds the doctor tells apart, defined once and torch-free.

A source (the live trace, the loss's autograd node, the checkup's loss module) names the loss kind
of a run (``run.meta["loss_kind"]``); the rules and causes ask what family it belongs to and what a
constant prediction would score. Adding a loss kind means adding it here, and to the sources that
recognise it (watch/tensors.py for autograd nodes, watch/trace.py and checks/model.py for calls).
"""
from __future__ import annotations

import math

CLASSIFICATION = frozenset({"cross_entropy", "nll"})  # one label among C classes
BINARY = frozenset({"bce", "bce_logits"})  # one probability (or several independent ones) per output
REGRESSION = frozenset({"mse", "l1", "smooth_l1", "huber"})  # distances to continuous targets
CLASSES = CLASSIFICATION | BINARY

# how a kind is named to a user
NAMES = {"cross_entropy": "cross-entropy", "nll": "NLLLoss", "bce": "BCELoss", "bce_logits": "BCEWithLogitsLoss",
         "mse": "MSE", "l1": "L1", "smooth_l1": "SmoothL1", "huber": "Huber"}


def family(kind: object) -> str | None:
    """``"class"``, ``"binary"``, ``"regression"``, or None for a kind the doctor does not judge."""
    if kind in CLASSIFICATION:
        return "class"
    if kind in BINARY:
        return "binary"
    if kind in REGRESSION:
        return "regression"
    return None


def chance_loss(kind: object, num_classes: object) -> tuple[float, str] | None:
    """The loss of a constant, uninformed prediction and how to say it: ln C for cross-entropy over
    C classes, ln 2 for binary cross-entropy; None when the kind or class count does not tell it."""
    if kind in CLASSIFICATION and isinstance(num_classes, int) and not isinstance(num_classes, bool) \
            and num_classes >= 2:
        return math.log(num_classes), f"ln({num_classes})"
    if kind in BINARY:
        return math.log(2), "ln(2)"
    return None
