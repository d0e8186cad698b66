"""M009: a ReLU after the last Linear, feeding CrossEntropyLoss; a small LR makes the loss crawl."""
import torch
from _common import digits, loader, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = nn.Sequential(
    nn.Linear(64, 64),
    nn.ReLU(),
    nn.Linear(64, 10),
    nn.ReLU(),  # "outputs should be positive"
)
opt = torch.optim.SGD(model.parameters(), lr=0.0005)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 10, Xva, yva)
