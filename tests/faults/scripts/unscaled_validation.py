"""V005: the scaler was applied to the training split only; validation goes in as loaded."""
import torch
from _common import loader, seed, train
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

seed()
X, y = load_diabetes(return_X_y=True)
y = (y - y.mean()) / y.std()
Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state=0)
Xtr = StandardScaler().fit_transform(Xtr)  # Xva forgotten
f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.MSELoss(), loader(f(Xtr), f(ytr).unsqueeze(1)), 15, f(Xva), f(yva).unsqueeze(1))
