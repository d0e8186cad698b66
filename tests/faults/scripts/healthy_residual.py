"""Healthy: residual MLP blocks with LayerNorm and GELU, BCEWithLogitsLoss on breast-cancer data."""
import torch
from _common import loader, seed, train
from sklearn.datasets import load_breast_cancer
from torch import nn

seed()
X, y = load_breast_cancer(return_X_y=True)
X = (X - X.mean(0)) / X.std(0)
Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).unsqueeze(1)


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))


model = nn.Sequential(nn.Linear(30, 32), Block(32), Block(32), nn.LayerNorm(32), nn.Linear(32, 1))
opt = torch.optim.Adam(model.parameters(), lr=5e-4)
train(model, opt, nn.BCEWithLogitsLoss(), loader(Xt[:450], yt[:450]), 4, Xt[450:], yt[450:])
