"""V003: 85 % of the training labels shuffled (a loader bug); validation labels are right."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
g = torch.Generator().manual_seed(1)
idx = torch.randperm(len(ytr), generator=g)[: int(0.85 * len(ytr))]
ytr = ytr.clone()
ytr[idx] = ytr[idx][torch.randperm(len(idx), generator=g)]
model = mlp([64, 64, 10])
opt = torch.optim.SGD(model.parameters(), lr=0.02)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 16, Xva, yva)
