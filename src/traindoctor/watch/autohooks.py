"""Process-wide instrumentation for zero-code watching (``traindoctor run``) and the Doctor.

PyTorch gives global hooks for module forwards (``register_module_forward_pre_hook``) and
optimizer steps (``register_optimizer_step_pre_hook``/``post_hook``); we use those. It has no
hook at the start of ``backward()``, where the loss is in hand and the weights that produced
it are still untouched, so ``Tensor.backward`` is wrapped (one Python call per step); nor one
for loss functions, so the functional losses (which the nn loss modules call too) are wrapped
to tell training terms from evaluation losses (one Python call per loss call). The data
loader has no hook that tells which dataset indices form a batch, so the loader iterator's
index fetch is wrapped to remember them (one call per batch): that is how a NaN names its
samples. Under mixed precision the tensor backpropagated is ``GradScaler.scale(loss)``, the loss
times 65536 or so; nothing tells the scale at ``backward()``, so ``GradScaler.scale`` is wrapped
to remember which output carries which loss (one call per step). A checkpoint that does not load
(``load_state_dict(..., strict=False)`` matching none of the keys) has no hook either, and its only
trace is a return value nobody reads, so ``nn.Module.load_state_dict`` is wrapped: after the
original returns, the monitor records what it loaded (a few calls per run; a strict load that
raises propagates unchanged and is not recorded). Every wrapper calls the original unchanged and
contains its own failures; ``remove_listener`` puts every original back.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ..heal import Healer, HealPolicy
from ..heal.treatments import nonfinite_rows, sample_ids
from ..heal.verify import StepRecord, WindowRecorder, autocast_of, group_lrs, inputs_nonfinite
from ..inspect.hooks import own_global_hooks
from ..inspect.losses import WRAPPED_LOSSES
from ..inspect.trace import ConstructionSites, user_site
from .activations import compiling
from .closures import calls_closure_once, closure_first
from .losscalls import loss_arguments
from .monitor import Monitor

_listeners: list[Monitor] = []
_quiet = 0  # > 0 while the doctor itself trains (a verifying replay): the wrappers tell no listener
_orig_backward: Any = None
_orig_losses: dict[str, Any] = {}
_inside_loss = threading.local()


def _wrap_loss(name: str, orig: Any) -> Any:
    @functools.wraps(orig)
    def loss_fn(*args: Any, **kwargs: Any) -> Any:
        # torch's loss functions dispatch through their module-global name (our wrapper) when a
        # TorchFunctionMode is active: that inner call is the same loss call, not a second one;
        # inside a compiled function Dynamo traces this wrapper: it then sees the loss function alone
        if compiling() or getattr(_inside_loss, "on", False):
            return orig(*args, **kwargs)
        _inside_loss.on = True
        try:
            out = orig(*args, **kwargs)
        finally:
            _inside_loss.on = False
        if not _quiet:
            for m in list(_listeners):
                m.on_loss_call(name, orig, args, kwargs, out)
        return out

    loss_fn.__traindoctor_wrapped__ = orig  # type: ignore[attr-defined]
    return loss_fn
_orig_next_index: Any = None
_orig_next: Any = None
_orig_scale: dict[type, Any] = {}  # GradScaler classes whose own ``scale`` is wrapped
_orig_update: dict[type, Any] = {}  # ... and ``update`` (a step the scaler skipped is still a step)


def _grad_scaler_classes() -> list[type]:
    """``torch.amp.GradScaler`` and any subclass that defines ``scale`` itself (``torch.cuda.amp`` /
    ``torch.cpu.amp`` only inherit it in current torch; an older one may override it)."""
    out: list[type] = []
    for path in ("amp", "cuda.amp", "cpu.amp"):
        mod: Any = torch
        try:
            for part in path.split("."):
                mod = getattr(mod, part)
            cls = mod.GradScaler
        except AttributeError:
            continue
        if isinstance(cls, type) and "scale" in cls.__dict__ and cls not in out:
            out.append(cls)
    return out


def _wrap_scale(orig: Any) -> Any:
    @functools.wraps(orig)
    def scale(self: Any, outputs: Any) -> Any:
        out = orig(self, outputs)
        try:
            if isinstance(outputs, torch.Tensor) and isinstance(out, torch.Tensor) and out is not outputs \
                    and not _quiet:
                for m in list(_listeners):
                    m.on_grad_scale(outputs, out, self)
        except Exception:  # noqa: BLE001 - never break the scaler
            pass
        return out

    scale.__traindoctor_wrapped__ = orig  # type: ignore[attr-defined]
    return scale


def _wrap_update(orig: Any) -> Any:
    @functools.wraps(orig)
    def update(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = orig(self, *args, **kwargs)
        if not _quiet:
            for m in list(_listeners):
                m.on_scaler_update(self)  # contained by the monitor
        return out

    update.__traindoctor_wrapped__ = orig  # type: ignore[attr-defined]
    return update


_orig_load_state_dict: Any = None
_in_load = threading.local()
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_EXAMPLES_DIR = _OWN_DIR + "examples" + os.sep


def _load_state_dict(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    # a load_state_dict override that calls super(), or loads its children itself: the outermost call only
    if getattr(_in_load, "on", False):
        return _orig_load_state_dict(self, *args, **kwargs)
    _in_load.on = True
    try:
        result = _orig_load_state_dict(self, *args, **kwargs)  # raises as it would: nothing recorded then
    finally:
        _in_load.on = False
    try:
        caller = sys._getframe(1).f_code.co_filename
        if _listeners and not (caller.startswith(_OWN_DIR) and not caller.startswith(_EXAMPLES_DIR)):
            strict = kwargs.get("strict", args[1] if len(args) > 1 else True)
            site = user_site(1)
            for m in list(_listeners):
                m.on_state_dict_load(self, bool(strict), result, site)
    except Exception:  # noqa: BLE001 - never break the load
        pass
    return result


_in_backward = threading.local()


def _backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    # a Tensor subclass (a DTensor, a wrapper) reaches Tensor.backward twice: torch's backward hands it to
    # the subclass's __torch_function__, which calls Tensor.backward (this wrapper) again on the same
    # tensor; that inner call is the same backward(), not a second one
    if getattr(_in_backward, "tensor", None) is self:
        return _orig_backward(self, *args, **kwargs)
    for m in _listeners if not _quiet else ():
        if "backward" not in m._disabled:
            try:
                m.on_backward(self)
            except Exception as exc:  # noqa: BLE001 - never break the script's backward()
                m.contain("backward", exc)
    outer = getattr(_in_backward, "tensor", None)
    _in_backward.tensor = self
    try:
        return _orig_backward(self, *args, **kwargs)
    finally:
        _in_backward.tensor = outer


def _next_index(self: Any) -> Any:
    idx = _orig_next_index(self)
    try:
        q = self.__dict__.get("_traindoctor_ids")
        if q is None:
            q = self.__dict__["_traindoctor_ids"] = deque()
        q.append(idx)
    except Exception:  # noqa: BLE001 - never break the loader
        pass
    return idx


def _next(self: Any) -> Any:
    data = _orig_next(self)
    try:
        q = self.__dict__.get("_traindoctor_ids")
        if q:
            idx = q.popleft()
            ids = list(idx) if isinstance(idx, (list, tuple)) else None
            if ids is not None and not all(isinstance(i, int) for i in ids):
                ids = None
            for m in _listeners:
                m.set_batch_ids(ids)
                if m.wants_batches:
                    m.set_loader_batch(data, getattr(self, "_dataset", None))
                if m.wants_batch_source:
                    m.set_batch_source(data, getattr(self, "_dataset", None))
    except Exception:  # noqa: BLE001
        pass
    return data


def add_listener(monitor: Monitor) -> None:
    """Route backward() and loader batches to ``monitor`` (patches installed on first use)."""
    global _orig_backward, _orig_next_index, _orig_next, _orig_load_state_dict
    if not _listeners:
        from torch.utils.data import dataloader as dl

        _orig_backward = torch.Tensor.backward
        torch.Tensor.backward = _backward  # type: ignore[method-assign]
        base = dl._BaseDataLoaderIter
        _orig_next_index, _orig_next = base._next_index, base.__next__
        base._next_index = _next_index  # type: ignore[method-assign]
        base.__next__ = _next  # type: ignore[method-assign]
        import torch.nn.functional as F

        for name in WRAPPED_LOSSES:
            orig = getattr(F, name, None)
            if orig is not None:
                _orig_losses[name] = orig
                setattr(F, name, _wrap_loss(name, orig))
        for cls in _grad_scaler_classes():
            _orig_scale[cls] = cls.__dict__["scale"]
            cls.scale = _wrap_scale(_orig_scale[cls])  # type: ignore[method-assign]
            if "update" in cls.__dict__:
                _orig_update[cls] = cls.__dict__["update"]
                cls.update = _wrap_update(_orig_update[cls])  # type: ignore[method-assign]
        _orig_load_state_dict = nn.Module.load_state_dict
        functools.update_wrapper(_load_state_dict, _orig_load_state_dict)  # its signature and docstring
        nn.Module.load_state_dict = _load_state_dict  # type: ignore[method-assign]
    _listeners.append(monitor)


@contextlib.contextmanager
def quiet(monitor: Monitor) -> Iterator[None]:
    """While the doctor itself trains the user's model (a verifying replay): no wrapper tells a
    listener, the monitor's hooks do nothing, and nothing is recorded as the run's."""
    global _quiet
    _quiet += 1
    monitor.quiet += 1
    monitor._own += 1
    try:
        yield
    finally:
        _quiet -= 1
        monitor.quiet -= 1
        monitor._own -= 1


def remove_listener(monitor: Monitor) -> None:
    if monitor in _listeners:
        _listeners.remove(monitor)
    if not _listeners and _orig_backward is not None:
        from torch.utils.data import dataloader as dl

        torch.Tensor.backward = _orig_backward  # type: ignore[method-assign]
        dl._BaseDataLoaderIter._next_index = _orig_next_index  # type: ignore[method-assign]
        dl._BaseDataLoaderIter.__next__ = _orig_next  # type: ignore[method-assign]
        import torch.nn.functional as F

        for name, orig in _orig_losses.items():
            setattr(F, name, orig)
        _orig_losses.clear()
        for cls, orig in _orig_scale.items():
            cls.scale = orig  # type: ignore[method-assign]
        _orig_scale.clear()
        for cls, orig in _orig_update.items():
            cls.update = orig  # type: ignore[method-assign]
        _orig_update.clear()
        nn.Module.load_state_dict = _orig_load_state_dict  # type: ignore[method-assign]


class StopTraining(BaseException):
    """Raised into a healed script when healing gave up (its fault outlived every treatment tried);
    ``traindoctor run`` ends the script there, as Ctrl-C would, and reports. Overfitting never raises it:
    the best weights are kept and later updates dropped, so the script runs to its end."""


class AutoWatch:
    """Finds the model(s) and optimizer(s) of an unmodified script and feeds a Monitor.

    Discovery: until the first optimizer step, global forward hooks note the outermost modules
    called with gradients on (the model, and nn loss modules). At the first step the models are
    those outermost modules holding parameters the optimizer updates; the global module hooks are
    then removed, so later steps pay only for one pre-hook on each model.
    """

    def __init__(self, monitor: Monitor, *, heal: bool = False, verify: bool = False,
                 heal_policy: HealPolicy | None = None) -> None:
        self.monitor = monitor
        # healing (``traindoctor run --heal``): a Healer on the model and optimizer found at the first step;
        # with ``verify`` each step is recorded (references) so a fix can be replayed before it is applied
        self._heal = heal or verify
        self._verify = verify
        self._heal_policy = heal_policy
        self.healer: Healer | None = None
        self.recorder: WindowRecorder | None = None
        # the last training output of an outermost module: (weak reference, module)
        self._last_out: tuple[Any, nn.Module] | None = None
        self._out_handle: Any = None
        self._stop_raised = False
        if verify:  # from the first step on: the first snapshot is taken before the first update
            self.recorder = WindowRecorder(capacity=2 * (heal_policy or HealPolicy()).every + 1)
            monitor.on_train_loss_call = self._capture
        self._depth = 0
        self._roots: list[nn.Module] = []
        self._loss_modules: list[str] = []
        self._discovering = True
        mm = torch.nn.modules.module
        # every hook torch calls is contained: a failure is said once and turns that hook off
        self._mod_handles = [
            mm.register_module_forward_pre_hook(monitor.contained("discovery-hook", self._g_pre)),
            mm.register_module_forward_hook(monitor.contained("discovery-hook", self._g_post)),
        ]
        own_global_hooks(self._mod_handles, True)
        import torch.optim.optimizer as om
        self._contained_post = monitor.contained("step-hook", monitor.opt_post)
        self._contained_pre = monitor.contained("step-pre-hook", lambda o: self._opt_pre(o))
        self._opt_handles = [
            om.register_optimizer_step_pre_hook(self._step_pre),
            om.register_optimizer_step_post_hook(lambda o, a, k: self._opt_post(o)),
        ]
        add_listener(monitor)
        # where each submodule is built, for findings that name a line (before the script runs)
        self.sites = ConstructionSites()
        try:
            self.sites.install()
            monitor.sites = self.sites
        except Exception as exc:  # noqa: BLE001
            monitor.event("doctor_error", {"part": "construction-sites", "message": repr(exc)})

    def _g_pre(self, module: nn.Module, args: Any) -> None:
        try:
            if self._depth == 0 and torch.is_grad_enabled() and self._discovering:
                if all(module is not r for r in self._roots):
                    self._roots.append(module)
                    self.monitor.candidates.append(module)
                if module.training:
                    self.monitor.note_training_forward(module, args, {})
                    if isinstance(module, nn.modules.loss._Loss):
                        self._loss_modules.append(type(module).__name__)
                        self.monitor.meta["loss_module"] = type(module).__name__
            self._depth += 1
        except Exception:  # noqa: BLE001
            pass

    def _g_post(self, module: nn.Module, args: Any, out: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self.recorder is not None:
            self._note_output(module, args, out)

    def _step_pre(self, opt: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Every optimizer's step, as it begins: a closure handed to ``step`` (Lightning's training step)
        is evaluated first, so the model's forward and this step's gradients are seen (the script's own
        code: its exception propagates as from ``step``); then the watcher's pre-step work, contained."""
        new = closure_first(opt, args, kwargs) if calls_closure_once(opt) and not _quiet else None
        self._contained_pre(opt)
        return new

    def _opt_pre(self, opt: Any) -> None:
        if self._discovering:
            self._finish_discovery(opt)
        self.monitor.opt_pre(opt)

    def _opt_post(self, opt: Any) -> None:
        """The optimizer step is over: the monitor's bookkeeping, then healing judges the step."""
        if self.monitor.quiet:
            return
        h = self.healer
        if h is None or not h.alive or opt is not h.optimizer:
            self._contained_post(opt)
            return
        loss, step = h.guarded(self.monitor.pending_loss), self.monitor.step  # a failure turns healing off, never the run
        self._contained_post(opt)
        if loss is not None:
            h.guarded(h.on_step, step, loss, self.monitor.last_inputs(h.model), self.monitor.batch_ids)
        if h.stopped and not self._stop_raised:  # healing gave up: stop burning compute
            self._stop_raised = True
            raise StopTraining(h.stopped["message"])

    def _start_healing(self, opt: Any) -> None:
        """A Healer on the first model the optimizer updates, with the schedulers that drive it."""
        if not self.monitor.models:
            self.monitor.meta.setdefault("notes", []).append(
                "healing is off: no model module was seen running forward before the first optimizer step")
            return
        scheds = [s for s in gc.get_referrers(opt) if isinstance(s, LRScheduler) and s.optimizer is opt]
        # a script cannot be stopped without losing what it does after its loop: overfitting freezes instead
        policy = dataclasses.replace(self._heal_policy or HealPolicy(), freeze_on_overfit=True)
        model = self.monitor.models[0]
        if self._verify:
            self._out_handle = model.register_forward_hook(self.monitor.contained("replay-capture", self._note_output))
        h = Healer(self.monitor, model, opt, scheds, self.monitor.grad_scaler, policy, self.monitor.snapshot,
                   recorder=self.recorder, quiet=lambda: quiet(self.monitor))
        self.healer = h
        self.monitor.on_val_loss = lambda step, v: h.guarded(h.on_val, step, v)
        self.monitor.on_nonfinite_loss = lambda step: h.guarded(self._poisoned, h)
        self.monitor.on_skipped_step = lambda step, loss: self._skipped(h, step, loss)
        if policy.arch:
            self.monitor.on_activation = lambda step, kind, name, v: h.guarded(h.on_activation, step, kind, name, v)
        self.monitor.meta["heal"] = {"schedulers": [type(s).__name__ for s in scheds], "verify": self._verify,
                                     "arch": policy.arch}

    def _skipped(self, h: Healer, step: int, loss: Any) -> None:
        """The GradScaler skipped this step's update: healing judges it as a step whose update was dropped
        (a run whose every step is skipped would otherwise never be judged)."""
        h.guarded(h.skipped_update)
        h.guarded(h.on_step, step, loss, self.monitor.last_inputs(h.model), self.monitor.batch_ids)
        if h.stopped and not self._stop_raised:
            self._stop_raised = True
            raise StopTraining(h.stopped["message"])

    def _poisoned(self, h: Healer) -> None:
        """A non-finite loss at a backward: the rows of the model's inputs that hold NaN/Inf, by sample id."""
        inputs = self.monitor.last_inputs(h.model)
        rows = nonfinite_rows(inputs)
        if rows:
            h.note_bad_rows(sample_ids(rows, self.monitor.batch_ids, inputs))

    def _note_output(self, module: nn.Module, args: Any, out: Any) -> None:
        if module.training and torch.is_grad_enabled() and isinstance(out, torch.Tensor):
            self._last_out = (weakref.ref(out), module)

    def _capture(self, idx: int, orig: Any, args: tuple, kwargs: dict) -> None:
        """A training loss call: the step is replayable when its loss is one call on the model's output."""
        rec = self.recorder
        if rec is None:
            return
        step = self.monitor.step
        if idx > 0:  # a second term (an auxiliary loss): one call does not give this step's loss
            rec.discard(step)
            return
        bound = loss_arguments(getattr(orig, "__name__", "loss"), orig, args, kwargs)
        inp, target = bound.pop("input", None), bound.pop("target", None)
        out = self._last_out[0]() if self._last_out is not None else None
        inputs = self.monitor.last_inputs(self._last_out[1]) if self._last_out is not None else None
        if out is None or inp is not out or inputs is None:
            return  # the loss is computed on something made from the output (a slice, a reshape): not replayed
        model = self._last_out[1] if self._last_out is not None else None
        amp = autocast_of(model) if model is not None else None
        lrs = group_lrs(self.healer.optimizer) if self.healer is not None else None
        rec.add(StepRecord(step, inputs[0], inputs[1], orig, target, bound, inputs_nonfinite(inputs), amp, lrs))

    def _finish_discovery(self, opt: Any) -> None:
        self._discovering = False
        for h in self._mod_handles:
            h.remove()
        own_global_hooks(self._mod_handles, False)
        self._mod_handles = []
        try:
            opt_params = {id(p) for g in opt.param_groups for p in g["params"]}
            for root in self._roots:
                if any(id(p) in opt_params for p in root.parameters()):
                    self.monitor.attach_model(root)
            self.monitor.meta["optimizer"] = {
                "class": type(opt).__name__,
                **{k: v for k, v in opt.param_groups[0].items() if k != "params" and isinstance(v, (int, float, bool, str))},
            }
            if not self.monitor.models:
                self.monitor.meta.setdefault("notes", []).append(
                    "no model module was seen running forward before the first optimizer step; "
                    "per-layer names and replays are unavailable"
                )
            # The first forward ran before the model was known: the pre-hook missed its inputs.
            # Nothing to replay for step 0 from here; later steps are captured.
        except Exception as exc:  # noqa: BLE001
            self.monitor.event("doctor_error", {"part": "discovery", "message": repr(exc)})
        if self._heal:
            self.monitor.contained("heal", self._start_healing)(opt)

    def close(self) -> None:
        self.monitor.on_train_loss_call = None
        if self._out_handle is not None:
            self._out_handle.remove()
            self._out_handle = None
        h = self.healer
        if h is not None:
            self.monitor.on_val_loss = None
            self.monitor.on_activation = None
            self.monitor.on_nonfinite_loss = None
            self.monitor.on_skipped_step = None
            h.guarded(h.close)
        self.sites.remove()
        for h in self._mod_handles + self._opt_handles:
            h.remove()
        own_global_hooks(self._mod_handles, False)
        self._mod_handles, self._opt_handles = [], []
        remove_listener(self.monitor)
