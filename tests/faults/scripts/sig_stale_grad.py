"""G008: gradients never cleared, against two loops that clear them.

    python sig_stale_grad.py MODE

MODE: nozero (no zero_grad at all: every step applies the sum of all gradients so far), keep
(``zero_grad(set_to_none=False)``: the gradients are zero tensors, not None), accum (gradient
accumulation over 4 micro-batches, cleared after each optimizer step), accum-nozero (the same
accumulation, never cleared).
"""
import sys

import torch
from _common import digits, seed
from torch import nn

mode = sys.argv[1]
seed()
Xtr, ytr, _, _ = digits()
model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
micro = 4 if mode.startswith("accum") else 1
g = torch.Generator().manual_seed(0)
for _step in range(120):
    for _k in range(micro):
        idx = torch.randint(0, len(Xtr), (32,), generator=g)
        loss = loss_fn(model(Xtr[idx]), ytr[idx]) / micro
        loss.backward()
    opt.step()
    if mode == "keep":
        opt.zero_grad(set_to_none=False)
    elif mode == "accum":
        opt.zero_grad()
print(f"final loss {loss.item() * micro:.4f}")
