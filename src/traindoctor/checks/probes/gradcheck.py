"""``gradcheck``: each custom ``torch.autograd.Function`` in the model against float64 finite
differences (M012).

The functions are found on the model's autograd graph, their forward calls are captured on four
samples and ``torch.autograd.gradcheck`` compares the hand-written backward with numerical
derivatives; a wrong backward trains silently wrong.

    >>> report = traindoctor.checkup(model, loader, nn.CrossEntropyLoss(), probes=["gradcheck"])
    >>> "M012" in report.codes
"""
from __future__ import annotations

from ._base import Probe, ProbeContext


class GradcheckProbe(Probe):
    name = "gradcheck"
    order = 50
    title = "gradient check"
    help = "gradient check of custom autograd.Functions (M012)"
    scalable = False  # a handful of float64 evaluations on 4 samples: nothing to shorten

    def cost(self, ctx: ProbeContext) -> float:
        return 4.0

    def run(self, ctx: ProbeContext) -> None:
        import torch

        from ...inspect.model import capture_function_calls, custom_functions, gradcheck_function

        pipe, rec, model = ctx.pipe, ctx.rec, ctx.pipe.model
        b = ctx.pbatches[0]
        small = b.select(list(range(min(4, len(b)))))
        model.train()
        with torch.enable_grad():
            out = pipe.forward(small.x)
        classes = custom_functions(out)
        del out
        if not classes:
            rec.line(self.title, "no custom autograd.Function in the model", None)
            return
        calls = capture_function_calls(model, classes, lambda: pipe.forward(small.x))
        ctx.snapshot.restore_model()
        for cls in classes:
            call = calls.get(cls)
            if call is None:
                continue
            res = gradcheck_function(cls, call["args"], call["kwargs"], len(small))
            res["module"] = call["module"]
            rec.event("gradcheck", res)
            if "skipped" in res:
                rec.not_checked.append(f"gradient check of {res['function']} skipped: {res['skipped']}")
                rec.line(self.title, f"{res['function']}: skipped ({res['skipped']})", None)
            else:
                rec.line(self.title, f"{res['function']} in `{res['module']}`: "
                                     f"{'passed' if res['passed'] else 'FAILED'} (float64 gradcheck)", res["passed"])
