"""The loss's autograd graph, read once at the first ``backward()``: the loss function, the batch's shape,
the targets' range, the configuration faults the graph itself shows (double softmax, sigmoid before BCE …),
and the scale of the first batch's inputs.
"""
from __future__ import annotations

import torch

from ..inspect.lossgraph import read_loss_graph
from ..inspect.tensors import tensors_of


class LossGraph:
    """What the first step's loss graph and inputs tell about the configuration (one-off).

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _inspect_loss_graph(self, loss: torch.Tensor) -> None:
        meta, events = read_loss_graph(loss, self._known_models())
        if not meta:
            return
        for kind, data in events:
            self.event(kind, data)
        self.meta.update(meta)
        self._guard("input-stats", self._input_stats)

    def _input_stats(self) -> None:
        """Scale of the first batch's inputs: tells unscaled data from a bad init later (one-off)."""
        for model in self._known_models():
            captured = self._last_inputs.get(id(model))
            if captured is None:
                continue
            for t in tensors_of(captured):
                if t.is_floating_point() and t.numel():
                    x = t.detach().to(torch.float64)
                    x = x[torch.isfinite(x)]
                    if x.numel():
                        self.meta["input_stats"] = {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0,
                                                    "absmax": float(x.abs().max()), "shape": list(t.shape)}
                    return
