"""How a fix is said in the framework the run trained under: the Hugging Face Trainer's
``TrainingArguments``, PyTorch Lightning's ``Trainer`` and ``configure_optimizers``, Keras's optimizer and
``fit``, or a hand-written PyTorch loop.

The run says which (``meta["framework"]``: ``huggingface``, ``lightning``, ``keras``; absent for a plain
loop) and with what settings (``meta["framework_args"]``, as the framework's callback or log read them:
``learning_rate``, ``warmup_steps``, ``max_grad_norm``, ``lr_scheduler_type``, ``gradient_clip_val``,
``epochs`` …). Each function returns the words for one setting, or None where the framework has no say
(the cause then keeps its plain-PyTorch words). A setting the run already has is said as a change from
its value, never as something to add.
"""
from __future__ import annotations

from typing import Any

from ..numfmt import fmt
from .facts import Facts, num

HF, PL, KERAS = "huggingface", "lightning", "keras"


def fw_args(f: Facts) -> dict[str, Any]:
    return dict(f.meta.framework_args)


def _keras_opt(f: Facts) -> str:
    cls = fw_args(f).get("optimizer") or f.opt_class or "Adam"
    return f"keras.optimizers.{cls}"


def _hf_v5(f: Facts) -> bool:
    """The Trainer of transformers 5 (read live: its ``warmup_steps`` below 1 is a ratio, ``warmup_ratio`` is gone)."""
    a = fw_args(f)
    v = str(a.get("version") or "")
    return "warmup_ratio" not in a and v[:1].isdigit() and int(v.split(".", 1)[0]) >= 5


def set_lr(f: Facts, new: float) -> str | None:
    """Where the learning rate is set to ``new``."""
    if f.framework == HF:
        return f"TrainingArguments(learning_rate={fmt(new)})"
    if f.framework == PL:
        return f"lr={fmt(new)} in configure_optimizers()"
    if f.framework == KERAS:
        return f"{_keras_opt(f)}(learning_rate={fmt(new)})"
    return None


def clip_knob(f: Facts) -> str:
    """The name of the gradient-norm clip setting."""
    return {HF: "max_grad_norm", PL: "gradient_clip_val", KERAS: "global_clipnorm"}.get(f.framework or "",
                                                                                         "the clip value")


def set_clip(f: Facts, value: float) -> str:
    """How the gradient norm is clipped at ``value``."""
    if f.framework == HF:
        return f"TrainingArguments(max_grad_norm={fmt(value)})"
    if f.framework == PL:
        return f"Trainer(gradient_clip_val={fmt(value)}, gradient_clip_algorithm='norm')"
    if f.framework == KERAS:
        return f"{_keras_opt(f)}(..., global_clipnorm={fmt(value)})"
    return f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={fmt(value)})"


def run_steps(f: Facts) -> int | None:
    """The optimizer steps the run was set to take, when its framework says."""
    a = fw_args(f)
    ms = a.get("max_steps")
    if isinstance(ms, int) and ms > 0:
        return ms
    ep, per = a.get("epochs"), a.get("steps_per_epoch")
    if isinstance(ep, int) and isinstance(per, int) and ep > 0 and per > 0:
        return ep * per
    loss = f.loss
    return int(loss.steps[-1]) + 1 if loss is not None and len(loss) else None


def add_warmup(f: Facts) -> str | None:
    """A linear warm-up, or a longer one where the run already warms up."""
    a = fw_args(f)
    if f.framework == HF:
        sched = a.get("lr_scheduler_type")
        also = " and lr_scheduler_type='constant_with_warmup' (a constant schedule has no warm-up)" \
            if sched == "constant" else ""
        ratio, steps = num(a.get("warmup_ratio")), num(a.get("warmup_steps"))
        if _hf_v5(f):  # warmup_steps below 1 is a ratio of the run
            if steps is not None and steps > 0:
                longer = min(0.2, steps * 4) if steps < 1 else int(steps * 4)
                return f"lengthen the warm-up: TrainingArguments(warmup_steps={fmt(steps)} → {fmt(longer)}){also}"
            return f"add a warm-up: TrainingArguments(warmup_steps=0.05) (5 % of the steps){also}"
        if ratio is not None and ratio > 0:
            return f"lengthen the warm-up: TrainingArguments(warmup_ratio={fmt(ratio)} → {fmt(min(0.2, ratio * 4))}){also}"
        if steps is not None and steps >= 1:
            return f"lengthen the warm-up: TrainingArguments(warmup_steps={int(steps)} → {int(steps * 4)}){also}"
        return f"add a warm-up: TrainingArguments(warmup_ratio=0.05){also}"
    if f.framework == PL:
        scheds = [s for s in a.get("schedulers") or [] if isinstance(s, str)]
        if scheds:  # the module schedules already: the warm-up goes before its schedule
            return (f"add a warm-up before your {scheds[0]}: in configure_optimizers(), schedule "
                    f"torch.optim.lr_scheduler.SequentialLR(opt, [LinearLR(opt, 0.01, 1.0, 500), <your {scheds[0]}>], "
                    "milestones=[500]) with 'interval': 'step'")
        return ("add a warm-up: in configure_optimizers(), return {'optimizer': opt, 'lr_scheduler': {'scheduler': "
                "torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, 500), 'interval': 'step'}}")
    if f.framework == KERAS:
        lr = f.lr
        n = run_steps(f)
        warm = max(1, n // 20) if n else 500
        decay = f"decay_steps={n}" if n else "decay_steps=<the run's steps>"
        target = fmt(lr) if lr else "<your learning rate>"
        return (f"add a warm-up: {_keras_opt(f)}(learning_rate=keras.optimizers.schedules.CosineDecay(0.0, "
                f"{decay}, warmup_target={target}, warmup_steps={warm}))")
    return None


def add_decay(f: Facts) -> str | None:
    """A schedule that brings the learning rate down."""
    a = fw_args(f)
    if f.framework == HF:
        sched = a.get("lr_scheduler_type")
        if sched in ("constant", "constant_with_warmup"):
            return f"decay the learning rate: TrainingArguments(lr_scheduler_type='cosine') (it is {sched!r})"
        return None  # the Trainer's schedules decay already (linear by default)
    if f.framework == PL:
        return ("decay the learning rate: in configure_optimizers(), return {'optimizer': opt, 'lr_scheduler': "
                "{'scheduler': torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3), "
                "'monitor': 'val_loss'}}")
    if f.framework == KERAS:
        return ("decay the learning rate: model.fit(..., callbacks=[keras.callbacks.ReduceLROnPlateau("
                "monitor='val_loss', factor=0.5, patience=3)])")
    return None


def train_longer(f: Facts, factor: float) -> str | None:
    """The run's own length, ``factor`` times."""
    a = fw_args(f)
    if f.framework == HF:
        ms = a.get("max_steps")
        if isinstance(ms, int) and ms > 0:
            return f"TrainingArguments(max_steps={ms} → {int(ms * factor)})"
        ep = num(a.get("num_train_epochs"))
        return f"TrainingArguments(num_train_epochs={fmt(ep)} → {fmt(ep * factor)})" if ep else None
    if f.framework == PL:
        ms, ep = a.get("max_steps"), a.get("max_epochs")
        if isinstance(ms, int) and ms > 0:
            return f"Trainer(max_steps={ms} → {int(ms * factor)})"
        return f"Trainer(max_epochs={ep} → {int(round(ep * factor))})" if isinstance(ep, int) and ep > 0 else None
    if f.framework == KERAS:
        ep = a.get("epochs")
        return f"model.fit(..., epochs={ep} → {int(round(ep * factor))})" if isinstance(ep, int) and ep > 0 else None
    return None


def set_batch_size(f: Facts, new: int) -> str:
    if f.framework == HF:
        return f"TrainingArguments(per_device_train_batch_size={new}, or gradient_accumulation_steps to reach it)"
    if f.framework == KERAS:
        return f"model.fit(..., batch_size={new})"
    return f"DataLoader(..., batch_size={new})"


def early_stopping(f: Facts) -> str | None:
    """Stop at the validation minimum and keep its weights, with the framework's own callbacks."""
    if f.framework == HF:
        return ("TrainingArguments(load_best_model_at_end=True, metric_for_best_model='eval_loss', with "
                "save_strategy equal to eval_strategy) and callbacks=[EarlyStoppingCallback(early_stopping_patience=3)]")
    if f.framework == PL:
        return ("Trainer(callbacks=[EarlyStopping(monitor='val_loss', patience=3), ModelCheckpoint(monitor='val_loss')]) "
                "and load the best checkpoint (trainer.checkpoint_callback.best_model_path)")
    if f.framework == KERAS:
        return "model.fit(..., callbacks=[keras.callbacks.EarlyStopping(monitor='val_loss', patience=3, restore_best_weights=True)])"
    return None


def set_weight_decay(f: Facts, old: float, new: float) -> str:
    if f.framework == HF:
        return f"TrainingArguments(weight_decay={fmt(old)} → {fmt(new)})"
    if f.framework == KERAS:
        return f"{_keras_opt(f)}(weight_decay={fmt(old)} → {fmt(new)})"
    return f"weight_decay {fmt(old)} → {fmt(new)}"


def leaky_relu(f: Facts, module: Any) -> str | None:
    """Dead ReLUs replaced by an activation that passes a gradient below zero, where the framework names it."""
    if f.framework == KERAS:
        return ("use activation='leaky_relu' (or 'gelu') in place of 'relu' in the Dense/Conv layers "
                "(keras.layers.LeakyReLU(negative_slope=0.01) as a layer), so dead units still get a gradient")
    return None
