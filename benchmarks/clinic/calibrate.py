"""Fit the diagnosis's confidence model on the clinic's development half (never the held-out half).

    python -m benchmarks.clinic calibrate --split dev     # writes src/traindoctor/calibration.json

Every (run, offered cause) pair of the development half is one example: 1 when the cause is the
run's truth, 0 otherwise (every cause offered on a healthy run is wrong). Each finding gave the
cause a weight from its rule's reading of the run; ``w_code`` is the strongest weight of a symptom
code. Two explainable forms are compared by leave-one-task-out cross-validation on the
development half, and the better one (top-1 cause first, then log loss) is written:

* ``platt``: ``σ(a · logit(noisy-OR of the weights) + b)`` — two numbers; the ranking is the
  rules' own, only the confidence is calibrated.
* ``per_code``: ``σ(b + Σ_code (c + d_code) · w_code)`` — one shared scale ``c`` and a per-code
  correction ``d_code`` pulled towards 0 (L2), with ``c + d_code ≥ 0`` so that more evidence never
  lowers a cause. A symptom whose pointing is often wrong earns a smaller weight.

There is no per-cause bias, so the fit cannot learn the clinic's mix of faults as a prior.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from .score import Case

OUT = Path(__file__).resolve().parent.parent.parent / "src" / "traindoctor" / "calibration.json"


def examples(cases: list[Case], split_name: str = "dev", src: str = "run"
             ) -> tuple[list[dict[str, float]], np.ndarray, list[str], list[str]]:
    """(features, labels, task of each pair, run id of each pair)."""
    feats, ys, groups, runs = [], [], [], []
    for c in cases:
        if c.split != split_name or c.status not in ("effective", "healthy"):
            continue
        v = c.verdicts.get(src)
        if v is None or v.error:
            continue
        truth = c.op.cause if c.status == "effective" else None
        for cid, sup in zip(v.causes, v.supports):
            feats.append(sup)
            ys.append(1.0 if cid == truth else 0.0)
            groups.append(c.spec.task)
            runs.append(c.id)
    return feats, np.asarray(ys), groups, runs


def _matrix(feats: list[dict[str, float]], codes: list[str]) -> np.ndarray:
    idx = {c: i for i, c in enumerate(codes)}
    X = np.zeros((len(feats), len(codes)))
    for r, f in enumerate(feats):
        for k, w in f.items():
            if k in idx:
                X[r, idx[k]] = w
    return X


def _noisy_or_logit(X: np.ndarray) -> np.ndarray:
    p = 1 - np.prod(1 - np.clip(X, 0, 0.99), axis=1)
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _nll(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    p = 1 / (1 + np.exp(-np.clip(z, -40, 40)))
    eps = 1e-12
    return float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))), (p - y) / len(y)


def fit_platt(X: np.ndarray, y: np.ndarray, lam: float = 0.0) -> dict:
    x = _noisy_or_logit(X)

    def f(t: np.ndarray) -> tuple[float, np.ndarray]:
        loss, g = _nll(t[0] * x + t[1], y)
        return loss, np.array([g @ x, g.sum()])

    res = minimize(f, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)])
    return {"form": "platt", "a": float(res.x[0]), "b": float(res.x[1])}


def fit_per_code(X: np.ndarray, y: np.ndarray, lam: float) -> dict:
    d = X.shape[1]

    def f(t: np.ndarray) -> tuple[float, np.ndarray]:
        b, c, dd = t[0], t[1], t[2:]
        loss, g = _nll(b + X @ (c + dd), y)
        gw = X.T @ g
        return loss + lam * float(dd @ dd), np.concatenate(([g.sum()], [gw.sum()], gw + 2 * lam * dd))

    # c + d_code ≥ 0 is kept by bounding d_code below by -c at the optimum: solved with c fixed ≥ 0
    # first, then d bounded by -c (two passes)
    t0 = np.concatenate(([-3.0, 4.0], np.zeros(d)))
    res = minimize(f, t0, jac=True, method="L-BFGS-B", bounds=[(None, None), (0.0, None)] + [(None, None)] * d)
    c = float(res.x[1])
    res = minimize(f, res.x, jac=True, method="L-BFGS-B",
                   bounds=[(None, None), (c, c)] + [(-c, None)] * d)
    return {"form": "per_code", "b": float(res.x[0]), "c": c, "d": res.x[2:].tolist()}


def predict(model: dict, X: np.ndarray) -> np.ndarray:
    if model["form"] == "platt":
        z = model["a"] * _noisy_or_logit(X) + model["b"]
    else:
        z = model["b"] + X @ (model["c"] + np.asarray(model["d"]))
    return 1 / (1 + np.exp(-np.clip(z, -40, 40)))


def _top1(p: np.ndarray, y: np.ndarray, runs: list[str]) -> float:
    """Fraction of runs (with a true cause offered or not) whose highest-scored cause is the truth."""
    best: dict[str, tuple[float, float]] = {}
    for pi, yi, r in zip(p, y, runs):
        if r not in best or pi > best[r][0]:
            best[r] = (pi, yi)
    return sum(v[1] for v in best.values()) / max(len(best), 1)


def cross_validate(X: np.ndarray, y: np.ndarray, groups: list[str], runs: list[str], form: str, lam: float
                   ) -> tuple[float, float]:
    """Leave one task out: (top-1 over runs, log loss over pairs)."""
    g = np.asarray(groups)
    p_all = np.zeros(len(y))
    for t in sorted(set(groups)):
        tr, te = g != t, g == t
        if y[tr].sum() == 0:
            p_all[te] = 0.5
            continue
        m = fit_platt(X[tr], y[tr]) if form == "platt" else fit_per_code(X[tr], y[tr], lam)
        p_all[te] = predict(m, X[te])
    ll = float(-np.mean(y * np.log(p_all + 1e-12) + (1 - y) * np.log(1 - p_all + 1e-12)))
    return _top1(p_all, y, runs), ll


def calibrate(cases: list[Case], out: Path = OUT, command: str = "python -m benchmarks.clinic calibrate --split dev"
              ) -> dict:
    feats, y, groups, runs = examples(cases)
    codes = sorted({k for f in feats for k in f})
    X = _matrix(feats, codes)
    candidates: dict[str, tuple[float, float]] = {"platt": cross_validate(X, y, groups, runs, "platt", 0.0)}
    for lam in (0.003, 0.01, 0.03, 0.1):
        candidates[f"per_code l2={lam}"] = cross_validate(X, y, groups, runs, "per_code", lam)
    best = max(candidates, key=lambda k: (round(candidates[k][0], 3), -candidates[k][1]))
    if best == "platt":
        m = fit_platt(X, y)
        model = {"form": "platt", "a": round(m["a"], 4), "b": round(m["b"], 4)}
    else:
        lam = float(best.split("=")[1])
        m = fit_per_code(X, y, lam)
        model = {"form": "per_code", "intercept": round(m["b"], 4), "scale": round(m["c"], 4),
                 "code_weight": {k: round(m["c"] + dk, 4) for k, dk in zip(codes, m["d"])}}
    model["info"] = {
        "fitted_on": "clinic development half", "pairs": int(len(y)), "positives": int(y.sum()),
        "runs": len(set(runs)), "chosen": best,
        "cross_validation": {k: {"top1": round(v[0], 3), "logloss": round(v[1], 4)} for k, v in candidates.items()},
        "date": date.today().isoformat(), "command": command,
    }
    out.write_text(json.dumps(model, indent=1) + "\n")
    return model
