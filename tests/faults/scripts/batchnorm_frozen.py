"""V007: BatchNorm statistics "frozen" (momentum=0, left over from a fine-tuning recipe) while the
inputs arrive on a thousandfold smaller scale than the running statistics assume: train mode
normalises each batch and learns well, eval mode never rescales and predicts almost nothing."""
import torch
from _common import digits, loader, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
Xtr, Xva = Xtr / 1000, Xva / 1000  # pixels divided by 255 twice... in spirit
model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64, momentum=0.0), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(Xtr, ytr), 8, Xva, yva)
