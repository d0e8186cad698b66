"""How long a full checkup takes: an MLP on scikit-learn's digits, every probe including the
shallow-against-deep comparison, through the API and through the zero-code CLI.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/checkup.py [--reps 3]

API: ``traindoctor.checkup(model, train_loader, CrossEntropyLoss(), val_loader, Adam, shallow="auto")``
in a warm process (median of ``--reps``; the first call also pays one-off imports and is shown
apart). CLI: ``python -m traindoctor checkup --shallow <built-in healthy example>`` as a user runs
it, wall clock from the shell, interpreter start, ``import torch`` and the script's own imports
included. The issue's budget is 30 s.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
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
