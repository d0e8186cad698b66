"""``depth``: the model against a shallower variant of itself, same data and optimizer (M005).

Off by default; ``shallow="auto"`` (CLI ``--shallow``) derives the variant by removing the
shape-preserving hidden blocks of an ``nn.Sequential``, or pass your own ``shallow=nn.Module``.
A deep model that trains no better than its shallow copy points at depth problems (vanishing
gradients, missing normalisation or residuals).

    >>> report = traindoctor.checkup(model, loader, nn.CrossEntropyLoss(), shallow="auto")
    >>> report.run.events_of("depth_probe")
"""
from __future__ import annotations

import copy
import math

from ...errors import TrainDoctorError
from ...numfmt import fmt
from ._base import Probe, ProbeContext, one_line


class DepthProbe(Probe):
    name = "depth"
    order = 60
    title = "shallow vs deep"
    help = "shallow vs deep comparison (M005); asked for with --shallow"
    default = False
    min_scale = 0.1

    def enabled(self, ctx: ProbeContext) -> bool:
        if self.name in ctx.opts.probes:
            return True
        if ctx.opts.shallow is None:
            ctx.rec.not_checked.append("shallow vs deep (M005) not run: ask with shallow='auto' (CLI: --shallow)")
        return False

    def cost(self, ctx: ProbeContext) -> float:
        return 2.0 * ctx.opts.steps + 2

    def run(self, ctx: ProbeContext) -> None:
        import torch
        from torch import nn

        from ._experiments import derive_shallow, train_curve

        pipe, rec, opts, model, pbatches = ctx.pipe, ctx.rec, ctx.opts, ctx.pipe.model, ctx.pbatches
        shallow = opts.shallow
        how = "given"
        if shallow is None or shallow == "auto":
            d = derive_shallow(model)
            if d is None:
                rec.not_checked.append("shallow vs deep (M005): no shallower variant could be derived automatically "
                                       "(pass shallow=<a shallower nn.Module>)")
                return
            shallow, how = d
        if not isinstance(shallow, nn.Module):
            raise TrainDoctorError(f"shallow= must be 'auto' or an nn.Module, got {type(shallow).__name__}")
        shallow = shallow.to(pipe.device)
        with torch.no_grad():
            o1, o2 = pipe.forward(pbatches[0].x), None
            orig = pipe.model
            try:
                pipe.model = shallow
                o2 = pipe.forward(pbatches[0].x)
            except Exception as exc:  # noqa: BLE001
                raise TrainDoctorError(f"the shallow model fails on the training inputs: {type(exc).__name__}: "
                                       f"{one_line(str(exc), 160)}") from None
            finally:
                pipe.model = orig
        if isinstance(o1, torch.Tensor) and isinstance(o2, torch.Tensor) and o1.shape != o2.shape:
            raise TrainDoctorError(f"the shallow model outputs {list(o2.shape)} where the model outputs {list(o1.shape)}")
        steps = ctx.steps(opts.steps, 30)
        ctx.snapshot.restore_model()
        torch.manual_seed(opts.seed)
        deep_curve, name = train_curve(pipe, model, pbatches, steps, like_user=True, seed=opts.seed)
        ctx.snapshot.restore_model()
        sh = copy.deepcopy(shallow)
        shallow_curve, _ = train_curve(pipe, sh, pbatches, steps, like_user=True, seed=opts.seed)
        k = max(1, steps // 5)

        def tail(c: list[float]) -> float:
            t = [v for v in c[-k:] if math.isfinite(v)]
            return sum(t) / len(t) if len(t) == len(c[-k:]) else float("nan")

        data = {"steps": steps, "optimizer": name, "how": how,
                "deep": {"params": sum(p.numel() for p in model.parameters()), "final_loss": tail(deep_curve),
                         "initial_loss": deep_curve[0]},
                "shallow": {"params": sum(p.numel() for p in sh.parameters()), "final_loss": tail(shallow_curve),
                            "initial_loss": shallow_curve[0]}}
        rec.event("depth_probe", data)
        rec.curve("probe/deep/loss", deep_curve)
        rec.curve("probe/shallow/loss", shallow_curve)
        rec.line(self.title, f"after {steps} steps ({name}): deep {fmt(data['deep']['final_loss'])}, "
                             f"shallow {fmt(data['shallow']['final_loss'])} ({how})", None)
