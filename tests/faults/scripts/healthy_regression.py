"""Healthy: diabetes regression with standardised inputs and targets, a model that ends in a Linear."""
import torch
from _common import loader, seed, train
from sklearn.datasets import load_diabetes
from torch import nn

seed()
X, y = load_diabetes(return_X_y=True)
X = (X - X.mean(0)) / X.std(0)
y = (y - y.mean()) / y.std()
Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).unsqueeze(1)
model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.MSELoss(), loader(Xt[:350], yt[:350]), 10, Xt[350:], yt[350:])
