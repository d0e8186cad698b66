"""Healthy: SGD with momentum, 50 steps of linear LR warm-up then cosine decay, batch 64."""
import math

import torch
from _common import digits, loader, mlp, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 128, 10])
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
dl = loader(Xtr, ytr, batch_size=64)
total = 8 * len(dl)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: (s + 1) / 50 if s < 50 else 0.5 * (1 + math.cos(math.pi * (s - 50) / (total - 50))))
loss_fn = nn.CrossEntropyLoss()
for epoch in range(8):
    model.train()
    for x, y in dl:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        print(epoch, loss_fn(model(Xva), yva).item())
