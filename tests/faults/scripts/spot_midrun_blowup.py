"""Blind spot: a hand-written schedule raises Adam's learning rate 60x for a fifth of the run, mid-way.
The loss blows up for that stretch and comes back: neither three spikes nor a divergence to the end."""
import torch
from _common import digits, loader, mlp, seed, train
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
model = mlp([64, 64, 10])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
dl = loader(Xtr, ytr)
total = 12 * len(dl)
boost = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 60.0 if 0.4 * total <= i < 0.6 * total else 1.0)


class Stepper:
    """Steps the LambdaLR after every optimizer step (the usual per-iteration schedule)."""

    def __init__(self, opt, sched):
        self.opt, self.sched = opt, sched
        self.param_groups = opt.param_groups

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        self.opt.step()
        self.sched.step()


train(model, Stepper(opt, boost), nn.CrossEntropyLoss(), dl, 12, Xva, yva)
