"""Data checks over tensors: measure batches, record the numbers as events for the D rules.

One implementation for two callers: the checkup streams a whole loader through a
:class:`DataProfile`; the live monitor can feed it the first batches of a real run. Either way
``profile.events()`` gives the same plain-JSON events (``data_profile``, ``data_nonfinite``,
``label_domain``) that ``rules/data.py`` judges. Nothing here decides what is wrong: it counts.

Costs: per batch, a handful of fused reductions over the batch (float64 sums per feature), one
``bincount`` of the labels; no per-sample Python except for the rows that are actually bad.
Leakage hashes every sample once (BLAKE2b of its bytes); a live run feeds it hashes computed off
the training thread (``add_train_hashes``, ``add_val_hashes``).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..losskinds import BINARY, CLASSIFICATION, REGRESSION
from .batches import Batch

CLASS_LOSSES = CLASSIFICATION
BINARY_LOSSES = BINARY
REGRESSION_LOSSES = REGRESSION
MAX_IDS = 50  # sample ids kept per fact
ORDER_BATCHES = 200  # batches kept for the ordering (D007) facts


def _dt(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


@dataclass
class _Moments:
    """Running per-column count, sum, sum of squares, min and max over finite values (float64)."""

    n: torch.Tensor | None = None
    s: torch.Tensor | None = None
    ss: torch.Tensor | None = None
    lo: torch.Tensor | None = None
    hi: torch.Tensor | None = None
    integer: bool = True

    def add(self, cols: torch.Tensor) -> None:
        """``cols``: [rows, columns] float64 with NaN for non-finite values."""
        fin = torch.isfinite(cols)
        z = torch.where(fin, cols, torch.zeros((), dtype=cols.dtype))
        n = fin.sum(0).to(torch.float64)
        s = z.sum(0)
        ss = (z * z).sum(0)
        lo = torch.where(fin, cols, torch.full((), math.inf, dtype=cols.dtype)).amin(0)
        hi = torch.where(fin, cols, torch.full((), -math.inf, dtype=cols.dtype)).amax(0)
        if self.integer and bool(fin.any()):
            self.integer = bool((z == torch.round(z)).all())
        if self.n is None or self.n.shape != n.shape:
            self.n, self.s, self.ss, self.lo, self.hi = n, s, ss, lo, hi
            return
        self.n += n
        self.s += s
        self.ss += ss
        self.lo = torch.minimum(self.lo, lo)
        self.hi = torch.maximum(self.hi, hi)

    def collapsed(self) -> _Moments:
        """The same moments over all columns together (one column)."""
        if self.n is None:
            return _Moments()
        one = lambda t, f: f(t).reshape(1)  # noqa: E731
        return _Moments(one(self.n, torch.sum), one(self.s, torch.sum), one(self.ss, torch.sum),
                        one(self.lo, torch.min), one(self.hi, torch.max), self.integer)

    def summary(self) -> dict[str, Any]:
        if self.n is None:
            return {}
        n = self.n.sum().item()
        if n == 0:
            return {"count": 0}
        mean = self.s.sum().item() / n
        var = max(self.ss.sum().item() / n - mean * mean, 0.0)
        return {
            "count": int(n),
            "min": float(self.lo.min().item()),
            "max": float(self.hi.max().item()),
            "mean": mean,
            "std": math.sqrt(var),
            "rms": math.sqrt(self.ss.sum().item() / n),
            "integer_valued": self.integer,
        }

    def per_column(self) -> dict[str, Any]:
        if self.n is None or self.n.numel() < 1:
            return {}
        n = self.n.clamp(min=1)
        mean = self.s / n
        std = (self.ss / n - mean * mean).clamp(min=0).sqrt()
        live = self.n > 0
        # constant up to float rounding (a standardised constant pixel is c ± 1e-10, not exactly c)
        const = live & (std <= 1e-6 * (mean.abs() + 1e-6))
        out: dict[str, Any] = {"columns": int(self.n.numel()), "constant_columns": int(const.sum())}
        if bool(live.any()):
            am = mean.abs().where(live, torch.zeros((), dtype=mean.dtype))
            sd = std.where(live, torch.zeros((), dtype=std.dtype))
            i_mean = int(am.argmax())
            i_std = int(sd.argmax())
            out.update({
                "max_abs_mean": float(am[i_mean]), "max_abs_mean_column": i_mean,
                "max_std": float(sd[i_std]), "max_std_column": i_std,
            })
            varying = live & ~const
            if bool(varying.any()):
                out["min_std"] = float(std[varying].min())
        return out


def _columns(x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """[rows, columns] float64 view of a batch: features for 2-d, channels for images."""
    xf = x.detach().to(torch.float64)
    if x.dim() == 1:
        return xf.reshape(-1, 1), "none"
    if x.dim() == 2:
        return xf, "feature"
    if x.shape[1] <= 16:  # [B, C, ...]: images, audio channels
        c = x.shape[1]
        return xf.transpose(0, 1).reshape(c, -1).T, "channel"
    f = x.shape[-1]  # [B, T, F]: sequences of feature vectors
    return xf.reshape(-1, f), "feature"


def _bad_rows(t: torch.Tensor) -> torch.Tensor:
    if not (t.is_floating_point() or t.is_complex()):
        return torch.zeros(t.shape[0], dtype=torch.bool)
    return ~torch.isfinite(t.detach().reshape(t.shape[0], -1)).all(dim=1).cpu()


def target_kind(y: torch.Tensor, loss_kind: str | None, out_sample_shape: tuple[int, ...] | None) -> str:
    """What the targets are: class_index, binary, multilabel, probabilities or continuous."""
    if y.dtype == torch.bool:
        return "binary"
    if not (y.is_floating_point() or y.is_complex()):
        return "class_index"
    ys = tuple(y.shape[1:])
    yf = y[torch.isfinite(y)] if y.numel() else y
    zero_one = bool(yf.numel()) and bool(((yf == 0) | (yf == 1)).all())
    if loss_kind in BINARY_LOSSES or (loss_kind is None and zero_one):
        return "multilabel" if ys and math.prod(ys) > 1 else "binary"
    if loss_kind in CLASS_LOSSES and out_sample_shape is not None and ys == out_sample_shape:
        return "probabilities"
    return "continuous"


@dataclass
class DataProfile:
    """Accumulates the numbers of a stream of batches of one split; ``events()`` records them.

    ``loss_kind`` (``cross_entropy``, ``nll``, ``bce``, ``bce_logits``, ``mse``, …) and
    ``out_shape`` (the model's per-sample output shape) let it measure the labels against the
    loss's domain; without them only the data itself is profiled.
    """

    split: str = "train"
    loss_kind: str | None = None
    out_shape: tuple[int, ...] | None = None
    ignore_index: int | None = None
    ids_kind: str = "dataset indices"
    sampler: str | None = None
    # measure the inputs' moments on the first this-many batches only (None: all); NaN rows are
    # still found in every batch. A live run's window uses a few: scale is stable, the cost is not.
    input_moment_batches: int | None = None

    samples: int = 0
    batches: int = 0
    batch_size: int | None = None
    x_shape: list[int] | None = None
    x_dtype: str | None = None
    y_shape: list[int] | None = None
    y_dtype: str | None = None
    y_kind: str | None = None
    feature_axis: str = "feature"
    _x: _Moments = field(default_factory=_Moments)
    _xg: _Moments = field(default_factory=_Moments)
    _y: _Moments = field(default_factory=_Moments)
    _bad_x: list[int] = field(default_factory=list)
    _bad_y: list[int] = field(default_factory=list)
    _n_bad_x: int = 0
    _n_bad_y: int = 0
    _counts: dict[int, int] = field(default_factory=dict)
    _one_label_per_sample: bool = True
    _order: list[list[int]] = field(default_factory=list)
    _domain: dict[str, dict[str, Any]] = field(default_factory=dict)
    _ragged_features: bool = False
    _input_samples: int = 0

    # ------------------------------------------------------------------ feeding
    def update(self, batch: Batch) -> None:
        x, y, ids = batch.x, batch.y, batch.ids
        if self.batches == 0:
            self.batch_size = int(x.shape[0])
            self.x_shape, self.x_dtype = list(x.shape[1:]), _dt(x)
        elif list(x.shape[1:]) != self.x_shape and not self._ragged_features:
            self._ragged_features = True
            self._xg = self._x.collapsed()  # per-feature moments no longer line up: keep overall ones
        if y is not None and self.y_dtype is None:
            self.y_shape, self.y_dtype = list(y.shape[1:]), _dt(y)
            self.y_kind = target_kind(y, self.loss_kind, self.out_shape)
        self.batches += 1
        self.samples += int(x.shape[0])
        if self.input_moment_batches is None or self.batches <= self.input_moment_batches:
            self._input_samples += int(x.shape[0])
        self._inputs(x, ids)
        if y is not None:  # a live run may not know a batch's per-sample targets (a loss over sequences)
            self._targets(y, ids)
            self._label_domain(y, ids)

    def _inputs(self, x: torch.Tensor, ids: list[int]) -> None:
        bad = _bad_rows(x)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            self._n_bad_x += len(rows)
            self._bad_x += [ids[r] for r in rows][: MAX_IDS - len(self._bad_x)]
        if self.input_moment_batches is not None and self.batches > self.input_moment_batches:
            return
        if not (x.is_floating_point() or x.is_complex()) and x.dtype != torch.bool:
            # integer inputs (token ids, categorical codes): their range is all that matters
            self._xg.add(x.detach().to(torch.float64).reshape(-1, 1))
            return
        cols, axis = _columns(x.real if x.is_complex() else x)
        self.feature_axis = axis
        cols = torch.where(torch.isfinite(cols), cols, torch.full((), math.nan, dtype=cols.dtype))
        if not self._ragged_features:
            self._x.add(cols)  # its summary() is the overall one too: no second pass over the batch
        else:
            self._xg.add(cols.reshape(-1, 1))

    def _targets(self, y: torch.Tensor, ids: list[int]) -> None:
        bad = _bad_rows(y)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            self._n_bad_y += len(rows)
            self._bad_y += [ids[r] for r in rows][: MAX_IDS - len(self._bad_y)]
        yf = y.detach().to(torch.float64)
        yf = torch.where(torch.isfinite(yf), yf, torch.full((), math.nan, dtype=yf.dtype))
        self._y.add(yf.reshape(-1, 1))
        kind = self.y_kind
        labels: torch.Tensor | None = None
        if kind == "class_index" or (kind == "binary" and (y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1))):
            flat = y.detach().reshape(y.shape[0], -1)
            if flat.shape[1] != 1:
                self._one_label_per_sample = False
            lab = flat.to(torch.float64)
            ok = torch.isfinite(lab) & (lab >= 0) & (lab == torch.round(lab))
            if self.ignore_index is not None:
                ok &= lab != self.ignore_index
            vals = lab[ok].to(torch.long).cpu()
            if vals.numel() and int(vals.max()) < 1_000_000:
                bc = torch.bincount(vals)
                for c in bc.nonzero().flatten().tolist():
                    self._counts[c] = self._counts.get(c, 0) + int(bc[c])
            if flat.shape[1] == 1:
                labels = lab[:, 0]
        if labels is not None and len(self._order) < ORDER_BATCHES:
            self._order.append([int(v) if math.isfinite(v) else -(1 << 30) for v in labels.tolist()])

    # ------------------------------------------------------------------ label domain
    def _problem(self, name: str, ids: list[int], rows: list[int], values: list[Any] | None = None,
                 **info: Any) -> None:
        d = self._domain.setdefault(name, {"count": 0, "sample_ids": [], "values": []})
        d["count"] += len(rows) if rows else 1
        d["sample_ids"] += [ids[r] for r in rows][: MAX_IDS - len(d["sample_ids"])]
        if values:
            seen = d["values"]
            for v in values:
                if v not in seen and len(seen) < 10:
                    seen.append(v)
        d.update(info)

    def _label_domain(self, y: torch.Tensor, ids: list[int]) -> None:
        kind, out = self.loss_kind, self.out_shape
        if kind is None or out is None:
            return
        ys = tuple(y.shape[1:])
        integer = not (y.is_floating_point() or y.is_complex()) and y.dtype != torch.bool
        rows_of = lambda mask: mask.reshape(mask.shape[0], -1).any(1).nonzero().flatten().tolist()  # noqa: E731
        if kind in CLASS_LOSSES:
            c = out[0] if out else 1
            spatial = tuple(out[1:])
            if integer:
                if ys != spatial:
                    self._problem("shape_mismatch", ids, [], target_shape=list(ys), expected_shape=list(spatial))
                    return
                yl = y.detach().cpu()
                ign = torch.zeros_like(yl, dtype=torch.bool) if self.ignore_index is None else yl == self.ignore_index
                neg = (yl < 0) & ~ign
                high = (yl >= c) & ~ign
                if bool(high.any()):
                    self._problem("index_out_of_range", ids, rows_of(high), sorted(set(yl[high].tolist()))[:10],
                                  num_outputs=c)
                if bool(neg.any()):
                    self._problem("negative_index", ids, rows_of(neg), sorted(set(yl[neg].tolist()))[:10],
                                  num_outputs=c)
                return
            if kind == "nll" or ys != tuple(out):
                self._problem("float_class_indices" if ys == spatial else "shape_mismatch", ids, [],
                              target_dtype=_dt(y), target_shape=list(ys), expected_shape=list(spatial))
                return
            yl = y.detach().cpu().to(torch.float64)
            bad = (yl < 0) | (yl > 1) | ~torch.isfinite(yl)
            if bool(bad.any()):
                self._problem("probabilities_out_of_range", ids, rows_of(bad),
                              [round(v, 4) for v in sorted(set(yl[bad & torch.isfinite(yl)].tolist()))[:10]])
            return
        if kind in BINARY_LOSSES or kind in REGRESSION_LOSSES:
            if ys != tuple(out):
                self._problem("shape_mismatch", ids, [], target_shape=list(ys), expected_shape=list(out))
            if integer or y.dtype == torch.bool:
                self._problem("integer_targets", ids, [], target_dtype=_dt(y))
                return
            if kind in BINARY_LOSSES:
                yl = y.detach().cpu().to(torch.float64)
                bad = ((yl < 0) | (yl > 1)) & torch.isfinite(yl)
                if bool(bad.any()):
                    self._problem("bce_out_of_range", ids, rows_of(bad),
                                  [round(v, 4) for v in sorted(set(yl[bad].tolist()))[:10]])

    # ------------------------------------------------------------------ results
    def order_facts(self) -> dict[str, Any] | None:
        full = [b for b in self._order if self.batch_size and len(b) == self.batch_size] or self._order
        if len(full) < 2 or not self._counts:
            return None
        total = sum(self._counts.values())
        p = np.array([n / total for n in self._counts.values()])
        bs = len(full[0])
        expected = float(np.sum(1.0 - (1.0 - p) ** bs))
        distinct = [len(set(b)) for b in full]
        seq = [v for b in self._order for v in b]
        longest = run = 1
        for a, b in zip(seq, seq[1:]):
            run = run + 1 if a == b else 1
            longest = max(longest, run)
        return {
            "batches": len(full),
            "batch_size": bs,
            "mean_classes_per_batch": float(np.mean(distinct)),
            "expected_classes_per_batch": expected,
            "single_class_batches": int(sum(1 for d in distinct if d == 1)),
            "longest_run": int(longest),
            "labels_seen": len(seq),
            "sampler": self.sampler,
        }

    def facts(self) -> dict[str, Any]:
        overall = self._xg if (self._ragged_features or self._xg.n is not None) else self._x
        inputs: dict[str, Any] = {"shape": self.x_shape, "dtype": self.x_dtype, **overall.summary()}
        if not self._ragged_features and self.x_dtype and not self.x_dtype.startswith(("int", "uint", "bool")):
            inputs.update({"feature_axis": self.feature_axis, **self._x.per_column()})
        targets: dict[str, Any] = {"shape": self.y_shape, "dtype": self.y_dtype, "kind": self.y_kind,
                                   **self._y.summary()}
        out: dict[str, Any] = {
            "split": self.split, "samples": self.samples, "batches": self.batches, "batch_size": self.batch_size,
            "input_samples": self._input_samples,
            "ids": self.ids_kind, "loss_kind": self.loss_kind, "inputs": inputs, "targets": targets,
        }
        if self.out_shape is not None:
            out["output_shape"] = list(self.out_shape)
        if self._counts and self._one_label_per_sample:
            out["classes"] = {"counts": {str(k): v for k, v in sorted(self._counts.items())},
                              "num_outputs": self.out_shape[0] if self.out_shape and self.loss_kind in CLASS_LOSSES
                              else None}
        order = self.order_facts()
        if order is not None:
            out["order"] = order
        return out

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """``(kind, data)`` pairs for the Run: what rules D001–D005 and D007 read."""
        evs: list[tuple[str, dict[str, Any]]] = [("data_profile", self.facts())]
        for where, n, ids in (("inputs", self._n_bad_x, self._bad_x), ("targets", self._n_bad_y, self._bad_y)):
            if n:
                evs.append(("data_nonfinite", {"split": self.split, "where": where, "count": n, "sample_ids": ids,
                                               "ids": self.ids_kind, "samples_scanned": self.samples}))
        for problem, d in self._domain.items():
            evs.append(("label_domain", {"split": self.split, "problem": problem, "loss_kind": self.loss_kind,
                                         "output_shape": list(self.out_shape or ()), "target_dtype": self.y_dtype,
                                         "ids": self.ids_kind, **d}))
        return evs


# ---------------------------------------------------------------------- leakage
def sample_hashes(x: torch.Tensor) -> list[bytes]:
    """One BLAKE2b digest per sample (row), over its dtype, shape and bytes.

    The same rows give the same digests whichever tensor or array holds them (a dataset's rows
    and the batch the model receives), which is what lets a live run match the samples of a
    validation forward against a training set hashed in the background. bfloat16, which NumPy
    cannot hold, is hashed through its int16 bit pattern under its own name.
    """
    t = x.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        a = t.view(torch.int16).numpy()
        head = f"bfloat16{a.shape[1:]}".encode()
    else:
        a = t.numpy()
        head = f"{a.dtype}{a.shape[1:]}".encode()
    rows = a.reshape(a.shape[0], -1)
    return [hashlib.blake2b(head + r.tobytes(), digest_size=16).digest() for r in rows]


@dataclass
class Leakage:
    """Train/validation overlap by exact sample hashes."""

    _train: dict[bytes, int] = field(default_factory=dict)
    train_samples: int = 0
    train_internal_duplicates: int = 0
    val_samples: int = 0
    duplicates: int = 0
    pairs: list[tuple[int, int]] = field(default_factory=list)

    def add_train(self, batch: Batch) -> None:
        self.add_train_hashes(sample_hashes(batch.x), batch.ids)

    def add_train_hashes(self, hashes: list[bytes], ids: list[int]) -> None:
        """Training samples already hashed (the live run hashes its training set off the training thread)."""
        for h, i in zip(hashes, ids):
            if h in self._train:
                self.train_internal_duplicates += 1
            else:
                self._train[h] = i
        self.train_samples += len(hashes)

    def add_val(self, batch: Batch) -> None:
        self.add_val_hashes(sample_hashes(batch.x), batch.ids)

    def add_val_hashes(self, hashes: list[bytes], ids: list[int]) -> None:
        for h, i in zip(hashes, ids):
            j = self._train.get(h)
            if j is not None:
                self.duplicates += 1
                if len(self.pairs) < MAX_IDS:
                    self.pairs.append((i, j))
        self.val_samples += len(hashes)

    @property
    def distinct_train(self) -> int:
        return len(self._train)

    def train_coverage(self, hashes: set[bytes]) -> float:
        """Fraction of the distinct training samples found among ``hashes``: near 1 when an
        "evaluation" is a pass over the training set itself (train accuracy), not a validation."""
        if not self._train:
            return 0.0
        return sum(1 for h in hashes if h in self._train) / len(self._train)

    def event(self) -> tuple[str, dict[str, Any]]:
        return ("data_leakage", {
            "train_samples": self.train_samples, "val_samples": self.val_samples, "duplicates": self.duplicates,
            "fraction_of_val": self.duplicates / self.val_samples if self.val_samples else 0.0,
            "train_internal_duplicates": self.train_internal_duplicates,
            "val_ids": [p[0] for p in self.pairs], "train_ids": [p[1] for p in self.pairs],
        })
