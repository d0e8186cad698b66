"""D002: images fed as raw 0-255 pixel values (the digits rescaled to 8-bit, never normalised)."""
import numpy as np
import torch
from _common import seed, train
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

seed()
X, y = load_digits(return_X_y=True)
pixels = np.round(X * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8)  # as read from image files
images = torch.tensor(pixels).float()
labels = torch.tensor(y)
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
dl = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
train(model, opt, nn.CrossEntropyLoss(), dl, 2)
