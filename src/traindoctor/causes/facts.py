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
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np

from .. import layerkinds
from ..events import DataProfile, ModelGraph, RunMeta
from ..findings import Finding
from ..losskinds import CLASSES, REGRESSION
from ..run import Run, Series

# the activation families of layerkinds.py, as sets to intersect with a run's module types and operations
RELU_OPS = frozenset(layerkinds.RELU_OPS)
SQUASH_OPS = frozenset(layerkinds.SQUASH_OPS)
RELU_MODULES = frozenset(layerkinds.RELU_MODULES)
SQUASH_MODULES = frozenset(layerkinds.SQUASH_MODULES)
REGRESSION_KINDS = REGRESSION
CLASS_KINDS = CLASSES


def num(x: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


class Facts:
    """The run's own facts, computed lazily and once."""

    def __init__(self, run: Run, findings: list[Finding]) -> None:
        self.run = run
        self.meta: RunMeta = run.info
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
        return num(self.meta.lr)

    @property
    def optimizer(self) -> dict[str, Any]:
        return dict(self.meta.optimizer)

    @property
    def opt_class(self) -> str | None:
        return self.meta.opt_class

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
            v = num(self.meta.framework_args.get(k))
            if v is not None and v > 0:
                return v
        return None

    @property
    def framework(self) -> str | None:
        return self.meta.framework

    # ---------------------------------------------------------------- loss
    @property
    def loss_kind(self) -> str | None:
        return self.meta.loss_kind

    @property
    def num_classes(self) -> int | None:
        c = self.meta.num_classes
        return c if c is not None and c >= 2 else None

    @property
    def classification(self) -> bool | None:
        if self.loss_kind is None:
            return None
        return self.loss_kind in CLASS_KINDS

    @cached_property
    def loss(self) -> Series | None:
        return self.run.get("loss")

    @cached_property
    def graph(self) -> ModelGraph:
        """The first-step trace (the last ``model_graph`` fact); empty when the step was not traced."""
        graphs = self.run.facts(ModelGraph)
        return graphs[-1] if graphs else ModelGraph()

    @cached_property
    def traced_loss(self) -> Mapping[str, Any] | None:
        """The traced loss call, when the first step made exactly one."""
        losses = self.graph.losses or ()
        return losses[0] if len(losses) == 1 else None

    @cached_property
    def loss_head(self) -> Mapping[str, Any] | None:
        """What fed the (single) traced loss: ``{"op": "logits"|"softmax"|"log_softmax"|"sigmoid"|..., ...}``."""
        lf = self.traced_loss
        return lf.get("head") if lf is not None else None

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
    def module_types(self) -> set[str | None]:
        return self.graph.module_types

    @cached_property
    def op_names(self) -> set[str]:
        return self.graph.op_names

    @property
    def traced(self) -> bool:
        return bool(self.graph.modules or self.graph.sequence)

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
    def profile(self) -> DataProfile | None:
        """The data profile over the whole first-batches window (or a checkup's scan)."""
        profs = [p for p in self.run.facts(DataProfile) if p.train]
        window = [p for p in profs if not p.first_batch]
        return (window or profs or [None])[-1]

    @cached_property
    def class_ratio(self) -> float | None:
        """Most over least frequent class in the profiled window (None when unknown or < 200 labels)."""
        counts = self.profile.class_counts if self.profile else {}
        if len(counts) < 2:
            return None
        v = [c for c in counts.values() if isinstance(c, (int, float)) and c > 0]
        if len(v) < 2 or sum(v) < 200:
            return None
        return max(v) / min(v)

    @cached_property
    def input_standardised(self) -> bool | None:
        st = self.meta.input_stats
        if st is None:
            return None
        mean, std, absmax = num(st.get("mean")), num(st.get("std")), num(st.get("absmax"))
        if mean is None or std is None or absmax is None:
            return None
        return abs(mean) <= 1.5 and 0.05 <= std <= 3 and absmax <= 50

    @cached_property
    def shuffled(self) -> bool | None:
        order = self.profile.order if self.profile else None
        if order is None:
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
