"""The checkup's LR range test against torch-lr-finder on the same model, data and optimizer.

    pip install torch-lr-finder "torch==2.13.0"      # benchmark-only dependency
    OMP_WAIT_POLICY=PASSIVE python benchmarks/lr_finder_compare.py

Both sweep exponentially from 1e-7 to 10 over 100 steps, smooth the loss exponentially
(factor 0.05), stop when the smoothed loss exceeds 5× its best, and suggest the LR of steepest
descent after dropping the first 10 and last 5 points. Each starts from the same initial weights
(seeded) on the same training data; they differ in batch order (torch-lr-finder iterates the
DataLoader; the checkup iterates its own seeded shuffle of the samples it read). To see whether a
suggestion is usable, each suggested LR then trains a fresh copy for 3 epochs; the table shows the
validation loss reached.
"""
from __future__ import annotations

import argparse
import io
import math
import time
from contextlib import redirect_stderr, redirect_stdout

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from traindoctor.checks.probes import Pipeline, lr_range_test, shuffled_batches  # noqa: E402
from traindoctor.inspect.batches import read_batches  # noqa: E402
from traindoctor.inspect.losses import describe_loss  # noqa: E402
from traindoctor.inspect.state import Snapshot  # noqa: E402


def data(seed: int = 0):
    X, y = load_digits(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    sc = StandardScaler().fit(Xtr)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(sc.transform(Xtr)), torch.tensor(ytr), f(sc.transform(Xv)), torch.tensor(yv)


DEPTH = [1]


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    hidden = [m for _ in range(DEPTH[0]) for m in (nn.Linear(64, 64), nn.ReLU())]
    return nn.Sequential(*hidden, nn.Linear(64, 10))


def make_opt(name: str, params, lr: float):
    return {"Adam": lambda: torch.optim.Adam(params, lr=lr),
            "SGD": lambda: torch.optim.SGD(params, lr=lr),
            "SGD+momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9)}[name]()


def ours(opt_name: str, loader: DataLoader) -> tuple[float | None, float | None, float]:
    m = model()
    opt = make_opt(opt_name, m.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    pipe = Pipeline(m, loss_fn, opt, describe_loss(loss_fn))
    t = time.perf_counter()
    scan = read_batches(loader, "train_loader")
    r = lr_range_test(pipe, shuffled_batches(scan.kept, 32), Snapshot.take(m, opt))
    return r.suggested, r.min_loss_lr, time.perf_counter() - t


def theirs(opt_name: str, loader: DataLoader) -> tuple[float | None, float | None, float]:
    from torch_lr_finder import LRFinder

    m = model()
    opt = make_opt(opt_name, m.parameters(), 1e-7)
    t = time.perf_counter()
    finder = LRFinder(m, opt, nn.CrossEntropyLoss(), device="cpu")
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=100, step_mode="exp", smooth_f=0.05,
                          diverge_th=5)
        fig_ax = matplotlib.pyplot.subplots()
        _, suggested = finder.plot(skip_start=10, skip_end=5, ax=fig_ax[1], suggest_lr=True)
    hist = finder.history
    j = min(range(len(hist["loss"])), key=lambda i: hist["loss"][i])
    elapsed = time.perf_counter() - t
    finder.reset()
    return suggested, hist["lr"][j], elapsed


def val_after(opt_name: str, lr: float | None, loader: DataLoader, Xv, yv, epochs: int = 3) -> float:
    if lr is None:
        return float("nan")
    m = model()
    opt = make_opt(opt_name, m.parameters(), lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(m(x), y)
            if not math.isfinite(loss.item()):
                return float("nan")
            loss.backward()
            opt.step()
    with torch.no_grad():
        return loss_fn(m(Xv), yv).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizers", nargs="*", default=["Adam", "SGD", "SGD+momentum"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    Xtr, ytr, Xv, yv = data()

    def loader():
        return DataLoader(TensorDataset(Xtr, ytr), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))

    fmt = lambda v: "—" if v is None else f"{v:.3g}"  # noqa: E731
    print("MLPs on standardised digits (1437 train / 360 val), batch 32, CrossEntropyLoss; sweep 1e-7 → 10, "
          "100 steps")
    print(f"{'model':<12} {'optimizer':<13} {'tool':<16} {'suggested lr':>12} {'lowest-loss lr':>14} {'sweep s':>8} "
          f"{'val loss, 3 epochs at it':>25}")
    for depth, opts in ((1, a.optimizers), (2, ["Adam"])):
        DEPTH[0] = depth
        arch = "64-" + "64-" * depth + "10"
        for name in opts:
            for tool, fn in (("traindoctor", ours), ("torch-lr-finder", theirs)):
                sug, low, secs = fn(name, loader())
                v = val_after(name, sug, loader(), Xv, yv)
                print(f"{arch:<12} {name:<13} {tool:<16} {fmt(sug):>12} {fmt(low):>14} {secs:>8.2f} {v:>25.3f}")


if __name__ == "__main__":
    main()
