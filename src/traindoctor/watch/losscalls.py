"""Calls of the torch loss functions: the training loss's terms and reduction, an evaluation's losses.

The argument helpers (``loss_arguments`` …) read a call the way the function itself reads it, so that a
loss computed with ``reduction='sum'`` and one with ``'mean'`` give the same mean per element.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

# positional parameters of each functional loss, read once from its signature
_LOSS_PARAMS: dict[str, list[str]] = {}


def loss_arguments(fn_name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by name (positional ones named after the function's signature)."""
    names = _LOSS_PARAMS.get(fn_name)
    if names is None:
        try:
            names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            names = ["input", "target"]
        _LOSS_PARAMS[fn_name] = names
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def loss_reduction(bound: dict[str, Any]) -> str:
    """``mean``, ``sum``, ``none``, ``batchmean`` …: the reduction, the legacy ``size_average``/``reduce`` included."""
    size_average, reduce = bound.get("size_average"), bound.get("reduce")
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction

        return _reduction.legacy_get_string(size_average, reduce, emit_warning=False)
    r = bound.get("reduction", "mean")
    return r if isinstance(r, str) else "mean"


def loss_elements(fn_name: str, bound: dict[str, Any]) -> Any:
    """How many elements the loss reduces over: the non-ignored targets for cross-entropy/NLL with
    class indices (a 0-d tensor: no device sync), the samples for class probabilities, else the
    elements of the (broadcast) input. None when the arguments do not tell."""
    inp, tgt = bound.get("input"), bound.get("target")
    if not isinstance(inp, torch.Tensor) or not isinstance(tgt, torch.Tensor):
        return None
    if fn_name in ("cross_entropy", "nll_loss"):
        if not (tgt.is_floating_point() or tgt.is_complex()):
            ig = bound.get("ignore_index", -100)
            return (tgt != ig).sum() if isinstance(ig, int) else tgt.numel()
        return tgt.numel() // int(inp.shape[1]) if inp.dim() >= 2 and inp.shape[1] else tgt.numel()
    try:
        return math.prod(torch.broadcast_shapes(inp.shape, tgt.shape))
    except RuntimeError:
        return inp.numel()


def _correct(inp: torch.Tensor, target: torch.Tensor, bound: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct arg-max predictions and targets counted, ``ignore_index`` targets left out (0-d tensors)."""
    ig = bound.get("ignore_index", -100)
    keep = target != ig if isinstance(ig, int) else torch.ones_like(target, dtype=torch.bool)
    return ((inp.detach().argmax(1) == target) & keep).sum(), keep.sum()


def _layout(pred: torch.Tensor) -> tuple[int, int | None]:
    """What identifies a loss's prediction across steps: its rank and class/feature dimension."""
    return pred.dim(), (int(pred.shape[1]) if pred.dim() >= 2 else None)


class LossCalls:
    """Sees every loss-function call: training terms on sampled steps, evaluations accumulated.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_loss_calls(self) -> None:
        """The training loss's terms in this step, and its first call (for the reduction facts)."""
        self._terms_this_step = 0
        self._calls_before_backward = 0  # training loss calls before the first backward()
        self._first_call_mean: float | None = None

    def on_loss_call(self, fn_name: str, orig: Callable[..., Any], args: tuple, kwargs: dict, out: Any) -> None:
        """Every call of a torch.nn.functional loss (nn loss modules call these too).

        With gradients on it is a term of the training loss: counted per step, valued on sampled
        steps (L011). Without (torch.no_grad(), or a model in eval mode) it is an evaluation: the
        calls between two training steps are averaged into ``val_loss`` (and ``val_accuracy`` for
        class-index targets), so a script's validation loop is seen with no help.
        """
        self._guard("loss-calls", self._on_loss_call, fn_name, orig, args, kwargs, out)

    def _on_loss_call(self, fn_name: str, orig: Callable[..., Any], args: tuple, kwargs: dict, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or len(args) < 2:
            return
        inp, target = args[0], args[1]
        training = torch.is_grad_enabled() and out.requires_grad
        if training and not self._first_backward_seen:
            self._calls_before_backward += 1
            if "loss_reduction" not in self.meta:
                self._reduction_facts(fn_name, orig, args, kwargs, out)  # the training loss's first call, once
        if out.numel() != 1:
            return
        if training:
            self._flush_eval()
            idx = self._terms_this_step
            if self.on_train_loss_call is not None:
                self._guard("replay-capture", self.on_train_loss_call, idx, orig, args, kwargs)
            if isinstance(target, torch.Tensor) and (self._profiling or self._trace_state == "active"):
                m = self._profile_match
                if m is None:
                    if idx == 0:
                        self._step_target = target
                elif self._step_target is None and fn_name == m[0] and isinstance(inp, torch.Tensor) \
                        and _layout(inp) == m[1:]:
                    self._step_target = target  # the judged loss's targets, whatever its place in the step
            self._terms_this_step += 1
            if self._clock % self.cadence == 0:
                self.record(f"loss_term/{idx}:{fn_name}", out.detach().to(torch.float64).reshape(()))
                if fn_name in ("cross_entropy", "nll_loss") and isinstance(target, torch.Tensor) \
                        and not target.is_floating_point() and inp.dim() == 2:
                    hit, seen = _correct(inp, target, loss_arguments(fn_name, orig, args, kwargs))
                    self.record("accuracy", hit.to(torch.float64) / seen.clamp(min=1))
                # not at step 0: the first step is traced already, and BatchNorm statistics at init say little
                if idx == 0 and self._has_train_only and self._clock > 0 and self._clock % (self.cadence * 2) == 0:
                    self._guard("eval-gap", self._eval_gap, orig, args, kwargs, out)
            return
        # an evaluation (its forward was checked for eval mode and leakage when it ran)
        # each call as (sum of its per-element losses, elements), so that a call with
        # reduction='sum' (a Hugging Face causal LM's token sum) and one with 'mean' both give the mean
        # per element over the whole evaluation
        bound = loss_arguments(fn_name, orig, args, kwargs)
        red = loss_reduction(bound)
        v = out.detach().to(torch.float64).reshape(())
        n = loss_elements(fn_name, bound)
        if n is None:
            n = int(inp.shape[0]) if isinstance(inp, torch.Tensor) and inp.dim() > 0 else 1
        if red == "batchmean":  # kl_div: a mean over samples
            n = int(inp.shape[0]) if isinstance(inp, torch.Tensor) and inp.dim() > 0 else 1
        if red == "sum":
            part = v
        elif isinstance(n, torch.Tensor):  # a batch whose targets are all ignored has a NaN mean and weight 0
            part = torch.where(n > 0, v * n, torch.zeros((), dtype=v.dtype, device=v.device))
        else:
            part = v * n
        ev = self._eval_acc
        ev["loss"].append((part, n))
        if fn_name in ("cross_entropy", "nll_loss") and isinstance(target, torch.Tensor) \
                and not target.is_floating_point() and isinstance(inp, torch.Tensor) and inp.dim() == 2:
            ev["correct"].append(_correct(inp, target, bound))

    def _reduction_facts(self, fn_name: str, orig: Callable[..., Any], args: tuple, kwargs: dict,
                         out: torch.Tensor) -> None:
        """How the training loss is reduced: ``loss_reduction`` and ``loss_sum_over`` (elements reduced over),
        and the call's mean per element, for ``loss_per_element_factor`` at the first ``backward()``."""
        bound = loss_arguments(fn_name, orig, args, kwargs)
        red = self.meta["loss_reduction"] = loss_reduction(bound)
        n = loss_elements(fn_name, bound)
        if n is not None:
            n = self.meta["loss_sum_over"] = int(n)  # one read, at the first step
        o = out.detach()
        if not o.numel():
            return
        if red == "none":
            self._first_call_mean = float(o.double().mean())
        elif o.numel() == 1 and (red != "sum" or n):
            self._first_call_mean = float(o) / (n if red == "sum" and n else 1)

    def _loss_factor(self, value: Any) -> None:
        """``loss_per_element_factor``: the first recorded loss over its loss call's mean per element."""
        mean, self._first_call_mean = self._first_call_mean, None
        if mean is None or self._calls_before_backward != 1:
            return  # several loss terms: no one call to compare the loss with
        v = float(value)
        if math.isfinite(v) and math.isfinite(mean) and mean != 0:
            self.meta["loss_per_element_factor"] = v / mean
