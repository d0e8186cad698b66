"""Blind spot: Adam at lr=1.0 on a ReLU MLP. The first steps blow the loss up by orders of magnitude,
the units die, and the loss then falls back to sit near ln(10): the blow-up must not become the
baseline the rest of the run is judged against ("fell from 9722, then stalled")."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 128, 128, 10])
opt = torch.optim.Adam(model.parameters(), lr=1.0)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 8, Xva, yva)
