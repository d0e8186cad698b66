"""V005: validation scans from a second site whose scanner reads every feature higher (same labels)."""
import torch
from _common import loader, mlp, seed, train
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

seed()
X, y = load_breast_cancer(return_X_y=True)
Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
scaler = StandardScaler().fit(Xtr)
Xtr, Xva = scaler.transform(Xtr), scaler.transform(Xva)
Xva = Xva * 1.3 + 0.9  # the second site's calibration
f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
model = mlp([30, 32, 2])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(f(Xtr), torch.tensor(ytr)), 15, f(Xva), torch.tensor(yva))
