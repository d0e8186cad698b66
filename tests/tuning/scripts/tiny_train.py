"""A tiny training script that takes its hyperparameters as arguments, as people write them: digits, an
MLP, SGD with momentum; prints the validation loss each epoch (traindoctor reads it off the line)."""
import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--weight-decay", type=float, default=0.0)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--ignore-lr", action="store_true", help="a bug: the learning rate is never used")
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(1)
X, y = load_digits(return_X_y=True)
X = torch.tensor(X / 16.0, dtype=torch.float32)
y = torch.tensor(y)
Xtr, ytr, Xva, yva = X[:1200], y[:1200], X[1200:], y[1200:]
model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05 if a.ignore_lr else a.lr, momentum=0.9, weight_decay=a.weight_decay)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(a.epochs):
    perm = torch.randperm(len(Xtr))
    for i in range(0, len(Xtr), 40):
        idx = perm[i:i + 40]
        opt.zero_grad()
        loss = loss_fn(model(Xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
    with torch.no_grad():
        val = loss_fn(model(Xva), yva).item()
    print(f"epoch {epoch} val_loss {val:.4f}")
