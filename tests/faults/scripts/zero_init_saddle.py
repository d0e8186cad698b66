"""G007/G006/L007: every weight initialised to zero, full-batch gradient descent: after the output
bias learns the class prior, the gradient vanishes at a symmetric saddle."""
import torch
from _common import digits, mlp, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 32, 32, 10], act=nn.Tanh)
for p in model.parameters():
    nn.init.zeros_(p)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
loss_fn = nn.CrossEntropyLoss()
for step in range(300):  # the whole training set is one batch
    opt.zero_grad()
    loss = loss_fn(model(Xtr), ytr)
    loss.backward()
    opt.step()
    if step % 50 == 0:
        print(step, loss.item())
