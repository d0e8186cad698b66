"""Healthy: a GRU reads each digit row by row (8 steps of 8 pixels), gradient clipping, Adam."""
import torch
from _common import digits, loader, seed
from torch import nn


class RowReader(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 64, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        _, h = self.rnn(x.reshape(-1, 8, 8))
        return self.head(h[-1])


seed()
Xtr, ytr, Xva, yva = digits()
model = RowReader()
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(6):
    model.train()
    for x, y in loader(Xtr, ytr):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        print(epoch, loss_fn(model(Xva), yva).item())
