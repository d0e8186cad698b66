"""Findings → ranked root causes with confidence, evidence and concrete fixes.

Each finding says how strongly it points at each cause (its ``causes`` weights, set by the rule
from the run's context: a NaN loss at step 0 with NaN inputs points at the data, a NaN loss after
the gradient norm grew 10^4× points at the learning rate). A cause's confidence is the noisy-OR of
those weights, so independent evidence adds up but never passes 1, and one strong piece of
evidence outranks many weak hints. Fixes are the catalogue's, made concrete with the run's own
numbers (the learning rate it used, the step to roll back to) where the run tells them.
"""
from __future__ import annotations

import math
import re
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .catalogue import CAUSES
from .findings import Finding, clean, severity_rank
from .run import Run

SCHEMA = "traindoctor/1"


@dataclass
class CauseScore:
    id: str
    title: str
    confidence: float
    evidence: list[str]
    chain: list[str]
    fixes: list[str]
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "confidence": round(self.confidence, 3),
            "evidence": self.evidence,
            "chain": self.chain,
            "summary": self.summary,
            "fixes": self.fixes,
        }


@dataclass
class Diagnosis:
    findings: list[Finding]
    causes: list[CauseScore]
    not_judged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.findings

    @property
    def worst_severity(self) -> str | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=severity_rank)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "healthy": self.healthy,
            "findings": [f.to_json() for f in self.findings],
            "causes": [c.to_json() for c in self.causes],
            "not_judged": self.not_judged,
            "notes": self.notes,
            "source": clean(self.source),
        }


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def concrete_fixes(cause_id: str, run: Run, findings: list[Finding]) -> list[str]:
    """Fixes with the run's numbers, most effective first, then the catalogue's general advice."""
    lr = run.meta.get("lr")
    out: list[str] = []
    nonfinite = next((f for f in findings if f.code == "L001"), None)
    good_step = None
    if nonfinite is not None and nonfinite.step is not None:
        good_step = nonfinite.evidence.get("last_finite_step")
    sweep = next((e.data for e in run.events_of("lr_range_test") if e.data.get("suggested_lr")), None)
    if sweep is not None and cause_id in ("lr-too-high", "lr-too-low"):  # measured beats a rule of thumb
        sug = float(sweep["suggested_lr"])
        out.append(f"set the learning rate between {_fmt(sug / 3)} and {_fmt(sug)}: an LR range test on this model and "
                   f"data with {sweep.get('optimizer')} falls fastest at {_fmt(sug)} (start at the low end with momentum)")
    if cause_id == "lr-too-high":
        lrs = run.get("lr")
        if lrs is not None and len(lrs) >= 2:
            v = lrs.values[lrs.values > 0]
            if v.size >= 2 and v[-1] >= 10 * v[0]:
                out.append(f"the learning rate grew from {_fmt(v[0])} to {_fmt(v[-1])} during the run: check the "
                           "scheduler (a decay factor above 1, a warm-up that never ends)")
                lr = float(v[-1])
        if isinstance(lr, (int, float)) and lr > 0:
            out.append(
                f"lower the learning rate ×0.1: {_fmt(lr)} → {_fmt(lr / 10)} (if it still fails, {_fmt(lr / 100)})"
            )
        out.append("clip the global gradient norm: torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)")
        out.append("add a warm-up of a few hundred steps (e.g. torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, 500))")
        if good_step is not None:
            out.append(f"restart from the last healthy checkpoint (the loss was finite up to step {good_step})")
    elif cause_id == "lr-too-low":
        if isinstance(lr, (int, float)) and lr > 0:
            out.append(f"raise the learning rate ×10: {_fmt(lr)} → {_fmt(lr * 10)}; then ×10 again if still flat")
    elif cause_id == "nonfinite-data":
        ids = []
        for f in findings:
            ids += list(f.evidence.get("sample_ids", []) or [])
        if ids:
            shown = ", ".join(str(i) for i in ids[:10])
            out.append(f"drop or repair the samples with non-finite values (dataset indices {shown})")
        out.append("validate data at load time: assert torch.isfinite(x).all() and torch.isfinite(y).all()")
    elif cause_id == "double-softmax":
        mod = next((f.evidence.get("module") for f in findings if f.code == "M001" and f.evidence.get("module")), None)
        where = f" (remove the softmax after `{mod}`)" if mod else ""
        out.append(f"return logits from the model{where}: nn.CrossEntropyLoss applies log-softmax itself")
    elif cause_id == "label-domain-error":
        d004 = next((f for f in findings if f.code == "D004"), None)
        if d004 is not None:
            detail = d004.evidence.get("detail", "")
            where = d004.evidence.get("where")
            out.append(f"fix the labels at their source{f' (crash at {where})' if where else ''}: {detail}")
            m = re.search(r"class index (-?\d+)", detail)
            if m:
                k = int(m.group(1))
                out.append(
                    f"class indices must lie in 0…C−1 for C outputs: remap the labels (e.g. y - y.min(), or "
                    f"sklearn's LabelEncoder) or, if there really are {k + 1} classes, give the last layer {k + 1} outputs"
                )
    elif cause_id == "numerically-unstable-loss":
        faults = {e.data.get("fault"): e.data for e in run.events_of("config")}
        if "sigmoid_bce" in faults:
            mod = faults["sigmoid_bce"].get("module")
            out.append(
                f"remove the sigmoid{f' `{mod}`' if mod else ''} from the model and replace nn.BCELoss with "
                "nn.BCEWithLogitsLoss on the raw logits (apply torch.sigmoid only at prediction time)"
            )
        if "log_softmax_unfused" in faults:
            out.append("replace torch.log(F.softmax(x)) with F.log_softmax(x), or nn.CrossEntropyLoss on the logits")
        if not faults:
            out.append("use the fused losses on logits: nn.CrossEntropyLoss, nn.BCEWithLogitsLoss, F.log_softmax")
            out.append("add an epsilon inside hand-written logs and divisions: torch.log(p + 1e-7)")
    config = _config_fixes(cause_id, {f.code: f for f in findings})
    out += config
    out += _measured_fixes(cause_id, run, {f.code: f for f in findings})
    for fix in CAUSES[cause_id].fixes if cause_id in CAUSES and not config else ():
        # the catalogue's general advice, unless a concrete fix above already says it
        words = _words(fix)
        first = fix.split(" ", 1)[0].lower()
        if not any(words & _words(o) or o.split(" ", 1)[0].lower() == first for o in out):
            out.append(fix)
    return out


def _at(ev: dict[str, Any]) -> str:
    where = ev.get("where")
    return f" ({where.rsplit('/', 1)[-1]})" if isinstance(where, str) else ""


def _config_fixes(cause_id: str, f: dict[str, Finding]) -> list[str]:
    """Code-level fixes for the configuration findings, naming the module or call and its line."""
    out: list[str] = []
    if cause_id == "wrong-output-activation" and "M009" in f:
        ev = f["M009"].evidence
        act, mod, kind, loss = ev.get("activation"), ev.get("module"), ev.get("loss_kind"), ev.get("loss")
        thing = f"`{mod}` ({ev.get('module_type')})" if mod and str(ev.get("module_type") or "").lower() == str(act) \
            else f"the {act} call"
        if loss == "hand-written":
            out.append(f"replace the hand-written loss{_at(ev)} with nn.CrossEntropyLoss on the logits (class-index "
                       "targets), or keep the sigmoid and use nn.BCEWithLogitsLoss if the labels really are multi-label")
        elif kind == "nll" and act == "softmax":
            out.append(f"use F.log_softmax instead of softmax{_at(ev)} before NLLLoss, or return the logits and use "
                       "nn.CrossEntropyLoss")
        elif kind == "nll":
            out.append(f"apply F.log_softmax(logits, dim=1) before NLLLoss{_at(ev)}, or use nn.CrossEntropyLoss on the logits")
        elif kind == "bce" and act == "softmax":
            out.append(f"replace the softmax{_at(ev)} with one sigmoid per label: return logits and use nn.BCEWithLogitsLoss")
        elif kind in ("mse", "l1", "smooth_l1", "huber"):
            out.append(f"remove {thing}{_at(ev)} from the regression output (identity), or standardise the targets "
                       "into the activation's range")
        else:
            out.append(f"remove {thing}{_at(ev)}: return the last layer's raw logits to {loss}, which normalises them "
                       "itself (apply softmax/sigmoid only at prediction time)")
    elif cause_id == "wrong-loss-function" and "M008" in f:
        ev = f["M008"].evidence
        kind, t = ev.get("loss_kind"), ev.get("target") or {}
        ps = ev.get("pred_shape") or []
        if kind in ("mse", "l1", "smooth_l1", "huber"):
            c = int(t.get("max", 0)) + 1
            out.append(f"for class labels use nn.CrossEntropyLoss{_at(ev)} on a model with {max(c, ps[1] if len(ps) > 1 else 0)} "
                       "outputs and the int64 labels as they are (no .float())")
        elif kind in ("bce", "bce_logits"):
            out.append(f"for one label out of several classes use nn.CrossEntropyLoss{_at(ev)} with int64 class indices "
                       "and one output per class")
        else:
            out.append(f"binary task: one output with nn.BCEWithLogitsLoss{_at(ev)} (float 0/1 targets), or two outputs "
                       "with CrossEntropyLoss; continuous targets: nn.MSELoss or nn.HuberLoss")
    elif cause_id == "unnormalized-input" and "D002" in f:
        ev = f["D002"].evidence
        if ev.get("integer_valued") and (ev.get("max") or 0) <= 255 and (ev.get("min") or 0) >= 0:
            out.append(f"scale the pixels before `model(x)`{_at(ev)}: x = x / 255, then normalise with the training "
                       "set's per-channel mean and std (torchvision: transforms.ToTensor() + transforms.Normalize)")
        else:
            mean, std = ev.get("mean"), ev.get("std")
            nums = f" (here mean {_fmt(mean)}, std {_fmt(std)} overall)" if isinstance(mean, (int, float)) and \
                isinstance(std, (int, float)) else ""
            out.append(f"standardise each feature before `model(x)`{_at(ev)} with the training split's statistics"
                       f"{nums}: sklearn's StandardScaler fitted on the training data, applied to every split")
    elif cause_id == "unnormalized-target" and "D003" in f:
        ev = f["D003"].evidence
        mean, std = ev.get("mean"), ev.get("std")
        if isinstance(mean, (int, float)) and isinstance(std, (int, float)) and std > 0:
            out.append(f"standardise the targets before the loss{_at(ev)}: y = (y - {_fmt(mean)}) / {_fmt(std)}, and "
                       f"predict y_hat * {_fmt(std)} + {_fmt(mean)}; or regress log(y) if the targets are positive and skewed")
    elif cause_id == "class-imbalance" and "D005" in f:
        counts = f["D005"].evidence.get("counts") or {}
        total = sum(v for v in counts.values() if isinstance(v, (int, float)))
        if len(counts) >= 2 and total:
            w = [total / (len(counts) * counts[k]) for k in sorted(counts, key=lambda k: int(k) if str(k).isdigit()
                                                                   else 0) if counts[k]]
            shown = ", ".join(f"{x:.3g}" for x in w)
            out.append(f"weight the loss by inverse class frequency, from the counts seen: "
                       f"nn.CrossEntropyLoss(weight=torch.tensor([{shown}])) (for one logit: "
                       "BCEWithLogitsLoss(pos_weight=negatives/positives)), or a WeightedRandomSampler")
    elif cause_id == "unshuffled-data" and "D007" in f:
        out.append("shuffle every epoch: DataLoader(dataset, batch_size=..., shuffle=True) (with "
                   "generator=torch.Generator().manual_seed(0) to keep it reproducible)")
    elif cause_id == "missing-nonlinearity" and "M010" in f:
        ev = f["M010"].evidence
        for p in (ev.get("pairs") or [])[:3]:
            a, b = p.get("first") or {}, p.get("second") or {}
            out.append(f"insert nn.ReLU() (or nn.GELU()) between `{a.get('module')}` and `{b.get('module')}`"
                       f"{_at(b.get('defined') or a.get('defined') or {})}")
    return out


def _measured_fixes(cause_id: str, run: Run, f: dict[str, Finding]) -> list[str]:
    """Fixes whose numbers and names come from the run: the layer, the step, the clip value."""
    out: list[str] = []
    opt = run.meta.get("optimizer") or {}
    lr = run.meta.get("lr")
    if cause_id in ("exploding-gradient", "lr-too-high"):
        g = run.get("grad_norm")
        if g is not None:
            v = g.values[: max(2, len(g) // 5)]
            v = v[np.isfinite(v)]
            if v.size:
                clip = float(np.median(v)) * 5
                out.append(f"clip the gradient norm near 5× its healthy early level: "
                           f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={_fmt(clip)})")
    if cause_id == "vanishing-gradient":
        acts = [n.split("/", 1)[1] for n in run.names("saturated_frac")]
        if acts:
            shown = ", ".join(f"`{a}`" for a in acts[:6]) + (" …" if len(acts) > 6 else "")
            out.append(f"replace the sigmoid/tanh activations {shown} with nn.ReLU or nn.GELU, and initialise the "
                       "Linear layers with nn.init.kaiming_normal_(w, nonlinearity='relu')")
        out.append("if the depth is needed, add residual connections (x + block(x)) or nn.LayerNorm/BatchNorm "
                   "between the layers")
    elif cause_id == "dying-relu" and "A001" in f:
        mod = f["A001"].evidence.get("module")
        if isinstance(lr, (int, float)):
            out.append(f"lower the learning rate {_fmt(lr)} → {_fmt(lr / 10)}: large steps pushed the units below zero")
        out.append(f"replace nn.ReLU `{mod}` with nn.LeakyReLU(0.01) (or nn.GELU), so dead units still get a gradient")
    elif cause_id == "bad-initialization":
        if "G006" in f and f["G006"].evidence.get("zero_initialised"):
            names = ", ".join(f["G006"].evidence["zero_initialised"][:4])
            out.append(f"do not initialise weights to zero ({names}): use the default init or "
                       "nn.init.kaiming_normal_ (ReLU) / nn.init.xavier_uniform_ (tanh, sigmoid); zeros are fine for biases only")
        else:
            out.append("re-initialise: nn.init.kaiming_normal_(m.weight, nonlinearity='relu') for ReLU layers, "
                       "nn.init.xavier_uniform_ for tanh/sigmoid, nn.init.zeros_(m.bias)")
    elif cause_id == "over-regularization":
        wd = opt.get("weight_decay")
        if isinstance(wd, (int, float)) and wd > 0:
            out.append(f"lower weight_decay {_fmt(wd)} → {_fmt(min(wd, 1e-2) / 100)} (raise it again only once "
                       "validation shows overfitting)")
    elif cause_id == "overfitting" and "V001" in f:
        ev = f["V001"].evidence
        where = f"step {ev.get('best_step')}" + (f" (epoch {ev['best_epoch']})" if ev.get("best_epoch") is not None else "")
        out.append(f"stop at the validation minimum and keep that checkpoint: {where}, val_loss {_fmt(ev['best_val_loss'])}")
        out.append("add regularisation: weight_decay=1e-4 (AdamW) and nn.Dropout(0.2) before the last layer; "
                   "or more data / augmentation")
    elif cause_id == "batchnorm-misuse":
        out.append("let BatchNorm statistics follow the data: nn.BatchNorm1d(..., momentum=0.1) (not 0), "
                   "model.train() while training, model.eval() only to evaluate")
    elif cause_id == "code-bug" and "G006" in f:
        ev = f["G006"].evidence
        if ev.get("no_gradient"):
            out.append(f"find what cuts the graph before {', '.join(ev['no_gradient'][:3])}: a .detach(), .data, "
                       "torch.no_grad() or .item() on the path to the loss, or a branch whose output is not used")
        if ev.get("requires_grad_false"):
            out.append(f"{', '.join(ev['requires_grad_false'][:3])}: set requires_grad_(True), or leave them out of the "
                       "optimizer if freezing was intended")
    elif cause_id == "unbalanced-loss-terms" and "L011" in f:
        ev = f["L011"].evidence
        ratio = float(ev.get("ratio") or 0)
        if ratio > 0:
            out.append(f"scale the term {ev['largest']} by about {_fmt(1 / ratio)} (or standardise its target) so the "
                       f"terms sit within one order of magnitude of {ev['smallest']}")
    elif cause_id == "distribution-mismatch":
        out.append("fit the preprocessing (scaler, normalisation constants, image orientation) on the training data "
                   "and apply exactly the same transform to validation; then re-split at random")
    elif cause_id == "label-noise" and "L003" in f and f["L003"].evidence.get("period"):
        out.append(f"the spikes recur every {f['L003'].evidence['period']} steps: inspect the batch loaded at steps "
                   f"{', '.join(map(str, f['L003'].evidence['spike_steps'][:3]))} (inputs and labels)")
    return out


_COMMON = {"learning", "rate", "model", "layer", "layers", "with", "when", "from", "that", "the", "than", "data",
           "more", "smaller", "larger", "each", "every", "them", "only", "once", "train", "training", "loss"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z_]{4,}", text.lower())} - _COMMON


def rank_causes(findings: list[Finding], run: Run) -> list[CauseScore]:
    weights: dict[str, list[tuple[float, Finding]]] = {}
    for f in findings:
        for cid, w in f.causes:
            if cid not in CAUSES:
                raise KeyError(f"finding {f.code} names unknown cause id {cid!r}")
            w = min(max(float(w), 0.0), 0.99)
            if w > 0:
                weights.setdefault(cid, []).append((w, f))
    scored: list[CauseScore] = []
    for cid, ws in weights.items():
        conf = 1.0 - math.prod(1.0 - w for w, _ in ws)
        ws_sorted = sorted(ws, key=lambda t: -t[0])
        codes: list[str] = []
        for _, f in ws_sorted:
            if f.code not in codes:
                codes.append(f.code)
        chain = [f"{f.code} {f.message}" for _, f in ws_sorted]
        # the evidence chain in one line, in the order things happened
        seen: list[Finding] = []
        for _, f in sorted(ws_sorted, key=lambda t: (t[1].step if t[1].step is not None else -1)):
            if f not in seen:
                seen.append(f)
        summary = "; ".join(f.message.split("; ")[0] for f in seen[:4])
        summary += f" → {CAUSES[cid].title} ({conf:.2f})"
        scored.append(
            CauseScore(cid, CAUSES[cid].title, conf, codes, chain, concrete_fixes(cid, run, findings), summary)
        )
    scored.sort(key=lambda c: (-c.confidence, c.id))
    return scored


def evaluate(run: Run) -> tuple[list[Finding], list[str]]:
    """Run every rule; a rule that fails is contained and reported, never fatal."""
    from .rules import all_rules

    findings: list[Finding] = []
    internal: list[str] = []
    for code, r in all_rules().items():
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                findings.extend(r.check(run))
        except Exception as exc:  # noqa: BLE001 - a broken rule must not hide the others
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            internal.append(f"rule {code} failed ({type(exc).__name__}: {exc} at {tb.filename}:{tb.lineno})")
    findings.sort(key=lambda f: (-severity_rank(f.severity), f.step if f.step is not None else 1 << 62, f.code))
    return findings, internal


def not_judged(run: Run) -> list[str]:
    """What the run lacks for some rules to judge: said plainly rather than guessed."""
    out = []
    loss = run.get("loss")
    if loss is None:
        out.append("no training loss series: the loss-curve rules (L) could not judge")
    elif len(loss.finite()) == 0:
        out.append(
            f"the training loss is never finite ({len(loss)} point{'s' if len(loss) != 1 else ''}, all NaN/Inf): "
            "only L001 could judge it; trends, plateaus and spikes could not be judged"
        )
    elif len(loss.finite()) < 20:
        k = len(loss.finite())
        out.append(f"only {k} finite loss point{'s' if k != 1 else ''}: too few to judge trends (need 20)")
    if run.get("val_loss") is None and run.get("val_accuracy") is None:
        out.append("no validation metric (val_loss or val_accuracy): the train/validation rules (V) could not judge")
    for name in ("val_loss", "val_accuracy", "accuracy", "grad_norm"):
        s = run.get(name)
        if s is not None and len(s.finite()) < 2:
            what = "no finite value" if len(s.finite()) == 0 else "a single finite point"
            out.append(f"{name} has {what} ({len(s)} logged): the rules reading it could not judge")
    if run.get("grad_norm") is None:
        out.append("no gradient norms: G001 could not judge")
    n_opt = run.meta.get("optimizers_stepping")
    if isinstance(n_opt, int) and n_opt >= 2:
        out.append(f"{n_opt} optimizers step in turn (a GAN or another game): the logged loss mixes the players, so "
                   "the progress rules (L005, L006, L007, V006) do not judge it")
    if run.meta.get("num_classes") is None and run.meta.get("loss_kind") is None:
        out.append("loss kind and class count unknown: L007 and L009 compare against ln(C) only when known")
    return out


def diagnose(run: Run) -> Diagnosis:
    findings, internal = evaluate(run)
    with np.errstate(all="ignore"):  # fixes computed from extreme values (1e308 norms) overflow harmlessly
        causes = rank_causes(findings, run)
    notes = list(run.meta.get("notes", []))
    notes += [f"internal error contained: {m}" for m in internal]
    for e in run.events_of("doctor_error"):
        notes.append(f"internal error contained at step {e.step}: {e.data.get('message')}")
    for e in run.events_of("crash"):
        notes.append(f"the script crashed at step {e.step}: {e.data.get('type')}: {e.data.get('message')}")
    source = {k: run.meta[k] for k in ("source", "format", "columns", "store") if k in run.meta}
    return Diagnosis(findings, causes, not_judged(run), notes, source)
