"""wrong-optimizer-settings: Adam with eps=0.5. A gradient element on digits is ~1e-3, so the
step g / (√v + eps) is g / 0.5: Adam has become SGD at lr / 0.5 = 2e-3 without momentum, and
twelve epochs barely move the loss from ln 10."""
import torch
from _common import digits, loader, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=0.5)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 12, Xva, yva)
