"""``short_training``: a short Adam training behind the suspect-label (D008), input-baseline and
train/eval-gap (V007) checks.

The model trains for ``steps`` steps on four fifths of the kept samples, once with the real
inputs and once with the inputs zeroed; a model that does no better with its inputs than
without them is not using them. Afterwards the per-sample losses name the samples whose label
the model confidently disagrees with, and the same batches in train and eval mode measure how
much BatchNorm/Dropout change the loss.

    >>> report = traindoctor.checkup(model, loader, nn.CrossEntropyLoss(), probes=["short_training"])
    >>> report.finding("D008")
"""
from __future__ import annotations

import math
from typing import Any

from ...losskinds import BINARY
from ...numfmt import fmt
from ._base import Probe, ProbeContext


class ShortTrainingProbe(Probe):
    name = "short_training"
    order = 40
    title = "short training"
    help = "short training: suspect labels (D008), input-independent baseline, train/eval gap (V007)"
    min_scale = 0.1

    def cost(self, ctx: ProbeContext) -> float:
        # two trainings, then forward passes (a third of a step each) over the kept samples
        return 2.0 * ctx.opts.steps + (2 * len(ctx.pbatches) + 8) / 3

    def run(self, ctx: ProbeContext) -> None:
        import torch
        from torch import nn

        from ...inspect.data import CLASS_LOSSES
        from ._experiments import label_outliers, mean_loss, per_sample_losses, short_training

        pipe, rec, opts, model, pbatches = ctx.pipe, ctx.rec, ctx.opts, ctx.pipe.model, ctx.pbatches
        steps = ctx.steps(opts.steps, 30)
        mode_modules = [n for n, m in model.named_modules()
                        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
                                          nn.modules.instancenorm._InstanceNorm))]

        # a fifth of the samples held out: the input baseline compares what generalises, so a
        # model that memorises labels unrelated to its inputs does not pass for one that learned
        hold = max(1, len(pbatches) // 5) if len(pbatches) >= 5 else 0
        train_b = pbatches[:-hold] if hold else pbatches
        held = pbatches[-hold:] if hold else None

        def measure() -> dict[str, Any]:
            losses, ids, labels, preds = per_sample_losses(pipe, train_b)
            c = rec.meta.get("num_classes")
            thr = None
            if pipe.loss_kind in CLASS_LOSSES and isinstance(c, int) and c >= 2:
                thr = max(2 * math.log(c), math.log(100))
            elif pipe.loss_kind in BINARY and labels.dim() <= 2 and labels.reshape(len(labels), -1).shape[1] == 1:
                thr = math.log(100)
            out: dict[str, Any] = {"outliers": label_outliers(losses, ids, labels, preds, thr)}
            # V007's series, as a live run records them: the same batch in eval then train mode
            te_batches = train_b[:4]
            evals = [mean_loss(pipe, [b], train_mode=False) for b in te_batches]
            torch.manual_seed(opts.seed)
            trains = [mean_loss(pipe, [b], train_mode=True) for b in te_batches]
            out["train_eval"] = {"train_mode_loss": trains, "eval_mode_loss": evals,
                                 "mode_dependent_modules": mode_modules[:10]}
            return out

        real = short_training(pipe, train_b, ctx.snapshot, steps=steps, measure=measure, eval_batches=held)
        zero = short_training(pipe, train_b, ctx.snapshot, steps=steps, zero_inputs=True, eval_batches=held)
        rec.curve("probe/short_training/loss", real.pop("curve"))
        rec.curve("probe/zero_inputs/loss", zero.pop("curve"))
        fit = real["last_losses_mean"]
        learned = real["finite"] and math.isfinite(fit) and fit < 0.8 * real["first_loss"]
        base = {"steps": steps, "optimizer": "Adam", "lr": real["lr"], "initial_loss": real["first_loss"],
                "real_input_loss": real["final_loss"], "zero_input_loss": zero["final_loss"],
                "zero_input_initial_loss": zero["first_loss"], "evaluated_on": real["evaluated_on"],
                "trained_on": sum(len(b) for b in train_b), "evaluated_samples": sum(len(b) for b in (held or train_b)),
                "real_training_loss": fit, "zero_training_loss": zero["last_losses_mean"]}
        rec.event("input_baseline", base)
        rec.line("input-independent baseline",
                 f"after {steps} steps, on {base['evaluated_samples']} {real['evaluated_on']}: loss "
                 f"{fmt(real['final_loss'])} with the real inputs, {fmt(zero['final_loss'])} with inputs zeroed",
                 bool(real["final_loss"] < 0.95 * zero["final_loss"]) if math.isfinite(real["final_loss"]) else None)
        te = real["train_eval"]
        pts = list(range(steps, steps + len(te["train_mode_loss"])))
        rec.curve("train_mode_loss", te["train_mode_loss"], pts)
        rec.curve("eval_mode_loss", te["eval_mode_loss"], pts)
        tr_m = sum(te["train_mode_loss"]) / len(te["train_mode_loss"])
        ev_m = sum(te["eval_mode_loss"]) / len(te["eval_mode_loss"])
        mods = f" (mode-dependent modules: {', '.join(te['mode_dependent_modules'][:3])})" if te["mode_dependent_modules"] else ""
        rec.line("train vs eval mode", f"same {len(pts)} batches after {steps} steps: train-mode loss {fmt(tr_m)}, "
                                       f"eval-mode loss {fmt(ev_m)}{mods}", None)
        outl = dict(real["outliers"])
        outl.update({"trained_steps": steps, "learned": bool(learned), "loss_kind": pipe.loss_kind,
                     "num_classes": rec.meta.get("num_classes"), "initial_loss": real["first_loss"],
                     "final_loss": fit})
        rec.event("label_outliers", outl)
        if not learned:
            rec.not_checked.append(
                f"the short training (Adam {real['lr']}, {steps} steps) did not learn "
                f"({fmt(real['first_loss'])} → {fmt(fit)}): suspect labels (D008) not judged")
