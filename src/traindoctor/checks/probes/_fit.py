"""The shared body of ``overfit`` and ``repeat``: train on a tiny batch alone and see it fit."""
from __future__ import annotations

from ...numfmt import fmt
from ._base import Probe, ProbeContext


class FitProbe(Probe):
    variant: str = "tiny_batch"
    min_scale = 0.1

    def cost(self, ctx: ProbeContext) -> float:
        # the second learning rate runs only when the first fails, and a fit usually stops early:
        # budgeting the worst case (twice the steps) would starve the probes after it; when it
        # does run long, the probes after it get a smaller share of what is left
        return ctx.opts.steps + 2.0

    def run(self, ctx: ProbeContext) -> None:
        from ._experiments import fit_probe, loss_floor, repeated_sample, tiny_batch

        rec = ctx.rec
        b = tiny_batch(ctx.clean, 10) if self.variant == "tiny_batch" else repeated_sample(ctx.clean)
        floor = loss_floor(ctx.pipe, b, ctx.out_shape)
        steps = ctx.steps(ctx.opts.steps, 30)
        res = fit_probe(ctx.pipe, b, ctx.snapshot, steps=steps, floor=floor, variant=self.variant)
        curve = res.pop("curve")
        rec.event("fit_probe", res)
        rec.curve(f"probe/{self.variant}/loss", curve)
        last = res["tries"][-1]
        if res["fitted"]:
            ok_try = next(t for t in res["tries"] if t["fitted"])
            rec.line(self.title, f"loss {fmt(res['initial_loss'])} → {fmt(ok_try['best_loss'])} in {ok_try['steps']} "
                                 f"steps (Adam lr {fmt(ok_try['lr'])})", True)
        else:
            rec.line(self.title, f"loss {fmt(res['initial_loss'])} → best {fmt(res['best_loss'])} after "
                                 f"{sum(t['steps'] for t in res['tries'])} steps (needed ≤ {fmt(last['target'])})", False)
