"""Keras 3 on the torch backend: ``model.fit(..., callbacks=[DoctorCallback()])``.

    import os; os.environ["KERAS_BACKEND"] = "torch"   # before keras is imported
    import keras
    from traindoctor.integrations.keras import DoctorCallback

    model.fit(x, y, validation_data=(xv, yv), epochs=10, callbacks=[DoctorCallback()])  # heal=True to treat it

On the torch backend a Keras model is a ``torch.nn.Module`` and its training step a torch ``backward()``,
but the update is Keras's own optimizer, which has no torch hooks. Fed to the Doctor: the model (forward
hooks: its inputs, the first step's trace, a non-finite loss traced to its first module), the loss of each
batch as it was backpropagated (Keras's logs hold a running mean), the gradient and update statistics of
its trainable variables, taken around ``optimizer.apply`` as the Doctor takes them around a torch step, and
named by the variables' paths (``sequential/dense/kernel``), the learning rate (``optimizer.learning_rate``,
on sampled steps), the validation metrics at each epoch's end (``val_loss``, ``val_accuracy``), and the
optimizer's and ``fit``'s settings for the fixes (``learning_rate``, ``clipnorm``/``global_clipnorm``,
``epochs``).

Healing (``heal=True``) acts in Keras's terms, on what can be treated without torch's optimizer: a loss
that turns non-finite or blows up (L001, L002: ten times the highest of the last healthy ones, or ten times
the first) rolls the model's and the optimizer's variables back to the last good snapshot (taken every
``heal_every`` healthy steps) and lowers the learning rate ×0.1 through ``optimizer.learning_rate`` (a
``LearningRateSchedule`` is scaled, not replaced); when it comes back past ``max_treatments``, the variables go
back once more, healing stops and ``model.stop_training`` is set. Each act is a ``treatment`` event, as the
Doctor's healer records them. A batch whose inputs hold NaN/Inf is not an LR fault: it is rolled back past,
the LR left as it is. Overfitting is Keras's own ``EarlyStopping(restore_best_weights=True)``.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import IO, Any

import keras
import torch

from ..diagnosis import Diagnosis
from ..heal import HealPolicy
from ..heal.snapshot import TrainingState
from ..heal.treatments import nonfinite_rows, sample_ids
from ..watch.monitor import DEFAULT_CADENCE
from ._common import Bridge, BridgeViews

# Keras's loss names → the loss kinds the rules know (losskinds.py)
_LOSS_KINDS = {"sparsecategoricalcrossentropy": "cross_entropy", "categoricalcrossentropy": "cross_entropy",
               "binarycrossentropy": "bce", "meansquarederror": "mse", "mse": "mse", "meanabsoluteerror": "l1",
               "mae": "l1", "huber": "huber"}


def _float(x: Any) -> float | None:
    try:
        v = float(x.detach().reshape(-1)[0]) if isinstance(x, torch.Tensor) else float(x)
    except (TypeError, ValueError, IndexError, RuntimeError):
        return None
    return v if math.isfinite(v) else None


def keras_lr(optimizer: Any) -> float | None:
    """The learning rate the optimizer uses now (a schedule's value at this iteration)."""
    return _float(keras.ops.convert_to_numpy(optimizer.learning_rate)) if optimizer is not None else None


def optimizer_meta(optimizer: Any) -> dict[str, Any]:
    """The optimizer's settings under torch's names (the rules and causes read ``eps``, ``betas``,
    ``momentum``, ``weight_decay``): Adam's ``epsilon`` is ``eps``, ``beta_1``/``beta_2`` are ``betas``."""
    cfg = optimizer.get_config()
    out: dict[str, Any] = {"class": type(optimizer).__name__}
    lr = keras_lr(optimizer)
    if lr is not None:
        out["lr"] = lr
    if isinstance(cfg.get("epsilon"), (int, float)):
        out["eps"] = float(cfg["epsilon"])
    if isinstance(cfg.get("beta_1"), (int, float)) and isinstance(cfg.get("beta_2"), (int, float)):
        out["betas"] = [float(cfg["beta_1"]), float(cfg["beta_2"])]
    for k in ("momentum", "nesterov", "amsgrad", "rho"):
        if isinstance(cfg.get(k), (bool, int, float)):
            out[k] = cfg[k]
    wd = cfg.get("weight_decay")
    out["weight_decay"] = float(wd) if isinstance(wd, (int, float)) else 0.0
    return out


def keras_args(optimizer: Any, params: dict[str, Any] | None) -> dict[str, Any]:
    """The optimizer's and ``fit``'s settings the fixes are said in."""
    cfg = optimizer.get_config() if optimizer is not None else {}
    cls = type(optimizer).__name__
    args: dict[str, Any] = {"optimizer": cls, "learning_rate": keras_lr(optimizer),
                            "version": getattr(keras, "__version__", None)}
    lr = cfg.get("learning_rate")
    if isinstance(lr, dict):  # a serialised LearningRateSchedule
        args["learning_rate_schedule"] = lr.get("class_name")
    for k in ("clipnorm", "global_clipnorm", "clipvalue"):
        if isinstance(cfg.get(k), (int, float)) and cfg[k] > 0:
            args[k] = float(cfg[k])
    clip = args.get("global_clipnorm", args.get("clipnorm"))
    if clip is not None:  # the norm clip the fixes must not ask for again
        knob = "global_clipnorm" if "global_clipnorm" in args else "clipnorm"
        args["clip_grad_norm"] = clip
        args["max_grad_norm_source"] = f"keras.optimizers.{cls}({knob}={clip:g})"
    for k in ("epochs", "steps"):
        if params and isinstance(params.get(k), int):
            args["epochs" if k == "epochs" else "steps_per_epoch"] = params[k]
    return args


def loss_kind(model: Any) -> str | None:
    """The loss kind of a compiled model's (single) loss, from its Keras name."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else type(loss).__name__ if loss is not None else None
    if callable(loss) and not isinstance(loss, keras.losses.Loss) and hasattr(loss, "__name__"):
        name = loss.__name__
    if not name:
        return None
    kind = _LOSS_KINDS.get(name.replace("_", "").lower())
    if kind == "bce" and getattr(loss, "from_logits", False):
        kind = "bce_logits"
    return kind


class _OptimizerView:
    """What the Doctor's monitor reads of a torch optimizer, for Keras's: the trainable variables' tensors
    as one group, with the learning rate (read only when the monitor asks, on its sampled steps)."""

    def __init__(self, model: Any, optimizer: Any) -> None:
        self._model, self._optimizer = model, optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [v.value for v in self._model.trainable_weights], "lr": keras_lr(self._optimizer)}]


class _ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A LearningRateSchedule × a factor (healing lowers a schedule's rate without replacing its shape)."""

    def __init__(self, schedule: Any, factor: float) -> None:
        self.schedule, self.factor = schedule, factor

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * self.factor

    def get_config(self) -> dict[str, Any]:
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "factor": self.factor}


class KerasHealer:
    """The blow-up treatments on a Keras model and optimizer (see the module's docstring)."""

    def __init__(self, monitor: Any, model: Any, optimizer: Any, policy: HealPolicy) -> None:
        self.monitor, self.model, self.optimizer, self.policy = monitor, model, optimizer, policy
        self.treatments: list[dict[str, Any]] = []
        self.stopped: dict[str, Any] | None = None
        self.should_stop = False
        self._snap: tuple[TrainingState, list[torch.Tensor]] | None = None
        self._losses: deque[float] = deque(maxlen=20)
        self._start: float | None = None
        self._healthy = 0
        self._counts: dict[str, int] = {}

    def take(self, step: int) -> None:
        """The state step ``step`` starts from: the model's variables (parameters and buffers) and the
        optimizer's (its iteration count, learning rate and moments)."""
        old = self._snap
        model = TrainingState.take(step, self.model)
        opt = [v.value.detach().clone() for v in self.optimizer.variables]
        self._snap = (model, opt)
        if old is not None:
            old[0].drop()

    def _restore(self) -> int | None:
        if self._snap is None:
            return None
        model, opt = self._snap
        model.restore(rng=False)
        with torch.no_grad():
            for v, saved in zip(self.optimizer.variables, opt):
                v.value.copy_(saved)
        self._losses.clear()
        return model.step

    def _symptom(self, value: float) -> str | None:
        if not math.isfinite(value):
            return "L001"
        ratio = self.policy.diverge_ratio
        start = self._start
        if self._losses:
            ref = max(self._losses)
            if ref > 0 and value > ratio * ref and (start is None or value >= 0.5 * start):
                return "L002"
        if start is not None and value > ratio * start:
            return "L002"
        return None

    def on_step(self, step: int, loss: Any, ids: list[int] | None) -> None:
        if self.stopped is not None:
            return
        value = float(loss) if not isinstance(loss, torch.Tensor) else float(loss.detach().reshape(()))
        if self._start is None and math.isfinite(value) and value > 0:
            self._start = value
        code = self._symptom(value)
        if code is None:
            self._losses.append(value)
            self._healthy += 1
            if self._healthy % self.policy.every == 0:
                self.take(step + 1)
            return
        inputs = self.monitor.last_inputs(self.model)
        rows = nonfinite_rows(inputs) if inputs is not None else []
        if rows:
            self._treat(step, code, value, "nonfinite-data", "evidence: the input batch holds NaN/Inf",
                        self.policy.max_skips, quarantined=sample_ids(rows, ids, inputs))
        else:
            self._treat(step, code, value, "lr-too-high", "evidence: finite inputs, the loss blew up",
                        self.policy.max_treatments)

    def _lower_lr(self, factor: float) -> dict[str, Any]:
        opt = self.optimizer
        before = keras_lr(opt)
        lr = opt._learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            opt.learning_rate = _ScaledSchedule(lr, factor)
        else:
            opt.learning_rate = before * factor
        return {"lr": [before, keras_lr(opt)]}

    def _treat(self, step: int, code: str, value: float, cause: str, source: str, cap: int,
               quarantined: list[int] | None = None) -> None:
        n = self._counts[cause] = self._counts.get(cause, 0) + 1
        if n > cap:
            self._give_up(step, code, cause, f"it came back after {cap} treatments")
            return
        lr_before = keras_lr(self.optimizer)
        back = self._restore()
        changes: dict[str, Any] = {}
        if cause == "lr-too-high":
            if lr_before is not None and isinstance(self.optimizer._learning_rate, keras.Variable):
                self.optimizer.learning_rate = lr_before  # the rate before the roll-back: earlier treatments kept
            changes = self._lower_lr(self.policy.lr_factor)
            action = f"learning rate ×{self.policy.lr_factor:.2g}"
        else:
            action = "skip the batch (roll back past its update)"
        data: dict[str, Any] = {
            "step": step, "code": code, "cause": cause, "source": source, "action": action, "changes": changes,
            "rolled_back_to": back, "quarantined": list(quarantined or []), "treatment": n,
            "loss": value if math.isfinite(value) else str(value),
        }
        self.treatments.append(data)
        self.monitor.event("treatment", data, step=step)
        where = f"; rolled back to step {back}" if back is not None else ""
        self.monitor.on_critical(f"traindoctor: healing {code} at step {step} as {cause} — {action}{where}")

    def _give_up(self, step: int, code: str, cause: str, why: str) -> None:
        back = self._restore()
        msg = (f"{code} at step {step}: {why}; healing stopped, the run should stop"
               + (f" (the weights are back to step {back})" if back is not None else ""))
        self.stopped = {"step": step, "code": code, "cause": cause, "treatments": dict(self._counts),
                        "rolled_back_to": back, "message": msg}
        self.should_stop = True
        self.monitor.event("heal_stopped", self.stopped, step=step)
        self.monitor.on_critical(f"traindoctor: {msg}")

    def close(self) -> None:
        if self._snap is not None:
            self._snap[0].drop()
            self._snap = None


class DoctorCallback(BridgeViews, keras.callbacks.Callback):
    """traindoctor's Doctor on a Keras ``fit`` (torch backend; see the module's docstring)."""

    def __init__(self, heal: bool = False, *, cadence: int = DEFAULT_CADENCE, store: Any = None,
                 live: bool = True, report: bool = True, report_file: IO[str] | None = None,
                 heal_every: int | None = None, heal_policy: HealPolicy | None = None) -> None:
        if heal not in (True, False):
            raise ValueError(f"heal must be True or False with Keras, got {heal!r}")
        if keras.backend.backend() != "torch":
            raise RuntimeError(f"traindoctor watches Keras on the torch backend, this one runs on "
                               f"{keras.backend.backend()!r}: set KERAS_BACKEND=torch before importing keras")
        super().__init__()
        # the Doctor has no torch optimizer to heal through: the KerasHealer below does Keras's
        self.bridge = Bridge("keras", heal=False, cadence=cadence, store=store, live=live, report=report,
                             report_file=report_file)
        self._heal = heal
        policy = heal_policy or HealPolicy()
        self._policy = dataclasses.replace(policy, every=heal_every) if heal_every is not None else policy
        self.healer: KerasHealer | None = None
        self._view: _OptimizerView | None = None
        self._wrapped: Any = None  # the optimizer whose ``apply`` is wrapped

    @property
    def treatments(self) -> list[dict[str, Any]]:
        return list(self.healer.treatments) if self.healer is not None else []

    def report(self) -> Diagnosis | None:
        """End the run now if it is still going (hooks off) and return its diagnosis (printed unless
        ``report=False``): Keras calls no callback when ``fit`` raises, so call it then."""
        self._unwrap()
        return self.bridge.finish()

    # fit's events ------------------------------------------------------------------------------

    def on_train_begin(self, logs: Any = None) -> None:
        self.bridge.guard("start", self._start)

    def _start(self) -> None:
        model = self.model
        opt = getattr(model, "optimizer", None)
        self.healer, self._view = None, None
        d = self.bridge.start(model, None)
        d.name_params({id(v.value): v.path for v in model.weights})
        meta = d.monitor.meta
        meta["optimizer"] = optimizer_meta(opt) if opt is not None else {}
        if "lr" in meta["optimizer"]:
            meta["lr"] = meta["optimizer"]["lr"]
        kind = loss_kind(model)
        if kind is not None:
            meta.setdefault("loss_kind", kind)
            out = getattr(model, "outputs", None)
            shape = tuple(getattr(out[0], "shape", ()) or ()) if out else ()
            if kind == "cross_entropy" and shape and isinstance(shape[-1], int) and shape[-1] >= 2:
                meta.setdefault("num_classes", int(shape[-1]))
        self.bridge.set_args(keras_args(opt, getattr(self, "params", None)))
        if opt is None:
            return
        self._view = _OptimizerView(model, opt)
        self._wrap(opt)
        if self._heal:
            self.healer = KerasHealer(d.monitor, model, opt, self._policy)
            meta["heal"] = {"framework": "keras"}

    def _wrap(self, opt: Any) -> None:
        """The monitor's step hooks around Keras's ``optimizer.apply`` (its gradient statistics before the
        update, its update statistics after), as the Doctor puts them around a torch optimizer's step."""
        orig = opt.apply
        view, monitor, guard = self._view, self.bridge.doctor.monitor, self.bridge.guard

        def apply(*args: Any, **kwargs: Any) -> Any:
            guard("step-hooks", monitor.opt_pre, view)
            out = orig(*args, **kwargs)
            guard("step-hooks", monitor.opt_post, view)
            return out

        opt.apply = apply
        self._wrapped = opt

    def _unwrap(self) -> None:
        opt, self._wrapped = self._wrapped, None
        if opt is not None and "apply" in vars(opt):
            try:
                del opt.apply
            except Exception as exc:  # noqa: BLE001
                self.bridge.contain("unwrap", exc)

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        h = self.healer
        if h is not None and h._snap is None and self.bridge.active:
            self.bridge.guard("heal", h.take, self.bridge.doctor.monitor.step)  # the state training starts from

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.bridge.guard("step", self._batch_end)

    def _batch_end(self) -> None:
        b = self.bridge
        if not b.active:
            return
        loss = b.step()
        h = self.healer
        if loss is None or h is None:
            return
        monitor = b.doctor.monitor
        b.guard("heal", h.on_step, monitor.step - 1, loss, monitor.batch_ids)
        if h.should_stop:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if logs:
            self.bridge.guard("validation", self.bridge.log, dict(logs))

    def on_train_end(self, logs: Any = None) -> None:
        self._unwrap()
        if self.healer is not None:
            self.bridge.guard("heal-close", self.healer.close)
        self.bridge.finish()


__all__ = ["DoctorCallback", "KerasHealer", "keras_args", "optimizer_meta"]
