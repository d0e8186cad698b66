"""Fit the diagnosis's confidence model on the clinic's development half (never the held-out half).

    python -m benchmarks.clinic calibrate        # writes src/traindoctor/calibration.json

Every (run, offered cause) pair of the development half is one example: 1 when the cause is the
run's truth, 0 otherwise (every cause offered on a healthy run is wrong). The model is
``σ(b + Σ_code a_code · w_code)``, ``w_code`` the strongest weight the findings of that symptom
code gave the cause (see ``traindoctor.calibration``). ``a_code ≥ 0``: more evidence never lowers a
cause (evidence against is the causes' own ``against``, a separate, explained step). There is no
per-cause bias, so the fit cannot learn the clinic's mix of faults as a prior. The L2 strength is
chosen by leave-one-task-out cross-validation on the development half (log loss).
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from .score import Case

OUT = Path(__file__).resolve().parent.parent.parent / "src" / "traindoctor" / "calibration.json"


def examples(cases: list[Case], split_name: str = "dev", src: str = "run") -> tuple[list[dict[str, float]], np.ndarray, list[str]]:
    feats, ys, groups = [], [], []
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
    return feats, np.asarray(ys), groups


def _matrix(feats: list[dict[str, float]], codes: list[str]) -> np.ndarray:
    idx = {c: i for i, c in enumerate(codes)}
    X = np.zeros((len(feats), len(codes)))
    for r, f in enumerate(feats):
        for k, w in f.items():
            if k in idx:
                X[r, idx[k]] = w
    return X


def fit(X: np.ndarray, y: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    n, d = X.shape

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        b, a = theta[0], theta[1:]
        z = b + X @ a
        p = 1 / (1 + np.exp(-np.clip(z, -40, 40)))
        eps = 1e-12
        nll = -np.sum(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)) / n
        g = p - y
        grad = np.concatenate(([g.mean()], X.T @ g / n + 2 * lam * a))
        return nll + lam * float(a @ a), grad

    theta0 = np.concatenate(([0.0], np.ones(d)))
    bounds = [(None, None)] + [(0.0, None)] * d
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    return float(res.x[0]), res.x[1:]


def cv_logloss(X: np.ndarray, y: np.ndarray, groups: list[str], lam: float) -> float:
    g = np.asarray(groups)
    total, n = 0.0, 0
    for t in sorted(set(groups)):
        tr, te = g != t, g == t
        if y[tr].sum() == 0 or te.sum() == 0:
            continue
        b, a = fit(X[tr], y[tr], lam)
        p = 1 / (1 + np.exp(-np.clip(b + X[te] @ a, -40, 40)))
        total += float(-np.sum(y[te] * np.log(p + 1e-12) + (1 - y[te]) * np.log(1 - p + 1e-12)))
        n += int(te.sum())
    return total / max(n, 1)


def calibrate(cases: list[Case], out: Path = OUT, command: str = "python -m benchmarks.clinic calibrate") -> dict:
    feats, y, groups = examples(cases)
    codes = sorted({k for f in feats for k in f})
    X = _matrix(feats, codes)
    grid = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    scores = {lam: cv_logloss(X, y, groups, lam) for lam in grid}
    lam = min(scores, key=scores.get)
    b, a = fit(X, y, lam)
    model = {
        "intercept": round(b, 4),
        "cause_bias": {},
        "code_weight": {c: round(float(w), 4) for c, w in zip(codes, a)},
        "info": {"fitted_on": "clinic development half", "pairs": int(len(y)), "positives": int(y.sum()),
                 "l2": lam, "cv_logloss": {str(k): round(v, 4) for k, v in scores.items()},
                 "date": date.today().isoformat(), "command": command},
    }
    out.write_text(json.dumps(model, indent=1, sort_keys=False) + "\n")
    return model

