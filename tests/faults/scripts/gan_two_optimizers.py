"""A small GAN: two models, two optimizers, BCEWithLogitsLoss on constant targets, a Tanh generator."""
import torch
from _common import seed
from torch import nn

seed()
G = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2), nn.Tanh())
D = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3)
bce = nn.BCEWithLogitsLoss()
for step in range(200):
    real = torch.randn(64, 2) * 0.3 + 0.5
    fake = G(torch.randn(64, 8))
    opt_d.zero_grad()
    loss_d = bce(D(real), torch.ones(64, 1)) + bce(D(fake.detach()), torch.zeros(64, 1))
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad()
    loss_g = bce(D(fake), torch.ones(64, 1))
    loss_g.backward()
    opt_g.step()
    if step % 50 == 0:
        print(step, round(loss_d.item(), 3), round(loss_g.item(), 3))
