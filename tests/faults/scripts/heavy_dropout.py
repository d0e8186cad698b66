"""V009: dropout 0.9 after a narrow layer. The loss falls from ln 10 in the first epochs, then sits
far above a good level: nine units in ten are dropped at every step, so the training loss cannot go
lower however long it trains (over-regularisation)."""
import torch
from _common import digits, loader, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 10))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 14, Xva, yva)
