"""M013: fine-tuning a head on a frozen backbone whose checkpoint did not load.

    python sig_frozen_backbone.py CHECKPOINT.pt [--strict]

The checkpoint holds a pretrained 3-Linear backbone's state_dict. Saved from ``nn.DataParallel``,
every key carries a ``module.`` prefix; loaded with ``strict=False`` nothing matches, PyTorch says so
only in the return value, and the head trains on the backbone's random initialisation. With
``--strict`` (a checkpoint with the right keys) the load is complete.
"""
import sys

import torch
from _common import digits, loader, seed, train
from torch import nn


def backbone():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = backbone()
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)))


seed(1)
Xtr, ytr, Xva, yva = digits()
model = Net()
state = torch.load(sys.argv[1])
strict = "--strict" in sys.argv
model.backbone.load_state_dict(state, strict=strict)
for p in model.backbone.parameters():
    p.requires_grad_(False)
opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 3, Xva, yva)
