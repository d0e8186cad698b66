"""G003: a hand-written "stay close to the starting weights" penalty sqrt(sum((w - w0)²)): at the
first step w == w0, the penalty is a finite 0, and its gradient is 0 · 1/(2·sqrt(0)) = NaN."""
import torch
from _common import digits, loader, mlp, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 64, 10])
w0 = [p.detach().clone() for p in model.parameters()]
opt = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(2):
    for x, y in loader(Xtr, ytr):
        opt.zero_grad()
        drift = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(model.parameters(), w0)))  # no epsilon
        loss = loss_fn(model(x), y) + 0.01 * drift
        loss.backward()
        opt.step()
    print("epoch", epoch, loss.item())
