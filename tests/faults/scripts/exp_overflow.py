"""A004: a hand-written softplus log(1 + exp(x)) on unscaled inputs: exp overflows to inf in that module."""
import torch
from _common import digits, loader, seed, train
from torch import nn


class MySoftplus(nn.Module):
    def forward(self, x):
        return torch.log(1 + torch.exp(x))


seed()
Xtr, ytr, Xva, yva = digits(standardise=False)
Xtr, Xva = Xtr * 10, Xva * 10  # raw intensities on a 0..160 scale
model = nn.Sequential(nn.Linear(64, 64), MySoftplus(), nn.Linear(64, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 2, Xva, yva)
