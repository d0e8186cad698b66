"""Causes in how the model learns: the learning rate and its schedule, the optimizer, gradients and
activations through depth, initialisation, precision, and how long it trained."""
from __future__ import annotations

import numpy as np

from ..events import InitScale, LrRangeTest
from ..numfmt import fmt
from ..rules._signals import eps_swamps
from . import Cause
from . import frameworks as fw
from .facts import Facts, num


def _lr_range_test(f: Facts) -> list[str]:
    sweep = next((t for t in f.run.facts(LrRangeTest) if t.suggested_lr), None)
    sug = num(sweep.suggested_lr) if sweep is not None else None
    if sweep is None or sug is None:
        return []
    return [f"set the learning rate between {fmt(sug / 3)} and {fmt(sug)}: an LR range test on this model and "
            f"data with {sweep.optimizer} falls fastest at {fmt(sug)} (start at the low end with momentum)"]


def _clip_fix(f: Facts) -> list[str]:
    """Clip near 5× the healthy early gradient norm, never looser than a clip already in place; in the
    framework's terms (:mod:`.frameworks`)."""
    g = f.run.get("grad_norm")
    v = g.values[: max(2, len(g) // 5)] if g is not None else np.zeros(0)
    v = v[np.isfinite(v) & (v > 0)]
    have = f.clip_in_place
    src = (f.run.meta.get("framework_args") or {}).get("max_grad_norm_source")
    said = f" ({src})" if src else ""
    if not v.size:  # no measured norm to size the clip with: say it in the framework's terms, or not at all
        if have is not None:
            return [f"the run already clips the gradient norm at {fmt(have)}{said}: "
                    "lower the learning rate first; tighten the clip only if single steps still blow up"]
        if f.framework in (fw.PL, fw.KERAS):
            return [f"clip the gradient norm: {fw.set_clip(f, 1.0)}"]
        return []
    clip = float(np.median(v)) * 5
    if have is not None:
        if clip >= have:
            return [f"the run already clips the gradient norm at {fmt(have)}{said}; a looser clip would not help, "
                    "clipping is not what is missing here"]
        return [f"tighten the gradient clip near 5× its healthy early level: {fw.clip_knob(f)} {fmt(have)} → {fmt(clip)}"]
    return [f"clip the gradient norm near 5× its healthy early level: {fw.set_clip(f, clip)}"]


def _lr_change(f: Facts, lr: float, new: float) -> str:
    """``lr → new``, and where the framework sets it (``TrainingArguments(learning_rate=new)`` …)."""
    said = fw.set_lr(f, new)
    return f"{fmt(lr)} → {fmt(new)}" + (f" ({said})" if said is not None else "")


class LrTooHigh(Cause):
    id = "lr-too-high"
    fixes = ("lower LR ×0.1 (search on a log scale: 0.1, 0.01, 0.001, …)", "add warm-up",
             "clip gradient norm (5, 10 or 15 for RNNs)", "run an LR range test")

    def concrete(self, f: Facts) -> list[str]:
        out = _lr_range_test(f)
        lr = f.lr
        grew = f.lr_grew
        if grew is not None and grew >= 10 and f.lr_series is not None:
            v = f.lr_series.values
            out.append(f"the learning rate grew from {fmt(float(v[0]))} to {fmt(float(v[-1]))} during the run: check the "
                       "scheduler (a decay factor above 1, a warm-up that never ends)")
            lr = float(v[-1])
        elif f.lr_series is not None and len(f.lr_series) >= 2 and f.lr_decay is not None and f.lr_decay < 1.5:
            peak = float(np.max(f.lr_series.values))
            if lr is not None and peak >= 5 * lr:
                out.append(f"the schedule raised the learning rate to {fmt(peak)} ({fmt(peak / lr)}× its start) for part "
                           "of the run: cap it, or shorten that phase")
        if lr is not None and lr > 0:
            said = fw.set_lr(f, lr / 10)
            if said is not None:
                out.append(f"lower the learning rate ×0.1: {said} (from {fmt(lr)}; if it still fails, {fmt(lr / 100)})")
            else:
                out.append(f"lower the learning rate ×0.1: {fmt(lr)} → {fmt(lr / 10)} (if it still fails, {fmt(lr / 100)})")
        out += _clip_fix(f)
        out.append(fw.add_warmup(f) or
                   "add a warm-up of a few hundred steps (e.g. torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, 500))")
        nf = f.by_code.get("L001")
        good = nf.evidence.get("last_finite_step") if nf is not None and nf.step is not None else None
        if good is not None:
            out.append(f"restart from the last healthy checkpoint (the loss was finite up to step {good})")
        return out


class LrTooLow(Cause):
    id = "lr-too-low"
    fixes = ("raise LR ×10", "LR range test")

    def concrete(self, f: Facts) -> list[str]:
        out = _lr_range_test(f)
        lr = f.lr
        if lr is not None and lr > 0:
            out.append(f"raise the learning rate ×10: {_lr_change(f, lr, lr * 10)}; then ×10 again if still flat")
        return out

    def against(self, f: Facts) -> list[str]:
        """the weight layer that moves most changed by ≥ 3e-4 of its norm per step (median of the
        last half of the samples, or at any sampled step before the gradients died): the steps are
        not too small; or ≥ 90 % of a ReLU layer's units are dead (no step size moves what is below)."""
        from ..rules._signals import best_layer_update_ratio, per_step, weight_update_ratios

        u = best_layer_update_ratio(f.run)
        if u is not None and u >= 3e-4:
            return [f"each step changed the fastest-moving weights by {fmt(u)} of their norm, a working step size "
                    "(≈ 1e-3 is typical)"]
        a1 = f.by_code.get("A001")
        if a1 is not None and (a1.evidence.get("dead_fraction") or 0) >= 0.9:
            return [f"{a1.evidence['dead_fraction'] * 100:.0f} % of `{a1.evidence.get('module')}`'s units are dead: they pass "
                    "no gradient back, so no step size would move the layers below"]
        every = per_step(weight_update_ratios(f.run), "max")
        if "G006" in f.by_code and every is not None and np.isfinite(every).any() and np.nanmax(every) >= 1e-2:
            return [f"the weights moved by up to {fmt(float(np.nanmax(every)))} of their norm per step before their "
                    "gradients died: the step size was not too small"]
        return []


class NoLrDecay(Cause):
    id = "no-lr-decay"
    fixes = ("decay ×0.5 (or ÷2 to ÷5) when validation stops improving", "cosine/step schedule")

    def concrete(self, f: Facts) -> list[str]:
        said = fw.add_decay(f)
        return [said] if said is not None else []

    def against(self, f: Facts) -> list[str]:
        """the learning rate series came down at least 2× from its peak during the run."""
        d = f.lr_decay
        if d is not None and d >= 2 and f.lr_series is not None:
            v = f.lr_series.values
            return [f"the learning rate did decay during the run ({fmt(float(v.max()))} → {fmt(float(v[-1]))})"]
        return []


class WrongOptimizerSettings(Cause):
    id = "wrong-optimizer-settings"
    fixes = ("Adam with defaults, or SGD with momentum 0.9",)

    def concrete(self, f: Facts) -> list[str]:
        o = f.optimizer
        eps = num(o.get("eps"))
        sw = eps_swamps(f.run)
        if sw or (f.opt_class in ("Adam", "AdamW", "NAdam", "RAdam", "Adamax") and eps is not None and eps >= 1e-3):
            typical = f" (typical gradient element {fmt(sw['grad_rms'])})" if sw else " (typical ‖g‖ ≪ eps)"
            return [f"{f.opt_class}'s eps={fmt(eps)} swamps the gradient's second moment{typical}, so every "
                    "step is tiny: use the default eps=1e-8"]
        if f.opt_class == "SGD" and not num(o.get("momentum")):
            return ["SGD without momentum: add momentum=0.9 (and nesterov=True), or use Adam(lr=1e-3)"]
        return []

    def against(self, f: Facts) -> list[str]:
        """Adam/AdamW with default eps and betas, or SGD with momentum ≥ 0.8."""
        o = f.optimizer
        if not o:
            return []
        cls = f.opt_class
        eps = num(o.get("eps"))
        if cls in ("Adam", "AdamW") and (eps is None or eps <= 1e-6):
            b = o.get("betas")
            if not isinstance(b, (list, tuple)) or (len(b) == 2 and 0.8 <= float(b[0]) <= 0.95 and float(b[1]) >= 0.99):
                return [f"{cls} with its default eps and betas"]
        if cls == "SGD" and (num(o.get("momentum")) or 0) >= 0.8:
            return [f"SGD with momentum {fmt(float(o['momentum']))}"]
        return []


class BatchTooSmall(Cause):
    id = "batch-too-small"
    fixes = ("larger batch (powers of two), or lower LR",)

    def concrete(self, f: Facts) -> list[str]:
        bs = f.run.meta.get("batch_size")
        if isinstance(bs, int) and bs <= 8:
            lr = f.lr
            tail = f", or keep {bs} and lower the learning rate {_lr_change(f, lr, lr / 10)}" if lr else ""
            return [f"raise the batch size {bs} → 32 or 64 ({fw.set_batch_size(f, 32)}){tail}"]
        return []

    def against(self, f: Facts) -> list[str]:
        """batches of 16 samples or more."""
        bs = f.run.meta.get("batch_size")
        if isinstance(bs, int) and bs >= 16:
            return [f"batches of {bs} samples"]
        return []


class BatchTooLarge(Cause):
    id = "batch-too-large"
    fixes = ("smaller batch, or scale the LR with it",)

    def against(self, f: Facts) -> list[str]:
        """batches of 256 samples or fewer."""
        bs = f.run.meta.get("batch_size")
        if isinstance(bs, int) and bs <= 256:
            return [f"batches of {bs} samples"]
        return []


class OptimizationDifficulty(Cause):
    id = "optimization-difficulty"
    fixes = ("Adam with defaults", "momentum", "normalisation", "residuals", "LR schedule with warm-up")


class Undertrained(Cause):
    id = "undertrained"
    fixes = ("train longer", "judge by loss, not accuracy")

    def against(self, f: Facts) -> list[str]:
        """the training loss had stopped improving (< 2 % over the last 40 % of the run, on medians of
        tenths): more steps of the same would not have helped."""
        s = f.loss
        if s is None or "L012" in f.by_code:
            return []
        v = s.values[np.isfinite(s.values)]
        if v.size < 50:
            return []
        k = v.size // 10
        tenths = [float(np.median(v[i * k:(i + 1) * k])) for i in range(10)]
        a, b = min(tenths[:6]), min(tenths[6:])
        if a > 0 and (a - b) / a < 0.02:
            return [f"the training loss stopped improving well before the end (best {fmt(a)} in the first 60 % of "
                    f"the run, {fmt(b)} after)"]
        return []

    def concrete(self, f: Facts) -> list[str]:
        fin = f.by_code.get("L012")
        if fin is not None:
            ep = fin.evidence.get("extra_steps")
            if isinstance(ep, (int, float)) and ep > 0:
                factor = fin.evidence.get("factor", 2)
                longer = fw.train_longer(f, float(factor)) if isinstance(factor, (int, float)) else None
                return [f"train longer: the loss was still falling {fin.evidence.get('drop_last_fifth_pct', '?')} % over "
                        f"the last fifth; at least {int(ep)} more steps (×{factor} the run)"
                        + (f": {longer}" if longer else "")]
        return []


class ExplodingGradient(Cause):
    id = "exploding-gradient"
    fixes = ("clip gradient norm", "lower LR", "normalisation", "residual connections", "smaller init")

    def concrete(self, f: Facts) -> list[str]:
        return _clip_fix(f)

    def against(self, f: Facts) -> list[str]:
        """the sampled gradient norm (≥ 5 samples) never grew 3× above its early level and neither the loss nor a gradient went non-finite."""
        gg = f.grad_growth
        g = f.run.get("grad_norm")
        if gg is not None and g is not None and len(g) >= 5 and gg < 3 and "L001" not in f.by_code \
                and "G003" not in f.by_code:
            return [f"the sampled gradient norm never grew more than {fmt(gg)}× its early level"]
        return []


class VanishingGradient(Cause):
    id = "vanishing-gradient"
    fixes = ("ReLU family", "residual connections", "normalisation", "Kaiming init")

    def concrete(self, f: Facts) -> list[str]:
        out = []
        acts = [n.split("/", 1)[1] for n in f.run.names("saturated_frac")]
        if acts:
            shown = ", ".join(f"`{a}`" for a in acts[:6]) + (" …" if len(acts) > 6 else "")
            out.append(f"replace the sigmoid/tanh activations {shown} with nn.ReLU or nn.GELU, and initialise the "
                       "Linear layers with nn.init.kaiming_normal_(w, nonlinearity='relu')")
        out.append("if the depth is needed, add residual connections (x + block(x)) or nn.LayerNorm/BatchNorm "
                   "between the layers")
        return out

    def against(self, f: Facts) -> list[str]:
        """the first weight layer's gradient per weight is at least 0.1× the last layer's."""
        from ..rules._signals import vanishing_ratio

        r = vanishing_ratio(f.run)
        if r is not None and r >= 0.1:
            return [f"the first weight layer gets {fmt(r)}× the last layer's gradient per weight"]
        return []


class DyingRelu(Cause):
    id = "dying-relu"
    fixes = ("lower LR", "LeakyReLU/GELU", "Kaiming init", "normalisation")

    def concrete(self, f: Facts) -> list[str]:
        out = []
        a = f.by_code.get("A001")
        if a is not None:
            mod = a.evidence.get("module")
            bias = a.evidence.get("negative_bias")
            if bias:
                out.append(f"the biases feeding `{mod}` start at {fmt(float(bias))}: initialise them at 0 "
                           "(nn.init.zeros_(layer.bias)) so the units start alive")
            elif f.lr is not None:
                out.append(f"lower the learning rate {_lr_change(f, f.lr, f.lr / 10)}: large steps pushed the units "
                           "below zero")
            out.append(fw.leaky_relu(f, mod) or
                       f"replace nn.ReLU `{mod}` with nn.LeakyReLU(0.01) (or nn.GELU), so dead units still get a gradient")
        return out

    def against(self, f: Facts) -> list[str]:
        """the model has no ReLU-family activation; or every ReLU module's measured dead fraction stayed under 30 %; or dead units could not be measured (functional ReLUs) and no A001 finding exists."""
        if f.has_relu is False:
            return ["the model has no ReLU-family activation"]
        if f.dead_max is not None and f.dead_max < 0.3:
            return [f"at most {f.dead_max * 100:.0f} % of any ReLU module's units were dead"]
        if "A001" not in f.by_code and not f.relu_hooked:
            return ["dead units were not measured (ReLUs applied as functions, no module to hook) and nothing else "
                    "points at them"]
        return []


class SaturatingActivation(Cause):
    id = "saturating-activation"
    fixes = ("ReLU family in hidden layers", "normalisation", "smaller init")

    def against(self, f: Facts) -> list[str]:
        """the model has no sigmoid/tanh; or every such module stayed under 20 % of outputs in the tails."""
        if f.has_squash is False:
            return ["the model has no sigmoid/tanh activation"]
        if f.saturated_max is not None and f.saturated_max < 0.2:
            return [f"at most {f.saturated_max * 100:.0f} % of any sigmoid/tanh module's outputs sat in the tails"]
        return []


class BadInitialization(Cause):
    id = "bad-initialization"
    fixes = ("Xavier for tanh/sigmoid, Kaiming for ReLU, zero biases",)

    def concrete(self, f: Facts) -> list[str]:
        g6 = f.by_code.get("G006")
        if g6 is not None and g6.evidence.get("zero_initialised"):
            names = ", ".join(g6.evidence["zero_initialised"][:4])
            return [f"do not initialise weights to zero ({names}): use the default init or "
                    "nn.init.kaiming_normal_ (ReLU) / nn.init.xavier_uniform_ (tanh, sigmoid); zeros are fine for biases only"]
        m3 = f.by_code.get("M003")
        if m3 is not None and m3.evidence.get("layers"):
            worst = m3.evidence["layers"][0]
            if isinstance(worst, dict) and worst.get("std") and worst.get("expected_std"):
                return [f"`{worst.get('name')}` starts with weight std {fmt(float(worst['std']))}, "
                        f"{fmt(float(worst['std']) / float(worst['expected_std']))}× the {worst.get('expected', 'Kaiming')} "
                        "scale: drop the custom init, or use nn.init.kaiming_normal_(w, nonlinearity='relu') / "
                        "nn.init.xavier_uniform_(w) and nn.init.zeros_(b)"]
        return ["re-initialise: nn.init.kaiming_normal_(m.weight, nonlinearity='relu') for ReLU layers, "
                "nn.init.xavier_uniform_ for tanh/sigmoid, nn.init.zeros_(m.bias)"]

    def against(self, f: Facts) -> list[str]:
        """no initial-loss, zero-weight or init-scale finding, and every weight layer started within 2× of the PyTorch default, Kaiming or Xavier scale."""
        evs = f.run.facts(InitScale)
        if not evs or "L009" in f.by_code or "G006" in f.by_code or "M003" in f.by_code:
            return []
        layers = evs[-1].layers
        if not layers:
            return []
        ratios = []
        for lay in layers:
            std, dflt = num(lay.std), num(lay.default_std)
            kai, xav = num(lay.kaiming_std), num(lay.xavier_std)
            refs = [r for r in (dflt, kai, xav) if r]
            if std is None or not refs:
                return []
            ratios.append(min(abs(np.log(std / r)) for r in refs) if std > 0 else np.inf)
        if ratios and max(ratios) <= np.log(2):
            return ["every weight layer started within 2× of the PyTorch default, Kaiming or Xavier scale"]
        return []


class PrecisionOverflow(Cause):
    id = "precision-overflow"
    fixes = ("loss scaling", "fp32 accumulation for losses and reductions")

    def concrete(self, f: Facts) -> list[str]:
        m7 = f.by_code.get("M007")
        out = []
        if m7 is not None and m7.evidence.get("dtype"):
            out.append(f"compute the loss in float32: loss_fn(out.float(), y.float()) — its {m7.evidence['dtype']} "
                       "range ends at 65504 (float16)")
        if f.run.meta.get("loss_reduction") == "sum":
            out.append("reduce the loss with a mean (reduction='mean') so it does not grow with the batch size")
        return out
