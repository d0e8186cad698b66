"""Causes in the data: what goes in, the labels, how it is split and ordered."""
from __future__ import annotations

import re
from typing import Any

from ..events import DataNonfinite, NonfiniteLoss
from ..numfmt import fmt
from . import Cause
from .facts import REGRESSION_KINDS, Facts, num


def at(ev: dict[str, Any]) -> str:
    where = ev.get("where")
    return f" ({where.rsplit('/', 1)[-1]})" if isinstance(where, str) else ""


class NonfiniteData(Cause):
    id = "nonfinite-data"
    fixes = ("drop or repair the listed samples", "validate data at load time")

    def concrete(self, f: Facts) -> list[str]:
        ids: list[Any] = []
        for fi in f.findings:
            ids += list(fi.evidence.get("sample_ids", []) or [])
        out = []
        if ids:
            shown = ", ".join(str(i) for i in ids[:10])
            out.append(f"drop or repair the samples with non-finite values (dataset indices {shown})")
        out.append("validate data at load time: assert torch.isfinite(x).all() and torch.isfinite(y).all()")
        return out

    def against(self, f: Facts) -> list[str]:
        """at the first non-finite loss the batch held only finite values and the replay found the first NaN/Inf inside the model or the loss, and no data scan found any."""
        for d in f.run.facts(NonfiniteLoss):
            if not d.input_nonfinite and (d.first_module or d.in_loss) and not f.run.facts(DataNonfinite):
                where = f"module `{d.first_module.name}`" if d.first_module else "the loss computation"
                return [f"the batch at the first non-finite loss held only finite values; the first NaN/Inf came "
                        f"from {where}"]
        return []


class UnnormalizedInput(Cause):
    id = "unnormalized-input"
    fixes = ("subtract mean, divide by std per feature (pixels to [−1, 1] or standardised)",)

    def concrete(self, f: Facts) -> list[str]:
        d2 = f.by_code.get("D002")
        if d2 is None:
            return []
        ev = d2.evidence
        if ev.get("integer_valued") and (ev.get("max") or 0) <= 255 and (ev.get("min") or 0) >= 0:
            return [f"scale the pixels before `model(x)`{at(ev)}: x = x / 255, then normalise with the training "
                    "set's per-channel mean and std (torchvision: transforms.ToTensor() + transforms.Normalize)"]
        mean, std = num(ev.get("mean")), num(ev.get("std"))
        nums = f" (here mean {fmt(mean)}, std {fmt(std)} overall)" if mean is not None and std is not None else ""
        return [f"standardise each feature before `model(x)`{at(ev)} with the training split's statistics"
                f"{nums}: sklearn's StandardScaler fitted on the training data, applied to every split"]

    def against(self, f: Facts) -> list[str]:
        """no D002 finding and the inputs the model received at the first step were standardised (|mean| ≤ 1.5, std 0.05–3, max |x| ≤ 50)."""
        if "D002" in f.by_code:
            return []
        if f.input_standardised:
            st = f.run.meta.get("input_stats") or {}
            return [f"the inputs the model received were standardised (mean {fmt(float(st['mean']))}, "
                    f"std {fmt(float(st['std']))})"]
        return []


class UnnormalizedTarget(Cause):
    id = "unnormalized-target"
    fixes = ("standardise targets, invert at prediction time",)

    def concrete(self, f: Facts) -> list[str]:
        d3 = f.by_code.get("D003")
        if d3 is None:
            return []
        ev = d3.evidence
        mean, std = num(ev.get("mean")), num(ev.get("std"))
        if mean is not None and std is not None and std > 0:
            return [f"standardise the targets before the loss{at(ev)}: y = (y - {fmt(mean)}) / {fmt(std)}, and "
                    f"predict y_hat * {fmt(std)} + {fmt(mean)}; or regress log(y) if the targets are positive and skewed"]
        return []

    def against(self, f: Facts) -> list[str]:
        """the loss is a classification loss (there are no regression targets)."""
        if f.loss_kind is not None and f.loss_kind not in REGRESSION_KINDS and not f.run.names("loss_term"):
            return [f"the loss is {f.loss_kind}: there are no regression targets to scale"]
        return []


class LabelDomainError(Cause):
    id = "label-domain-error"
    fixes = ("fix label encoding or the loss/output size pairing",)

    def concrete(self, f: Facts) -> list[str]:
        d4 = f.by_code.get("D004")
        if d4 is None:
            return []
        detail = str(d4.evidence.get("detail", ""))
        where = d4.evidence.get("where")
        out = [f"fix the labels at their source{f' (crash at {where})' if where else ''}: {detail}"]
        m = re.search(r"class index (-?\d+)", detail)
        if m:
            k = int(m.group(1))
            out.append(f"class indices must lie in 0…C−1 for C outputs: remap the labels (e.g. y - y.min(), or "
                       f"sklearn's LabelEncoder) or, if there really are {k + 1} classes, give the last layer {k + 1} outputs")
        return out


class LabelNoise(Cause):
    id = "label-noise"
    fixes = ("audit the listed samples", "check data/label alignment in the loader")

    def concrete(self, f: Facts) -> list[str]:
        out = []
        l3 = f.by_code.get("L003")
        if l3 is not None and l3.evidence.get("period"):
            out.append(f"the spikes recur every {l3.evidence['period']} steps: inspect the batch loaded at steps "
                       f"{', '.join(map(str, l3.evidence['spike_steps'][:3]))} (inputs and labels)")
        return out


class ClassImbalance(Cause):
    id = "class-imbalance"
    fixes = ("reweighting or oversampling the rare classes", "class-balanced batches", "focal loss")

    def concrete(self, f: Facts) -> list[str]:
        d5 = f.by_code.get("D005")
        counts = (d5.evidence.get("counts") or {}) if d5 is not None else {}
        total = sum(v for v in counts.values() if isinstance(v, (int, float)))
        if len(counts) < 2 or not total:
            return []
        keys = sorted(counts, key=lambda k: int(k) if str(k).isdigit() else 0)
        w = [total / (len(counts) * counts[k]) for k in keys if counts[k]]
        shown = ", ".join(f"{fmt(x)}" for x in w)
        return [f"weight the loss by inverse class frequency, from the counts seen: "
                f"nn.CrossEntropyLoss(weight=torch.tensor([{shown}])) (for one logit: "
                "BCEWithLogitsLoss(pos_weight=negatives/positives)), or a WeightedRandomSampler"]

    def against(self, f: Facts) -> list[str]:
        """no D005 finding and the classes of the profiled batches (≥ 200 labels) were within 3× of each other."""
        if "D005" in f.by_code:
            return []
        r = f.class_ratio
        if r is not None and r <= 3:
            return [f"the classes in the batches seen were balanced (most/least frequent {fmt(r)}×)"]
        return []


class UnshuffledData(Cause):
    id = "unshuffled-data"
    fixes = ("shuffle every epoch",)

    def concrete(self, f: Facts) -> list[str]:
        if "D007" not in f.by_code:
            return []
        return ["shuffle every epoch: DataLoader(dataset, batch_size=..., shuffle=True) (with "
                "generator=torch.Generator().manual_seed(0) to keep it reproducible)"]

    def against(self, f: Facts) -> list[str]:
        """no D007 finding and the profiled batches mixed the classes like shuffled data."""
        if "D007" not in f.by_code and f.shuffled:
            o = (f.profile.order if f.profile else None) or {}
            return [f"the batches mixed the classes ({fmt(float(o['mean_classes_per_batch']))} classes per batch, "
                    f"{fmt(float(o['expected_classes_per_batch']))} expected from shuffled data)"]
        return []


class DataLeakage(Cause):
    id = "data-leakage"
    fixes = ("deduplicate across splits",)

    def concrete(self, f: Facts) -> list[str]:
        d6 = f.by_code.get("D006")
        if d6 is None:
            return []
        n = d6.evidence.get("duplicates")
        return [f"remove the {n} validation samples that also occur in training (match them by content hash), then "
                "split by a stable key (an id, a patient, a date) rather than at random after augmentation"]


class DistributionMismatch(Cause):
    id = "distribution-mismatch"
    fixes = ("re-split data", "check preprocessing is identical on both")

    def concrete(self, f: Facts) -> list[str]:
        return ["fit the preprocessing (scaler, normalisation constants, image orientation) on the training data "
                "and apply exactly the same transform to validation; then re-split at random"]
