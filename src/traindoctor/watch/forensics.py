"""Non-finite forensics: at the first non-finite loss, the forward that produced it replayed once.

The weights are still untouched (the loss is caught at ``backward()``, before ``optimizer.step()``); the
replay runs with the RNG and the module buffers saved and restored, to name the first module whose output
went non-finite and the samples behind it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..inspect.tensors import graph_below, own_forward_target, tensors_of


def _nonfinite_rows(t: torch.Tensor) -> list[int]:
    """Batch positions (dim 0) holding a non-finite value."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() == 0:
        return []
    bad = ~torch.isfinite(t.detach().reshape(t.shape[0], -1)).all(dim=1)
    return bad.nonzero().flatten().tolist()


class NonFiniteForensics:
    """Says where a non-finite loss came from: the input batch, the weights, a module, or the loss itself.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_forensics(self) -> None:
        """The first non-finite loss (its step), and whether it was looked into."""
        self._forensics_done = False
        self.nonfinite_loss_step: int | None = None

    def _nonfinite_loss(self, value: float, loss: torch.Tensor | None, dtype: str | None = None) -> None:
        first = self.nonfinite_loss_step is None
        if first:
            self.nonfinite_loss_step = self.step
        if not first or self._forensics_done:
            return
        self._forensics_done = True
        data: dict[str, Any] = {"value": value}
        if dtype is not None:
            data["dtype"] = dtype  # the loss's own dtype: an Inf in float16 is an overflow of its 65504
        self._guard("forensics", self._forensics, data, loss)
        self.event("nonfinite_loss", data)
        msg = f"traindoctor: L001 nonfinite-loss — the loss is {value} at step {self.step}"
        if data.get("input_nonfinite"):
            inp = data["input_nonfinite"]
            msg += f"; the input batch already holds non-finite values (samples {inp.get('sample_ids') or inp['positions']})"
        elif data.get("weights_nonfinite"):
            msg += f"; weights were already non-finite: {', '.join(data['weights_nonfinite'][:3])}"
        elif data.get("first_module"):
            fm = data["first_module"]
            msg += f"; first non-finite output in module `{fm['name']}` ({fm['type']})"
        elif data.get("in_loss"):
            msg += "; the model's outputs are finite: the loss computation itself produced it"
        self.on_critical(msg)

    def _forensics(self, data: dict[str, Any], loss: torch.Tensor | None) -> None:
        ids = self._batch_ids
        data["batch_ids_known"] = ids is not None
        for model in self._known_models():
            # weights already non-finite?
            params = [p for p in model.parameters()]
            if params:
                with torch.no_grad():
                    norms = torch.stack(torch._foreach_norm([p.detach() for p in params]))
                bad = (~torch.isfinite(norms)).nonzero().flatten().tolist()
                if bad:
                    data["weights_nonfinite"] = [self._param_names.get(id(params[i]), f"param{i}") for i in bad]
                    return
            captured = self._last_inputs.get(id(model))
            if captured is None:
                continue
            args, kwargs = captured
            for i, t in enumerate(tensors_of((args, kwargs))):
                rows = _nonfinite_rows(t)
                if rows:
                    data["input_nonfinite"] = {
                        "tensor": f"input[{i}]",
                        "positions": rows[:50],
                        "count": len(rows),
                        "batch_size": int(t.shape[0]),
                        # the loader's ids name these rows only when they are this batch's (as many)
                        "sample_ids": [ids[r] for r in rows[:50]] if ids is not None and len(ids) == t.shape[0] else [],
                    }
                    return
            self._replay(model, args, kwargs, data, ids)
            if data.get("first_module"):
                return
        if loss is not None and "first_module" not in data:
            data["in_loss"] = True
            if loss.grad_fn is not None:
                data["loss_graph"] = graph_below(loss.grad_fn, depth=4)

    def _replay(self, model: nn.Module, args: tuple, kwargs: dict, data: dict[str, Any], ids: list[int] | None) -> None:
        """Re-run the forward that produced the non-finite loss, checking every module's output."""
        found: list[tuple[str, nn.Module, Any]] = []
        names = {id(m): n for n, m in model.named_modules()}
        handles = []

        def check(mod: nn.Module, inp: Any, out: Any) -> None:
            if found:
                return
            for t in tensors_of(out):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    found.append((names.get(id(mod), type(mod).__name__), mod, t))
                    return

        for m in model.modules():
            handles.append(m.register_forward_hook(check))
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self._own += 1
        try:
            with torch.no_grad():
                own_forward_target(model)(*args, **kwargs)
        finally:
            self._own -= 1
            for h in handles:
                h.remove()
            for b, saved in buffers:
                b.data.copy_(saved)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        if found:
            name, mod, out = found[0]
            rows = _nonfinite_rows(out)
            data["first_module"] = {
                "name": name or type(model).__name__,
                "type": type(mod).__name__,
                "positions": rows[:50],
                "count": len(rows),
                "sample_ids": [ids[r] for r in rows[:50]] if ids is not None and out.dim() > 0
                and len(ids) == out.shape[0] else [],
            }
