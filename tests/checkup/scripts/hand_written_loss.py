"""A hand-written cross-entropy and a dict dataset whose pixels the loop scales: all healthy."""
import sys

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Digits(Dataset):
    def __init__(self, X, y):
        self.X, self.y = torch.tensor(X, dtype=torch.float32).view(-1, 8, 8), torch.tensor(y)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return {"pixels": self.X[i], "label": self.y[i]}


torch.manual_seed(0)
X, y = load_digits(return_X_y=True)
train = DataLoader(Digits(X[:1400], y[:1400]), batch_size=32, shuffle=True)
val_loader = DataLoader(Digits(X[1400:], y[1400:]), batch_size=64)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=float(sys.argv[1]) if len(sys.argv) > 1 else 1e-3)
for _epoch in range(2):
    for batch in train:
        x = (batch["pixels"].reshape(-1, 64) - 8.0) / 8.0   # raw 0..16 pixels scaled in the loop
        logp = model(x).log_softmax(dim=1)
        loss = -logp[torch.arange(len(x)), batch["label"]].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
