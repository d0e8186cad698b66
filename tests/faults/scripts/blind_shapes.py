"""Shape-only operations between the model's last activation and the loss.

    python blind_shapes.py CASE

CASE: sigmoid_squeeze_bce (nn.Sigmoid output .squeeze(1) into nn.BCELoss), softmax_view_ce
(F.softmax(x, 1).view(-1, C) into F.cross_entropy), relu_slice_ce (a ReLU on the outputs, then
[:, :C] into cross-entropy), tanh_chunk_ce (a tanh on the outputs of two heads in one layer, then
.chunk(2, dim=1)[0] into cross-entropy), softmax_permute_ce (a sequence model's softmax over classes, then
.permute(0, 2, 1).contiguous() into CrossEntropyLoss), sigmoid_cast_ce (a sigmoid, then .to(float32)
and .flatten(1) into cross-entropy), good (logits through the same reshapes into cross-entropy),
good_seq (a sequence model's logits permuted into CrossEntropyLoss).
"""
import sys

import torch
import torch.nn.functional as F
from torch import nn

case = sys.argv[1]
torch.manual_seed(0)
C, T = 4, 6
X = torch.randn(256, 12)
y = (X[:, 0] > 0).long() + 2 * (X[:, 1] > 0).long()
Xs = torch.randn(256, T, 12)
ys = (Xs[..., 0] > 0).long() + 2 * (Xs[..., 1] > 0).long()
body = [nn.Linear(12, 16), nn.ReLU()]
seq = False
if case == "sigmoid_squeeze_bce":
    model = nn.Sequential(*body, nn.Linear(16, 1), nn.Sigmoid())
    bce = nn.BCELoss()

    def loss_fn(out, t):
        return bce(out.squeeze(1), (t > 0).float())
elif case == "softmax_view_ce":
    model = nn.Sequential(*body, nn.Linear(16, C))

    def loss_fn(out, t):
        return F.cross_entropy(F.softmax(out, 1).view(-1, C), t)
elif case == "relu_slice_ce":
    model = nn.Sequential(*body, nn.Linear(16, C + 2), nn.ReLU())

    def loss_fn(out, t):
        return F.cross_entropy(out[:, :C], t)
elif case == "tanh_chunk_ce":
    model = nn.Sequential(*body, nn.Linear(16, 2 * C), nn.Tanh())

    def loss_fn(out, t):
        logits, _aux = out.chunk(2, dim=1)  # two heads in one layer
        return F.cross_entropy(logits, t)
elif case == "sigmoid_cast_ce":
    model = nn.Sequential(*body, nn.Linear(16, C), nn.Sigmoid())

    def loss_fn(out, t):
        return F.cross_entropy(out.unsqueeze(2).to(torch.float32).flatten(1), t)
elif case == "good":
    model = nn.Sequential(*body, nn.Linear(16, C + 2))

    def loss_fn(out, t):
        return F.cross_entropy(out[:, :C].unsqueeze(1).reshape(-1, C).contiguous().float(), t)
elif case in ("softmax_permute_ce", "good_seq"):
    seq = True
    last = [nn.Linear(16, C)] + ([nn.Softmax(dim=-1)] if case == "softmax_permute_ce" else [])
    model = nn.Sequential(*body, *last)
    ce = nn.CrossEntropyLoss()

    def loss_fn(out, t):
        return ce(out.permute(0, 2, 1).contiguous(), t)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
data, targets = (Xs, ys) if seq else (X, y)
for _epoch in range(2):
    for i in range(0, 256, 32):
        opt.zero_grad()
        loss = loss_fn(model(data[i:i + 32]), targets[i:i + 32])
        loss.backward()
        opt.step()
