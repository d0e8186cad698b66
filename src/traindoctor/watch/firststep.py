"""The first step, inspected once: its trace, the loss's graph, the inputs' scale, the live announcements.

Everything here runs at the first training step only (or when its facts change the configuration
findings), so it may cost what the per-step path may not.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..inspect.model import init_scale
from ..inspect.trace import StepTrace, act_series
from ..run import Run

# the findings a first step can show, announced the moment they are known
CONFIG_CODES = ("M001", "M002", "M003", "M008", "M009", "M010", "D001", "D002", "D003", "D004", "D005", "D007")


class FirstStep:
    """The first step's trace and loss graph, and the configuration findings announced as soon as known.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_first_step(self) -> None:
        """The first step's trace, and the findings announced so far."""
        self._trace: Any = None
        self._trace_state = "pending"  # pending → active → done
        self._trace_root: nn.Module | None = None
        self._announced: set[str] = set()
        self._trace_step = 0

    def begin_trace(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """The model's first training forward: trace this step up to its ``backward()`` (one-off)."""
        if self._trace_state != "pending" or "trace" in self._disabled:
            return
        if not (torch.is_grad_enabled() and module.training and next(module.parameters(), None) is not None):
            return
        self._trace_state = "active"
        self._guard("trace", self._begin_trace, module, args, kwargs)

    def _begin_trace(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._trace_root = module
        self._trace_step = self.step
        tr = StepTrace(self.sites)
        tr.start(module, (args, kwargs))
        self._trace = tr

    def _end_trace(self, loss: torch.Tensor | None) -> None:
        tr, self._trace = self._trace, None
        self._trace_state = "done"
        if tr is None:
            return
        tr.stop()
        try:
            facts = tr.facts(loss)
            root = tr.root
            names = {id(m): (n or type(root).__name__) for n, m in root.named_modules()} if root is not None else {}
            order = [(names.get(id(m), type(m).__name__), m, o) for m, o in tr.leaf_outputs]
            judged = tr.loss_tensors[0] if tr.loss_tensors else (None, None)
            acts = tr.functional_acts()
        finally:
            tr.release()
        if acts:
            self._guard("functional-activations", self._record_functional_acts, acts, root)
        self.event("model_graph", facts)
        losses = facts.get("losses") or []
        if len(losses) == 1:  # a sum of several loss functions is none of them (L009 compares with one)
            lf = losses[0]
            self.meta.setdefault("loss_kind", lf["kind"])
        if order and root is not None:
            self.event("init_scale", init_scale(root, order=order))
        self._start_profile(losses[0] if losses else None, judged)

    def _record_functional_acts(self, acts: list[dict[str, Any]], root: nn.Module | None) -> None:
        """The first step's functional ReLU/sigmoid/tanh, recorded as the module hooks record theirs
        (``dead_frac/relu@train.py:23`` …), and the lines to measure again on sampled steps: every
        ReLU, and the sigmoid/tanh that feed a weight layer (gates and outputs saturate by design)."""
        info, sites = [], {}
        for a in acts:
            fn, line = a["site"]
            name = f"{a['op']}@{os.path.basename(fn)}:{line}"
            for series, value in act_series(a["op"], name, a["stats"]):
                self.record(series, value, self._trace_step)
            sampled = a["op"] == "relu" or bool(a["hidden"])
            info.append({"op": a["op"], "where": f"{fn}:{line}", "count": a["count"], "name": name, "sampled": sampled})
            if sampled:
                sites[(a["op"], fn, line)] = name
        self.meta["functional_activations"] = info
        # a compiled part of the model would see the probe's mode as a change of context and recompile
        compiled = root is None or any(hasattr(m, "_orig_mod") for m in root.modules())
        if sites and not compiled:
            self._probe_sites = sites

    def _known_models(self) -> list[nn.Module]:
        if self.models:
            return self.models
        return [m for m in self.candidates if any(True for _ in m.parameters())]

    def _announce(self) -> None:
        """Judge the configuration findings now (first step, end of the data window) and say the new ones."""
        from ..rules import all_rules

        with self._lock:
            events = list(self._events)
        run = Run.from_points([], events, dict(self.meta))
        rules = all_rules()
        for code in CONFIG_CODES:
            if code in self._announced or code not in rules:
                continue
            found = rules[code].check(run)
            if not found:
                continue
            self._announced.add(code)
            f = found[0]
            where = f.evidence.get("where")
            self.on_critical(f"traindoctor: {f.code} {f.name} — {f.message}" + (f" [{where}]" if where else ""))
