"""V005: the validation images were loaded mirrored (a different preprocessing path)."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
Xva = Xva.reshape(-1, 8, 8).flip(2).reshape(-1, 64)
model = mlp([64, 64, 10])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 8, Xva, yva)
