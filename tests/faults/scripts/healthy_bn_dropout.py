"""Healthy: MLP with BatchNorm and dropout, Adam with weight decay 1e-4, batch 128."""
import torch
from _common import digits, loader, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.3),
                      nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr, batch_size=128), 25, Xva, yva)
