"""No configuration finding on correct code: eighteen ordinary architectures and losses, trained for
a window of steps under Doctor, must give no M/D finding and print nothing.

A false alarm costs more trust than a miss: each case below is a pattern that a careless rule
would flag (a linear bottleneck, a depthwise convolution, a sigmoid autoencoder, soft labels,
a language model's flattened targets, tied weights ...).
"""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import traindoctor
from traindoctor.watch.monitor import CONFIG_CODES

B = 64


class Basic(nn.Module):  # ResNet basic block with a projection shortcut
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.short(x))


def resnet():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         Basic(16, 32, 2), Basic(32, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


class Inverted(nn.Module):  # MobileNetV2: expand, depthwise, linear bottleneck
    def __init__(self, c, t=6):
        super().__init__()
        h = c * t
        self.block = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                   nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                                   nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.block(x)


def mobilenet():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(), Inverted(16), Inverted(16),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class LSTMLM(nn.Module):
    def __init__(self, v=100):
        super().__init__()
        self.v = v
        self.emb = nn.Embedding(v, 32)
        self.rnn = nn.LSTM(32, 48, batch_first=True)
        self.out = nn.Linear(48, v)

    def forward(self, x):
        return self.out(self.rnn(self.emb(x))[0])


class TiedDecoder(nn.Module):  # causal self-attention, weight tying
    def __init__(self, v=100, d=32):
        super().__init__()
        self.emb = nn.Embedding(v, d)
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.emb(x)
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        a = self.ln1(h)
        h = h + self.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        h = h + self.ff(self.ln2(h))
        return F.linear(h, self.emb.weight)


class HandAttention(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.inp = nn.Linear(d, d)  # an input projection read straight by q, k and v: not a collapse
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.head = nn.Linear(d, 3)

    def forward(self, x):  # x: [B, T, d]
        h = self.inp(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 4.0, dim=-1)
        return self.head(F.relu(self.o(att @ self.v(h))).mean(1))


class ScalesItself(nn.Module):  # raw 0-255 pixels, divided inside forward
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))

    def forward(self, x):
        return self.net((x / 255.0 - 0.5) / 0.25)


def raw_pixels(g):
    return torch.randint(0, 256, (B, 1, 8, 8), generator=g).float(), torch.randint(0, 10, (B,), generator=g)


def raw_features(g):
    x = torch.randn(B, 20, generator=g) * torch.logspace(0, 4, 20)  # scales from 1 to 10^4
    return x, torch.randint(0, 10, (B,), generator=g)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        self.mu, self.logvar = nn.Linear(32, 8), nn.Linear(32, 8)
        self.dec = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def mlp(i, o, h=32, last=None):
    layers = [nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o)]
    return nn.Sequential(*layers, *([last] if last is not None else []))


def _cls(g, d=20, c=10):
    x = torch.randn(B, d, generator=g)
    return x, torch.randint(0, c, (B,), generator=g)


def case_resnet(g):
    return torch.randn(B, 3, 16, 16, generator=g), torch.randint(0, 10, (B,), generator=g)


def case_tokens(g, t=12, v=100):
    return torch.randint(0, v, (B, t), generator=g), torch.randint(0, v, (B, t), generator=g)


def vae_loss(out, x):
    recon, mu, logvar = out
    kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
    return F.binary_cross_entropy_with_logits(recon, x) + kl


def soft_labels(g):
    x, y = _cls(g)
    return x, F.one_hot(y, 10).float() * 0.9 + 0.01


def images01(g):
    x = torch.rand(B, 64, generator=g)
    return x, x


CASES = {
    "resnet blocks, BatchNorm, projection shortcut": (resnet, case_resnet, nn.CrossEntropyLoss()),
    "mobilenetv2 inverted residuals (depthwise, linear bottleneck)": (mobilenet, case_resnet, nn.CrossEntropyLoss()),
    "LSTM language model, flattened targets": (
        LSTMLM, case_tokens, lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))),
    "causal attention decoder with tied weights": (
        TiedDecoder, case_tokens, lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))),
    "hand-written attention": (HandAttention, lambda g: (torch.randn(B, 6, 16, generator=g),
                                                          torch.randint(0, 3, (B,), generator=g)),
                               nn.CrossEntropyLoss()),
    "VAE: two heads, reparameterisation, BCE-with-logits + KL": (VAE, images01, vae_loss),
    "sigmoid autoencoder with MSE on [0, 1] targets": (lambda: mlp(64, 64, last=nn.Sigmoid()), images01, nn.MSELoss()),
    "multi-label BCEWithLogitsLoss": (lambda: mlp(20, 5), lambda g: (torch.randn(B, 20, generator=g),
                                                                     torch.randint(0, 2, (B, 5), generator=g).float()),
                                      nn.BCEWithLogitsLoss()),
    "soft labels (class probabilities) into cross-entropy": (lambda: mlp(20, 10), soft_labels, nn.CrossEntropyLoss()),
    "label smoothing": (lambda: mlp(20, 10), _cls, nn.CrossEntropyLoss(label_smoothing=0.1)),
    "segmentation: per-pixel cross-entropy": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)),
        lambda g: (torch.randn(B, 3, 8, 8, generator=g), torch.randint(0, 4, (B, 8, 8), generator=g)),
        nn.CrossEntropyLoss()),
    "low-rank factorised layer (64→8→64) then ReLU": (
        lambda: nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 8), nn.Linear(8, 64), nn.ReLU(),
                              nn.Linear(64, 10)), _cls, nn.CrossEntropyLoss()),
    "softplus output for a positive regression target": (
        lambda: mlp(20, 1, last=nn.Softplus()),
        lambda g: (torch.randn(B, 20, generator=g), torch.rand(B, 1, generator=g) * 3), nn.MSELoss()),
    "tanh output for targets scaled to [-1, 1]": (
        lambda: mlp(20, 2, last=nn.Tanh()),
        lambda g: (torch.randn(B, 20, generator=g), torch.rand(B, 2, generator=g) * 2 - 1), nn.HuberLoss()),
    "GRU sequence classifier": (
        lambda: _GRUCls(), lambda g: (torch.randn(B, 10, 8, generator=g), torch.randint(0, 2, (B,), generator=g)),
        nn.CrossEntropyLoss()),
    "raw pixels scaled inside forward (x / 255)": (ScalesItself, raw_pixels, nn.CrossEntropyLoss()),
    "raw features into a BatchNorm1d first layer": (
        lambda: nn.Sequential(nn.BatchNorm1d(20), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10)), raw_features,
        nn.CrossEntropyLoss()),
    "binary classifier: one logit, float targets": (
        lambda: mlp(20, 1), lambda g: (torch.randn(B, 20, generator=g),
                                      torch.randint(0, 2, (B, 1), generator=g).float()), nn.BCEWithLogitsLoss()),
}


class _GRUCls(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[1][-1])


@pytest.mark.parametrize("name", list(CASES))
def test_correct_code_gets_no_configuration_finding(name):
    build, batch, loss_fn = CASES[name]
    torch.manual_seed(0)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = io.StringIO()
    g = torch.Generator().manual_seed(0)
    with traindoctor.Doctor(model, opt, report_file=out) as doctor:
        for _ in range(20):  # the whole data window: 20 steps × 64 samples
            x, y = batch(g)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            doctor.step(loss)
        run = doctor.run_record()
        config = [f for f in doctor.diagnose().findings if f.code in CONFIG_CODES]
    assert config == [], [(f.code, f.message) for f in config]
    assert not any(line.startswith("traindoctor: ") for line in out.getvalue().splitlines())
    graph = run.events_of("model_graph")[0].data
    assert graph["operations"] > 0 and not graph.get("trace_error")
    assert run.events_of("data_profile"), "the data window was measured"
