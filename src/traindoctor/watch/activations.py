"""The activation sampler: forward hooks armed for one sampled step and removed afterwards.

Module activations (ReLU dead fractions, sigmoid/tanh saturation), the model output's scale and confidence,
and the functional activations the first step's trace found, through ``trace.ActivationProbe``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..inspect.model import RELU_TYPES, SQUASH_TYPES
from ..inspect.trace import ActivationProbe, act_series

# True while Dynamo traces (``torch.compile``): a hook of the doctor's reached inside a compiled region then
# returns at once, so it adds nothing to the graph and never breaks it (it is constant-folded there)
compiling: Callable[[], bool] = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)


def compiled_wrapper(module: nn.Module) -> bool:
    """``torch.compile(module)``'s wrapper (an ``OptimizedModule``): its own hooks run outside the compiled
    region, its ``_orig_mod``'s inside. Told without importing ``torch._dynamo`` (slow to import)."""
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


def compiled_in_place(module: nn.Module) -> bool:
    """``module.compile()``: its own hooks, and its submodules', run inside its compiled call."""
    return getattr(module, "_compiled_call_impl", None) is not None


def hookable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model.named_modules()`` less those inside a compiled region (under a ``torch.compile`` wrapper, or
    compiled in place): a hook added or removed there would make Dynamo compile again, or be skipped."""
    out: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, mod in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in inside):
            continue
        if compiled_in_place(mod):
            inside.append(name)
            if name:
                continue
            return []  # the model itself: every hook of its is inside
        out.append((name, mod))
        if compiled_wrapper(mod):
            inside.append(f"{name}._orig_mod" if name else "_orig_mod")
    return out


class ActivationSampler:
    """Arms the activation hooks on sampled steps and records what they measure.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_activations(self) -> None:
        """The hooks armed for one sampled step, and the functional activations' probe."""
        self._act_handles: list[Any] = []
        # functional activations measured on sampled steps: (op, file, line) → series suffix
        self._probe_sites: dict[tuple[str, str, int], str] = {}
        self._probe: Any = None

    def _arm_activations(self) -> None:
        if self._probe is not None:
            self._guard("functional-activations", self._finish_probe, self.step)
        if self._act_handles:
            for h in self._act_handles:
                h.remove()
            self._act_handles = []
        if self._clock % self.cadence != 0 or "activations" in self._disabled:
            return
        step = self.step
        for model in self.models:
            mods = hookable_modules(model)
            if not mods:
                continue
            self._act_handles.append(model.register_forward_hook(self._make_output_hook(step)))
            for name, mod in mods:
                if isinstance(mod, RELU_TYPES + SQUASH_TYPES):
                    self._act_handles.append(mod.register_forward_hook(self._make_act_hook(name, mod, step)))
        root = self._trace_root
        if self._probe_sites and root is not None and "functional-activations" not in self._disabled:
            fired = [False]

            def pre(m: nn.Module, args: Any) -> None:
                if compiling() or fired[0] or self._probe is not None or self._own or not torch.is_grad_enabled() or not m.training:
                    return
                fired[0] = True
                self._guard("functional-activations", self._start_probe)

            def post(m: nn.Module, args: Any, out: Any) -> None:
                if not compiling() and self._probe is not None:
                    self._guard("functional-activations", self._finish_probe, step)

            self._act_handles.append(root.register_forward_pre_hook(pre))
            self._act_handles.append(root.register_forward_hook(post, always_call=True))

    def _start_probe(self) -> None:
        probe = ActivationProbe(self._probe_sites)
        probe.start()
        self._probe = probe

    def _finish_probe(self, step: int) -> None:
        """Leave the sampled forward's probe and record what it measured at each functional line."""
        probe, self._probe = self._probe, None
        if probe is None:
            return
        probe.stop()
        if probe.error:
            raise RuntimeError(probe.error)
        for name, (op, stats) in probe.stats.items():
            for series, value in act_series(op, name, stats):
                self.record(series, value, step)

    def _make_output_hook(self, step: int) -> Callable[..., None]:
        """Logit magnitude and prediction confidence of the model's output, on a sampled step."""
        fired = [False]

        def hook(m: nn.Module, inp: Any, out: Any) -> None:
            if compiling() or fired[0] or not torch.is_grad_enabled() or not m.training:
                return
            fired[0] = True
            t = out if isinstance(out, torch.Tensor) else None
            if t is None or not t.is_floating_point() or t.dim() == 0:
                return

            def measure() -> None:
                with torch.no_grad():
                    o = t.detach()
                    self.record("logits_absmax", o.abs().max().to(torch.float64), step)
                    kind = self.meta.get("loss_kind")
                    if kind in ("cross_entropy",) and o.dim() == 2 and o.shape[1] >= 2:
                        self.record("pred_confidence", torch.softmax(o.float(), 1).max(1).values.mean(), step)
                    elif kind == "bce_logits" or (kind == "bce" and o.dim() <= 2):
                        pr = torch.sigmoid(o.float()) if kind == "bce_logits" else o.float()
                        self.record("pred_confidence", torch.maximum(pr, 1 - pr).mean(), step)

            self._guard("outputs", measure)

        return hook

    def _make_act_hook(self, name: str, mod: nn.Module, step: int) -> Callable[..., None]:
        fired = [False]
        relu = isinstance(mod, RELU_TYPES)
        nonneg = type(mod) in (nn.ReLU, nn.ReLU6)  # outputs ≥ 0: one reduction gives both statistics
        sigmoid_like = isinstance(mod, (nn.Sigmoid, nn.Hardsigmoid))

        def hook(m: nn.Module, inp: Any, out: Any) -> None:
            if compiling() or fired[0] or not isinstance(out, torch.Tensor) or out.dim() == 0 \
                    or not torch.is_grad_enabled():
                return
            fired[0] = True

            def measure() -> None:
                with torch.no_grad():
                    o = out.detach().reshape(out.shape[0], -1)
                    if relu:
                        # each pass over a large activation is a parallel region (threads woken, on the
                        # CPU ~0.1 ms each): a ReLU's non-negative output needs one, its per-unit maximum
                        # (the same values on finite outputs; a unit that output a NaN counts as dead)
                        if nonneg:
                            unit_max = o.amax(dim=0)
                            dead = 1.0 - (unit_max > 0).to(torch.float32).mean()
                            absmax = unit_max.max().to(torch.float64)
                        else:
                            dead = 1.0 - (o > 0).any(dim=0).to(torch.float32).mean()
                            absmax = o.abs().max().to(torch.float64)
                        self.record(f"dead_frac/{name}", dead, step)
                        if self.on_activation is not None:
                            self._guard("activation-listener", self.on_activation, step, "dead_frac", name, dead)
                        self.record(f"act_absmax/{name}", absmax, step)
                    elif sigmoid_like:
                        self.record(f"saturated_frac/{name}", ((o < 0.01) | (o > 0.99)).to(torch.float32).mean(), step)
                        if self.on_activation is not None and isinstance(m, nn.Sigmoid):
                            # outputs float32 rounded to 0 or 1 (p(1 − p) under BCELoss's 1e-12): no gradient
                            # passes them (--heal=arch reads it; nothing records it)
                            pinned = ((o.float() * (1 - o.float())) < 1e-12).to(torch.float32).mean()
                            self._guard("activation-listener", self.on_activation, step, "pinned_frac", name, pinned)
                    else:
                        self.record(f"saturated_frac/{name}", (o.abs() > 0.99).to(torch.float32).mean(), step)

            self._guard("activations", measure)

        return hook
