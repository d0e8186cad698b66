"""M008: mean-squared error on the digit labels, cast to float."""
import torch
from _common import digits, loader, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.MSELoss()
for epoch in range(3):
    for x, y in loader(Xtr, ytr):
        opt.zero_grad()
        loss = criterion(model(x).squeeze(1), y.float())
        loss.backward()
        opt.step()
    print(f"epoch {epoch} loss {loss.item():.4f}")
