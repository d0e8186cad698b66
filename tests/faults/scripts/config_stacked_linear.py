"""M010: two Linear layers with nothing between them (the "hidden layer" adds nothing)."""
import torch
from _common import digits, loader, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(self.drop(self.fc1(x)))


model = TwoLayer()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 3, Xva, yva)
