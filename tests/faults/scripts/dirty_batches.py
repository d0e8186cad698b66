"""L003: every 90th batch comes from a corrupted shard (inputs ×20, labels shifted): repeated spikes."""
import torch
from _common import digits, mlp, seed, train
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

seed()
Xtr, ytr, Xva, yva = digits()
count = [0]


def collate(batch):
    x = torch.stack([b[0] for b in batch])
    y = torch.stack([b[1] for b in batch])
    count[0] += 1
    if count[0] % 90 == 0:
        x, y = x * 20, (y + 3) % 10
    return x, y


dl = DataLoader(TensorDataset(Xtr, ytr), batch_size=32, shuffle=True, collate_fn=collate,
                generator=torch.Generator().manual_seed(0))
model = mlp([64, 64, 10])
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
train(model, opt, nn.CrossEntropyLoss(), dl, 12, Xva, yva)
