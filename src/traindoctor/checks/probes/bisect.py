"""``bisect``: replay the batch of a given training step and name the samples that make its
loss non-finite.

Off by default; ``nonfinite_step=K`` (CLI ``--nonfinite-step K``) asks for it, with the step at
which a real run's loss went NaN: the seeded loader is iterated as the training iterated it, the
batch is split in halves until the responsible samples are found, and each is said to fail in
its inputs, its targets, a module's output or the loss. (A non-finite loss on the checkup's own
first batches is bisected by the first-loss phase whatever the probes chosen: it is the
explanation of that loss, not an experiment.) Never shortened for the budget: it was asked for.

    >>> report = traindoctor.checkup(model, loader, nn.CrossEntropyLoss(), nonfinite_step=1234)
    >>> report.run.events_of("nonfinite_loss")[-1].data["bisect"]["sample_ids"]
"""
from __future__ import annotations

import math

from ...numfmt import fmt
from ._base import Probe, ProbeContext


class BisectProbe(Probe):
    name = "bisect"
    order = 70
    title = "bad-batch bisection"
    help = "bisect the batch of --nonfinite-step K down to the samples with a non-finite loss"
    default = False
    scalable = False

    def enabled(self, ctx: ProbeContext) -> bool:
        if ctx.opts.nonfinite_step is not None:
            return True
        if self.name in ctx.opts.probes:
            ctx.rec.not_checked.append("bad-batch bisection: no step to replay (pass nonfinite_step=K)")
        return False

    def cost(self, ctx: ProbeContext) -> float:
        return 20.0

    def run(self, ctx: ProbeContext) -> None:
        import torch

        from ..checkup import _batch_at_step, _record_bisect
        from ._experiments import bisect_nonfinite

        pipe, rec, snapshot = ctx.pipe, ctx.rec, ctx.snapshot
        k = ctx.opts.nonfinite_step
        assert k is not None
        snapshot.rng.restore()  # the loader's shuffling from where the checkup (= the training) started
        b = _batch_at_step(ctx.train_loader, k, ctx.opts.batch_fn)
        b = pipe.prepare(b)
        snapshot.restore_model()
        torch.manual_seed(ctx.opts.seed)
        res = bisect_nonfinite(pipe, b)
        with torch.no_grad():
            pipe.model.train()
            value = float(pipe.batch_loss(b))
        snapshot.restore_model()
        if not res["batch_nonfinite"] and math.isfinite(value):
            rec.event("batch_replay", {"step": k, "value": value, "sample_ids": b.ids[:50], "nonfinite": False})
            rec.line(self.title, f"batch of step {k} (samples {b.ids[:8]}…) gives a finite loss "
                                 f"{fmt(value)} with these weights: the data alone does not explain it", True)
            return
        _record_bisect(rec, res, value if not math.isfinite(value) else float("nan"), step=k)
