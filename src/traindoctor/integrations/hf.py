"""The Hugging Face Trainer: ``Trainer(..., callbacks=[DoctorCallback()])``.

    from traindoctor.integrations.hf import DoctorCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[DoctorCallback()])          # heal=True to treat the run as it trains
    trainer.train()

Fed to the Doctor: the model and the Trainer's optimizer and LR scheduler (the torch ones inside
accelerate's wrappers), the loss each optimizer step backpropagated (what the Trainer itself logs:
summed over ``gradient_accumulation_steps``, every step rather than every ``logging_steps``), the
evaluation metrics (``eval_loss`` → ``val_loss``, ``eval_accuracy`` → ``val_accuracy``), and the
``TrainingArguments`` the fixes are said in: ``learning_rate``, ``warmup_steps``/``warmup_ratio``,
``max_grad_norm`` (the Trainer clips at 1.0 unless told otherwise, so a fix never asks for a clip that is
already there), ``lr_scheduler_type``, ``logging_steps``, the batch size and epochs.

With ``heal=True`` the Doctor's healer acts on that optimizer and scheduler (a lower LR carries on
through the schedule), and sets ``control.should_training_stop`` when it says stop (it gave up, or the run
overfits: the best-validation weights are back in the model when training ends). The diagnosis is
printed when training ends and kept in ``callback.diagnosis``; ``store=PATH`` keeps the run for
``traindoctor diagnose PATH``.
"""
from __future__ import annotations

import dataclasses
from typing import IO, Any

from transformers import TrainerCallback

from ..heal import HealPolicy
from ..watch.monitor import DEFAULT_CADENCE
from ._common import Bridge, BridgeViews

# the TrainingArguments the fixes and the report use, as the Trainer names them
ARGS = ("learning_rate", "warmup_ratio", "warmup_steps", "max_grad_norm", "lr_scheduler_type", "logging_steps",
        "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
        "weight_decay", "optim", "adam_epsilon", "adam_beta1", "adam_beta2", "eval_strategy",
        "load_best_model_at_end", "seed")


def hf_args(args: Any) -> dict[str, Any]:
    """The ``TrainingArguments`` the fixes are said in (only those this version of transformers has: the
    Trainer of transformers 5 has no ``warmup_ratio``, its ``warmup_steps`` below 1 is a ratio)."""
    out = {k: getattr(args, k) for k in ARGS if hasattr(args, k)}
    clip = out.get("max_grad_norm")
    if isinstance(clip, (int, float)) and clip > 0:
        default = next((f.default for f in dataclasses.fields(type(args)) if f.name == "max_grad_norm"), None) \
            if dataclasses.is_dataclass(args) else None
        said = f"TrainingArguments(max_grad_norm={clip:g})"
        out["max_grad_norm_source"] = f"the Trainer's default, {said}" if clip == default else said
    try:
        import transformers

        out["version"] = transformers.__version__
    except Exception:  # noqa: BLE001
        pass
    return out


def _inner(obj: Any, attr: str) -> Any:
    """The torch object inside accelerate's wrapper (``AcceleratedOptimizer.optimizer``,
    ``AcceleratedScheduler.scheduler``), or the object itself."""
    inner = getattr(obj, attr, None)
    return inner if inner is not None and type(obj).__module__.startswith("accelerate") else obj


class DoctorCallback(BridgeViews, TrainerCallback):
    """traindoctor's Doctor on a Hugging Face Trainer's training (see the module's docstring)."""

    def __init__(self, heal: bool | str = False, *, cadence: int = DEFAULT_CADENCE, store: Any = None,
                 live: bool = True, report: bool = True, report_file: IO[str] | None = None,
                 heal_every: int | None = None, heal_policy: HealPolicy | None = None) -> None:
        self.bridge = Bridge("huggingface", heal=heal, cadence=cadence, store=store, live=live, report=report,
                             report_file=report_file, heal_every=heal_every, heal_policy=heal_policy)
        self._model: Any = None

    # the Trainer's events ----------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       lr_scheduler: Any = None, **kwargs: Any) -> None:
        self.bridge.guard("start", self._start, args, model, optimizer, lr_scheduler)

    def _start(self, args: Any, model: Any, optimizer: Any, lr_scheduler: Any) -> None:
        opt = _inner(optimizer, "optimizer") if optimizer is not None else None
        sched = _inner(lr_scheduler, "scheduler") if lr_scheduler is not None else None
        self._model = model
        self.bridge.start(model, opt, scheduler=[sched] if sched is not None else [])
        self.bridge.set_args(hf_args(args))

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bridge.guard("step", self.bridge.note_backward)  # a micro-batch of an accumulated step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bridge.guard("step", self._step_end, control)

    def _step_end(self, control: Any) -> None:
        b = self.bridge
        if not b.active:
            return
        last = b.doctor.monitor.last_inputs(self._model) if self._model is not None else None
        inputs = (last[1] or last[0]) if last is not None else None  # the model's keyword inputs, as the Trainer calls it
        b.step(inputs=inputs)
        if b.should_stop:
            control.should_training_stop = True

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if metrics:
            self.bridge.guard("evaluation", self.bridge.log, dict(metrics))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bridge.finish()


__all__ = ["DoctorCallback", "hf_args"]
