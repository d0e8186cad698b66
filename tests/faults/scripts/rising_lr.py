"""V004: an exponential LR schedule with gamma=1.6 (meant 0.96): both losses climb after a good start."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 64, 10])
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=1.6)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 12, Xva, yva, scheduler=sched)
