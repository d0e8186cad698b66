"""Extreme Hessian eigenvalues by Hessian-vector products: saddle point or local minimum? (G007)

Power iteration on H finds the eigenvalue of largest magnitude; a second power iteration on
H − λ₁I finds the opposite end of the spectrum. Each step is one Hessian-vector product
(double backward), so the cost is ~2 × iters backward passes and no Hessian is ever formed.
The model is left exactly as it was: RNG and buffers (BatchNorm statistics) are restored.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _normalise(v: list[torch.Tensor]) -> list[torch.Tensor]:
    n = torch.sqrt(_dot(v, v))
    return [x / (n + 1e-30) for x in v]


def extreme_eigenvalues(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    inputs: Any,
    targets: Any,
    *,
    iters: int = 30,
    seed: int = 0,
) -> dict[str, float]:
    """``{"max_eigenvalue", "min_eigenvalue", "iterations"}`` of the loss Hessian at the current weights."""
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    cpu_rng = torch.get_rng_state()
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        out = model(inputs) if not isinstance(inputs, (tuple, list)) else model(*inputs)
        loss = loss_fn(out, targets)
        grads = torch.autograd.grad(loss, params, create_graph=True)

        def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, allow_unused=True)
            return [h.detach() if h is not None else torch.zeros_like(p) for h, p in zip(hv, params)]

        gen = torch.Generator(device="cpu").manual_seed(seed)

        def start() -> list[torch.Tensor]:
            return _normalise([torch.randn(p.shape, generator=gen).to(p) for p in params])

        def power(shift: float) -> float:
            v = start()
            lam = 0.0
            for _ in range(iters):
                hv = hvp(v)
                if shift:
                    hv = [h - shift * x for h, x in zip(hv, v)]
                lam = float(_dot(v, hv))
                v = _normalise(hv)
            return lam + shift

        l1 = power(0.0)
        l2 = power(l1) if l1 != 0 else 0.0
    finally:
        torch.set_rng_state(cpu_rng)
        for b, saved in buffers:
            b.data.copy_(saved)
    return {"max_eigenvalue": max(l1, l2), "min_eigenvalue": min(l1, l2), "iterations": iters}
