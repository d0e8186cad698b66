"""Evaluation capture: the validation loss seen with no help, the eval-mode gap, eval in training mode.

An evaluation is a forward or a loss computed with gradients off; its losses are averaged into
``val_loss@auto`` at the next training step, and its forward is checked once for dropout/BatchNorm left
in training mode (V008). The eval-mode gap (V007) re-runs a sampled batch in eval mode, side-effect free.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..inspect.tensors import own_forward_target, site_label, tensors_of
from ..inspect.trace import user_site


class EvaluationCapture:
    """Evaluations: their losses flushed as ``val_loss@auto``, their mode checked, the eval-mode gap measured.

    A part of :class:`~traindoctor.watch.monitor.Monitor` (a mixin: why, in monitor.py's docstring).
    """

    def _init_evaluation(self) -> None:
        """The evaluation being accumulated, and the eval-mode check (once per run)."""
        self._eval_acc: dict[str, list] = {"loss": [], "correct": []}
        self._has_train_only = False
        # evaluation in training mode (V008): once per run, looked at once per evaluation
        self._eval_mode_done = False
        self._eval_checked = False
        self._train_only: dict[int, list[tuple[str, nn.Module]]] = {}
        # the last forward with gradients off, a reference (never a copy), dropped at its loss call
        self._in_eval = False  # between an evaluation forward (gradients off) and the next training forward

    @property
    def _watch_eval(self) -> bool:
        """Whether evaluation forwards are still of interest (until V008's check and the leakage check are done)."""
        return not self._eval_mode_done or self._leak_state in ("waiting", "collecting")

    def _flush_eval(self) -> None:
        ev = self._eval_acc
        if not ev["loss"]:
            return
        self._eval_acc = {"loss": [], "correct": []}
        if self._leak_state in ("collecting", "collected"):
            self._guard("leakage", self._leak_end_of_evaluation)
        total = sum(n for _, n in ev["loss"])
        step = max(0, self.step - 1)
        num = sum(s for s, _ in ev["loss"])
        val = num / total.to(torch.float64).clamp(min=1) if isinstance(total, torch.Tensor) else num / max(total, 1)
        self.record("val_loss@auto", val, step)
        if self.on_val_loss is not None:
            self._guard("val-listener", self.on_val_loss, step, float(val))
        if ev["correct"]:
            seen = sum(n for _, n in ev["correct"])
            hits = sum(c for c, _ in ev["correct"])
            self.record("val_accuracy@auto", hits.to(torch.float64) / seen.to(torch.float64).clamp(min=1), step)

    def _eval_gap(self, orig: Callable[..., Any], args: tuple, kwargs: dict, out: Any) -> None:
        """Loss of the same batch in eval mode, against train mode (V007).

        Side-effect free by construction: in eval mode BatchNorm neither reads nor updates batch
        statistics and dropout draws no random numbers; every module's train/eval flag is put
        back as it was. Skipped when modules carry forward hooks of their own (user code that
        could observe the extra pass).
        """
        for model in self.models:
            captured = self._last_inputs.get(id(model))
            if captured is None:
                continue
            ours = {h.id for h in self._act_handles + self._handles}
            for m in model.modules():
                if m is not model and (set(m._forward_hooks) - ours or set(m._forward_pre_hooks) - ours):
                    return
            flags = [(m, m.training) for m in model.modules()]
            self._own += 1
            try:
                model.eval()
                with torch.no_grad():
                    out_eval = own_forward_target(model)(*captured[0], **captured[1])
                    if not isinstance(out_eval, torch.Tensor) or out_eval.shape != args[0].shape:
                        return
                    loss_eval = orig(out_eval, *args[1:], **kwargs)
            finally:
                self._own -= 1
                for m, f in flags:
                    m.training = f
            self.record("eval_mode_loss", loss_eval.detach().to(torch.float64).reshape(()))
            self.record("train_mode_loss", out.detach().to(torch.float64).reshape(()))
            return

    def _train_only_of(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The model's dropout (p > 0) and BatchNorm modules: what behaves differently in eval mode."""
        got = self._train_only.get(id(model))
        if got is None:
            got = [(n or type(model).__name__, m) for n, m in model.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)]
            self._train_only[id(model)] = got
        return got

    def _on_eval_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A forward of the model with gradients off: an evaluation, unless its input is the training
        data itself (a no-grad pass over the training set is not validation). Checked for dropout or
        BatchNorm left in training mode (once per evaluation), and hashed for leakage."""
        xs = [t for t in tensors_of((args, kwargs)) if t.dim() >= 1]
        if not xs:
            return
        x = xs[0]
        src = self._src_batch
        training = False
        if src is not None and src[0] is not None and src[0]() is x:
            train = self._train_dataset() if self._train_dataset is not None else None
            training = train is not None and src[1] == id(train)
        elif self._is_training_data(x):
            training = True
        if training:
            if self._leak_state in ("waiting", "collecting"):
                self._leak_skipped += int(x.shape[0])
            return
        self._in_eval = True
        if not self._eval_mode_done and not self._eval_checked:
            self._check_eval_mode(None)
        if self._leak_state in ("waiting", "collecting"):
            self._collect_val((module, args, kwargs))

    def _check_eval_mode(self, fn_name: str | None) -> None:
        """At an evaluation: dropout/BatchNorm still in training mode (``model.eval()`` not called)?
        Looked at once per evaluation (a few attribute reads), recorded once per run."""
        self._eval_checked = True
        found = [(n, m) for model in self._known_models() for n, m in self._train_only_of(model) if m.training]
        if not found:
            return
        self._eval_mode_done = True
        self.event("eval_train_mode", {"modules": [n for n, _ in found][:20],
                                       "types": [type(m).__name__ for _, m in found][:20],
                                       "where": site_label(user_site(1)), "loss": fn_name},
                   step=max(0, self.step - 1))
