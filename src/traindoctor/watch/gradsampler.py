"""The step clock and the gradient/update sampler, driven by the optimizer's step hooks.

Every optimizer step advances the clock; on sampled steps (every ``cadence``) the gradients' and updates'
norms are taken with fused ``torch._foreach_norm`` calls and handed to the writer thread as tensors, and
the next ``backward()`` is watched for gradients that were not cleared (stale gradients, G008).
"""
from __future__ import annotations

from typing import Any

import torch


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norms of many tensors in one fused call, as one float64 tensor.

    Computed in the tensors' own dtype (3× cheaper than upcasting first). A norm that comes out
    Inf is recomputed in float64, because the float32 sum of squares of large but finite values
    overflows and would fake a non-finite gradient. On the CPU the check is free; on an
    accelerator both are computed and merged on the device, so the training thread never syncs.
    """
    n = torch.stack(torch._foreach_norm(tensors)).to(torch.float64)
    if n.device.type == "cpu":
        if bool(torch.isinf(n).any()):
            n = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64))
        return n
    n64 = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64))
    return torch.where(torch.isinf(n), n64, n)


class GradSampler:
    """The optimizer pre/post step hooks: the step clock, sampled gradient and update norms, stale gradients.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_grad_sampler(self) -> None:
        """The optimizers seen, and the weights copied at a sampled step (for the update ratios)."""
        self._primary_opt: Any = None
        self._opt_state: dict[int, Any] = {}
        self._other_opts: set[int] = set()

    def opt_pre(self, opt: Any) -> None:
        if self._trace_state == "active":  # gradients came without Tensor.backward (torch.autograd.grad)
            self._guard("trace", self._end_trace, None)
        if self._probe is not None:
            self._guard("functional-activations", self._finish_probe, self.step)
        if not self._first_step_done:
            self._at_first_step()
        if self.opt_steps % self.cadence == 0:  # (the cheap test first: this runs every step)
            self._guard("grad-stats", self._opt_pre, opt)

    def opt_post(self, opt: Any) -> None:
        if self._opt_state:  # weights copied at this sampled step's start: the update ratios
            self._guard("update-stats", self._opt_post, opt)
        if self._primary_opt is None:
            self._primary_opt = opt
        elif opt is not self._primary_opt and id(opt) not in self._other_opts:
            self._other_opts.add(id(opt))  # a second player (GAN): the progress rules stand aside
            self.meta["optimizers_stepping"] = 1 + len(self._other_opts)
        if opt is self._primary_opt:
            self.opt_steps += 1
            self._terms_this_step = 0
            if self._stale is not None:
                self._guard("stale-grad", self._finish_stale)
            if self.opt_steps % self.cadence == 0 and "stale-grad" not in self._disabled:
                # the next backward() starts a sampled step: were this step's gradients cleared by then?
                self._stale = {"opt": opt, "mask": None, "checks": 0, "step": None, "where": None, "closed": False}
            if self._scaled:
                self._scaled = []  # scaled losses never backpropagated: hold nothing past the step
            if not self.explicit_steps:
                self._emit_loss()
                self.step += 1
                self._guard("activations", self._arm_activations)
            if self.opt_steps % 256 == 0 and not self._writer.is_alive():
                self._guard("writer", self._materialise)  # the writer thread died (said once): keep memory bounded

    @property
    def _clock(self) -> int:
        """The step count that drives sampling: optimizer steps once one is seen, else loss steps."""
        return self.opt_steps if self._primary_opt is not None else self.step

    def _sampled(self, opt: Any) -> bool:
        primary = self._primary_opt is None or opt is self._primary_opt
        return primary and self.opt_steps % self.cadence == 0

    def _params_of(self, opt: Any) -> list[torch.Tensor]:
        return [p for g in opt.param_groups for p in g["params"]]

    def _opt_pre(self, opt: Any) -> None:
        if not self._sampled(opt):
            return
        params = self._params_of(opt)
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return
        names = [self._param_names.get(id(p), f"param{i}") for i, p in enumerate(with_grad)]
        step = self.opt_steps
        with torch.no_grad():
            gnorms = _norms([p.grad for p in with_grad])
            # the update/weight ratio needs a copy of the weights: every other sampled step only
            if (self.opt_steps // self.cadence) % 2 == 0:
                before = torch._foreach_mul([p.detach() for p in with_grad], 1.0)
                self._opt_state[id(opt)] = (with_grad, names, before, step)
        self.record("@grad_norms", (names, gnorms), step)
        if len(with_grad) < len(params):
            missing = [self._param_names.get(id(p), f"param{i}") for i, p in enumerate(params) if p.grad is None]
            frozen = [self._param_names.get(id(p), "?") for p in params if not p.requires_grad]
            self.event("no_grad", {"params": missing[:200], "count": len(missing), "requires_grad_false": frozen[:200],
                                   "of": len(params)}, step)
        lr = opt.param_groups[0].get("lr")
        if isinstance(lr, (int, float)):
            self.record("lr", float(lr), step)
            self.meta.setdefault("lr", float(lr))

    def _opt_post(self, opt: Any) -> None:
        state = self._opt_state.pop(id(opt), None)
        if state is None:
            return
        with_grad, names, before, step = state
        with torch.no_grad():
            after = [p.detach() for p in with_grad]
            upd = _norms(torch._foreach_sub(after, before))
            wn = _norms(before)
        self.record("@updates", (names, upd, wn), step)
