"""Labels 1..10 and a functional loss: F.cross_entropy would crash at the first batch."""
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
X, y = load_digits(return_X_y=True)
X = StandardScaler().fit_transform(X)
ds = TensorDataset(torch.tensor(X, dtype=torch.float32), torch.tensor(y) + 1)
train_loader = DataLoader(ds, batch_size=32, shuffle=True)
net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
for epoch in range(3):
    for xb, yb in train_loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(net(xb), yb, label_smoothing=0.05)
        loss.backward()
        optimizer.step()
    print(epoch, loss.item())
