"""The loss kind of a loss module, a functional loss, a traced operation or an autograd node.

Each table maps what a source sees to a name of ``losskinds.py`` (the torch-free vocabulary); the
live monitor, the first-step trace and the checkup read a loss through these tables only.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import nn

# autograd nodes of the losses (what a graph read backwards from the loss meets first)
LOSS_NODES = {
    "NllLossBackward0": "nll",
    "NllLoss2DBackward0": "nll",
    "BinaryCrossEntropyBackward0": "bce",
    "BinaryCrossEntropyWithLogitsBackward0": "bce_logits",
    "MseLossBackward0": "mse",
    "L1LossBackward0": "l1",
    "SmoothL1LossBackward0": "smooth_l1",
    "HuberLossBackward0": "huber",
    "KlDivBackward0": "kl_div",
}

# traced operations (``torch.overrides`` names) of the losses
LOSS_OPS = {
    "cross_entropy": "cross_entropy", "nll_loss": "nll", "binary_cross_entropy": "bce",
    "binary_cross_entropy_with_logits": "bce_logits", "mse_loss": "mse", "l1_loss": "l1",
    "smooth_l1_loss": "smooth_l1", "huber_loss": "huber", "kl_div": "kl_div", "poisson_nll_loss": "poisson_nll",
    "gaussian_nll_loss": "gaussian_nll", "multilabel_soft_margin_loss": "multilabel_soft_margin",
}

MODULE_KINDS: dict[type, str] = {
    nn.CrossEntropyLoss: "cross_entropy",
    nn.NLLLoss: "nll",
    nn.BCELoss: "bce",
    nn.BCEWithLogitsLoss: "bce_logits",
    nn.MSELoss: "mse",
    nn.L1Loss: "l1",
    nn.SmoothL1Loss: "smooth_l1",
    nn.HuberLoss: "huber",
    nn.KLDivLoss: "kl_div",
}
FUNCTION_KINDS: dict[Callable[..., Any], str] = {
    F.cross_entropy: "cross_entropy",
    F.nll_loss: "nll",
    F.binary_cross_entropy: "bce",
    F.binary_cross_entropy_with_logits: "bce_logits",
    F.mse_loss: "mse",
    F.l1_loss: "l1",
    F.smooth_l1_loss: "smooth_l1",
    F.huber_loss: "huber",
    F.kl_div: "kl_div",
}
KIND_MODULES: dict[str, type] = {v: k for k, v in MODULE_KINDS.items()}
# every functional loss the checkup's discovery stops the script at (the kinds above and the rest)
FUNCTIONAL_LOSSES: frozenset[Any] = frozenset(FUNCTION_KINDS) | {
    F.poisson_nll_loss, F.multilabel_soft_margin_loss, F.multi_margin_loss, F.soft_margin_loss,
    F.multilabel_margin_loss, F.hinge_embedding_loss,
}
# the functional losses the live monitor wraps by name (nn loss modules call these too)
WRAPPED_LOSSES: tuple[str, ...] = tuple(f.__name__ for f in FUNCTION_KINDS)


def describe_loss(loss_fn: Any) -> dict[str, Any]:
    """Kind, name, reduction, ignore_index and label smoothing of a loss module or function."""
    info: dict[str, Any] = {"kind": None, "name": type(loss_fn).__name__, "reduction": "mean",
                            "ignore_index": None, "label_smoothing": 0.0}
    fn, kwargs = loss_fn, {}
    if isinstance(loss_fn, functools.partial):
        fn, kwargs = loss_fn.func, dict(loss_fn.keywords)
    if isinstance(fn, nn.Module):
        for cls, kind in MODULE_KINDS.items():
            if isinstance(fn, cls):
                info["kind"] = kind
                break
        info["name"] = f"nn.{type(fn).__name__}" if type(fn) in MODULE_KINDS else type(fn).__name__
        info["reduction"] = getattr(fn, "reduction", "mean")
        info["ignore_index"] = getattr(fn, "ignore_index", None)
        info["label_smoothing"] = float(getattr(fn, "label_smoothing", 0.0) or 0.0)
    elif fn in FUNCTION_KINDS:
        info["kind"] = FUNCTION_KINDS[fn]
        info["name"] = f"F.{fn.__name__}"
        info["reduction"] = kwargs.get("reduction", "mean")
        if info["kind"] in ("cross_entropy", "nll"):
            info["ignore_index"] = kwargs.get("ignore_index", -100)
        info["label_smoothing"] = float(kwargs.get("label_smoothing", 0.0) or 0.0)
    else:
        info["name"] = getattr(fn, "__qualname__", None) or type(fn).__name__
    return info
