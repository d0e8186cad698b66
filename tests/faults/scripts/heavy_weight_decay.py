"""V002: weight decay so strong the model cannot fit even the training data."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 64, 10])
opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=2.0)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 8, Xva, yva)
