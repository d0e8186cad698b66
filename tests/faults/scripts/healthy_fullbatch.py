"""Healthy: full-batch Adam on breast cancer (standardised), BCEWithLogitsLoss, validation every 5 steps, stopped before it overfits."""
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn

torch.manual_seed(0)
X, y = load_breast_cancer(return_X_y=True)
Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
mu, sd = Xtr.mean(0), Xtr.std(0)
Xtr, Xva = (Xtr - mu) / sd, (Xva - mu) / sd
Xtr, Xva = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(Xva, dtype=torch.float32)
ytr, yva = torch.tensor(ytr, dtype=torch.float32)[:, None], torch.tensor(yva, dtype=torch.float32)[:, None]
model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
loss_fn = nn.BCEWithLogitsLoss()
for step in range(45):
    model.train()
    opt.zero_grad()
    loss_fn(model(Xtr), ytr).backward()
    opt.step()
    if step % 5 == 4:
        model.eval()
        with torch.no_grad():
            print(step, loss_fn(model(Xva), yva).item())
