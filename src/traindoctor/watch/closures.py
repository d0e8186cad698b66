"""An optimizer's ``step(closure)``, evaluated before the doctor's step hooks.

Lightning (and any loop that hands ``optimizer.step`` a closure) runs the forward and backward inside
``step``: the optimizer's pre-hooks run before the closure, so they would see the previous step's
gradients and, in a zero-code run, no model forward yet. For optimizers that call the closure once as
they begin, a pre-hook registered first calls it and hands ``step`` its result: the run is the same.
"""
from __future__ import annotations

from typing import Any

import torch


def calls_closure_once(optimizer: torch.optim.Optimizer) -> bool:
    """A torch optimizer whose ``step(closure)`` calls the closure once, as it begins (every one of
    ``torch.optim`` but L-BFGS, which calls it again and again; a subclass with its own ``step`` is not
    assumed to)."""
    step = getattr(type(optimizer), "step", None)
    return (getattr(step, "__module__", "") or "").startswith("torch.optim.") \
        and not isinstance(optimizer, torch.optim.LBFGS)


class _Evaluated:
    """A closure already called: returns what it returned (the optimizer's own call, now without work)."""

    __slots__ = ("result",)

    def __init__(self, result: Any) -> None:
        self.result = result

    def __call__(self) -> Any:
        return self.result


def closure_first(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """A step pre-hook: the closure handed to ``step()`` is called here, with gradients on as the step would,
    and the step gets its result, so the hooks after this one see the gradients of this step. Only for
    optimizers that call the closure once as they begin (:func:`calls_closure_once`): for them the run is
    the same. An exception of the closure (the user's training step) propagates, as from ``step()``."""
    if "closure" in kwargs:
        closure = kwargs["closure"]
        if closure is None or isinstance(closure, _Evaluated):
            return None
        with torch.enable_grad():
            result = closure()
        return args, {**kwargs, "closure": _Evaluated(result)}
    if len(args) >= 2 and callable(args[1]) and not isinstance(args[1], _Evaluated):
        with torch.enable_grad():
            result = args[1]()
        return (args[0], _Evaluated(result), *args[2:]), kwargs
    return None
