"""Compute to reach a validation loss: the doctor as Optuna pruner against TPE + MedianPruner and random search.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/tune_compare.py --as-shipped --out results.json   # the main table, ~5 min
    OMP_WAIT_POLICY=PASSIVE python benchmarks/tune_compare.py --methods traindoctor,td-nocoarse,tpe+median --check-every 4
    OMP_WAIT_POLICY=PASSIVE python benchmarks/tune_compare.py --budget steps    # equal compute, not trials; ~13 min
    OMP_WAIT_POLICY=PASSIVE python benchmarks/tune_compare.py --pilot 200       # how the targets were set

Options: ``--tasks digits,diabetes --repeats 5 --trials 30 --methods traindoctor,td-noprobe,td-nocoarse,tpe+median,random
--false-prunes digits,diabetes --budget trials|steps --max-trials N --check-s S --check-every K --as-shipped
--target TASK=LOSS --out FILE``.

``--tasks hastie,circles`` runs the fresh held-out pair (``tune_probe_dev.FRESH``: Hastie's 10-feature binary
problem with AdamW, two circles with Nesterov SGD and GELU), fixed after every setting of the tuner was chosen;
targets 0.209 and 0.144, the 2 % quantile of a 200-trial random pilot. ``--tasks quantiles,friedman3`` runs a third
pair (``tune_probe_dev.FRESH2``: Gaussian quantiles, 3 classes, with Adam; Friedman #3 regression with SiLU and SGD
momentum), fixed after the second was measured; targets 0.285 and 0.131 by the same rule.

``--from FILE --profile TASK=L1,L2,...`` re-reads a saved ``--out`` file (nothing is re-run) and gives the
steps to each of those validation losses: how the methods compare at targets looser or tighter than the
task's (``--pilot`` prints the quantiles of random trials that the README's profiles use).

``--tasks cancer,friedman,blobs,moons`` runs the development tasks of ``tune_probe_dev.py`` instead (where
the tuner's settings were chosen; digits and diabetes are held out); their targets are the 2 % quantile of a
100-trial random pilot (``--pilot 100 --tasks cancer,friedman,blobs,moons``).

Two tasks on scikit-learn's bundled data (nothing downloaded), each a small MLP trained by a
``train_fn(params, doctor)`` that seeds from ``doctor.seed``, trains on ``doctor.fraction`` of the data for
``doctor.epochs(n)`` epochs, calls ``doctor.step(loss)`` after each optimizer step and ``doctor.report(val)``
after each epoch (on the whole validation split), and returns the last epoch's validation loss:

* ``digits``: 8×8 digits (1437 train / 360 validation, standardised), MLP 64-128-128-10 (ReLU, dropout),
  SGD momentum 0.9, batch 64, 10 epochs (230 steps); validation cross-entropy. Space
  ``lr=log:1e-4:10 weight_decay=log:1e-6:1e-1 dropout=0:0.6``: wide, so many trials diverge, go NaN or die.
* ``diabetes``: diabetes regression (353 / 89, inputs and target standardised on the training split),
  MLP 10-64-64-1 (ReLU, dropout), Adam, batch 32 (the last batch of an epoch holds 1 sample, as a plain
  ``DataLoader`` would give it), 30 epochs (360 steps); validation MSE. Space
  ``lr=log:1e-5:10 weight_decay=log:1e-6:1e-1 dropout=0:0.6``.

Methods, each repeat ``r`` with sampler seed ``r`` and its own fresh SQLite study; ``top_k=0`` everywhere
(the final re-runs over seeds measure the chosen parameters, they are not search, and are left out of every
method):

* ``traindoctor``: ``tune(sampler="tpe", pruner="median", doctor_prunes=True)`` as shipped: the probe (an
  LR range test inside the first run, which drops the learning rates that blow the model up; its steps are
  counted), then half the trials coarse, on 25 % of the data and 34 % of the epochs, then fine trials on the
  full data in the ranges the better coarse trials occupy; the doctor's prunes steer the learning rate;
* ``td-noprobe``: the same with ``probe=None``;
* ``td-nocoarse``: ``coarse=0, probe=None`` (every trial on the full data): the doctor's pruning (and its
  steering) alone;
* ``td-probe-only``: ``coarse=0`` with the probe: every trial on the full data in the probe's range;
* ``td-sh``: ``traindoctor`` with ``pruner="halving"`` (Optuna's SuccessiveHalvingPruner, its defaults) in
  place of the median;
* ``tpe+sh``: TPE with the SuccessiveHalvingPruner, without the doctor, the probe or the coarse stage;
* ``tpe+median``: ``tune(sampler="tpe", pruner="median", doctor_prunes=False, coarse=0)``: Optuna's TPE with
  its MedianPruner (through traindoctor's wrapper, so the pruner's settings are the same in every method);
* ``random``: ``tune(sampler="random", pruner=None, doctor_prunes=False, coarse=0)``.

Budget: ``--budget trials`` (default) gives every method ``--trials`` trials; ``--budget steps`` gives every
method the compute of ``--trials`` fully trained trials (what random search spends) and lets it run trials
until it has spent them (at most ``--max-trials``, default 10 × ``--trials``); traindoctor keeps the same
coarse stage (``--trials``/2 trials), then runs fine trials.

Steps to target: the training steps of all trials (``TrialRow.steps``, in trial order, pruned and coarse
ones included) up to and including the first trial that *completed on the full data* with a validation loss
at or below the task's target. A coarse trial never counts as reaching it, although its loss is taken on
the same full validation split (its model saw a quarter of the data for a third of the epochs), nor does a
pruned trial (its model is not one the search returns). A run that never reaches it is censored at its total
compute (``--budget trials``) or at the budget (``--budget steps``); a median or mean with censored runs in
it is marked ≥; the table gives how many reached it. The targets were set from a pilot (``--pilot 200``:
random parameters over the whole space, each trained fully) at a loss that 2-2.5 % of random trials reach,
so that random search reaches it in about half of its 30-trial runs: digits 0.12, diabetes 0.522.

False prunes (``--false-prunes TASKS``): every trial the doctor pruned is trained again on the full data for
all epochs, with the same parameters and seed and nothing pruning it; a false prune is one whose loss then
beats the best completed full-data trial of its own run (and, reported apart, one that reaches the target).
The same is done for the trials Optuna's MedianPruner pruned in ``tpe+median``, for comparison.

Monkeypatches (said in the output's first line):

* ``report_nan_to_optuna`` (on unless ``--as-shipped``): a NaN validation loss is passed to Optuna's
  ``trial.report`` as a plain Optuna loop would pass it (Optuna's MedianPruner prunes a trial whose reports
  are all NaN). ``TrialDoctor.report`` dropped non-finite values when the first tables were measured; it now
  reports them itself, so the patch no longer changes anything and ``--as-shipped`` gives the same numbers.
* ``check_every`` (``--check-every K`` only): the doctor reads the trial every K steps instead of every
  ``check_s`` seconds. These trials last well under a second, so at the default ``check_s=1`` the doctor
  reads a trial only at its reports (and at once on a non-finite loss); K emulates the reading between
  reports that a trial of minutes gets, without making the result depend on the machine's speed.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tune_probe_dev as dev  # noqa: E402

from traindoctor.tuning import tune  # noqa: E402
from traindoctor.tuning.study import STAGE_OFFSET, TrialDoctor  # noqa: E402

CHECK_S = 1.0  # tune()'s default
_STEP = TrialDoctor.step


def check_every(k: int) -> None:
    """Monkeypatch: the doctor reads the trial every ``k`` steps (and at each report, and at once on a
    non-finite loss) instead of every ``check_s`` seconds; ``k=0`` restores the shipped behaviour."""
    global CHECK_S
    if k <= 0:
        TrialDoctor.step = _STEP  # type: ignore[method-assign]
        return
    CHECK_S = 1e9  # the clock never triggers a check; the shipped step still checks at once when critical

    def step(self: TrialDoctor, loss: Any) -> None:
        _STEP(self, loss)
        if self.steps % k == 0:
            self._check()

    TrialDoctor.step = step  # type: ignore[method-assign]


_REPORT = TrialDoctor.report


def report_nan_to_optuna(on: bool = True) -> None:
    """Monkeypatch (fairness to the baselines): a NaN validation loss is reported to Optuna too, as a plain
    Optuna loop (``trial.report(val, epoch); if trial.should_prune(): raise TrialPruned``) would report it;
    Optuna's MedianPruner prunes a trial whose reports are all NaN. ``TrialDoctor.report`` as shipped
    passes only finite values on, so without this a baseline trial whose loss went NaN trains to its end."""
    import optuna

    if not on:
        TrialDoctor.report = _REPORT  # type: ignore[method-assign]
        return

    def report(self: TrialDoctor, value: float, step: int | None = None) -> None:
        _REPORT(self, value, step)  # logs it, lets the doctor judge; a non-finite value stops there
        v = float(value)
        if math.isnan(v) and self._median and self.stage != "final":
            self.trial.report(v, STAGE_OFFSET.get(self.stage, 0) + self.values[-1][0])
            if self.trial.should_prune():
                self.pruned_by = "optuna"
                raise optuna.TrialPruned(f"Optuna's pruner: {self.metric} is NaN")

    TrialDoctor.report = report  # type: ignore[method-assign]

# ----------------------------------------------------------------------------------------------- the tasks


@dataclass
class Task:
    name: str
    space: dict[str, str]
    target: float  # validation loss to reach, fixed from the pilot
    epochs: int
    batch: int
    data: tuple[torch.Tensor, ...] | None = None
    dev: bool = False  # a development task of tune_probe_dev.py (where the tuner's settings were chosen)

    def load(self) -> tuple[torch.Tensor, ...]:
        if self.data is None:
            self.data = LOADERS[self.name]()
        return self.data


def _digits() -> tuple[torch.Tensor, ...]:
    X, y = load_digits(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(sc.transform(Xtr)), torch.tensor(ytr), f(sc.transform(Xv)), torch.tensor(yv)


def _diabetes() -> tuple[torch.Tensor, ...]:
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.2, random_state=0)
    sx = StandardScaler().fit(Xtr)
    mu, sd = ytr.mean(), ytr.std()
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(sx.transform(Xtr)), f((ytr - mu) / sd)[:, None], f(sx.transform(Xv)), f((yv - mu) / sd)[:, None]


LOADERS = {"digits": _digits, "diabetes": _diabetes}

SPACE = {"lr": "log:1e-4:10", "weight_decay": "log:1e-6:1e-1", "dropout": "0:0.6"}
TASKS = {
    "digits": Task("digits", SPACE, target=0.12, epochs=10, batch=64),
    "diabetes": Task("diabetes", {**SPACE, "lr": "log:1e-5:10"}, target=0.522, epochs=30, batch=32),
}
# the development tasks (benchmarks/tune_probe_dev.py): the tuner's defaults were chosen on these; digits and
# diabetes are held out. Targets: the 2.5 % quantile of a 100-trial random pilot (--pilot 100), as for those two
DEV_TARGETS = {"cancer": 0.091, "friedman": 0.095, "blobs": 1.1, "moons": 0.232}
for _name, _t in dev.TASKS.items():
    TASKS[_name] = Task(_name, dev.space(_name), target=DEV_TARGETS[_name], epochs=_t["epochs"], batch=_t["batch"],
                        dev=True)
    LOADERS[_name] = _t["load"]
# the fresh held-out tasks (tune_probe_dev.FRESH: fixed after every setting was chosen), trained by the same code;
# targets: the 2 % quantile of a 200-trial random pilot, the rule of the first pair (--pilot 200 --tasks hastie,circles)
FRESH_TARGETS = {"hastie": 0.209, "circles": 0.144}
# the third held-out pair (tune_probe_dev.FRESH2), same rule (--pilot 200 --tasks quantiles,friedman3)
FRESH2_TARGETS = {"quantiles": 0.285, "friedman3": 0.131}
for _name, _t in {**dev.FRESH, **dev.FRESH2}.items():
    TASKS[_name] = Task(_name, dev.space(_name), target={**FRESH_TARGETS, **FRESH2_TARGETS}[_name],
                        epochs=_t["epochs"], batch=_t["batch"], dev=True)
    LOADERS[_name] = _t["load"]


def build(task: str, dropout: float) -> nn.Module:
    if task == "digits":
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 128), nn.ReLU(),
                             nn.Dropout(dropout), nn.Linear(128, 10))
    return nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 64), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(64, 1))


def optimizer(task: str, model: nn.Module, p: dict[str, Any]) -> torch.optim.Optimizer:
    if task == "digits":
        return torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=0.9, weight_decay=p["weight_decay"])
    return torch.optim.Adam(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])


def loss_of(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y) if task == "digits" else F.mse_loss(out, y)


def train(task: Task, p: dict[str, Any], doctor: Any) -> float:
    """One trial: ``doctor`` is traindoctor's TrialDoctor, or a :class:`Plain` one (no pruning)."""
    if task.dev:
        return dev.train(task.name, p, doctor)
    Xtr, ytr, Xv, yv = task.load()
    n = len(Xtr)
    gen = torch.Generator().manual_seed(doctor.seed)
    idx = torch.arange(n)
    if doctor.fraction < 1.0:
        idx = torch.randperm(n, generator=gen)[: max(1, round(n * doctor.fraction))]
    torch.manual_seed(doctor.seed)
    model = build(task.name, float(p["dropout"]))
    opt = optimizer(task.name, model, p)
    doctor.watch(model, opt, live=False)
    val = float("nan")
    for _ in range(doctor.epochs(task.epochs)):
        model.train()
        perm = idx[torch.randperm(len(idx), generator=gen)]
        for i in range(0, len(perm), task.batch):
            b = perm[i:i + task.batch]
            opt.zero_grad()
            loss = loss_of(task.name, model(Xtr[b]), ytr[b])
            loss.backward()
            opt.step()
            doctor.step(loss)
        model.eval()
        with torch.no_grad():
            val = loss_of(task.name, model(Xv), yv).item()
        doctor.report(val)
    return val


Plain = dev.Plain  # a trial with nothing watching or pruning it: the full-data re-run of a pruned trial


def full_steps(task: Task) -> int:
    """The training steps of one trial on the full data for all its epochs."""
    return math.ceil(len(task.load()[0]) / task.batch) * task.epochs


def retrain(task: Task, params: dict[str, Any], seed: int) -> float:
    torch.manual_seed(seed)
    return train(task, params, Plain(seed))


# --------------------------------------------------------------------------------------------- the methods

METHODS: dict[str, dict[str, Any]] = {
    "traindoctor": dict(sampler="tpe", pruner="median", doctor_prunes=True),
    "td-noprobe": dict(sampler="tpe", pruner="median", doctor_prunes=True, probe=None),
    "td-noleads": dict(sampler="tpe", pruner="median", doctor_prunes=True, leads=False),
    "td-nocoarse": dict(sampler="tpe", pruner="median", doctor_prunes=True, coarse=0, probe=None),
    "td-probe-only": dict(sampler="tpe", pruner="median", doctor_prunes=True, coarse=0),
    "td-sh": dict(sampler="tpe", pruner="halving", doctor_prunes=True),
    "tpe+sh": dict(sampler="tpe", pruner="halving", doctor_prunes=False, coarse=0, probe=None),
    "tpe+median": dict(sampler="tpe", pruner="median", doctor_prunes=False, coarse=0, probe=None),
    "random": dict(sampler="random", pruner=None, doctor_prunes=False, coarse=0, probe=None),
}


class _Spent(Exception):
    """The compute budget is spent: the search stops after the trial that spent it."""


def one_run(task: Task, method: str, repeat: int, n_trials: int, tmp: Path,
            budget_steps: int | None = None, max_trials: int | None = None) -> dict[str, Any]:
    """One search. With ``budget_steps`` the search runs until its trials have spent that many training
    steps (at most ``max_trials`` trials), the coarse stage kept at the ``n_trials`` run's size."""
    import optuna

    from traindoctor.tuning.study import _rows

    kw = dict(METHODS[method])
    name = f"{task.name}-{method}-r{repeat}"
    storage = tmp / f"{name}.db"
    total = n_trials
    on_trial = None
    if budget_steps is not None:
        total = max_trials or 10 * n_trials
        if kw.get("coarse", 0.5) > 0:  # the same coarse stage as the n_trials search: its trials, then fine ones
            kw["coarse"] = round(n_trials * kw.get("coarse", 0.5)) / total
        spent = [0]

        def on_trial(row: Any) -> None:
            spent[0] += row.steps
            if spent[0] >= budget_steps:
                raise _Spent

    t0 = time.perf_counter()
    try:
        res = tune(lambda p, d: train(task, p, d), task.space, total, storage=storage, study_name=name,
                   top_k=0, seed=repeat, check_s=CHECK_S, on_trial=on_trial, **kw)
        trials = res.trials
    except _Spent:
        trials = _rows(optuna.load_study(study_name=name, storage=f"sqlite:///{storage.resolve()}"))
    wall = time.perf_counter() - t0
    rows = sorted(trials, key=lambda r: r.number)
    reached_at, reached_trial, best = reach([r.to_json() for r in rows], task.target, budget_steps)
    pruned: Counter[str] = Counter()
    for r in rows:
        if r.state == "PRUNED":
            who = r.pruned_by or "?"
            if who == "doctor" and not kw.get("doctor_prunes", True):
                who = "nan-objective"  # the doctor is off: a trial whose objective came out non-finite
            pruned[who] += 1
    codes = Counter((r.reason or "").split(" ", 2)[1] for r in rows
                    if r.state == "PRUNED" and r.pruned_by == "doctor" and kw.get("doctor_prunes", True)
                    and (r.reason or "").startswith("traindoctor: ") and len((r.reason or "").split(" ")) > 1)
    return {"task": task.name, "method": method, "repeat": repeat, "reached_at": reached_at,
            "reached_trial": reached_trial, "compute": sum(r.steps for r in rows), "n_trials": len(rows),
            "budget_steps": budget_steps, "best_full": best, "wall_s": wall,
            "pruned": dict(pruned), "codes": dict(codes),
            "trials": [r.to_json() for r in rows]}


# ------------------------------------------------------------------------------------------------ analysis


def reach(trials: list[dict[str, Any]], target: float,
          budget_steps: int | None = None) -> tuple[int | None, int | None, float]:
    """Steps to target of one search from its trials (``TrialRow.to_json()``, any order): the training steps
    of all trials in trial order up to and including the first fine trial that completed on the full data at
    or below ``target`` (within ``budget_steps``); also that trial's number and the best full-data loss."""
    cap = budget_steps if budget_steps is not None else math.inf
    cum, reached_at, reached_trial, best = 0, None, None, float("nan")
    for r in sorted(trials, key=lambda r: r["number"]):
        cum += r["steps"]
        v = r["value"]
        full = (r["stage"] == "fine" and r["state"] == "COMPLETE" and v is not None and math.isfinite(v)
                and cum <= cap)
        if full and not v >= best:  # a fine trial completed on the full data within the budget
            best = v
        if full and reached_at is None and v <= target:
            reached_at, reached_trial = cum, r["number"]
    return reached_at, reached_trial, best


def reanalyse(path: str, targets: dict[str, list[float]]) -> None:
    """The table of a saved ``--out`` file again, at other targets (``--profile TASK=L1,L2,...``): steps to
    each target from the same searches, nothing re-run."""
    saved = json.loads(Path(path).read_text())
    runs = saved["runs"]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    repeats = max(r["repeat"] for r in runs) + 1
    print(f"{path}: {len(runs)} searches, {' '.join(saved.get('argv', []))}")
    lines: list[str] = []
    for name, losses in targets.items():
        for loss in losses:
            at = []
            for r in runs:
                if r["task"] == name:
                    reached_at, reached_trial, _ = reach(r["trials"], loss, r.get("budget_steps"))
                    at.append({**r, "reached_at": reached_at, "reached_trial": reached_trial})
            if not at:
                raise SystemExit(f"--profile: no search of task {name!r} in {path}")
            rows = table(at, [Task(name, {}, target=loss, epochs=0, batch=0)], methods, repeats).splitlines()
            lines += rows if not lines else rows[2:]  # one header
    print("\n".join(lines))



def false_prunes(task: Task, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Re-train every doctor-pruned trial (and every MedianPruner-pruned trial of tpe+median) fully."""
    out: dict[str, Any] = {}
    for method, who in (("traindoctor", "doctor"), ("td-nocoarse", "doctor"), ("tpe+median", "optuna")):
        items = []
        for run in runs:
            if run["task"] != task.name or run["method"] != method:
                continue
            for t in run["trials"]:
                if t["state"] != "PRUNED" or t["pruned_by"] != who:
                    continue
                v = retrain(task, t["params"], t["seed"])
                items.append({"repeat": run["repeat"], "number": t["number"], "stage": t["stage"],
                              "params": t["params"], "reason": t["reason"], "full_value": v,
                              "run_best": run["best_full"],
                              "beats_best": bool(math.isfinite(v) and v < run["best_full"]),
                              "reaches_target": bool(math.isfinite(v) and v <= task.target)})
        if items:
            out[method] = items
    return out


def _fmt(v: float | None, d: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:,.{d}f}"


def table(runs: list[dict[str, Any]], tasks: list[Task], methods: list[str], repeats: int) -> str:
    lines = ["| task (target) | method | steps to target: median | mean | reached | total compute (mean) | trials "
             "(mean) | pruned by doctor / optuna / NaN-end (mean per run) | best full-data loss (median) "
             "| median steps ÷ tpe+median's |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        med_ref = None
        rows = {}
        for m in methods:
            rs = [r for r in runs if r["task"] == task.name and r["method"] == m]
            if not rs:
                continue
            censored = [r["reached_at"] if r["reached_at"] is not None else (r["budget_steps"] or r["compute"])
                        for r in rs]
            rows[m] = (rs, censored)
            if m == "tpe+median":
                med_ref = statistics.median(censored)
        for m, (rs, censored) in rows.items():
            reached = sum(r["reached_at"] is not None for r in rs)
            med = statistics.median(censored)
            # a median is a censored one when half or more of the runs did not reach the target
            star = "≥" if reached <= len(rs) / 2 else ""
            mean_star = "≥" if reached < len(rs) else ""
            pr = [sum(r["pruned"].get(k, 0) for r in rs) / len(rs) for k in ("doctor", "optuna", "nan-objective")]
            ratio = "—" if med_ref in (None, 0) else f"{med / med_ref:.2f}"
            lines.append(f"| {task.name} ({task.target:g}) | {m} | {star}{_fmt(med)} | {mean_star}"
                         f"{_fmt(statistics.mean(censored))} | {reached}/{len(rs)} | "
                         f"{_fmt(statistics.mean(r['compute'] for r in rs))} | "
                         f"{statistics.mean(r['n_trials'] for r in rs):.1f} | "
                         f"{pr[0]:.1f} / {pr[1]:.1f} / {pr[2]:.1f} | "
                         f"{statistics.median(r['best_full'] for r in rs):.4f} | {ratio} |")
    return "\n".join(lines)


def pilot_draws(task: Task, n: int, each: Any = None) -> list[tuple[float, dict[str, Any]]]:
    """The pilot's random search over the whole space (RandomSampler seed 12345, trial ``i`` trained fully with
    seed 10,000 + ``i``): (validation loss, parameters) in draw order; ``each(i, params, loss)`` after each."""
    import optuna

    from traindoctor.tuning.space import as_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = as_space(task.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=12345))
    out = []
    for i in range(n):
        trial = study.ask()
        p = {q.name: q.suggest(trial) for q in space}
        v = retrain(task, p, 10_000 + i)
        study.tell(trial, v if math.isfinite(v) else float("inf"))
        out.append((v, p))
        if each is not None:
            each(i, p, v)
    return out


def pilot(task: Task, n: int) -> None:
    """Random search over the whole space, every trial trained fully: where the losses lie."""
    t0 = time.perf_counter()
    vals = [v for v, _ in pilot_draws(task, n, lambda i, p, v: print(
        f"  {i:3d} lr={p['lr']:.2e} wd={p['weight_decay']:.1e} do={p['dropout']:.2f} -> {v:.4f}", flush=True))]
    fin = np.array([v for v in vals if math.isfinite(v)])
    print(f"{task.name}: {n} trials in {time.perf_counter() - t0:.0f}s, {len(vals) - len(fin)} non-finite")
    for q in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
        print(f"  quantile {q:.2f}: {np.quantile(fin, q):.4f}")


def main() -> None:
    global CHECK_S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits,diabetes")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--budget", choices=("trials", "steps"), default="trials",
                    help="trials: every method runs --trials trials; steps: every method runs until it spent what "
                         "--trials fully trained trials cost (at most --max-trials trials)")
    ap.add_argument("--max-trials", type=int, default=None, help="with --budget steps (default 10 × --trials)")
    ap.add_argument("--false-prunes", default="digits,diabetes", help="tasks to re-run pruned trials on ('' = none)")
    ap.add_argument("--target", action="append", default=[], help="TASK=LOSS: override a task's target")
    ap.add_argument("--pilot", type=int, default=0, help="only the pilot: N random trials per task, fully trained")
    ap.add_argument("--out", default=None, help="write every run's trials and the false-prune check as JSON")
    ap.add_argument("--from", dest="saved", default=None,
                    help="re-analyse a saved --out file (no search) at the targets of --profile")
    ap.add_argument("--profile", action="append", default=[],
                    help="with --from: TASK=L1,L2,...: the steps to each of these validation losses")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check-every", type=int, default=0,
                    help="monkeypatch: the doctor reads a trial every K steps instead of every check_s seconds")
    ap.add_argument("--as-shipped", action="store_true",
                    help="without the NaN-report monkeypatch (report_nan_to_optuna): non-finite values never "
                         "reach Optuna")
    ap.add_argument("--check-s", type=float, default=CHECK_S, help="tune(check_s=...): the doctor's reading interval")
    a = ap.parse_args()
    if a.saved:
        prof: dict[str, list[float]] = {}
        for spec in a.profile:
            k, _, v = spec.partition("=")
            try:
                prof[k] = [float(x) for x in v.split(",") if x]
            except ValueError:
                raise SystemExit(f"--profile {spec!r}: expected TASK=LOSS,LOSS,...") from None
        if not prof:
            raise SystemExit("--from needs at least one --profile TASK=LOSS,...")
        reanalyse(a.saved, prof)
        return
    torch.set_num_threads(a.threads)
    CHECK_S = a.check_s
    check_every(a.check_every)
    report_nan_to_optuna(not a.as_shipped)
    tasks = [TASKS[t] for t in a.tasks.split(",") if t]
    for spec in a.target:
        k, _, v = spec.partition("=")
        TASKS[k].target = float(v)
    if a.pilot:
        for t in tasks:
            pilot(t, a.pilot)
        return
    methods = [m for m in a.methods.split(",") if m]
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            for r in range(a.repeats):
                for m in methods:
                    budget = full_steps(task) * a.trials if a.budget == "steps" else None
                    run = one_run(task, m, r, a.trials, Path(tmp), budget, a.max_trials)
                    runs.append(run)
                    print(f"{task.name:9s} {m:12s} r{r}: reached at {run['reached_at']} "
                          f"(trial {run['reached_trial']}), compute {run['compute']}, best {run['best_full']:.4f}, "
                          f"pruned {run['pruned']} {run['codes']}, {run['wall_s']:.1f}s", flush=True)
    search_s = time.perf_counter() - t0
    fp: dict[str, Any] = {}
    for name in [t for t in a.false_prunes.split(",") if t]:
        if name in a.tasks.split(","):
            fp[name] = false_prunes(TASKS[name], runs)
    total_s = time.perf_counter() - t0
    print()
    what = (f"{a.trials} trials each" if a.budget == "trials" else
            "each until it spent " + ", ".join(f"{full_steps(t) * a.trials} steps ({t.name})" for t in tasks))
    print(f"{len(tasks)} tasks × {len(methods)} methods × {a.repeats} repeats, {what}; check_s {CHECK_S:g}"
          f"{f', checked every {a.check_every} steps' if a.check_every else ''}"
          f"{'' if a.as_shipped else ', NaN reported to Optuna'}; "
          f"search {search_s:.0f}s, with the false-prune re-runs {total_s:.0f}s; torch {torch.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print()
    print(table(runs, tasks, methods, a.repeats))
    print()
    for task in tasks:
        for m in methods:
            rs = [r for r in runs if r["task"] == task.name and r["method"] == m]
            codes = sum((Counter(r["codes"]) for r in rs), Counter())
            if codes:
                print(f"  {task.name} {m}: the doctor's prunes by finding: "
                      + ", ".join(f"{c} ×{n}" for c, n in codes.most_common()))
            print(f"  {task.name} {m}: wall {statistics.mean(r['wall_s'] for r in rs):.1f}s per run (mean); "
                  f"steps to target per repeat: {[r['reached_at'] for r in rs]}")
    if fp:
        print()
        print("| task | method | pruned trials re-run fully | would have beaten the run's best | would have reached "
              "the target | of them pruned in the coarse stage |")
        print("|---|---|---|---|---|---|")
        for name, by in fp.items():
            for m, items in by.items():
                beat = [i for i in items if i["beats_best"]]
                print(f"| {name} | {m} ({'doctor' if m != 'tpe+median' else 'MedianPruner'}) | {len(items)} | "
                      f"{len(beat)} | {sum(i['reaches_target'] for i in items)} | "
                      f"{sum(i['stage'] == 'coarse' for i in items)} |")
        for name, by in fp.items():
            for m, items in by.items():
                for i in items:
                    if i["beats_best"] or i["reaches_target"]:
                        print(f"  {name} {m} r{i['repeat']} trial {i['number']} ({i['stage']}): "
                              f"{i['params']} → {i['full_value']:.4f} (run best {i['run_best']:.4f}); "
                              f"pruned: {i['reason']}")
    if a.out:
        Path(a.out).write_text(json.dumps({"argv": sys.argv, "targets": {t.name: t.target for t in tasks},
                                           "runs": runs, "false_prunes": fp, "search_s": search_s,
                                           "total_s": total_s}, indent=1, default=str))


if __name__ == "__main__":
    main()
