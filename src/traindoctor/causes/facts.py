"""What a run itself says, read once per diagnosis: the numbers a fix is made of and the facts that
rule a cause out.

Everything here comes from what the run already recorded — the LR series, the optimizer's
settings, the first-step trace of the model and the loss, the data profile of the first batches,
the sampled gradient and activation statistics — never from a new threshold on the curve. A fact
that was not measured is ``None`` (unknown), which is not the same as "fine": a cause is ruled out
only by a fact that was measured.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np

from ..findings import Finding
from ..losskinds import CLASSES, REGRESSION
from ..run import Run, Series

RELU_OPS = {"relu", "relu6", "leaky_relu", "rrelu", "elu", "selu", "celu", "threshold"}
SQUASH_OPS = {"sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign"}
RELU_MODULES = {"ReLU", "ReLU6", "LeakyReLU", "RReLU", "ELU", "SELU", "CELU"}
SQUASH_MODULES = {"Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Softsign"}
REGRESSION_KINDS = REGRESSION
CLASS_KINDS = CLASSES


def fmt(x: float) -> str:
    return f"{x:.3g}"


def num(x: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


class Facts:
    """The run's own facts, computed lazily and once."""

    def __init__(self, run: Run, findings: list[Finding]) -> None:
        self.run = run
        self.findings = findings
        self.by_code: dict[str, Finding] = {}
        for f in findings:
            self.by_code.setdefault(f.code, f)

    # ---------------------------------------------------------------- optimizer and LR
    @property
    def lr(self) -> float | None:
        """The run's learning rate: the peak of its recorded schedule (a warm-up's first value is not
        the rate it trains at), else the optimizer's setting."""
        s = self.lr_series
        if s is not None and np.any(s.values > 0):
            return float(np.max(s.values))
        return num(self.run.meta.get("lr"))

    @property
    def optimizer(self) -> dict[str, Any]:
        o = self.run.meta.get("optimizer")
        return o if isinstance(o, dict) else {}

    @property
    def opt_class(self) -> str | None:
        c = self.optimizer.get("class")
        return c if isinstance(c, str) else None

    @property
    def weight_decay(self) -> float | None:
        return num(self.optimizer.get("weight_decay"))

    @property
    def decoupled_decay(self) -> bool:
        """AdamW-style decay: shrinks the weights by lr·wd a step, independent of the gradient."""
        return self.opt_class in ("AdamW",) or bool(self.optimizer.get("decoupled_weight_decay"))

    @cached_property
    def lr_series(self) -> Series | None:
        s = self.run.get("lr")
        if s is None:
            return None
        f = s.finite()
        return f if len(f) else None

    @cached_property
    def lr_decay(self) -> float | None:
        """How far the LR came down from its peak by the end of the run (peak / last), if recorded."""
        s = self.lr_series
        if s is None or len(s) < 2:
            return None
        v = s.values[s.values > 0]
        if v.size < 2:
            return None
        return float(v.max() / v[-1])

    @cached_property
    def lr_grew(self) -> float | None:
        """Last over first LR (a schedule that climbs and never comes down)."""
        s = self.lr_series
        if s is None or len(s) < 2:
            return None
        v = s.values[s.values > 0]
        return float(v[-1] / v[0]) if v.size >= 2 else None

    @property
    def clip_in_place(self) -> float | None:
        """A gradient clip the run already applies (from a framework's arguments), if known."""
        for k in ("max_grad_norm", "gradient_clip_val", "clip_grad_norm"):
            v = num((self.run.meta.get("framework_args") or {}).get(k))
            if v is not None and v > 0:
                return v
        return None

    @property
    def framework(self) -> str | None:
        f = self.run.meta.get("framework")
        return f if isinstance(f, str) else None

    # ---------------------------------------------------------------- loss
    @property
    def loss_kind(self) -> str | None:
        k = self.run.meta.get("loss_kind")
        return k if isinstance(k, str) else None

    @property
    def num_classes(self) -> int | None:
        c = self.run.meta.get("num_classes")
        return c if isinstance(c, int) and c >= 2 else None

    @property
    def classification(self) -> bool | None:
        if self.loss_kind is None:
            return None
        return self.loss_kind in CLASS_KINDS

    @cached_property
    def loss(self) -> Series | None:
        return self.run.get("loss")

    @cached_property
    def graph(self) -> dict[str, Any]:
        """The first-step trace (``model_graph`` event), or {} when the step was not traced."""
        evs = self.run.events_of("model_graph")
        d = evs[-1].data if evs else {}
        return d if isinstance(d, dict) else {}

    @cached_property
    def loss_head(self) -> dict[str, Any] | None:
        """What fed the (single) traced loss: ``{"op": "logits"|"softmax"|"log_softmax"|"sigmoid"|..., ...}``."""
        losses = self.graph.get("losses")
        if not isinstance(losses, list) or len(losses) != 1 or not isinstance(losses[0], dict):
            return None
        h = losses[0].get("head")
        return h if isinstance(h, dict) else None

    @cached_property
    def traced_loss(self) -> dict[str, Any] | None:
        losses = self.graph.get("losses")
        if isinstance(losses, list) and len(losses) == 1 and isinstance(losses[0], dict):
            return losses[0]
        return None

    @cached_property
    def correct_pairing(self) -> str | None:
        """The trace saw the loss fed the way it expects: said in words, or None."""
        lf, head = self.traced_loss, self.loss_head
        if lf is None or head is None:
            return None
        kind, op = lf.get("kind"), head.get("op")
        if kind in ("cross_entropy", "bce_logits") and op == "logits":
            return f"the first step fed raw logits from `{head.get('module') or 'a linear layer'}` to {lf.get('function')}"
        if kind == "nll" and op == "log_softmax":
            return "the first step fed log_softmax to nll_loss, the fused pairing"
        return None

    # ---------------------------------------------------------------- model
    @cached_property
    def module_types(self) -> set[str]:
        mods = self.graph.get("modules")
        return {m.get("type") for m in mods if isinstance(m, dict)} if isinstance(mods, list) else set()

    @cached_property
    def op_names(self) -> set[str]:
        seq = self.graph.get("sequence")
        return {str(s).split("@", 1)[0] for s in seq} if isinstance(seq, list) else set()

    @property
    def traced(self) -> bool:
        return bool(self.graph.get("modules") or self.graph.get("sequence"))

    @property
    def has_relu(self) -> bool | None:
        if not self.traced:
            return None
        return bool(self.module_types & RELU_MODULES or self.op_names & RELU_OPS)

    @property
    def relu_hooked(self) -> bool:
        """ReLU-family modules exist to hook (dead units measurable), not only functional calls."""
        return bool(self.module_types & RELU_MODULES) or bool(self.run.names("dead_frac"))

    @property
    def has_squash(self) -> bool | None:
        """Sigmoid/tanh modules or calls — recurrent layers count: their tanh and gates are inside."""
        if not self.traced:
            return None
        return bool(self.module_types & SQUASH_MODULES or self.op_names & SQUASH_OPS or self.recurrent)

    @property
    def has_batchnorm(self) -> bool | None:
        if not self.traced:
            return None
        return any(t.startswith("BatchNorm") for t in self.module_types if t) or "batch_norm" in self.op_names

    @property
    def has_dropout(self) -> bool | None:
        if not self.traced:
            return None
        return any("Dropout" in t for t in self.module_types if t) or bool(self.op_names & {"dropout", "dropout2d"})

    @property
    def recurrent(self) -> bool:
        return bool(self.module_types & {"RNN", "LSTM", "GRU"})

    # ---------------------------------------------------------------- data
    @cached_property
    def profile(self) -> dict[str, Any] | None:
        """The data profile over the whole first-batches window (or a checkup's scan)."""
        profs = [e.data for e in self.run.events_of("data_profile")
                 if isinstance(e.data, dict) and e.data.get("split", "train") == "train"]
        window = [p for p in profs if not p.get("first_batch")]
        return (window or profs or [None])[-1]

    @cached_property
    def class_ratio(self) -> float | None:
        """Most over least frequent class in the profiled window (None when unknown or < 200 labels)."""
        p = self.profile or {}
        counts = (p.get("classes") or {}).get("counts") if isinstance(p.get("classes"), dict) else None
        if not isinstance(counts, dict) or len(counts) < 2:
            return None
        v = [c for c in counts.values() if isinstance(c, (int, float)) and c > 0]
        if len(v) < 2 or sum(v) < 200:
            return None
        return max(v) / min(v)

    @cached_property
    def input_standardised(self) -> bool | None:
        st = self.run.meta.get("input_stats")
        if not isinstance(st, dict):
            return None
        mean, std, absmax = num(st.get("mean")), num(st.get("std")), num(st.get("absmax"))
        if mean is None or std is None or absmax is None:
            return None
        return abs(mean) <= 1.5 and 0.05 <= std <= 3 and absmax <= 50

    @cached_property
    def shuffled(self) -> bool | None:
        order = (self.profile or {}).get("order")
        if not isinstance(order, dict):
            return None
        mean_c, exp_c = num(order.get("mean_classes_per_batch")), num(order.get("expected_classes_per_batch"))
        if mean_c is None or exp_c is None or exp_c <= 1.2:
            return None
        return (mean_c - 1) >= 0.7 * (exp_c - 1)

    # ---------------------------------------------------------------- gradients and activations
    @cached_property
    def grad_growth(self) -> float | None:
        """Peak over early median of the sampled global gradient norm, before any non-finite loss."""
        g = self.run.get("grad_norm")
        if g is None or len(g) < 3:
            return None
        v = g.values
        loss = self.loss
        if loss is not None:
            bad = ~np.isfinite(loss.values)
            if bad.any():
                v = v[g.steps < loss.steps[int(np.argmax(bad))]]
        v = v[np.isfinite(v)]
        if v.size < 3:
            return None
        base = float(np.median(v[: max(1, v.size // 5)]))
        return float(v.max() / base) if base > 0 else None

    def _late_max(self, prefix: str) -> float | None:
        """The largest late (median of the last half) value among the series under ``prefix``."""
        vals = []
        for n in self.run.names(prefix):
            v = self.run.series[n].values
            v = v[np.isfinite(v)]
            if v.size:
                vals.append(float(np.median(v[v.size // 2:])))
        return max(vals) if vals else None

    @cached_property
    def dead_max(self) -> float | None:
        """The largest late dead-unit fraction measured in any ReLU module (None: not measured)."""
        return self._late_max("dead_frac")

    @cached_property
    def saturated_max(self) -> float | None:
        """The largest late fraction of sigmoid/tanh outputs in their flat tails (None: not measured)."""
        return self._late_max("saturated_frac")

    # ---------------------------------------------------------------- outcome
    @cached_property
    def loss_fit(self) -> float | None:
        """Late training loss over the chance loss ln C (how much of the way the model got)."""
        s = self.loss
        c = self.num_classes
        if s is None or c is None or self.loss_kind not in ("cross_entropy", "nll"):
            return None
        v = s.values[np.isfinite(s.values)]
        if v.size < 10:
            return None
        return float(np.median(v[-max(3, v.size // 10):]) / math.log(c))
