"""D003: house prices in dollars as raw regression targets."""
import torch
from _common import seed
from torch import nn

seed()
n = 2000
rooms = torch.randint(1, 8, (n, 1)).float()
area = torch.rand(n, 1) * 200 + 40
age = torch.rand(n, 1) * 80
X = torch.cat([rooms, area, age], 1)
X = (X - X.mean(0)) / X.std(0)  # features standardised ...
price = 50_000 + 30_000 * rooms + 1_500 * area - 400 * age + torch.randn(n, 1) * 20_000  # ... targets not
model = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(3):
    for i in range(0, n, 64):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X[i:i + 64]), price[i:i + 64])
        loss.backward()
        opt.step()
    print(f"epoch {epoch} mse {loss.item():.4g}")
