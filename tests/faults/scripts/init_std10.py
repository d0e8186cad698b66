"""A003/L009: weights drawn with std 10: logits in the hundreds from the first step."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 128, 128, 10])
for m in model.modules():
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=10.0)
opt = torch.optim.SGD(model.parameters(), lr=1e-4)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 4, Xva, yva)
