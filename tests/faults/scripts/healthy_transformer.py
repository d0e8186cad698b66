"""Healthy: a transformer encoder over token ids (embedding, attention, LayerNorm, GELU, residuals)."""
import torch
from _common import loader, seed, train
from torch import nn

seed()
n, T, V = 1024, 16, 50
tokens = torch.randint(1, V, (n, T))
labels = ((tokens < V // 2).sum(1) > T // 2).long()  # mostly low tokens or mostly high


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 32)
        self.pos = nn.Parameter(torch.randn(T, 32) * 0.02)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, activation="gelu", batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        h = self.enc(self.emb(x) + self.pos)
        return self.head(self.norm(h.mean(1)))


model = Encoder()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
train(model, opt, nn.CrossEntropyLoss(), loader(tokens[:824], labels[:824]), 6, tokens[824:], labels[824:])
