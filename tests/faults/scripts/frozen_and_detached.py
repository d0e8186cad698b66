"""G006: an encoder whose output is detached, and a layer frozen by mistake but still in the optimizer."""
import torch
from _common import digits, loader, seed, train
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.middle = nn.Linear(64, 64)
        self.head = nn.Linear(64, 10)
        self.middle.weight.requires_grad_(False)  # left over from a fine-tuning experiment

    def forward(self, x):
        h = self.encoder(x).detach()  # meant to be a stop-gradient for a probe, applied to everything
        return self.head(torch.relu(self.middle(h)))


seed()
Xtr, ytr, Xva, yva = digits()
model = Net()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 3, Xva, yva)
