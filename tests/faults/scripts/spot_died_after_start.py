"""Blind spot: SGD at lr=10 on a 4-layer ReLU MLP (8 parameter tensors), gradients clipped at norm 1
so nothing overflows. The large clipped steps push every hidden unit below zero within the first
steps: from then on the gradient of 7 of the 8 tensors is exactly zero (only the last bias still
learns the class prior). They were alive at step 0, so "zero on every sample" misses it."""
import torch
from _common import digits, loader, mlp, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 64, 64, 64, 10])
opt = torch.optim.SGD(model.parameters(), lr=10.0)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(8):
    for x, y in loader(Xtr, ytr):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    with torch.no_grad():
        print(f"epoch {epoch} val_loss {loss_fn(model(Xva), yva).item():.4f}")
