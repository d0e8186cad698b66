"""The loss's autograd graph, read once: the loss function, the batch's shape, the targets' range, and
the configuration faults the graph itself shows (double softmax, sigmoid before BCE …).

One reading for two callers: a live run's first ``backward()`` (``watch/lossgraph.py``) and a
checkup's first loss, so both record the same facts for the same rules.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..losskinds import REGRESSION
from .losses import LOSS_NODES
from .tensors import first_child, graph_below, through_shape


def _last_module_of(models: Iterable[nn.Module], cls: type) -> str | None:
    found = None
    for model in models:
        for name, mod in model.named_modules():
            if isinstance(mod, cls):
                found = name
    return found


def read_loss_graph(loss: torch.Tensor, models: Iterable[nn.Module]
                    ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """``(meta, events)`` the loss's graph shows: ``meta`` has ``loss_kind``, ``batch_size``,
    ``num_classes``, ``target_var``/``target_sq_mean`` (regression) where the graph tells them, and
    ``loss_graph`` (last); ``events`` are ``config`` faults. Nothing when the loss has no graph."""
    fn = loss.grad_fn
    if fn is None:
        return {}, []
    models = list(models)
    meta: dict[str, Any] = {}
    events: list[tuple[str, dict[str, Any]]] = []
    node = fn
    # skip a final reduction (mean/sum) and scaling to reach the loss node
    for _ in range(4):
        if type(node).__name__ in LOSS_NODES or node is None:
            break
        node = first_child(node)
    kind = LOSS_NODES.get(type(node).__name__) if node is not None else None
    below = graph_below(through_shape(first_child(node)), depth=3) if node is not None else []
    info: dict[str, Any] = {"graph": graph_below(fn, depth=5)}
    if kind == "nll" and below and below[0] == "LogSoftmaxBackward0":
        kind = "cross_entropy"
    if kind:
        meta["loss_kind"] = kind
        info["loss_kind"] = kind
    saved_in = getattr(node, "_saved_self", None) if node is not None else None
    saved_tg = getattr(node, "_saved_target", None) if node is not None else None
    if isinstance(saved_in, torch.Tensor):
        info["input_shape"] = list(saved_in.shape)
        if saved_in.dim() >= 1:
            meta["batch_size"] = int(saved_in.shape[0])
        if kind in ("cross_entropy", "nll") and saved_in.dim() >= 2:
            meta["num_classes"] = int(saved_in.shape[1])
    if isinstance(saved_tg, torch.Tensor) and saved_tg.numel():
        t = saved_tg.detach()
        info["target_dtype"] = str(t.dtype).replace("torch.", "")
        if t.is_floating_point():
            tf = t[torch.isfinite(t)]
            if tf.numel():
                info["target_range"] = [float(tf.min()), float(tf.max())]
                if kind in REGRESSION and tf.numel() > 1:
                    meta["target_var"] = float(tf.to(torch.float64).var())
                    meta["target_sq_mean"] = float(tf.to(torch.float64).pow(2).mean())
        else:
            info["target_range"] = [int(t.min()), int(t.max())]
    # pre-loss operations: the configuration faults that show in the graph itself, looked at through
    # the shape-only operations between them (``sigmoid(z).squeeze(1)``, ``softmax(z, 1).view(-1, C)``)
    through: list[str] = []
    pre = through_shape(first_child(node), through) if node is not None else None
    through1 = list(through)
    pre2 = through_shape(first_child(pre), through) if pre is not None else None
    name_pre = type(pre).__name__ if pre is not None else ""
    name_pre2 = type(pre2).__name__ if pre2 is not None else ""
    # "through": the shape-only operations looked through on the way (absent when none)
    shaped = {"through": through} if through else {}
    if kind == "cross_entropy" and name_pre2 == "SoftmaxBackward0":
        events.append(("config", {"fault": "double_softmax", "graph": [name_pre2, name_pre, type(node).__name__],
                                  "module": _last_module_of(models, nn.Softmax), **shaped}))
    if kind == "nll" and name_pre == "LogBackward0" and name_pre2 == "SoftmaxBackward0":
        events.append(("config", {"fault": "log_softmax_unfused",
                                  "graph": [name_pre2, name_pre, type(node).__name__], **shaped}))
    if kind == "bce" and name_pre == "SigmoidBackward0":
        events.append(("config", {"fault": "sigmoid_bce", "graph": [name_pre, type(node).__name__],
                                  "module": _last_module_of(models, nn.Sigmoid),
                                  **({"through": through1} if through1 else {})}))
    meta["loss_graph"] = info
    return meta, events
