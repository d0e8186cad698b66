"""Loaded checkpoints and frozen layers: ``state_dict_load`` events and ``frozen_init`` (M013)."""
from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from torch import nn

from ..inspect.tensors import param_dtypes, site_label

# weight layers whose default initialisation (kaiming_uniform_, a=√5) is U(−1/√fan_in, 1/√fan_in)
_DEFAULT_INIT_LAYERS: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class CheckpointWatch:
    """Records ``load_state_dict`` calls and, once at the first step, frozen weights still at their default init.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_checkpoints(self) -> None:
        """The loads seen before the models are known, and the first-step checks (once)."""
        # load_state_dict calls seen before the models are known, named once they are:
        # (weak reference to the module, its class name, the event's data, step)
        self._loads: list[tuple[Any, str, dict[str, Any], int]] = []
        self._first_step_done = False  # frozen_init and the parameters' dtypes: once, at the first step

    def on_state_dict_load(self, module: nn.Module, strict: bool, result: Any, site: tuple[str, int] | None) -> None:
        """``module.load_state_dict(...)`` returned ``result``: what it loaded (M013 reads it).

        Not a hot path: a few calls per run. Called after the original returned, so a strict load
        that raises is never seen (the exception is the user's, unchanged)."""
        self._guard("state-dict", self._on_state_dict_load, module, strict, result, site)

    def _on_state_dict_load(self, module: nn.Module, strict: bool, result: Any, site: tuple[str, int] | None) -> None:
        keys = len(module.state_dict(keep_vars=True))
        missing = [str(k) for k in getattr(result, "missing_keys", None) or []]
        unexpected = [str(k) for k in getattr(result, "unexpected_keys", None) or []]
        data = {"module": type(module).__name__, "strict": bool(strict), "keys": keys, "loaded": keys - len(missing),
                "missing": missing[:20], "unexpected": unexpected[:20], "where": site_label(site),
                # a checkpoint to start from, or one loaded later (the best weights, at the end)
                "before_training": self.opt_steps == 0 and self._primary_opt is None}
        if self.models:
            data["module"] = self._module_name(module)
            self.event("state_dict_load", data)
            return
        # a checkpoint is loaded before training: the model it belongs to is known at the first step
        try:
            ref: Any = weakref.ref(module)
        except TypeError:
            ref = None
        self._loads.append((ref, type(module).__name__, data, self.step))

    def _module_name(self, module: nn.Module) -> str:
        """The module's attribute path inside a known model (the model's class name for the model itself)."""
        for model in self._known_models():
            for name, m in model.named_modules():
                if m is module:
                    return name or type(model).__name__
        return type(module).__name__

    def _flush_loads(self) -> None:
        loads, self._loads = self._loads, []
        for ref, cls, data, step in loads:
            mod = ref() if ref is not None else None
            data["module"] = self._module_name(mod) if mod is not None else cls
            self.event("state_dict_load", data, step)

    def _at_first_step(self) -> None:
        """Once, at the first optimizer step (the models are known): the loads seen before are named,
        frozen layers still at their default initialisation listed, the parameters' dtypes read."""
        self._first_step_done = True
        if self._loads:
            self._guard("state-dict", self._flush_loads)
        self._guard("frozen-init", self._frozen_init)
        if "precision" in self.meta:
            self._guard("precision", self._refresh_param_dtypes)

    def _refresh_param_dtypes(self) -> None:
        models = self._known_models()
        if models:
            self.meta["precision"]["param_dtypes"] = param_dtypes(models)

    def _frozen_init(self) -> None:
        """``frozen_init``: frozen Linear/Conv weights whose values still fit PyTorch's default init.

        ``kaiming_uniform_(a=√5)`` draws U(−b, b) with b = 1/√fan_in, so every value is within b and
        the standard deviation is b/√3; trained or loaded weights fit neither. A frozen layer that
        still fits both was frozen at its random initialisation: a checkpoint that never loaded.
        One reduction per frozen weight, once per run."""
        layers: list[dict[str, Any]] = []
        numel = 0
        seen: set[int] = set()
        for model in self._known_models():
            names = None
            for mod in model.modules():
                w = getattr(mod, "weight", None) if isinstance(mod, _DEFAULT_INIT_LAYERS) else None
                if not isinstance(w, torch.Tensor) or w.requires_grad or id(w) in seen \
                        or isinstance(w, nn.parameter.UninitializedParameter) or w.is_meta \
                        or not w.is_floating_point() or w.dim() < 2 or w.numel() < 2:
                    continue
                seen.add(id(w))
                fan_in = w[0].numel()  # in_features, or in_channels / groups × kernel size
                bound = 1.0 / math.sqrt(fan_in)
                with torch.no_grad():
                    wd = w.detach()
                    max_abs = float(wd.abs().max())
                    std = float(wd.float().std())
                uniform_std = bound / math.sqrt(3.0)
                tol = max(1e-6, torch.finfo(w.dtype).eps)
                if max_abs > bound * (1 + tol) or abs(std - uniform_std) > 0.05 * uniform_std:
                    continue
                name = self._param_names.get(id(w))
                if name is None:
                    names = names if names is not None else {id(p): n for n, p in model.named_parameters()}
                    name = names.get(id(w), type(mod).__name__)
                layers.append({"name": name, "std": std, "bound": bound, "max_abs": max_abs})
                numel += int(w.numel())
        if layers:
            self.event("frozen_init", {"params": [x["name"] for x in layers], "layers": layers, "count": len(layers),
                                       "numel": numel})
