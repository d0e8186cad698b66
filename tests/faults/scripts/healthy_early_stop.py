"""Healthy: a wide MLP with early stopping on the validation loss (patience 2), best weights restored."""
import copy

import torch
from _common import digits, loader, mlp, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 256, 256, 10])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
best, best_state, bad = float("inf"), None, 0
for epoch in range(40):
    model.train()
    for x, y in loader(Xtr, ytr, seed=epoch):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        v = loss_fn(model(Xva), yva).item()
    print(epoch, v)
    if v < best - 1e-4:
        best, best_state, bad = v, copy.deepcopy(model.state_dict()), 0
    else:
        bad += 1
        if bad >= 2:
            break
model.load_state_dict(best_state)
