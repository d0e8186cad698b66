"""The PyTorch Lightning callback's body, shared by ``lightning.pytorch`` and ``pytorch_lightning`` (the two
packages have distinct ``Callback`` classes; the Trainer accepts only its own).

Fed to the Doctor: the LightningModule and the Trainer's first optimizer (their gradient, update and
activation statistics through the Doctor's hooks; Lightning steps with a closure, which the Doctor calls
first so its hooks see this step's gradients), the loss each optimizer step backpropagated (summed over
``accumulate_grad_batches``), the validation metrics the module logs (``val_loss``, ``val_acc`` …, read from
``trainer.callback_metrics`` after each validation run, the sanity check left out), and the Trainer's
settings for the fixes (``gradient_clip_val``, ``accumulate_grad_batches``, ``max_epochs``, the schedulers
``configure_optimizers`` returned).

With ``heal=True`` the Doctor's healer acts on that optimizer, its schedulers and the precision plugin's
GradScaler, and ``trainer.should_stop`` is set when it says stop (it gave up, or the run overfits: the
best-validation weights are back in the module at the end).
"""
from __future__ import annotations

from typing import IO, Any

from ..heal import HealPolicy
from ..watch.monitor import DEFAULT_CADENCE
from ._common import Bridge, BridgeViews


def lightning_args(trainer: Any) -> dict[str, Any]:
    """The Trainer's settings the fixes are said in."""
    clip = getattr(trainer, "gradient_clip_val", None)
    algo = getattr(trainer, "gradient_clip_algorithm", None)
    algo = getattr(algo, "value", algo)
    args: dict[str, Any] = {
        "accumulate_grad_batches": getattr(trainer, "accumulate_grad_batches", None),
        "max_epochs": getattr(trainer, "max_epochs", None),
        "max_steps": getattr(trainer, "max_steps", None),
        "precision": getattr(trainer, "precision", None),
        "schedulers": [type(c.scheduler).__name__ for c in getattr(trainer, "lr_scheduler_configs", []) or []],
        "scheduler_interval": next((c.interval for c in getattr(trainer, "lr_scheduler_configs", []) or []), None),
    }
    if isinstance(clip, (int, float)) and clip > 0:
        if algo in (None, "norm"):  # a norm clip, the kind the fixes talk about
            args["gradient_clip_val"] = float(clip)
            args["max_grad_norm_source"] = f"Trainer(gradient_clip_val={clip:g})"
        else:
            args["gradient_clip_value"] = float(clip)  # an element-wise clip: not a clip of the norm
        args["gradient_clip_algorithm"] = algo or "norm"
    return args


class LightningDoctor(BridgeViews):
    """Mixed into the package's ``Callback`` (``lightning.pytorch`` or ``pytorch_lightning``)."""

    def __init__(self, heal: bool | str = False, *, cadence: int = DEFAULT_CADENCE, store: Any = None,
                 live: bool = True, report: bool = True, report_file: IO[str] | None = None,
                 heal_every: int | None = None, heal_policy: HealPolicy | None = None) -> None:
        super().__init__()
        self.bridge = Bridge("lightning", heal=heal, cadence=cadence, store=store, live=live, report=report,
                             report_file=report_file, heal_every=heal_every, heal_policy=heal_policy)
        self._optimizer: Any = None
        self._stepped = False

    # the Trainer's events ----------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.bridge.guard("start", self._start, trainer, pl_module)

    def _start(self, trainer: Any, pl_module: Any) -> None:
        opts = list(getattr(trainer, "optimizers", []) or [])
        opt = opts[0] if opts else None
        self._optimizer, self._stepped = opt, False
        scheds = [c.scheduler for c in getattr(trainer, "lr_scheduler_configs", []) or []
                  if getattr(c.scheduler, "optimizer", None) is opt]
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        self.bridge.start(pl_module, opt, scheduler=scheds, scaler=scaler)
        self.bridge.set_args(lightning_args(trainer))
        if len(opts) > 1:
            self.bridge.doctor.monitor.meta.setdefault("notes", []).append(
                f"{len(opts)} optimizers: the Doctor watches the first ({type(opt).__name__})")

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if optimizer is self._optimizer:
            self._stepped = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.bridge.guard("step", self._batch_end, trainer, batch)

    def _batch_end(self, trainer: Any, batch: Any) -> None:
        b = self.bridge
        if not b.active:
            return
        b.note_backward()
        if not self._stepped:  # accumulating: the optimizer steps after a later micro-batch
            return
        self._stepped = False
        b.step(inputs=batch)
        if b.should_stop and not trainer.should_stop:
            trainer.should_stop = True

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not getattr(trainer, "sanity_checking", False):
            self.bridge.guard("validation", self._validation_end, trainer)

    def _validation_end(self, trainer: Any) -> None:
        self.bridge.log(dict(getattr(trainer, "callback_metrics", {}) or {}))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.bridge.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.bridge.guard("crash", self.bridge.crash, exception)
        self.bridge.finish()
