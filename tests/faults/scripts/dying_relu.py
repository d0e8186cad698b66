"""A001/G004: Adam at lr 0.05 knocks most ReLUs of a wide layer into the dead zone."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits(standardise=False)  # raw 0..16 pixels make it worse
model = mlp([64, 256, 256, 10])
opt = torch.optim.Adam(model.parameters(), lr=0.05)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 4, Xva, yva)
