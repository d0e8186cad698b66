"""D001: a feature column with missing values (NaN) that nobody imputed."""
import numpy as np
import torch
from _common import loader, seed, train
from sklearn.datasets import load_breast_cancer
from torch import nn

seed()
X, y = load_breast_cancer(return_X_y=True)
X = (X - X.mean(0)) / X.std(0)
rng = np.random.default_rng(0)
X[rng.choice(len(X), 12, replace=False), 3] = np.nan  # "mean area" not measured for 12 patients
Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).unsqueeze(1)
model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.BCEWithLogitsLoss(), loader(Xt, yt, batch_size=64), 2)
