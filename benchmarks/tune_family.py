"""A generated family of tuning tasks with a development half and a held-out half (``tune_compare.py`` at scale).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/tune_family.py --pilot --tasks 0-23     # the targets, ~6 min
    OMP_WAIT_POLICY=PASSIVE python benchmarks/tune_family.py --half dev --repeats 3    # the comparison, ~5 min a method

Six tasks (digits, diabetes, Hastie, circles, Gaussian quantiles, Friedman #3) were the held-out measure of
``tune``, one pair at a time; each pair was spent once looked at, and four development tasks chose the settings
(``tune_probe_dev.py``). A pair is too few to tell a better search from luck, and four development tasks too few
to choose on. This generates as many as wanted from a seed: task ``k`` draws its data (one of seven scikit-learn
generators, with its own size, noise and difficulty), its MLP (width, activation), its optimizer (SGD, SGD with
momentum or Nesterov, Adam, AdamW, RMSprop), its epochs and batch size; the search space is always ``lr``
(log-uniform over 6 decades for the SGD family and adaptive optimizers alike), ``weight_decay`` (1e-6 to 0.1) and
``dropout`` (0 to 0.6). Even ``k`` is the development half (where settings may be chosen), odd ``k`` the held-out
half (where they are only reported).

The target of each task follows the rule of ``tune_compare.py``: the 2 % quantile of a random pilot (``--pilot``,
100 parameter sets over the whole space, each trained fully); a task whose pilot reaches a loss of 1e-3 or less is
skipped (its classes separate: every method reaches any target at once). The pilots' targets are stored in
``tune_family_targets.json`` beside this file, with the command that made them; ``--half`` reads them.

The comparison runs ``tune_compare.one_run`` (the same methods, trial seeds and steps-to-target rule: training
steps of all trials up to the first full-data trial that reaches the target) for each task of the half, and
prints, per task, the median steps of each method (censored runs count at their total compute, marked ≥), the
ratio of each method's median to ``tpe+median``'s, and over the half the geometric mean of the ratios and how
many tasks have a ratio of 0.5 or less (the issue's target).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn import datasets as skd  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tune_compare as tc  # noqa: E402
import tune_probe_dev as dev  # noqa: E402

TARGETS = Path(__file__).resolve().parent / "tune_family_targets.json"
ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


def _opt(kind: str) -> Any:
    def make(ps: Any, p: dict[str, Any]) -> torch.optim.Optimizer:
        lr, wd = p["lr"], p["weight_decay"]
        if kind == "sgd":
            return torch.optim.SGD(ps, lr=lr, weight_decay=wd)
        if kind == "momentum":
            return torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=wd)
        if kind == "nesterov":
            return torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
        if kind == "adam":
            return torch.optim.Adam(ps, lr=lr, weight_decay=wd)
        if kind == "adamw":
            return torch.optim.AdamW(ps, lr=lr, weight_decay=wd)
        return torch.optim.RMSprop(ps, lr=lr, weight_decay=wd)
    return make


def spec(k: int) -> dict[str, Any]:
    """Task ``k``'s description: everything drawn from ``numpy.random.default_rng(k)``."""
    rng = np.random.default_rng(k)
    n = int(rng.choice([800, 1200, 1600]))
    data = str(rng.choice(["classification", "moons", "circles", "quantiles", "friedman1", "friedman3",
                           "regression"]))
    if data == "classification":
        f = int(rng.integers(8, 25))
        args = dict(n_samples=n, n_features=f, n_informative=int(rng.integers(3, min(f, 10) + 1)), n_redundant=0,
                    n_classes=int(rng.integers(2, 6)), flip_y=round(float(rng.uniform(0.0, 0.1)), 3),
                    class_sep=round(float(rng.uniform(0.6, 1.5)), 2), random_state=k)
    elif data == "moons":
        args = dict(n_samples=n, noise=round(float(rng.uniform(0.15, 0.35)), 3), random_state=k)
    elif data == "circles":
        args = dict(n_samples=n, noise=round(float(rng.uniform(0.05, 0.2)), 3),
                    factor=round(float(rng.uniform(0.3, 0.7)), 2), random_state=k)
    elif data == "quantiles":
        args = dict(n_samples=n, n_features=int(rng.integers(2, 8)), n_classes=int(rng.integers(2, 5)), random_state=k)
    elif data == "friedman1":
        args = dict(n_samples=n, n_features=int(rng.integers(5, 15)), noise=round(float(rng.uniform(0.5, 2.0)), 2),
                    random_state=k)
    elif data == "friedman3":
        args = dict(n_samples=n, noise=round(float(rng.uniform(0.05, 0.2)), 3), random_state=k)
    else:
        f = int(rng.integers(5, 20))
        args = dict(n_samples=n, n_features=f, n_informative=int(rng.integers(2, f + 1)),
                    noise=round(float(rng.uniform(5, 30)), 1), random_state=k)
    opt = str(rng.choice(["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]))
    lr = {"sgd": "log:1e-3:1000", "momentum": "log:1e-4:100", "nesterov": "log:1e-4:100"}.get(opt, "log:1e-5:10")
    return dict(data=data, args=args, opt=opt, lr=lr, act=str(rng.choice(list(ACTS))),
                hidden=int(rng.choice([32, 64, 128])), epochs=int(rng.integers(8, 16)), batch=int(rng.choice([32, 64])))


def _load(s: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    make = {"classification": skd.make_classification, "moons": skd.make_moons, "circles": skd.make_circles,
            "quantiles": skd.make_gaussian_quantiles, "friedman1": skd.make_friedman1,
            "friedman3": skd.make_friedman3, "regression": skd.make_regression}[s["data"]]
    X, y = make(**s["args"])
    return dev._split(X, y, s["data"] in ("friedman1", "friedman3", "regression"))


def register(k: int, target: float) -> tc.Task:
    """Task ``k`` as ``fam{k}`` in ``tune_probe_dev.ALL`` (its training) and ``tune_compare.TASKS`` (its target)."""
    s = spec(k)
    name = f"fam{k}"
    X = _load(s)
    reg = s["data"] in ("friedman1", "friedman3", "regression")
    out = 1 if reg else int(X[1].max()) + 1
    dev.ALL[name] = dict(load=lambda X=X: X, epochs=s["epochs"], batch=s["batch"],
                         width=(X[0].shape[1], s["hidden"], out), act=ACTS[s["act"]], opt=_opt(s["opt"]), lr=s["lr"])
    tc.LOADERS[name] = dev.ALL[name]["load"]
    tc.TASKS[name] = tc.Task(name, dev.space(name), target=target, epochs=s["epochs"], batch=s["batch"], dev=True)
    return tc.TASKS[name]


def describe(k: int) -> str:
    s = spec(k)
    args = ", ".join(f"{a}={v}" for a, v in s["args"].items() if a != "random_state")
    return (f"{s['data']}({args}), MLP {s['hidden']}×2 {s['act']}, {s['opt']} lr {s['lr'][4:]}, "
            f"{s['epochs']} epochs, batch {s['batch']}")


def pilot(k: int, n: int) -> float:
    """The 2 % quantile of ``n`` random parameter sets trained fully (``tune_compare.pilot_draws``)."""
    fin = np.array([v for v, _ in tc.pilot_draws(register(k, math.nan), n) if math.isfinite(v)])
    return float(np.quantile(fin, 0.02)) if fin.size else math.nan


def ks(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="0-23", help="task numbers: 0-23, or 1,3,5")
    ap.add_argument("--pilot", action="store_true", help="set the targets (stored in tune_family_targets.json)")
    ap.add_argument("--pilot-trials", type=int, default=100)
    ap.add_argument("--half", choices=("dev", "held", "all"), default=None)
    ap.add_argument("--methods", default="traindoctor,tpe+median")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--out", default=None)
    ap.add_argument("--targets", default=str(TARGETS), help="the targets file (--pilot adds to it, --half reads it)")
    a = ap.parse_args()
    path = Path(a.targets)
    torch.set_num_threads(1)
    if a.pilot:
        saved = json.loads(path.read_text()) if path.exists() else {"targets": {}}
        for k in ks(a.tasks):
            t0 = time.perf_counter()
            q = pilot(k, a.pilot_trials)
            saved["targets"][str(k)] = {"target": round(q, 4), "task": describe(k)}
            print(f"fam{k}: 2 % quantile {q:.4f} ({time.perf_counter() - t0:.0f}s): {describe(k)}", flush=True)
            saved["command"] = f"python benchmarks/tune_family.py --pilot --pilot-trials {a.pilot_trials} --tasks ..."
            path.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
        return
    if a.half is None:
        raise SystemExit("give --pilot or --half dev|held|all")
    if not path.exists():
        raise SystemExit(f"{path}: no such targets file: run --pilot first")
    targets = json.loads(path.read_text())["targets"]
    want = [k for k in ks(a.tasks) if str(k) in targets
            and (a.half == "all" or (k % 2 == 0) == (a.half == "dev"))]
    skipped = [k for k in want if not targets[str(k)]["target"] > 1e-3]
    want = [k for k in want if k not in skipped]
    methods = [m for m in a.methods.split(",") if m]
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k in want:
            task = register(k, float(targets[str(k)]["target"]))
            for r in range(a.repeats):
                for m in methods:
                    runs.append(tc.one_run(task, m, r, a.trials, Path(tmp)))
            print(f"fam{k} done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"argv": sys.argv, "runs": runs}, default=str))
    print(f"{a.half} half: {len(want)} tasks × {len(methods)} methods × {a.repeats} repeats, {a.trials} trials each "
          f"(skipped, pilot at 0: {skipped or 'none'}); {time.perf_counter() - t0:.0f}s; torch {torch.__version__}")
    print()
    ratios: dict[str, list[float]] = {m: [] for m in methods if m != "tpe+median" and "tpe+median" in methods}
    print("| task | target | " + " | ".join(f"{m}: median steps (reached)" for m in methods) + " | "
          + "".join(f"{m} ÷ tpe+median | " for m in ratios))
    print("|---|---|" + "---|" * (len(methods) + len(ratios)))
    for k in want:
        med: dict[str, float] = {}
        cells = []
        for m in methods:
            rs = [x for x in runs if x["task"] == f"fam{k}" and x["method"] == m]
            at = [x["reached_at"] if x["reached_at"] is not None else x["compute"] for x in rs]
            med[m] = statistics.median(at)
            censored = any(x["reached_at"] is None and x["compute"] <= med[m] for x in rs)
            cells.append(f"{'≥' if censored else ''}{med[m]:,.0f} ({sum(x['reached_at'] is not None for x in rs)}/"
                         f"{len(rs)})")
        rc = []
        for m in ratios:
            q = med[m] / med["tpe+median"] if "tpe+median" in med and med["tpe+median"] > 0 else math.nan
            ratios[m].append(q)
            rc.append(f"{q:.2f}")
        print(f"| fam{k}: {describe(k)} | {targets[str(k)]['target']} | " + " | ".join(cells) + " | "
              + "".join(f"{c} | " for c in rc))
    print()
    for m, qs in ratios.items():
        fin = [q for q in qs if math.isfinite(q) and q > 0]
        if not fin:
            continue
        gm = math.exp(statistics.mean(math.log(q) for q in fin)) if fin else math.nan
        print(f"{m} ÷ tpe+median over the {a.half} half: geometric mean {gm:.2f}, median {statistics.median(fin):.2f}, "
              f"≤ 0.5 on {sum(q <= 0.5 for q in fin)} of {len(fin)} tasks, > 1 on {sum(q > 1 for q in fin)}")


if __name__ == "__main__":
    main()
