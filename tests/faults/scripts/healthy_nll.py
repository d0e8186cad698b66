"""Healthy: log_softmax in the model and F.nll_loss, hand-written training loop."""
import torch
import torch.nn.functional as F
from _common import digits, loader, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for epoch in range(6):
    for x, y in loader(Xtr, ytr):
        opt.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        print(f"epoch {epoch} val_loss {F.nll_loss(model(Xva), yva).item():.4f}")
