"""L006: two stacked Linear layers with nothing between them on the two-moons data. The loss falls from
ln 2 to the best a straight line can do (about 0.3) within two epochs, then stops: the model is one
linear map, and no learning rate will bend it."""
import torch
from _common import loader, seed
from sklearn.datasets import make_moons
from torch import nn

seed()
X, y = make_moons(n_samples=1600, noise=0.2, random_state=0)
X = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
y = torch.tensor(y)
Xtr, ytr, Xva, yva = X[:1200], y[:1200], X[1200:], y[1200:]
model = nn.Sequential(nn.Linear(2, 32), nn.Linear(32, 2))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(20):
    for xb, yb in loader(Xtr, ytr):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
    with torch.no_grad():
        print(f"epoch {epoch} val_loss {loss_fn(model(Xva), yva).item():.4f}")
