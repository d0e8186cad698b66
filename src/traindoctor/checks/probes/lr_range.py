"""``lr_range``: Leslie Smith's LR range test with the user's optimizer class and settings.

An exponential sweep from ``1e-7`` to ``10``, one batch per step; the LR where the smoothed loss
falls fastest is suggested (``report.suggested_lr``) and compared with the user's, which is how
a learning rate off by orders of magnitude (M006) is caught before the run.

    >>> report = traindoctor.checkup(model, loader, nn.CrossEntropyLoss(), probes=["lr_range"])
    >>> report.suggested_lr
"""
from __future__ import annotations

from ...numfmt import fmt
from ._base import Probe, ProbeContext


class LRRangeProbe(Probe):
    name = "lr_range"
    order = 10
    title = "LR range test"
    help = "LR range test with your optimizer (suggests a learning rate)"
    min_scale = 0.3  # fewer than ~30 points of a sweep over 8 decades says nothing

    def cost(self, ctx: ProbeContext) -> float:
        return float(ctx.opts.lr_iters)

    def run(self, ctx: ProbeContext) -> None:
        from ._experiments import lr_range_test

        opts, rec = ctx.opts, ctx.rec
        iters = ctx.steps(opts.lr_iters, 30)
        r = lr_range_test(ctx.pipe, ctx.pbatches, ctx.snapshot, start_lr=opts.lr_start, end_lr=opts.lr_end,
                          num_iter=iters)
        user_lr = rec.meta.get("lr")
        data = {"optimizer": r.optimizer, "suggested_lr": r.suggested, "rule": r.rule, "min_loss_lr": r.min_loss_lr,
                "diverged_at_lr": r.diverged_at, "user_lr": user_lr, "start_lr": opts.lr_start, "end_lr": opts.lr_end,
                "num_iter": iters, "points": len(r.lrs), "smooth_f": 0.05, "diverge_th": 5.0,
                "first_loss": r.smoothed[0] if r.smoothed else None,
                "min_loss": min(r.smoothed) if r.smoothed else None}
        rec.event("lr_range_test", data)
        rec.curve("lr_range/lr", r.lrs)
        rec.curve("lr_range/loss", r.losses)
        rec.curve("lr_range/loss_smooth", r.smoothed)
        if r.suggested is None:
            top = f" up to lr {fmt(r.lrs[-1])}" if r.lrs else ""
            rec.line(self.title, f"no suggestion: the smoothed loss never fell by 10 % over {len(r.lrs)} steps{top} "
                                 f"({r.optimizer})" + (f"; diverged at {fmt(r.diverged_at)}" if r.diverged_at else ""),
                     None)
            return
        txt = (f"suggested lr {fmt(r.suggested)} for {r.optimizer} (steepest descent of the smoothed loss); "
               f"loss lowest at lr {fmt(r.min_loss_lr)}")
        if r.diverged_at:
            txt += f", diverged at {fmt(r.diverged_at)}"
        if isinstance(user_lr, float):
            txt += f"; yours is {fmt(user_lr)}"
        rec.line(self.title, txt, None)
