"""The loss's autograd graph, read once at the first ``backward()``: the loss function, the batch's shape,
the targets' range, the configuration faults the graph itself shows (double softmax, sigmoid before BCE …),
and the scale of the first batch's inputs.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losskinds import REGRESSION
from .tensors import LOSS_NODES, _first_child, _graph_below, _tensors, _through_shape


class LossGraph:
    """What the first step's loss graph and inputs tell about the configuration (one-off).

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _inspect_loss_graph(self, loss: torch.Tensor) -> None:
        fn = loss.grad_fn
        if fn is None:
            return
        node = fn
        # skip a final reduction (mean/sum) and scaling to reach the loss node
        for _ in range(4):
            if type(node).__name__ in LOSS_NODES or node is None:
                break
            node = _first_child(node)
        kind = LOSS_NODES.get(type(node).__name__) if node is not None else None
        below = _graph_below(_through_shape(_first_child(node)), depth=3) if node is not None else []
        info: dict[str, Any] = {"graph": _graph_below(fn, depth=5)}
        if kind == "nll" and below and below[0] == "LogSoftmaxBackward0":
            kind = "cross_entropy"
        if kind:
            self.meta["loss_kind"] = kind
            info["loss_kind"] = kind
        saved_in = getattr(node, "_saved_self", None) if node is not None else None
        saved_tg = getattr(node, "_saved_target", None) if node is not None else None
        if isinstance(saved_in, torch.Tensor):
            info["input_shape"] = list(saved_in.shape)
            if saved_in.dim() >= 1:
                self.meta["batch_size"] = int(saved_in.shape[0])
            if kind in ("cross_entropy", "nll") and saved_in.dim() >= 2:
                self.meta["num_classes"] = int(saved_in.shape[1])
        if isinstance(saved_tg, torch.Tensor) and saved_tg.numel():
            t = saved_tg.detach()
            info["target_dtype"] = str(t.dtype).replace("torch.", "")
            if t.is_floating_point():
                tf = t[torch.isfinite(t)]
                if tf.numel():
                    info["target_range"] = [float(tf.min()), float(tf.max())]
                    if kind in REGRESSION and tf.numel() > 1:
                        self.meta["target_var"] = float(tf.to(torch.float64).var())
                        self.meta["target_sq_mean"] = float(tf.to(torch.float64).pow(2).mean())
            else:
                info["target_range"] = [int(t.min()), int(t.max())]
        # pre-loss operations: the configuration faults that show in the graph itself, looked at through
        # the shape-only operations between them (``sigmoid(z).squeeze(1)``, ``softmax(z, 1).view(-1, C)``)
        through: list[str] = []
        pre = _through_shape(_first_child(node), through) if node is not None else None
        through1 = list(through)
        pre2 = _through_shape(_first_child(pre), through) if pre is not None else None
        name_pre = type(pre).__name__ if pre is not None else ""
        name_pre2 = type(pre2).__name__ if pre2 is not None else ""
        # "through": the shape-only operations looked through on the way (absent when none)
        shaped = {"through": through} if through else {}
        if kind == "cross_entropy" and name_pre2 == "SoftmaxBackward0":
            self.event("config", {"fault": "double_softmax", "graph": [name_pre2, name_pre, type(node).__name__],
                                  "module": self._last_module_of(nn.Softmax), **shaped})
        if kind == "nll" and name_pre == "LogBackward0" and name_pre2 == "SoftmaxBackward0":
            self.event("config", {"fault": "log_softmax_unfused", "graph": [name_pre2, name_pre, type(node).__name__],
                                  **shaped})
        if kind == "bce" and name_pre == "SigmoidBackward0":
            self.event("config", {"fault": "sigmoid_bce", "graph": [name_pre, type(node).__name__],
                                  "module": self._last_module_of(nn.Sigmoid), **({"through": through1} if through1 else {})})
        self.meta["loss_graph"] = info
        self._guard("input-stats", self._input_stats)

    def _input_stats(self) -> None:
        """Scale of the first batch's inputs: tells unscaled data from a bad init later (one-off)."""
        for model in self._known_models():
            captured = self._last_inputs.get(id(model))
            if captured is None:
                continue
            for t in _tensors(captured):
                if t.is_floating_point() and t.numel():
                    x = t.detach().to(torch.float64)
                    x = x[torch.isfinite(x)]
                    if x.numel():
                        self.meta["input_stats"] = {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0,
                                                    "absmax": float(x.abs().max()), "shape": list(t.shape)}
                    return

    def _last_module_of(self, cls: type) -> str | None:
        found = None
        for model in self._known_models():
            for name, mod in model.named_modules():
                if isinstance(mod, cls):
                    found = name
        return found
