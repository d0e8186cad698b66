"""How long a full checkup takes: an MLP on scikit-learn's digits, every probe including the
shallow-against-deep comparison, through the API and through the zero-code CLI.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/checkup.py [--reps 3]

API: ``traindoctor.checkup(model, train_loader, CrossEntropyLoss(), val_loader, Adam, shallow="auto")``
in a warm process (median of ``--reps``; the first call also pays one-off imports and is shown
apart). CLI: ``python -m traindoctor checkup --shallow <built-in healthy example>`` as a user runs
it, wall clock from the shell, interpreter start, ``import torch`` and the script's own imports
included. The issue's budget is 30 s.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/checkup.py --cnn

``--cnn``: the budget on a bigger model — a CIFAR-sized convolutional classifier (1.2 M parameters,
3×32×32 inputs, 10 classes; generated images, nothing downloaded): two epochs of plain training
timed beside a full checkup at the default 60 s budget, at 20 s and with no budget, and what the budget cut.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import traindoctor
import traindoctor.checks.checkup
from traindoctor.examples import script_path


def pipeline():
    X, y = load_digits(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    tl = DataLoader(TensorDataset(f(sc.transform(Xtr)), torch.tensor(ytr)), batch_size=32, shuffle=True,
                    generator=torch.Generator().manual_seed(0))
    vl = DataLoader(TensorDataset(f(sc.transform(Xv)), torch.tensor(yv)), batch_size=256)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return model, tl, nn.CrossEntropyLoss(), vl, torch.optim.Adam(model.parameters(), lr=1e-3)


class CNN(nn.Module):
    """Three conv blocks and a 256-wide head: the size of a common CIFAR-10 example (1.2 M parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 512), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def images(n: int, seed: int) -> TensorDataset:
    """``n`` 3×32×32 images of 10 classes: a smooth class pattern, shifted at random, plus noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.interpolate(torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(99)),
                                             size=32, mode="bilinear", align_corners=False)
    y = torch.randint(0, 10, (n,), generator=g)
    shift = torch.randint(-3, 4, (n, 2), generator=g)
    x = torch.stack([torch.roll(protos[c], (int(a), int(b)), dims=(1, 2)) for c, (a, b) in zip(y.tolist(), shift)])
    return TensorDataset(x + 2.5 * torch.randn(x.shape, generator=g), y)


def cnn_pipeline():
    tl = DataLoader(images(20000, 0), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    vl = DataLoader(images(1000, 1), batch_size=256)
    torch.manual_seed(0)
    model = CNN()
    return model, tl, nn.CrossEntropyLoss(), vl, torch.optim.Adam(model.parameters(), lr=1e-3)


def cnn() -> None:
    model, tl, loss_fn, vl, opt = cnn_pipeline()
    params = sum(p.numel() for p in model.parameters())
    t = time.perf_counter()
    for _ in range(2):
        for x, y in tl:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CNN, {params / 1e6:.2f} M parameters, 20000 generated 3x32x32 images, batch 64, Adam 1e-3:")
    print(f"  2 epochs of training ({2 * len(tl)} steps), bare : {train_s:6.1f} s   (final loss {loss.item():.3f})")
    for budget in (traindoctor.checks.checkup.BUDGET_S, 20.0, None):
        model, tl, loss_fn, vl, opt = cnn_pipeline()
        t = time.perf_counter()
        report = traindoctor.checkup(model, tl, loss_fn, vl, opt, show=False, budget_s=budget)
        took = time.perf_counter() - t
        cut = [f"{ln.probe}: {ln.outcome}" for ln in report.lines if ln.probe.startswith("budget")]
        print(f"  checkup, budget {'none' if budget is None else f'{budget:.0f} s':>6} : {took:6.1f} s   "
              f"findings {report.codes or 'none'}; restored bitwise: {report.restored}")
        for ln in cut:
            print(f"      {ln}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cnn", action="store_true", help="the budget on a 1.2 M-parameter CNN instead")
    a = ap.parse_args()
    if a.cnn:
        cnn()
        return
    times = []
    report = None
    for _ in range(a.reps + 1):
        model, tl, loss, vl, opt = pipeline()
        t = time.perf_counter()
        report = traindoctor.checkup(model, tl, loss, vl, opt, shallow="auto", show=False)
        times.append(time.perf_counter() - t)
    assert report is not None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("MLP 64-64-64-10 on digits (1437 train, 360 val), every probe + shallow vs deep:")
    print(f"  API, first call in the process : {times[0]:6.2f} s")
    print(f"  API, warm (median of {a.reps})       : {statistics.median(times[1:]):6.2f} s   "
          f"(min {min(times[1:]):.2f}, max {max(times[1:]):.2f})")
    print(f"  findings: {report.codes or 'none'}; probes: {len(report.lines)} lines; restored bitwise: {report.restored}")
    cmd = [sys.executable, "-m", "traindoctor", "checkup", "--shallow", str(script_path("healthy"))]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    print(f"  CLI  `traindoctor checkup --shallow healthy.py` wall clock: {wall:6.2f} s (exit {p.returncode})")


if __name__ == "__main__":
    main()
