"""Robust, vectorised statistics shared by the rules (numpy only, NaN-safe).

Rules judge a curve through bin medians rather than raw points: a median per bin ignores
ordinary mini-batch noise and single outliers, and binning keeps a million-step log as cheap as a
thousand-step one (one reshape and one median, no per-row Python).
"""
from __future__ import annotations

import math

import numpy as np


def finite_prefix(values: np.ndarray) -> int:
    """Length of the leading run of finite values."""
    bad = ~np.isfinite(values)
    return int(np.argmax(bad)) if bad.any() else int(values.shape[0])


def bin_medians(steps: np.ndarray, values: np.ndarray, max_bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Median of consecutive equal-count bins (at most ``max_bins``); steps are the bins' first steps.

    NaN/Inf are ignored inside a bin; a bin with no finite value gives NaN.
    """
    n = values.shape[0]
    if n == 0:
        return steps[:0], values[:0]
    per = max(1, math.ceil(n / max_bins))
    nb = n // per
    if nb == 0:
        nb, per = 1, n
    trimmed = values[: nb * per].reshape(nb, per)
    with np.errstate(all="ignore"):
        v = np.where(np.isfinite(trimmed), trimmed, np.nan)
        if per == 1:
            med = v[:, 0]
        else:
            ok = np.isfinite(v).any(axis=1)
            med = np.full(nb, np.nan)
            if ok.any():
                med[ok] = np.nanmedian(v[ok], axis=1)
    return steps[: nb * per : per], med


def kendall_tau(y: np.ndarray) -> float:
    """Kendall's tau of ``y`` against its index (trend direction in [-1, 1]); NaN-safe, O(n²) for n ≤ ~400."""
    y = y[np.isfinite(y)]
    n = y.shape[0]
    if n < 3:
        return 0.0
    if n > 400:
        y = y[np.linspace(0, n - 1, 400).astype(int)]
        n = 400
    d = np.sign(y[None, :] - y[:, None])
    iu = np.triu_indices(n, 1)
    return float(d[iu].sum() / (n * (n - 1) / 2))


def rel_iqr(y: np.ndarray) -> float:
    """Interquartile range over |median|: how widely a stretch of the curve swings."""
    y = y[np.isfinite(y)]
    if y.size < 4:
        return 0.0
    q1, med, q3 = np.percentile(y, [25, 50, 75])
    return float((q3 - q1) / abs(med)) if med != 0 else float("inf")


def nanmedian(y: np.ndarray) -> float:
    y = y[np.isfinite(y)]
    return float(np.median(y)) if y.size else float("nan")


def segment(values: np.ndarray, start: float, end: float) -> np.ndarray:
    """The part of ``values`` between two fractions of its length (at least one point)."""
    n = values.shape[0]
    a = min(int(n * start), n - 1)
    b = max(a + 1, int(n * end))
    return values[a:b]


def late(values: np.ndarray, frac: float = 0.5) -> np.ndarray:
    """The last ``frac`` of a series (at least two points when it has them), finite values only."""
    n = values.shape[0]
    k = max(min(2, n), int(math.ceil(n * frac)))
    v = values[n - k :]
    return v[np.isfinite(v)]


def sustained(values: np.ndarray, test, frac: float = 0.5) -> bool:
    """Hysteresis: the condition holds for the median of the last ``frac`` of the samples and for
    each of the last two samples, so one odd sample neither raises nor clears a finding."""
    v = late(values, frac)
    if v.size < 2:
        return False
    return bool(test(float(np.median(v))) and test(float(v[-1])) and test(float(v[-2])))
