"""D005: a rare positive class (3 %) trained with an unweighted loss."""
import torch
from _common import loader, seed, train
from torch import nn

seed()
n = 4000
X = torch.randn(n, 20)
y = torch.zeros(n, dtype=torch.long)
y[torch.randperm(n)[: n * 3 // 100]] = 1  # fraud
X[y == 1] += 0.8
model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(X, y, batch_size=64), 2)
