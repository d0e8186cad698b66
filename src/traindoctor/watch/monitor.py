"""The live monitor: PyTorch hooks in the training process, judged elsewhere.

Cost discipline (the doctor must cost ≤ 2 % of a step at the default cadence):

* every step: the loss is read once (one scalar read on the CPU); on an accelerator it is not read
  at all: it is copied into a buffer on its device (``devicebuffer.py``), which the writer thread reads
  every ``cadence`` steps (at most 256), one transfer for the block, with each step's value, so the
  exact step of a first non-finite loss is still known; the training thread never waits for the device;
* every ``cadence`` steps ("sampled steps"): per-parameter gradient norms and update/weight
  ratios with fused ``torch._foreach_norm`` calls in the optimizer step hooks, and activation
  statistics from forward hooks that are armed for that one step and removed afterwards;
* never a per-tensor ``.item()``: each sampled step produces a handful of small tensors that the
  writer thread turns into numbers every ``flush_interval`` seconds and writes to the run store;
* memory and store bounded: the series are kept by a :class:`~traindoctor.retention.SeriesTable` (every
  point of the last steps and around every event, older stretches downsampled keeping their spikes), so
  a run of ten million steps holds and stores about what one of a few tens of thousands does;
* once, at the first step: an in-memory training set is scanned for NaN/Inf rows by a background
  thread (``datascan.py``, bounded), whose result is recorded and announced on the training thread
  at the next batch.

Under a ``GradScaler`` the tensor backpropagated is the loss times the scale; the wrapped
``GradScaler.scale`` tells which tensor carries which loss, and the loss is recorded unscaled.

Faults no curve shows are recorded as facts for the rules, each at a moment that costs nothing on
the other steps:

* ``state_dict_load`` (every ``load_state_dict``, through the wrapper in ``autohooks.py``) and
  ``frozen_init`` (once, at the first optimizer step: frozen weights still at PyTorch's default
  initialisation): a checkpoint that never loaded under a frozen backbone (M013);
* ``eval_train_mode``: at an evaluation (a loss computed with gradients off), dropout/BatchNorm
  still in training mode; a few attribute reads once per evaluation, recorded once (V008);
* ``stale_grad``: on sampled steps, the gradients the first ``backward()`` after an optimizer step
  finds not cleared, one fused norm (G008);
* functional ReLU/sigmoid/tanh (``F.relu``, ``x.tanh()``), which have no module to hook: measured
  by the first step's trace, then on sampled steps by ``trace.ActivationProbe``, a torch-function
  mode armed for that one forward (``dead_frac/relu@train.py:23``; A001/A002);
* ``data_leakage`` (``live: True``): the training set hashed by the dataset scan's thread (or the
  data window's batches), the first evaluation's inputs hashed when its loss is computed (D006);
* the loss's dtype at a non-finite loss and ``meta["precision"]`` (parameter dtypes, autocast at
  the first training forward): an overflow of float16 (L001's precision-overflow).

When the loss turns non-finite, the weights that produced it are still untouched (the loss is
caught at ``backward()``, before ``optimizer.step()``), so the monitor replays that forward pass
once, with the RNG and module buffers saved and restored, to name the first module whose output
went non-finite and the samples behind it. That costs one forward pass, once per run.

Its parts (``losstap.py``, ``gradsampler.py``, ``activations.py``, ``evaluation.py``, ``leakage.py``,
``firststep.py``, ``forensics.py``, ``writer.py`` …) are mixins of :class:`Monitor`, not objects it
holds: each sets its state in its own ``_init_`` method, on the monitor itself, where the other parts
read it, so the per-step path reaches any of it with no extra attribute hop or call.

The monitor never changes the run it watches: hooks return nothing, tensors are only read, the
RNG is restored after a replay, and any error of its own is caught, reported once, and turns
that part of the monitoring off while training goes on.

A model compiled with ``torch.compile(model)`` (an ``OptimizedModule``) is watched from outside its
compiled region: the monitor's hooks sit on the wrapper, never on the modules inside it (a hook there would
be traced into the graph, or break it, or be silently skipped), so nothing it does causes a graph break;
the doctor's global module hooks and the first step's torch-function mode step aside while the compiled
module runs, so the graph compiled at the first step is the one every later step uses (no recompilation
for the doctor); the per-layer activation statistics inside a compiled model are not sampled (a note says
so); parameter names drop the wrapper's ``_orig_mod.`` prefix, as the uncompiled model names them. Any hook
of the doctor's that Dynamo reaches while tracing (a compiled function that calls the model and the loss, a
model compiled in place with ``model.compile()``) returns at once there (``compiling()`` is constant-folded
to True), as does the loss-function wrapper, which hands Dynamo the loss function itself: no graph break,
and the loss is still read at ``backward()``, outside. Such a function is compiled once more at the second
step (the hooks Dynamo guards on change after the first step: zero-code discovery's, the first sampled
step's activation hooks); ``tests/watch/test_compile.py``.

``Monitor`` is a thin façade: it owns the hooks, the containment and what every part reads (the step, the
models, the last inputs), and mixes in its parts, one module each: the loss tap (``losstap.py``,
``gradscaler.py``), the step clock with the gradient and update sampler (``gradsampler.py``,
``stalegrads.py``), the activation sampler (``activations.py``), the loss-function calls (``losscalls.py``),
evaluation capture (``evaluation.py``, ``leakage.py``), the first step (``firststep.py``, ``lossgraph.py``,
``dataprofile.py``, ``scanning.py``, ``checkpoints.py``), non-finite forensics (``forensics.py``) and the
writer thread (``writer.py``). Each part sets its own state in an ``_init_`` method, but on the monitor
itself rather than behind an attribute of its own: the parts read one another's state on the per-step path
(loss read, backward wrapper, cadence check), which costs no more than it did in one class.
"""
from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..inspect.hooks import _own_global_hooks
from ..inspect.tensors import param_dtypes
from ..inspect.trace import leave_mode
from ..report.safe import safe
from ..retention import DEFAULT_RETENTION, Retention
from ..run import Event, Run
from .activations import ActivationSampler, compiled_in_place, compiled_wrapper, compiling
from .checkpoints import CheckpointWatch
from .dataprofile import PROFILE_MAX_STEPS, PROFILE_SAMPLES, PROFILE_STEPS, DataWindow
from .devicebuffer import LossBuffer
from .evaluation import EvaluationCapture
from .firststep import CONFIG_CODES, FirstStep
from .forensics import NonFiniteForensics
from .gradsampler import GradSampler
from .gradscaler import GradScalerTap
from .leakage import LeakageCheck
from .losscalls import LossCalls
from .lossgraph import LossGraph
from .losstap import LossTap
from .scanning import DatasetScan
from .stalegrads import StaleGrads
from .writer import StoreWriter

# what other modules import from here (the parts' own modules hold them now)
__all__ = ["CONFIG_CODES", "DEFAULT_CADENCE", "PROFILE_MAX_STEPS", "PROFILE_SAMPLES", "PROFILE_STEPS", "Monitor"]

DEFAULT_CADENCE = 50  # sampled steps: keeps the watcher under 2 % of a step (benchmarks/overhead.py)
_MAX_LOSS_BLOCK = 256  # an accelerator's losses are read at least every this many steps
_MAX_PENDING = 16384  # values queued for the writer thread before the training thread writes them itself
# torch's global module forward-hook tables (keyed by handle id), which dynamo guards on
_GLOBAL_FORWARD_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_always_called",
                         "_global_forward_hooks_with_kwargs")



def _param_owners(model: nn.Module) -> dict[int, tuple[str, bool]]:
    """Per parameter (by id): the class of the module that holds it, and whether that module is, or sits
    inside, an attention module (a class named ``*Attention*``): what G002 leaves out of a network's depth."""
    out: dict[int, tuple[str, bool]] = {}

    def walk(mod: nn.Module, inside: bool) -> None:
        inside = inside or "Attention" in type(mod).__name__
        for p in mod.parameters(recurse=False):
            out.setdefault(id(p), (type(mod).__name__, inside))
        for child in mod.children():
            walk(child, inside)

    walk(model, False)
    return out

class Monitor(LossTap, GradScalerTap, GradSampler, StaleGrads, ActivationSampler, LossCalls, EvaluationCapture,
              LeakageCheck, FirstStep, LossGraph, DataWindow, DatasetScan, CheckpointWatch, NonFiniteForensics,
              StoreWriter):
    """Collects signals from hooks into a Run (and a run store), shared by Doctor and ``run``."""

    def __init__(
        self,
        *,
        cadence: int = DEFAULT_CADENCE,
        store: Any = None,
        flush_interval: float = 1.0,
        on_critical: Callable[[str], None] | None = None,
        explicit_steps: bool = False,
        retention: Retention | None = DEFAULT_RETENTION,
        defer_loss_reads: bool | None = None,
    ) -> None:
        """``retention``: how much of each series is kept (None: everything, as a short run is anyway);
        ``defer_loss_reads``: keep each step's loss in a device buffer read every ``cadence`` steps by the
        writer thread (None: when the loss is not on the CPU; True: also on the CPU, e.g. to test that path)."""
        if cadence < 1:
            raise ValueError(f"cadence must be a positive number of steps, got {cadence}")
        self.cadence = cadence
        self.retention = retention
        self.defer_loss_reads = bool(defer_loss_reads)
        self._loss_buf = LossBuffer(min(cadence, _MAX_LOSS_BLOCK))
        self.store = store
        self.flush_interval = flush_interval
        self.on_critical = on_critical or (lambda msg: print(safe(msg), file=sys.stderr, flush=True))
        self.explicit_steps = explicit_steps

        self.step = 0  # index of the step being built (the loss of this step is pending)
        self.opt_steps = 0  # optimizer steps taken (primary optimizer)
        self.meta: dict[str, Any] = {"cadence": cadence}
        self._disabled: set[str] = set()
        self._errors_reported: set[str] = set()

        self.models: list[nn.Module] = []
        # outermost modules seen before the models are known (zero-code discovery)
        self.candidates: list[nn.Module] = []
        self._param_names: dict[int, str] = {}
        self._last_inputs: dict[int, tuple[tuple, dict]] = {}
        self._batch_ids: list[int] | None = None
        self._handles: list[Any] = []
        self._closed = False
        self.sites: Any = None  # ConstructionSites, when the launcher installed them before the script ran
        self._precision_seen = False  # autocast at the model's first training forward
        self._own = 0  # > 0 while the doctor itself runs the model (replay, eval-mode gap)
        self.quiet = 0  # > 0 while the doctor itself trains the model (a verifying replay): hooks do nothing
        # called with (step, validation loss) when an evaluation's loss is known (healing listens)
        self.on_val_loss: Callable[[int, float], None] | None = None
        # called with (step) when a backward's loss is non-finite (healing looks at the batch then)
        self.on_nonfinite_loss: Callable[[int], None] | None = None
        # called with (step, loss) when a GradScaler skipped the step's update (healing judges that step)
        self.on_skipped_step: Callable[[int, Any], None] | None = None
        # called with (step, "dead_frac", module name, value) on sampled steps (architecture repairs listen)
        self.on_activation: Callable[[int, str, str, Any], None] | None = None
        # called with (term index, loss function, args, kwargs) at each training loss call (verifying listens)
        self.on_train_loss_call: Callable[[int, Callable[..., Any], tuple, dict], None] | None = None
        # each part declares its own state (the parts read one another's: it is one object)
        self._init_loss_tap()
        self._init_grad_scaler()
        self._init_grad_sampler()
        self._init_stale_grads()
        self._init_activations()
        self._init_loss_calls()
        self._init_evaluation()
        self._init_leakage()
        self._init_first_step()
        self._init_data_window()
        self._init_dataset_scan()
        self._init_checkpoints()
        self._init_forensics()
        self._init_writer()

        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._writer_main, name="traindoctor-writer", daemon=True)
        self._writer.start()

    def _guard(self, part: str, fn: Callable[..., Any], *args: Any) -> Any:
        if part in self._disabled:
            return None
        tr = self._trace
        if tr is not None:
            tr.paused += 1  # the first step is being traced: the doctor's own operations are not the script's
        pr = self._probe
        if pr is not None:
            pr.paused += 1
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the doctor must never break the run
            self.contain(part, exc)
            return None
        finally:
            if tr is not None:
                tr.paused -= 1
            if pr is not None:
                pr.paused -= 1

    def contain(self, part: str, exc: BaseException, what: str | None = None) -> None:
        """``part`` of the doctor failed: turn it off, and say so once (an event the report notes, one
        line on stderr), however often it is reached again."""
        if part in self._disabled and part in self._errors_reported:
            return
        self._disabled.add(part)
        tbs = traceback.extract_tb(exc.__traceback__)
        at = f" ({tbs[-1].filename}:{tbs[-1].lineno})" if tbs else ""
        msg = what or f"{part} failed and was turned off: {type(exc).__name__}: {exc}{at}"
        self.event("doctor_error", {"part": part, "message": msg})
        if part not in self._errors_reported:
            self._errors_reported.add(part)
            print(safe(f"traindoctor: internal error contained, training goes on — {msg}"), file=sys.stderr, flush=True)

    def contained(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a hook torch calls on the training thread: a failure is contained (:meth:`contain`)
        and the hook does nothing from then on; it never raises into the script. A module hook reached
        inside a compiled region (Dynamo tracing a compiled function, or a module compiled in place) does
        nothing there: the doctor watches from outside it, and adds nothing to the graph. The optimizer's
        step hooks always run (they drive the step clock), as they did before."""
        skip_compiled = not part.startswith("step")

        def hook(*args: Any, **kwargs: Any) -> Any:
            if (skip_compiled and compiling()) or part in self._disabled or self.quiet:
                return None
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the doctor must never break the run
                self.contain(part, exc)
                return None

        return hook

    def event(self, kind: str, data: dict[str, Any], step: int | None = None) -> None:
        ev = Event(self.step if step is None else step, kind, data)
        with self._lock:
            self._events.append(ev)
            self._pending_events.append(ev)

    def last_inputs(self, model: nn.Module) -> tuple[tuple, dict] | None:
        """The (args, kwargs) of ``model``'s last training forward (references, not copies), or None."""
        return self._last_inputs.get(id(model))

    @property
    def batch_ids(self) -> list[int] | None:
        """The dataset indices of the batch being trained on, when a DataLoader gave them."""
        return self._batch_ids

    def record(self, name: str, value: Any, step: int | None = None) -> None:
        """Queue a value (float, or tensor read later by the writer thread). A loss that is a tensor (an
        accelerator's, not read on the training thread) goes to the device buffer, read every few steps."""
        st = self.step if step is None else step
        pending = self._pending
        if name == "loss" and isinstance(value, torch.Tensor) and "loss-buffer" not in self._disabled:
            try:
                for block in self._loss_buf.push(st, value):
                    pending.append(("@loss_block", st, block))
                return
            except Exception as exc:  # noqa: BLE001 - the buffer fails: each loss is queued alone, as before
                self.contain("loss-buffer", exc)
        pending.append((name, st, value))
        if len(pending) > _MAX_PENDING:
            # the writer thread lags (steps of microseconds that never release the GIL): the training
            # thread writes the backlog itself, so the queue, and memory, stay bounded
            self._guard("writer", self._materialise)

    def _drain_losses(self) -> None:
        """Hand the buffered losses to the writer now (before a snapshot, at the end)."""
        if len(self._loss_buf) and "loss-buffer" not in self._disabled:
            block = self._loss_buf.drain()
            if block is not None:
                self._pending.append(("@loss_block", block[0][-1], block))

    def attach_model(self, model: nn.Module) -> None:
        if any(m is model for m in self.models):
            return
        self.models.append(model)
        prefix = "" if len(self.models) == 1 else f"model{len(self.models) - 1}."
        pinfo = self.meta.setdefault("params", {})
        compiled = compiled_wrapper(model)
        if compiled or compiled_in_place(model):
            self.meta["compiled"] = True
            inner = model._orig_mod if compiled else model
            self.meta.setdefault("notes", []).append(
                f"{type(inner).__name__} is compiled (torch.compile): it is watched from outside its "
                "compiled region; the activations inside it are not sampled")
        owners = _param_owners(model)
        for name, p in model.named_parameters():
            owner, attention = owners.get(id(p), (None, False))
            if compiled:
                name = name.removeprefix("_orig_mod.")
            self._param_names.setdefault(id(p), prefix + name)
            pinfo[prefix + name] = {"numel": int(p.numel()), "ndim": int(p.dim()), "requires_grad": bool(p.requires_grad),
                                    "module": owner, "attention": attention}
        self._has_train_only = any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) for m in model.modules())
        try:
            self._handles.append(model.register_forward_pre_hook(self.contained("forward-hook", self._pre_forward),
                                                                 with_kwargs=True))
        except RuntimeError as exc:  # a TorchScript module takes no hooks: watch it from the outside only
            self.meta.setdefault("notes", []).append(
                f"{type(model).__name__}: {exc}; its inputs, first step and activations are not inspected")
            self._disabled.update({"activations", "trace"})
        info = self.meta.setdefault("models", [])
        info.append(
            {
                "class": type(model).__name__,
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "trainable": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
                "modules": int(sum(1 for _ in model.modules())),
            }
        )
        self._arm_activations()

    def attach_optimizer(self, opt: torch.optim.Optimizer) -> None:
        """Hooks on one optimizer (Doctor mode). The launcher uses the global hooks instead."""
        self._handles.append(opt.register_step_pre_hook(self.contained("step-hook", lambda o, a, k: self.opt_pre(o))))
        self._handles.append(opt.register_step_post_hook(self.contained("step-hook", lambda o, a, k: self.opt_post(o))))

    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if torch.is_grad_enabled():
            if module.training:
                # a reference, not a copy: used only to replay this forward if the loss goes non-finite
                self._last_inputs[id(module)] = (args, kwargs)
                if not self._precision_seen:
                    self.note_first_forward(module)
                if self._trace_state == "pending":
                    self.begin_trace(module, args, kwargs)
                if self._trace is not None:
                    self._guard("compiled", self._lift_for_compiled, module)
            if self._in_eval:  # a training forward ends the evaluation before it
                self._in_eval = False
                self._eval_checked = False
                if self._leak_state in ("collecting", "collected"):
                    self._guard("leakage", self._leak_end_of_evaluation)
        elif not self._own and self._watch_eval:
            # an evaluation's forward (gradients off): its mode and its inputs are checked here, so a
            # validation computed by hand, with no torch loss function, is seen as well
            self._guard("eval-forward", self._on_eval_forward, module, args, kwargs)

    def note_training_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A training forward of a model not attached yet (``AutoWatch``, before the first optimizer step
        names the models): its inputs kept for a replay, its precision read, the first step's trace begun."""
        self._last_inputs[id(module)] = (args, kwargs)
        if not self._precision_seen:
            self.note_first_forward(module)
        if self._trace_state == "pending":
            self.begin_trace(module, args, kwargs)
        self._guard("compiled", self._lift_for_compiled, module)

    def _lift_for_compiled(self, module: nn.Module) -> None:
        """A compiled module (``torch.compile``'s wrapper) is about to run: the doctor's own global module hooks
        (zero-code discovery, the first step's trace) and the trace's torch-function mode step aside while its
        compiled region runs, and come back when it returns, where the global forward hooks it skipped are
        called for the wrapper as torch would have. Dynamo guards on both: a graph compiled while they were
        there would be compiled again at the next step, when they are gone; with them aside the graph
        compiled at the first step is the one every later step uses. The modules inside a compiled region
        are not the script's Python calls anyway (the trace and discovery skip them)."""
        if not compiled_wrapper(module):
            return
        tr = self._trace
        mode_on = tr is not None and bool(getattr(tr, "active", False))
        mm = torch.nn.modules.module
        saved: dict[str, list[tuple[int, Any]]] = {}
        lifted: set[int] = set()
        for n in _GLOBAL_FORWARD_HOOKS:
            d = getattr(mm, n, None)
            if not d or not any(k in _own_global_hooks for k in d):
                continue
            saved[n] = list(d.items())
            for k in [k for k in d if k in _own_global_hooks]:
                lifted.add(k)
                del d[k]
        if not saved and not mode_on:
            return
        if mode_on:
            leave_mode(tr)

        def back(m: nn.Module, args: Any, out: Any) -> None:
            handle.remove()
            for n, items in saved.items():
                d = getattr(mm, n)
                now = dict(d)
                had = {k for k, _ in items}
                d.clear()
                d.update((k, now.get(k, v)) for k, v in items if k in now or (k in lifted and k in _own_global_hooks))
                d.update((k, v) for k, v in now.items() if k not in had)
            kw = dict(saved.get("_global_forward_hooks_with_kwargs", ()))
            for k, hook in saved.get("_global_forward_hooks", ()):
                if k in lifted and k in _own_global_hooks and not kw.get(k):
                    hook(m, args, out)  # the doctor's own global forward hooks, for the wrapper they skipped
            if mode_on and self._trace is tr and tr.active:
                tr.__enter__()

        handle = module.register_forward_hook(self.contained("compiled", back), always_call=True)

    def note_first_forward(self, module: nn.Module) -> None:
        """The model's first training forward: the precision it runs in (autocast on, and its dtype)."""
        if not self._precision_seen and next(module.parameters(), None) is not None:
            self._precision_seen = True
            self._guard("precision", self._note_precision, module)

    def _note_precision(self, module: nn.Module) -> None:
        dev = next(module.parameters()).device.type
        try:
            on = torch.is_autocast_enabled(dev)
            dt = torch.get_autocast_dtype(dev) if on else None
        except (TypeError, RuntimeError):  # an older torch: the device-less CUDA query only
            on = torch.is_autocast_enabled()
            dt = torch.get_autocast_gpu_dtype() if on else None
        models = self._known_models() or [module]
        self.meta["precision"] = {"param_dtypes": param_dtypes(models),
                                  "autocast": str(dt).replace("torch.", "") if on and dt is not None else None}

    def close(self) -> Run:
        """Stop hooks and the writer, flush everything, return the Run."""
        if not self._closed:
            self._closed = True
            th = self._scan_thread
            if th is not None and th.is_alive():
                th.join(timeout=10)  # bounded: MAX_SCAN_BYTES of memory reads
            if self._scan_result is not None:
                self._guard("dataset-scan", self._publish_scan)
            if self._trace_state == "active":
                self._guard("trace", self._end_trace, None)
            if self._profiling:
                self._guard("data-profile", self._finish_profile)
            if self._loss_acc:
                self._emit_loss()
            self._drain_losses()
            self._guard("loss-calls", self._flush_eval)
            self._in_eval = False
            if self._probe is not None:
                self._guard("functional-activations", self._finish_probe, self.step)
            if self._loads:
                self._guard("state-dict", self._flush_loads)
            self._stale = None  # an interval the run ended in is not judged
            self._guard("leakage", self._leak_end_of_evaluation)
            for h in self._handles + self._act_handles:
                h.remove()
            self._handles, self._act_handles = [], []
            self._stop.set()
            self._writer.join(timeout=10)
            self._guard("writer-final", self._materialise)
            self._guard("val-sources", self._check_val_sources)
            self._close_store()
        return self.snapshot()

    def snapshot(self) -> Run:
        """The Run as known now (materialises what is pending)."""
        if not self._closed:
            self._drain_losses()
            self._guard("writer", self._materialise)
            self._guard("val-sources", self._check_val_sources)
        with self._lock:
            series = self._table.all_series()
            events = list(self._events)
        # validation seen automatically stands in only where nothing better exists (what the user
        # logged, then the loss functions, then the printed numbers): the same merge a stored run gets
        return Run(series=series, events=events, meta=dict(self.meta)).resolve_captured()
