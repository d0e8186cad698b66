"""Fault operators: how a healthy run is broken, and what the doctor should say about it.

In the style of DeepCrime's mutation operators (Humbatova et al., ISSTA 2021) and DeepFD's fault
seeding (ICSE 2022): each operator takes a healthy run's spec and a severity in [0, 1] and sets
the knobs a real mistake would change (``render.py`` and ``tasks.py`` write the lines). Each is
labelled with the symptom codes it should produce (any of them counts as seen) and the one cause
id that is the truth.

``judge``: ``"outcome"`` operators count only when the fault hurt the run measurably against its
healthy twin (same task, seed and hyperparameters): a mutant that changed nothing is not a sick
patient. ``"always"`` operators are defects whatever the outcome (NaN samples, validation samples
in training, labels outside the loss's domain, a validation loop run in training mode).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tasks import Task

Knobs = dict[str, Any]


@dataclass(frozen=True)
class Operator:
    name: str
    cause: str
    codes: frozenset[str]
    applies: Callable[[Task, dict], bool]
    knobs: Callable[[float, Task, dict, np.random.Generator], Knobs]
    judge: str = "outcome"
    doc: str = ""


def _classes(t: Task, hp: dict) -> bool:
    return t.kind == "multiclass" or (t.kind == "binary" and hp.get("binary_head") == "two")


def _ce_multiclass(t: Task, hp: dict) -> bool:
    return t.kind == "multiclass"


def _supports(*names: str) -> Callable[[Task, dict], bool]:
    return lambda t, hp: all(n in t.supports for n in names)


def _sgd_family(hp: dict) -> bool:
    return hp["opt"] in ("sgd", "momentum", "nesterov", "adagrad")


def _lr_high(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    # far above the working range: ×30 … ×1000 (SGD family), ×20 … ×300 (adaptive)
    top = 3.0 if _sgd_family(hp) else 2.5
    return {"lr_mult": round(10 ** (1.5 + s * (top - 1.5)), 1)}


def _lr_blowup(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    # so high the first few steps throw the weights out: the loss jumps by orders of magnitude,
    # then sits at the chance level with dead units
    return {"lr_mult": round(10 ** (2.5 + 1.0 * s), 0) if not _sgd_family(hp) else round(10 ** (3 + s), 0)}


def _lr_spike(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    start = round(float(rng.uniform(0.3, 0.45)), 2)
    return {"lr_spike": {"start": start, "end": round(start + 0.2, 2), "mult": round(10 ** (1.3 + s), 0)},
            "schedule": "none"}


def _lr_low(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    return {"lr_mult": float(f"{10 ** -(2.5 + 1.5 * s):.2g}")}


def _wd(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    if hp["opt"] == "adamw":
        return {"wd": round(10 ** (1.3 + s), 1)}  # decoupled: lr·wd per step
    return {"wd": round(10 ** (-1 + s * 0.8), 2)}


def _deep_sigmoid(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    return {"act": "sigmoid", "depth": int(6 + round(4 * s)), "width": int(hp.get("width", 32))}


def _big_on_tiny(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    n = int(60 - 30 * s)
    bs = 16
    steps_per_epoch = math.ceil(n / bs)
    return {"train_subset": n, "width": 256, "depth": 2, "batch_size": bs,
            "epochs": int(math.ceil(400 / steps_per_epoch))}


def _bs1(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    # the learning rate stays what it was for the original batch size
    return {"batch_size": 1, "epochs": 1}


def _few_epochs(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    return {"epochs": 1}


def _raw_inputs(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    if t.name.startswith("digits") or t.name.startswith("finetune") or t.name.startswith("multitask"):
        return {"raw_inputs": {"scale": 16.0, "offset": 0.0}}  # 0…255 pixels
    return {"raw_inputs": {"scale": round(10 ** (1 + 2 * s), 0), "offset": round(float(rng.uniform(0, 1)) * 10 ** (1 + 2 * s), 0)}}


def _raw_targets(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    sc = round(10 ** (1.5 + 2 * s), 0)
    return {"raw_targets": {"scale": sc, "offset": round(sc * float(rng.uniform(1, 5)), 0)}}


def _fp16_overflow(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
    # a half-precision model with a loss summed over a large batch of unscaled targets
    sc = round(10 ** (1.5 + s), 0)
    return {"fp16": True, "reduction": "sum", "batch_size": 256, "raw_targets": {"scale": sc, "offset": 0.0},
            "lr_mult": round(1 / 256, 5)}


def _k(**kw: Any) -> Callable[[float, Task, dict, np.random.Generator], Knobs]:
    return lambda s, t, hp, rng: dict(kw)


def _lin(name: str, lo: float, hi: float, as_int: bool = False, digits: int = 2):
    def f(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
        v = lo + (hi - lo) * s
        return {name: int(round(v)) if as_int else round(v, digits)}
    return f


def _log(name: str, lo: float, hi: float):
    def f(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
        return {name: float(f"{10 ** (math.log10(lo) + (math.log10(hi) - math.log10(lo)) * s):.2g}")}
    return f


def _both(*fs):
    def f(s: float, t: Task, hp: dict, rng: np.random.Generator) -> Knobs:
        out: Knobs = {}
        for g in fs:
            out.update(g(s, t, hp, rng))
        return out
    return f


_MLP_RELU = lambda t, hp: "dead_bias" in t.supports and (hp.get("act", "relu") == "relu") and t.kind != "autoencoder"  # noqa: E731
_NOT_LM = lambda t, hp: t.kind != "lm"  # noqa: E731
_ANY = lambda t, hp: True  # noqa: E731
_REG = lambda t, hp: t.kind == "regression"  # noqa: E731
_X_FLOAT = lambda t, hp: t.x_scaling != "none"  # noqa: E731


def _and(*ps):
    return lambda t, hp: all(p(t, hp) for p in ps)


OPERATORS: dict[str, Operator] = {o.name: o for o in (
    # ---- learning rate
    Operator("lr-high", "lr-too-high", frozenset({"L001", "L002", "L003", "L004", "L008", "G001", "G004", "A001", "V004"}),
             _ANY, _lr_high, doc="learning rate 30–1000× above its working range"),
    Operator("lr-blowup-early", "lr-too-high",
             frozenset({"L001", "L002", "L004", "L007", "L008", "L009", "G004", "A001"}),
             _and(_NOT_LM, lambda t, hp: hp.get("act", "relu") in ("relu", "gelu")), _lr_blowup,
             doc="a learning rate so high that the first steps blow the loss up, then it sits near chance"),
    Operator("lr-spike-mid", "lr-too-high", frozenset({"L003", "L002"}), _ANY, _lr_spike,
             doc="a hand-written schedule raises the LR 20–200× for a fifth of the run mid-way"),
    Operator("lr-low", "lr-too-low", frozenset({"L005", "G005", "V006", "V002", "L010", "L012"}), _ANY, _lr_low,
             doc="learning rate 300–30000× below its working range"),
    Operator("adam-eps", "wrong-optimizer-settings", frozenset({"L005", "L006", "G005", "V002", "L012"}),
             lambda t, hp: hp["opt"] in ("adam", "adamw"), _log("adam_eps", 0.3, 3.0),
             doc="Adam's epsilon set to 0.3–3 (copied from a TF setting for another scale)"),
    # ---- output activation and loss
    Operator("out-relu", "wrong-output-activation", frozenset({"M009"}),
             _and(_classes, _supports("out_act")), _k(out_act="relu"), doc="ReLU on the logits before cross-entropy"),
    Operator("out-sigmoid", "wrong-output-activation", frozenset({"M009"}),
             _and(_ce_multiclass, _supports("out_act")), _k(out_act="sigmoid"),
             doc="sigmoid on the logits before cross-entropy"),
    Operator("double-softmax", "double-softmax", frozenset({"M001"}),
             _and(_ce_multiclass, _supports("out_act")), _k(out_act="softmax"),
             doc="nn.Softmax at the end of the model, then nn.CrossEntropyLoss"),
    Operator("nll-raw-logits", "wrong-output-activation", frozenset({"M009", "L001", "L002"}),
             _and(_ce_multiclass, _supports("out_act"), lambda t, hp: t.kind != "lm"), _k(loss="nll_raw"),
             doc="nn.NLLLoss on raw logits (no log_softmax)"),
    Operator("sigmoid-bce", "numerically-unstable-loss", frozenset({"M002", "L008"}),
             lambda t, hp: (t.kind == "binary" and hp.get("binary_head") != "two" and "out_act" in t.supports)
             or (t.kind == "multiclass" and "out_act" in t.supports and t.name.endswith("_mlp")),
             _k(loss="sigmoid_bce"), doc="nn.Sigmoid + nn.BCELoss instead of BCEWithLogitsLoss"),
    Operator("mse-on-labels", "wrong-loss-function", frozenset({"M008"}),
             _and(_ce_multiclass, _supports("out_act"), lambda t, hp: t.kind != "lm" and not t.name.startswith("finetune")),
             _k(loss="mse_on_labels"), doc="MSE on class indices with one output"),
    # ---- architecture and initialisation
    Operator("no-nonlinearity", "missing-nonlinearity", frozenset({"M010", "V002", "L006"}),
             _and(_supports("no_nonlin"), lambda t, hp: t.kind in ("multiclass", "binary", "regression")),
             _k(no_nonlin=True), doc="the activations between the layers were left out"),
    Operator("init-large", "bad-initialization", frozenset({"M003", "L009", "A003", "G001", "L001", "L002", "L008"}),
             _supports("init"), lambda s, t, hp, rng: {"init": {"std": float(f"{10 ** s:.2g}")}}, doc="weights drawn from N(0, σ²) with σ = 1–10"),
    Operator("init-zero", "bad-initialization", frozenset({"G006", "L005", "L007", "M003", "V002"}),
             _and(_supports("init"), lambda t, hp: t.kind != "lm"), _k(init="zeros"),
             doc="all weights and biases initialised to zero"),
    Operator("dead-bias", "dying-relu", frozenset({"A001", "L005", "L007", "V002"}), _MLP_RELU,
             _lin("dead_bias", 3.0, 10.0), doc="hidden biases set to a large negative constant: the ReLUs start dead"),
    Operator("deep-sigmoid", "vanishing-gradient", frozenset({"G002", "A002", "L005", "L007", "L006", "V002"}),
             lambda t, hp: t.model_fn.__name__ == "mlp" and {"act", "depth"} <= t.supports and t.kind != "multitask",
             _deep_sigmoid, doc="6–10 hidden sigmoid layers"),
    Operator("rnn-exploding", "exploding-gradient", frozenset({"G001", "L001", "L002", "L003", "L004", "G003"}),
             lambda t, hp: t.name == "rnn_sum",
             lambda s, t, hp, rng: {"cell": "RNN", "opt": "momentum", "lr": round(0.05 + 0.25 * s, 3), "clip": None,
                                    "precision": "fp32", "schedule": "none"},
             doc="vanilla tanh RNN over 40 steps trained with SGD + momentum at 0.05–0.3 and no clipping: the "
                 "textbook exploding gradient through time"),
    Operator("bad-checkpoint", "code-bug", frozenset({"M013", "V002", "L006", "G006"}),
             _supports("bad_checkpoint"), _k(bad_checkpoint=True),
             doc="the pretrained backbone's keys carry a 'module.' prefix, strict=False loads nothing, and the "
                 "backbone is frozen at its random init"),
    Operator("detach", "code-bug", frozenset({"G006"}), _and(_supports("detach"), lambda t, hp: t.kind != "lm"),
             _k(detach=True), doc="a .detach() in forward cuts every layer below the head off the graph"),
    Operator("no-zero-grad", "code-bug", frozenset({"G008", "L002", "L004", "G001", "L001", "L003"}), _NOT_LM,
             _k(no_zero_grad=True), doc="optimizer.zero_grad() forgotten: gradients accumulate over the run"),
    Operator("tiny-model", "insufficient-capacity", frozenset({"V002", "L006", "L005"}),
             _and(_supports("width"), lambda t, hp: t.kind in ("multiclass", "regression", "multilabel")
                  and t.model_fn.__name__ in ("mlp", "cnn")),
             lambda s, t, hp, rng: {"width": 1 if s > 0.5 else 2, "depth": 1}, doc="a hidden width of 1–2 units"),
    Operator("dropout-high", "over-regularization", frozenset({"V002", "L006", "V007", "L005"}),
             _and(_supports("dropout"), lambda t, hp: t.model_fn.__name__ in ("mlp", "cnn", "residual_mlp")
                  or t.name == "digits_bn_cnn"),
             _lin("dropout", 0.8, 0.95), doc="dropout 0.8–0.95"),
    Operator("weight-decay-high", "over-regularization", frozenset({"V002", "L006", "L005", "G004"}), _NOT_LM, _wd,
             doc="weight decay 0.1–0.6 (AdamW: 20–200)"),
    Operator("bn-frozen", "batchnorm-misuse", frozenset({"V007"}),
             lambda t, hp: "bn_frozen" in t.supports and (hp.get("norm") == "bn" or t.name == "digits_bn_cnn"),
             _k(bn_frozen=True), doc="BatchNorm momentum 0: running statistics never leave their initial values"),
    Operator("eval-train-mode", "batchnorm-misuse", frozenset({"V008"}),
             lambda t, hp: (hp.get("dropout") or hp.get("norm") == "bn" or t.name in ("digits_bn_cnn", "classif_resnet")),
             _k(eval_train_mode=True), judge="always", doc="validation computed without model.eval()"),
    # ---- data
    Operator("label-shuffle", "label-noise", frozenset({"L005", "L007", "V003", "V002", "D008", "M011", "V001"}),
             _and(_classes, lambda t, hp: t.kind != "lm"), _k(label_shuffle=1.0),
             doc="training labels permuted apart from their inputs"),
    Operator("label-noise", "label-noise", frozenset({"V003", "L006", "D008", "V001", "V002"}),
             _and(_classes, lambda t, hp: t.kind != "lm"), _lin("label_shuffle", 0.4, 0.8),
             doc="40–80 % of the training labels shuffled"),
    Operator("raw-inputs", "unnormalized-input", frozenset({"D002", "L009", "A003", "L004", "L001", "L002", "L008"}),
             _and(_X_FLOAT, lambda t, hp: t.kind not in ("autoencoder",)), _raw_inputs,
             doc="inputs left unscaled (0–255 pixels, or features ×10–1000 with an offset)"),
    Operator("raw-targets", "unnormalized-target", frozenset({"D003", "L009", "L002", "L001", "L004"}), _REG,
             _raw_targets, doc="regression targets left on a scale of 30–3000 with an offset"),
    Operator("nan-samples", "nonfinite-data", frozenset({"D001", "L001"}), _X_FLOAT, _lin("nan_rows", 1, 5, as_int=True),
             judge="always", doc="1–5 training samples hold a NaN"),
    Operator("label-offset", "label-domain-error", frozenset({"D004"}), _and(_ce_multiclass, lambda t, hp: t.kind != "lm"),
             _k(label_offset=1), judge="always", doc="class ids 1…C instead of 0…C−1"),
    Operator("imbalance", "class-imbalance", frozenset({"D005", "L007"}), _and(_classes, lambda t, hp: t.kind != "lm"),
             _lin("imbalance", 0.12, 0.03, digits=3), judge="always",
             doc="all classes but one kept at 3–12 % of their samples"),
    Operator("sorted-labels", "unshuffled-data", frozenset({"D007", "L003", "L004"}),
             _and(_classes, lambda t, hp: t.kind != "lm"), _k(sort_labels=True), judge="always",
             doc="training data sorted by class and not shuffled"),
    Operator("train-val-leak", "data-leakage", frozenset({"D006"}), _NOT_LM, _lin("leak", 0.3, 0.8), judge="always",
             doc="30–80 % of the validation samples also in training"),
    Operator("val-shift", "distribution-mismatch", frozenset({"V005"}), _X_FLOAT,
             lambda s, t, hp, rng: {"val_shift": "unscaled"} if s < 0.3 and t.x_scaling == "feature"
             else {"val_shift": round(1 + 2 * s, 2)},
             doc="validation preprocessed differently (not standardised, or shifted by 1–3 std)"),
    Operator("big-model-tiny-data", "overfitting", frozenset({"V001"}),
             _and(lambda t, hp: t.model_fn.__name__ == "mlp", lambda t, hp: t.kind in ("multiclass", "binary", "regression")),
             _big_on_tiny, doc="256-wide MLP on 30–60 training samples for ~400 steps"),
    Operator("few-epochs", "undertrained", frozenset({"L012", "L010", "V006"}), _ANY, _few_epochs,
             doc="training stopped after one epoch"),
    Operator("batch-size-1", "batch-too-small", frozenset({"L004", "L003", "M014"}), _NOT_LM, _bs1,
             doc="batch size 1 with the learning rate of the original batch"),
    Operator("fp16-overflow", "precision-overflow", frozenset({"M007", "L001"}),
             lambda t, hp: t.name in ("diabetes_reg", "friedman_reg"), _fp16_overflow,
             doc="model.half() with a loss summed over batches of 256 unscaled targets"),
    Operator("aux-unscaled", "unbalanced-loss-terms", frozenset({"L011"}), _supports("aux_unscaled"),
             _k(aux_unscaled=True), doc="an auxiliary regression term on raw targets (~300) next to cross-entropy"),
)}
