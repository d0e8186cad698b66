"""Causes in the model, the loss and the code around them, and in how well the model generalises."""
from __future__ import annotations

from ..events import Config
from ..numfmt import fmt
from . import Cause
from . import frameworks as fw
from .data import at
from .facts import REGRESSION_KINDS, Facts, num


class NumericallyUnstableLoss(Cause):
    id = "numerically-unstable-loss"
    fixes = ("use fused forms (`CrossEntropyLoss` on logits, `BCEWithLogitsLoss`, `log_softmax`)", "add eps inside logs")

    def concrete(self, f: Facts) -> list[str]:
        faults = {c.fault: c.to_json() for c in f.run.facts(Config)}
        m2 = f.by_code.get("M002")
        if m2 is not None and m2.evidence.get("fault"):
            faults.setdefault(m2.evidence["fault"], m2.evidence)
        out = []
        if "sigmoid_bce" in faults:
            mod = faults["sigmoid_bce"].get("module")
            out.append(f"remove the sigmoid{f' `{mod}`' if mod else ''} from the model and replace nn.BCELoss with "
                       "nn.BCEWithLogitsLoss on the raw logits (apply torch.sigmoid only at prediction time)")
        if "log_softmax_unfused" in faults:
            out.append("replace torch.log(F.softmax(x)) with F.log_softmax(x), or nn.CrossEntropyLoss on the logits")
        if not faults:
            out.append("use the fused losses on logits: nn.CrossEntropyLoss, nn.BCEWithLogitsLoss, F.log_softmax")
            out.append("add an epsilon inside hand-written logs and divisions: torch.log(p + 1e-7)")
        return out

    def against(self, f: Facts) -> list[str]:
        """no M002/G003 finding or unfused-loss event, and the first step fed logits to a fused loss (or log_softmax to nll_loss) with no hand-written log."""
        if "M002" in f.by_code or f.run.facts(Config):
            return []
        if f.correct_pairing and not f.graph.handwritten and "G003" not in f.by_code:
            return [f.correct_pairing]
        return []


class DoubleSoftmax(Cause):
    id = "double-softmax"
    fixes = ("return logits from the model",)

    def concrete(self, f: Facts) -> list[str]:
        mod = next((x.evidence.get("module") for x in f.findings if x.code == "M001" and x.evidence.get("module")), None)
        where = f" (remove the softmax after `{mod}`)" if mod else ""
        return [f"return logits from the model{where}: nn.CrossEntropyLoss applies log-softmax itself"]

    def against(self, f: Facts) -> list[str]:
        """no M001 finding and the first step fed logits (or log_softmax into nll_loss) to the loss, or the loss is not a cross-entropy."""
        if "M001" in f.by_code:
            return []
        if f.correct_pairing:
            return [f.correct_pairing]
        if f.loss_kind is not None and f.loss_kind not in ("cross_entropy", "nll"):
            return [f"the loss is {f.loss_kind}, not a cross-entropy over a softmax"]
        return []


class WrongLossFunction(Cause):
    id = "wrong-loss-function"
    fixes = ("cross-entropy on logits for single-label classes, BCE-with-logits for binary or multi-label, "
             "MSE/Huber for regression",)

    def concrete(self, f: Facts) -> list[str]:
        m8 = f.by_code.get("M008")
        if m8 is None:
            return []
        ev = m8.evidence
        kind, t = ev.get("loss_kind"), ev.get("target") or {}
        ps = ev.get("pred_shape") or []
        if kind in REGRESSION_KINDS:
            c = int(t.get("max", 0)) + 1
            return [f"for class labels use nn.CrossEntropyLoss{at(ev)} on a model with {max(c, ps[1] if len(ps) > 1 else 0)} "
                    "outputs and the int64 labels as they are (no .float())"]
        if kind in ("bce", "bce_logits"):
            return [f"for one label out of several classes use nn.CrossEntropyLoss{at(ev)} with int64 class indices "
                    "and one output per class"]
        return [f"binary task: one output with nn.BCEWithLogitsLoss{at(ev)} (float 0/1 targets), or two outputs "
                "with CrossEntropyLoss; continuous targets: nn.MSELoss or nn.HuberLoss"]

    def against(self, f: Facts) -> list[str]:
        """no M008 finding and the first step's loss received the kind of targets it expects."""
        if "M008" in f.by_code:
            return []
        lf = f.traced_loss
        if lf is None:
            return []
        kind, tk = lf.get("kind"), (lf.get("target") or {}).get("kind")
        if kind in ("cross_entropy", "nll") and tk == "class indices":
            return ["the first step's cross-entropy received class indices, as it should"]
        if kind in ("bce", "bce_logits") and tk in ("binary", "multi-hot", "probabilities"):
            return [f"the first step's binary cross-entropy received {tk} targets, as it should"]
        if kind in REGRESSION_KINDS and tk in ("continuous", "values"):
            return ["the first step's regression loss received continuous targets"]
        return []


class WrongOutputActivation(Cause):
    id = "wrong-output-activation"
    fixes = ("logits (no activation) into the fused losses", "none or identity for regression")

    def concrete(self, f: Facts) -> list[str]:
        m9 = f.by_code.get("M009")
        if m9 is None:
            return []
        ev = m9.evidence
        act, mod, kind, loss = ev.get("activation"), ev.get("module"), ev.get("loss_kind"), ev.get("loss")
        thing = f"`{mod}` ({ev.get('module_type')})" if mod and str(ev.get("module_type") or "").lower() == str(act) \
            else f"the {act} call"
        if loss == "hand-written":
            return [f"replace the hand-written loss{at(ev)} with nn.CrossEntropyLoss on the logits (class-index "
                    "targets), or keep the sigmoid and use nn.BCEWithLogitsLoss if the labels really are multi-label"]
        if kind == "nll" and act == "softmax":
            return [f"use F.log_softmax instead of softmax{at(ev)} before NLLLoss, or return the logits and use "
                    "nn.CrossEntropyLoss"]
        if kind == "nll":
            return [f"apply F.log_softmax(logits, dim=1) before NLLLoss{at(ev)}, or use nn.CrossEntropyLoss on the logits"]
        if kind == "bce" and act == "softmax":
            return [f"replace the softmax{at(ev)} with one sigmoid per label: return logits and use nn.BCEWithLogitsLoss"]
        if kind in REGRESSION_KINDS:
            return [f"remove {thing}{at(ev)} from the regression output (identity), or standardise the targets "
                    "into the activation's range"]
        return [f"remove {thing}{at(ev)}: return the last layer's raw logits to {loss}, which normalises them "
                "itself (apply softmax/sigmoid only at prediction time)"]

    def against(self, f: Facts) -> list[str]:
        """no M009/M001 finding and the first step fed the loss what it expects (logits, or log_softmax into nll_loss)."""
        if "M009" in f.by_code or "M001" in f.by_code:
            return []
        if f.correct_pairing:
            return [f.correct_pairing]
        return []


class MissingNonlinearity(Cause):
    id = "missing-nonlinearity"
    fixes = ("put ReLU/GELU between the layers",)

    def concrete(self, f: Facts) -> list[str]:
        m10 = f.by_code.get("M010")
        out = []
        for p in ((m10.evidence.get("pairs") or []) if m10 is not None else [])[:3]:
            a, b = p.get("first") or {}, p.get("second") or {}
            out.append(f"insert nn.ReLU() (or nn.GELU()) between `{a.get('module')}` and `{b.get('module')}`"
                       f"{at(b.get('defined') or a.get('defined') or {})}")
        return out

    def against(self, f: Facts) -> list[str]:
        """no M010 finding and the traced first step passed through nonlinear activations with no stacked weight layers."""
        if "M010" in f.by_code:
            return []
        if f.traced and f.graph.stacked_linear == () and (f.has_relu or f.has_squash
                                                                 or f.op_names & {"gelu", "silu", "mish", "softplus"}):
            return ["the first step passed through nonlinear activations between the weight layers"]
        return []


class InsufficientCapacity(Cause):
    id = "insufficient-capacity"
    fixes = ("wider/deeper model", "check M005 first")

    def against(self, f: Facts) -> list[str]:
        """the training loss ended at or below 0.1× the chance loss ln C: the model fits its data."""
        fit = f.loss_fit
        if fit is not None and fit <= 0.1:
            return [f"the model fits its training data (training loss {fmt(fit)}× the chance loss at the end)"]
        return []


class UnbalancedLossTerms(Cause):
    id = "unbalanced-loss-terms"
    fixes = ("weight the terms so they sit within one order of magnitude",
             "begin with the main task's term, add the others once it trains")

    def concrete(self, f: Facts) -> list[str]:
        l11 = f.by_code.get("L011")
        if l11 is None:
            return []
        ev = l11.evidence
        ratio = num(ev.get("ratio")) or 0
        if ratio > 0:
            return [f"scale the term {ev['largest']} by about {fmt(1 / ratio)} (or standardise its target) so the "
                    f"terms sit within one order of magnitude of {ev['smallest']}"]
        return []


class BatchnormMisuse(Cause):
    id = "batchnorm-misuse"
    fixes = ("keep BN statistics updating when fine-tuning on new data", "call `model.train()`/`model.eval()` correctly")

    def concrete(self, f: Facts) -> list[str]:
        out = []
        v8 = f.by_code.get("V008")
        if v8 is not None:
            out.append(f"call model.eval() before evaluating{at(v8.evidence)} and model.train() after: "
                       f"{', '.join(v8.evidence.get('modules', [])[:3]) or 'dropout/BatchNorm'} ran in training mode")
        out.append("let BatchNorm statistics follow the data: nn.BatchNorm1d(..., momentum=0.1) (not 0), "
                   "model.train() while training, model.eval() only to evaluate")
        return out

    def against(self, f: Facts) -> list[str]:
        """the model has neither BatchNorm nor dropout."""
        if f.has_batchnorm is False and f.has_dropout is False:
            return ["the model has neither BatchNorm nor dropout"]
        return []


class CodeBug(Cause):
    id = "code-bug"
    fixes = ("the doctor's probes narrow it down: overfit one batch, repeat one sample, gradient check, "
             "compare with a shallow model",)

    def concrete(self, f: Facts) -> list[str]:
        out = []
        g6 = f.by_code.get("G006")
        if g6 is not None:
            ev = g6.evidence
            if ev.get("no_gradient"):
                out.append(f"find what cuts the graph before {', '.join(ev['no_gradient'][:3])}: a .detach(), .data, "
                           "torch.no_grad() or .item() on the path to the loss, or a branch whose output is not used")
            if ev.get("requires_grad_false"):
                out.append(f"{', '.join(ev['requires_grad_false'][:3])}: set requires_grad_(True), or leave them out "
                           "of the optimizer if freezing was intended")
        g8 = f.by_code.get("G008")
        if g8 is not None:
            out.append(f"call optimizer.zero_grad() once per step{at(g8.evidence)} (before loss.backward()): the "
                       "gradients have been accumulating over every step since the start")
        m13 = f.by_code.get("M013")
        if m13 is not None:
            out.append("the frozen weights were never loaded: check the checkpoint's keys against the model's "
                       "(a 'module.' prefix from DataParallel, a renamed attribute) and load with strict=True, which "
                       "raises on a mismatch instead of loading nothing")
        return out


class Overfitting(Cause):
    id = "overfitting"
    fixes = ("more data or augmentation", "dropout (0.5, 0.2 for small models)", "weight decay",
             "early stopping with best-checkpoint restore", "smaller model")

    def concrete(self, f: Facts) -> list[str]:
        v1 = f.by_code.get("V001")
        if v1 is None:
            return []
        ev = v1.evidence
        where = f"step {ev.get('best_step')}" + (f" (epoch {ev['best_epoch']})" if ev.get("best_epoch") is not None else "")
        stop = fw.early_stopping(f)
        return [f"stop at the validation minimum and keep that checkpoint: {where}, val_loss {fmt(ev['best_val_loss'])}"
                + (f" — {stop}" if stop else ""),
                "add regularisation: weight_decay=1e-4 (AdamW) and nn.Dropout(0.2) before the last layer; "
                "or more data / augmentation"]


class OverRegularization(Cause):
    id = "over-regularization"
    fixes = ("lower weight decay and dropout, raise them again only once overfitting shows",)

    def concrete(self, f: Facts) -> list[str]:
        wd = f.weight_decay
        if wd is not None and wd > 0 and not (f.decoupled_decay and f.lr is not None and wd * f.lr < 1e-3):
            return [f"lower {fw.set_weight_decay(f, wd, min(wd, 1e-2) / 100)} (raise it again only once "
                    "validation shows overfitting)"]
        return []

    def against(self, f: Facts) -> list[str]:
        """mild weight decay (coupled ≤ 1e-3, or decoupled lr·wd < 1e-4) and no dropout in the model."""
        if not f.optimizer or f.has_dropout is None:
            return []
        wd = f.weight_decay or 0.0
        lr = f.lr or 0.0
        mild = wd * lr < 1e-4 if f.decoupled_decay else wd <= 1e-3
        if mild and f.has_dropout is False:
            what = f"{f.opt_class}'s decoupled weight_decay={fmt(wd)}" if f.decoupled_decay and wd \
                else f"weight_decay={fmt(wd)}" if wd else "no weight decay"
            return [f"{what} and no dropout"]
        return []
