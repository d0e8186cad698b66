"""G002/A002: ten sigmoid layers with small init: the gradient dies on its way back."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64] + [64] * 10 + [10], act=nn.Sigmoid)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 4, Xva, yva)
