"""Gradients not cleared between optimizer steps (G008), looked at after sampled steps only.

The first ``backward()`` after a sampled step finds which parameters still hold a gradient (one fused norm);
the next optimizer step closes the interval and hands the mask to the writer thread (no device sync).
"""
from __future__ import annotations

from typing import Any

import torch

from ..inspect.tensors import site_label
from ..inspect.trace import user_site

# gradients not cleared between optimizer steps: backward() calls looked at after a sampled step (on an
# accelerator, where nothing is read on the training thread, the check cannot stop early at a clean one)
STALE_CHECKS = 8


class StaleGrads:
    """The stale-gradient check: armed at a sampled optimizer step, judged at the next one.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_stale_grads(self) -> None:
        """The check in progress (None: none armed)."""
        # gradients not cleared between optimizer steps (G008), looked at on sampled steps
        self._stale: dict[str, Any] | None = None

    def _check_stale(self) -> None:
        """The first backward() after a sampled optimizer step, before it accumulates: which of the
        primary optimizer's parameters still hold a non-zero gradient. One fused norm over the
        gradients; on the CPU one bool read, and a clean one ends the check. Deliberate gradient
        accumulation clears after each step, so its first backward finds nothing; a later one
        of the same interval that does (a GAN's other player) is not stale if an earlier one was
        clean: the parameters must hold a gradient at every backward() until the next step."""
        st = self._stale
        if st is None or st["closed"]:
            return
        params = self._params_of(st["opt"])
        if st["checks"] == 0:
            st["step"] = self.step
            st["where"] = site_label(user_site(1))
        st["checks"] += 1
        idx, grads = [], []
        for i, p in enumerate(params):
            g = p.grad
            if g is not None and g.layout == torch.strided:
                idx.append(i)
                grads.append(g)
        if not grads:
            self._stale = None  # every gradient cleared (set_to_none)
            return
        dev = grads[0].device
        with torch.no_grad():
            norms = [n if n.device == dev else n.to(dev) for n in torch._foreach_norm(grads)]
            nz = torch.stack(norms) != 0
            if len(idx) == len(params):
                full = nz
            else:  # some gradients are None: the mask over all parameters (an index copied to the device)
                full = torch.zeros(len(params), dtype=torch.bool, device=dev)
                full[torch.tensor(idx, device=dev)] = nz
            mask = full if st["mask"] is None else st["mask"] & full
        st["mask"] = mask
        if dev.type == "cpu" and not bool(mask.any()):
            self._stale = None
            return
        if st["checks"] >= STALE_CHECKS:
            st["closed"] = True

    def _finish_stale(self) -> None:
        """The optimizer stepped again: the parameters that held a gradient at every backward() of the
        interval are stale; the writer thread reads the mask (no sync on an accelerator)."""
        st, self._stale = self._stale, None
        if st is None or st["mask"] is None:
            return
        names = [self._param_names.get(id(p), f"param{i}") for i, p in enumerate(self._params_of(st["opt"]))]
        self.record("@stale", (names, st["mask"], st["where"]), st["step"])
