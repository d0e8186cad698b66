"""M009 + M002: categorical cross-entropy written by hand, Keras style, on sigmoid outputs."""
import torch
import torch.nn.functional as F
from _common import digits, loader, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(64, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        return torch.sigmoid(self.out(torch.relu(self.hidden(x))))


def categorical_crossentropy(y_pred, y_true):
    return -(y_true * torch.log(y_pred + 1e-7)).sum(dim=1).mean()


model = Net()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(4):
    for x, y in loader(Xtr, ytr):
        opt.zero_grad()
        loss = categorical_crossentropy(model(x), F.one_hot(y, 10).float())
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(Xva).argmax(1) == yva).float().mean().item()
    print(f"epoch {epoch} loss {loss.item():.4f} val_acc {acc:.3f}")
