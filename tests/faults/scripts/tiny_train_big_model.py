"""V001: 60 training samples, a wide MLP, 150 epochs: it memorises them."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits(train_size=60)
model = mlp([64, 512, 512, 10])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr, batch_size=20), 150, Xva, yva)
