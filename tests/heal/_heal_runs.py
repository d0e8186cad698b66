"""Tiny seeded training runs on scikit-learn's digits, shared by the healing tests."""
from __future__ import annotations

import io
import math
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

import traindoctor


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 digits, standardised (8×8 pixels → 64 features), and their labels."""
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    return (x - x.mean(0)) / (x.std(0) + 1), torch.tensor(d.target)


def mlp(seed: int = 0, hidden: int = 64, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), *([nn.BatchNorm1d(hidden)] if batchnorm else []), nn.ReLU(),
                         nn.Linear(hidden, 10))


def quiet_doctor(model: nn.Module, opt: torch.optim.Optimizer, **kw: Any) -> traindoctor.Doctor:
    return traindoctor.Doctor(model, opt, report_file=io.StringIO(), live=False, **kw)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    model.train()
    return acc


def regression_run(lr: float, heal: bool | None, steps: int = 300, seed: int = 0) -> dict[str, Any]:
    """Digits as 10-output regression (MSE on one-hot targets), SGD with momentum: an LR of 10 sends
    the loss to NaN within ten steps, 1.0 trains to ~99 %. ``heal=None``: no Doctor at all."""
    x, y = digits()
    target = nn.functional.one_hot(y, 10).float()
    model = mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    doctor = quiet_doctor(model, opt, heal=heal) if heal is not None else None
    loss_fn = nn.MSELoss()
    g = torch.Generator().manual_seed(seed)
    last = math.nan
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), target[idx])
        loss.backward()
        opt.step()
        if doctor is not None:
            doctor.step(loss, inputs=x[idx])
        last = float(loss)
    if doctor is not None:
        doctor.close()
    with torch.no_grad():
        full = float(loss_fn(model(x), target))
    return {"model": model, "opt": opt, "doctor": doctor, "last_loss": last, "loss": full,
            "accuracy": accuracy(model, x, y)}
