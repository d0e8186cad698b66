"""V008: validation under torch.no_grad() with the model's Dropout and BatchNorm still training.

    python sig_eval_train_mode.py [--eval]

Without ``--eval`` the loop never calls ``model.eval()``: every validation pass drops units and folds
the validation batches into BatchNorm's running statistics. With it, eval()/train() surround the
validation, as they should.
"""
import sys

import torch
from _common import digits, loader, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
loss_fn = nn.CrossEntropyLoss()
use_eval = "--eval" in sys.argv
for epoch in range(3):
    for x, y in loader(Xtr, ytr, seed=epoch):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    if use_eval:
        model.eval()
    with torch.no_grad():
        val = loss_fn(model(Xva), yva)
    if use_eval:
        model.train()
    print(f"epoch {epoch} val_loss {val.item():.4f}")
