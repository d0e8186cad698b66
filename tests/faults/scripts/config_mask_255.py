"""D004: binary targets stored as 0/255 (a mask saved as an image) given to BCEWithLogitsLoss."""
import torch
from _common import loader, seed, train
from torch import nn

seed()
X = torch.randn(1024, 16)
y = ((X[:, :4].sum(1, keepdim=True) > 0).float() * 255)  # "mask" pixels 0 or 255
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.BCEWithLogitsLoss(), loader(X, y), 2)
