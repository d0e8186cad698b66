"""L001 from float16: a regression model converted with ``model.half()``, its MSE summed over a batch
of 512 targets scaled ×100; the sum passes float16's 65504 and the loss is inf at the first step.

    python sig_half_overflow.py [--autocast]

``--autocast`` instead keeps the float32 model and its mean loss, with a bfloat16 autocast around
the forward (healthy: the run's precision facts only).
"""
import sys

import torch
from _common import seed
from torch import nn

seed()
X = torch.randn(2048, 16)
y = (X[:, :4].sum(1, keepdim=True) + 0.1 * torch.randn(2048, 1)) * 100
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
autocast = "--autocast" in sys.argv
if not autocast:
    model = model.half()
opt = torch.optim.SGD(model.parameters(), lr=1e-6)
for step in range(16):
    i = (step * 512) % 2048
    xb, yb = X[i:i + 512], y[i:i + 512]
    opt.zero_grad()
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(xb)
        loss = nn.functional.mse_loss(out.float(), yb)
    else:
        loss = nn.functional.mse_loss(model(xb.half()), yb.half(), reduction="sum")
    loss.backward()
    opt.step()
print(f"final loss {loss.item()}")
