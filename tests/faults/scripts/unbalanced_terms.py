"""L011: a classifier with an auxiliary regression head on raw "price" targets (~1e4)."""
import torch
from _common import digits, loader, seed
from torch import nn
from torch.nn import functional as F

seed()
Xtr, ytr, Xva, yva = digits()
price = (ytr.float() * 1000 + 5000).unsqueeze(1)  # an auxiliary target, never standardised


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.cls = nn.Linear(64, 10)
        self.reg = nn.Linear(64, 1)

    def forward(self, x):
        h = self.body(x)
        return self.cls(h), self.reg(h)


model = Net()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
dl = loader(Xtr, torch.arange(len(ytr)))
for epoch in range(3):
    for x, i in dl:
        opt.zero_grad()
        logits, p = model(x)
        loss = F.cross_entropy(logits, ytr[i]) + F.mse_loss(p, price[i])
        loss.backward()
        opt.step()
    print("epoch", epoch, loss.item())
