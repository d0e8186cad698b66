"""A001 with ReLUs applied as functions: hidden biases initialised to BIAS, the ReLUs called as
``F.relu`` (no module to hook). At −5 every unit is dead from the first step and gets no gradient.

    python sig_functional_dead.py [BIAS] [--modules]

``--modules`` builds the same network with ``nn.ReLU`` modules (same weights, same steps): the
twin whose dead fractions the module hooks measure.
"""
import sys

import torch
import torch.nn.functional as F
from _common import digits, loader, seed
from torch import nn

bias = float(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else -5.0
modules = "--modules" in sys.argv


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 32)
        self.out = nn.Linear(32, 10)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        for fc in (self.fc1, self.fc2):
            nn.init.constant_(fc.bias, bias)

    def forward(self, x):
        if modules:
            return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))
        h = F.relu(self.fc1(x))
        h = self.fc2(h).relu()
        return self.out(h)


seed()
Xtr, ytr, Xva, yva = digits()
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(4):
    for x, y in loader(Xtr, ytr, seed=epoch):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    print(f"epoch {epoch} loss {loss.item():.4f}")
