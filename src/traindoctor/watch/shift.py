"""Training inputs against validation inputs: a covariate shift, measured on samples already seen.

The data window of the first training steps and the first evaluation's inputs each feed per-feature
sums (one fused reduction per batch, in float64, on the batch's own device); at the end of the first
evaluation the two are compared once. The statistics are the median over features of
|mean_val − mean_train| / std_train (the typical feature's shift in training standard deviations)
and of |ln(std_val / std_train)| (the typical feature's change of scale).
Sampling noise alone keeps it near 0.67/√n_val (about 0.1 for 50 validation samples); a validation
set preprocessed differently (another scaler, none at all, shifted images) moves it to 1 and above.
"""
from __future__ import annotations

import math
from typing import Any

import torch

MAX_FEATURES = 1 << 16  # per-sample features compared (an image of 3×128×128 fits; larger: not compared)
MIN_TRAIN, MIN_VAL = 64, 32  # samples each side needs before a comparison says anything


class FeatureMoments:
    """Per-feature count, sum and sum of squares of floating-point model inputs (batch first)."""

    def __init__(self) -> None:
        self.n = 0
        self.s: torch.Tensor | None = None
        self.ss: torch.Tensor | None = None
        self.off = False  # inputs that cannot be compared (integers, changing shapes, too wide)

    def update(self, x: Any) -> None:
        if self.off or not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
            if isinstance(x, torch.Tensor) and not x.is_floating_point():
                self.off = True  # token ids, class indices: means of codes mean nothing
            return
        rows = int(x.shape[0])
        if rows == 0:
            return
        flat = x.detach().reshape(rows, -1)
        if flat.shape[1] > MAX_FEATURES or (self.s is not None and flat.shape[1] != self.s.numel()):
            self.off = True
            return
        with torch.no_grad():
            f = flat.to(torch.float64)
            f = torch.where(torch.isfinite(f), f, torch.zeros_like(f))
            s, ss = f.sum(0), (f * f).sum(0)
        if self.s is None:
            self.s, self.ss = s, ss
        else:
            self.s += s
            self.ss += ss
        self.n += rows

    def moments(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.off or self.s is None or self.n < 2:
            return None
        mean = (self.s / self.n).cpu()
        var = (self.ss.cpu() / self.n - mean * mean).clamp_min(0.0) * self.n / (self.n - 1)
        return mean, var.sqrt()


def compare(train: FeatureMoments, val: FeatureMoments) -> dict[str, Any] | None:
    """The ``input_shift`` event's data, or None when the two sides cannot be compared."""
    if train.n < MIN_TRAIN or val.n < MIN_VAL:
        return None
    a, b = train.moments(), val.moments()
    if a is None or b is None or a[0].shape != b[0].shape:
        return None
    (mt, st), (mv, sv) = a, b
    # features constant in the training window (padding pixels, a one-hot never on) say nothing
    live = st > 1e-8 * (mt.abs() + 1.0)
    k = int(live.sum())
    if k == 0:
        return None
    z = ((mv - mt).abs() / st)[live]
    ratio = (sv[live] / st[live])
    # the spread too: a validation set left unscaled while training was standardised keeps its mean
    # near 0 on already-centred data, and its scale is what moved
    log_ratio = torch.log(ratio.clamp_min(1e-12)).abs()
    med = float(z.median())
    top = torch.topk(z, min(5, k)).indices
    idx = torch.nonzero(live).flatten()[top]
    return {
        "median_shift_sd": med if math.isfinite(med) else None,
        "mean_shift_sd": float(z.mean()),
        "median_std_ratio": float(ratio.median()),
        "median_abs_log_std_ratio": float(log_ratio.median()),
        # the median |ln(std_val / std_train)| sampling alone gives (normal features)
        "noise_log_std": 0.6745 * math.sqrt(1 / (2 * val.n) + 1 / (2 * train.n)),
        "features": k,
        "features_total": int(mt.numel()),
        "train_samples": int(train.n),
        "val_samples": int(val.n),
        # the median |z| that sampling alone gives two sets drawn from one distribution
        "noise_sd": 0.6745 * math.sqrt(1 / val.n + 1 / train.n),
        "most_shifted": [{"feature": int(i), "shift_sd": float(zz)} for i, zz in zip(idx.tolist(), z[top].tolist())],
    }
