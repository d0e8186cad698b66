"""The live monitor: PyTorch hooks in the training process, judged elsewhere.

Cost discipline (the doctor must cost ≤ 2 % of a step at the default cadence):

* every step: the loss is read once (one scalar; on an accelerator it is kept as a tensor and
  read by the writer thread, so the training thread never waits for the device);
* every ``cadence`` steps ("sampled steps"): per-parameter gradient norms and update/weight
  ratios with fused ``torch._foreach_norm`` calls in the optimizer step hooks, and activation
  statistics from forward hooks that are armed for that one step and removed afterwards;
* never a per-tensor ``.item()``: each sampled step produces a handful of small tensors that the
  writer thread turns into numbers every ``flush_interval`` seconds and writes to the run store;
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

The monitor never changes the run it watches: hooks return nothing, tensors are only read, the
RNG is restored after a replay, and any error of its own is caught, reported once, and turns
that part of the monitoring off while training goes on.
"""
from __future__ import annotations

import inspect
import math
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..report.safe import safe
from ..run import Event, Run

RELU_TYPES: tuple[type, ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU)
SQUASH_TYPES: tuple[type, ...] = (nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Softsign)
PROB_TYPES: tuple[type, ...] = (nn.Softmax, nn.LogSoftmax, nn.Sigmoid, nn.Softmax2d)

LOSS_NODES = {
    "NllLossBackward0": "nll",
    "NllLoss2DBackward0": "nll",
    "BinaryCrossEntropyBackward0": "bce",
    "BinaryCrossEntropyWithLogitsBackward0": "bce_logits",
    "MseLossBackward0": "mse",
    "L1LossBackward0": "l1",
    "SmoothL1LossBackward0": "smooth_l1",
    "HuberLossBackward0": "huber",
    "KlDivBackward0": "kl_div",
}


# autograd nodes of operations that move, select or cast values without changing what they are:
# ``out.squeeze(1)``, ``.view(-1, C)``, ``[:, :C]``, ``.permute``, ``.contiguous()``, ``.float()``
SHAPE_NODES = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "SqueezeBackward0", "SqueezeBackward1",
    "SqueezeBackward2", "SqueezeBackward3", "SqueezeBackward4", "UnsqueezeBackward0", "UnsqueezeBackward1",
    "PermuteBackward0", "TransposeBackward0", "TransposeBackward1", "TBackward0", "SliceBackward0",
    "SelectBackward0", "IndexBackward0", "IndexSelectBackward0", "ToCopyBackward0", "CloneBackward0",
    "ExpandBackward0", "AliasBackward0", "AsStridedBackward0", "SplitBackward0", "SplitWithSizesBackward0",
    "UnbindBackward0", "NarrowBackward0",
})


def _graph_below(fn: Any, depth: int = 6, limit: int = 64) -> list[str]:
    """Names of autograd nodes reachable from ``fn`` (breadth first, bounded)."""
    out: list[str] = []
    frontier = [fn]
    seen: set[int] = set()
    for _ in range(depth):
        nxt = []
        for node in frontier:
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            out.append(type(node).__name__)
            if len(out) >= limit:
                return out
            nxt.extend(n for n, _ in getattr(node, "next_functions", ()) if n is not None)
        frontier = nxt
    return out


def _first_child(fn: Any) -> Any:
    for n, _ in getattr(fn, "next_functions", ()):
        if n is not None and type(n).__name__ != "AccumulateGrad":
            return n
    return None


def _through_shape(fn: Any, passed: list[str] | None = None) -> Any:
    """The first node at or below ``fn`` that is not a shape-only operation (bounded); the shape
    nodes gone through are appended to ``passed``."""
    for _ in range(32):
        if fn is None or type(fn).__name__ not in SHAPE_NODES:
            return fn
        if passed is not None:
            passed.append(type(fn).__name__)
        fn = _first_child(fn)
    return fn


# positional parameters of each functional loss, read once from its signature
_LOSS_PARAMS: dict[str, list[str]] = {}


def loss_arguments(fn_name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by name (positional ones named after the function's signature)."""
    names = _LOSS_PARAMS.get(fn_name)
    if names is None:
        try:
            names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            names = ["input", "target"]
        _LOSS_PARAMS[fn_name] = names
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def loss_reduction(bound: dict[str, Any]) -> str:
    """``mean``, ``sum``, ``none``, ``batchmean`` …: the reduction, the legacy ``size_average``/``reduce`` included."""
    size_average, reduce = bound.get("size_average"), bound.get("reduce")
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction

        return _reduction.legacy_get_string(size_average, reduce, emit_warning=False)
    r = bound.get("reduction", "mean")
    return r if isinstance(r, str) else "mean"


def loss_elements(fn_name: str, bound: dict[str, Any]) -> Any:
    """How many elements the loss reduces over: the non-ignored targets for cross-entropy/NLL with
    class indices (a 0-d tensor: no device sync), the samples for class probabilities, else the
    elements of the (broadcast) input. None when the arguments do not tell."""
    inp, tgt = bound.get("input"), bound.get("target")
    if not isinstance(inp, torch.Tensor) or not isinstance(tgt, torch.Tensor):
        return None
    if fn_name in ("cross_entropy", "nll_loss"):
        if not (tgt.is_floating_point() or tgt.is_complex()):
            ig = bound.get("ignore_index", -100)
            return (tgt != ig).sum() if isinstance(ig, int) else tgt.numel()
        return tgt.numel() // int(inp.shape[1]) if inp.dim() >= 2 and inp.shape[1] else tgt.numel()
    try:
        return math.prod(torch.broadcast_shapes(inp.shape, tgt.shape))
    except RuntimeError:
        return inp.numel()


def _nonfinite_rows(t: torch.Tensor) -> list[int]:
    """Batch positions (dim 0) holding a non-finite value."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() == 0:
        return []
    bad = ~torch.isfinite(t.detach().reshape(t.shape[0], -1)).all(dim=1)
    return bad.nonzero().flatten().tolist()


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norms of many tensors in one fused call, as one float64 tensor.

    Computed in the tensors' own dtype (3× cheaper than upcasting first). A norm that comes out
    Inf is recomputed in float64, because the float32 sum of squares of large but finite values
    overflows and would fake a non-finite gradient. On the CPU the check is free; on an
    accelerator both are computed and merged on the device, so the training thread never syncs.
    """
    n = torch.stack(torch._foreach_norm(tensors)).to(torch.float64)
    if n.device.type == "cpu":
        if bool(torch.isinf(n).any()):
            n = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64))
        return n
    n64 = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64))
    return torch.where(torch.isinf(n), n64, n)


def _correct(inp: torch.Tensor, target: torch.Tensor, bound: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct arg-max predictions and targets counted, ``ignore_index`` targets left out (0-d tensors)."""
    ig = bound.get("ignore_index", -100)
    keep = target != ig if isinstance(ig, int) else torch.ones_like(target, dtype=torch.bool)
    return ((inp.detach().argmax(1) == target) & keep).sum(), keep.sum()


def _layout(pred: torch.Tensor) -> tuple[int, int | None]:
    """What identifies a loss's prediction across steps: its rank and class/feature dimension."""
    return pred.dim(), (int(pred.shape[1]) if pred.dim() >= 2 else None)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def _param_dtypes(models: Iterable[nn.Module]) -> list[str]:
    return sorted({_dtype_name(p.dtype) for m in models for p in m.parameters()})


def _region(t: torch.Tensor) -> tuple[int, int, int] | None:
    """The element range of ``t``'s rows in its storage: (storage, first, end)."""
    if t.dim() < 1 or t.shape[0] == 0 or t.stride(0) <= 0:
        return None
    start = t.storage_offset()
    return t.untyped_storage().data_ptr(), start, start + (t.shape[0] - 1) * t.stride(0) + 1


def _site_text(site: tuple[str, int] | None) -> str | None:
    return f"{site[0]}:{site[1]}" if site else None


# weight layers whose default initialisation (kaiming_uniform_, a=√5) is U(−1/√fan_in, 1/√fan_in)
_DEFAULT_INIT_LAYERS: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


DEFAULT_CADENCE = 50  # sampled steps: keeps the watcher under 2 % of a step (benchmarks/overhead.py)
# the data seen live: the first PROFILE_STEPS steps, extended until PROFILE_SAMPLES samples (at most
# PROFILE_MAX_STEPS steps); afterwards nothing is measured per batch
PROFILE_STEPS, PROFILE_SAMPLES, PROFILE_MAX_STEPS = 20, 1024, 100
# the inputs' scale is measured on the first few batches (the costly part); labels and NaN rows on all
PROFILE_INPUT_BATCHES = 4
# gradients not cleared between optimizer steps: backward() calls looked at after a sampled step (on an
# accelerator, where nothing is read on the training thread, the check cannot stop early at a clean one)
STALE_CHECKS = 8
# the training samples hashed from the data window when the dataset itself is not hashed, and the
# validation samples of the first evaluation: bounded (hashing runs on the training thread)
LEAK_WINDOW_BYTES = 64 << 20
LEAK_VAL_BYTES, LEAK_VAL_ROWS = 64 << 20, 100_000
# an "evaluation" holding this much of the training set is a pass over the training data, not a validation
LEAK_TRAIN_PASS = 0.9
# the findings a first step can show, announced the moment they are known
CONFIG_CODES = ("M001", "M002", "M003", "M008", "M009", "M010", "D001", "D002", "D003", "D004", "D005", "D007")


class Monitor:
    """Collects signals from hooks into a Run (and a run store), shared by Doctor and ``run``."""

    def __init__(
        self,
        *,
        cadence: int = DEFAULT_CADENCE,
        store: Any = None,
        flush_interval: float = 1.0,
        on_critical: Callable[[str], None] | None = None,
        explicit_steps: bool = False,
    ) -> None:
        if cadence < 1:
            raise ValueError(f"cadence must be a positive number of steps, got {cadence}")
        self.cadence = cadence
        self.store = store
        self.flush_interval = flush_interval
        self.on_critical = on_critical or (lambda msg: print(safe(msg), file=sys.stderr, flush=True))
        self.explicit_steps = explicit_steps

        self.step = 0  # index of the step being built (the loss of this step is pending)
        self.opt_steps = 0  # optimizer steps taken (primary optimizer)
        self.meta: dict[str, Any] = {"cadence": cadence}
        self._points: list[tuple[str, int, float]] = []  # materialised, for the final Run
        self._events: list[Event] = []
        self._pending: deque[tuple[str, int, Any]] = deque()  # (name, step, tensor | float | names)
        self._pending_events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._disabled: set[str] = set()
        self._errors_reported: set[str] = set()

        self.models: list[nn.Module] = []
        # outermost modules seen before the models are known (zero-code discovery)
        self.candidates: list[nn.Module] = []
        self._param_names: dict[int, str] = {}
        self._primary_opt: Any = None
        self._opt_state: dict[int, Any] = {}
        self._loss_acc: list[Any] = []
        self._forensics_done = False
        self._last_inputs: dict[int, tuple[tuple, dict]] = {}
        self._batch_ids: list[int] | None = None
        self._first_backward_seen = False
        self._act_handles: list[Any] = []
        self._handles: list[Any] = []
        self._closed = False
        self.nonfinite_loss_step: int | None = None
        self._terms_this_step = 0
        self._bw_seen: tuple[torch.Tensor, Any] | None = None
        self._eval_acc: dict[str, list] = {"loss": [], "correct": []}
        self._has_train_only = False
        # first-step inspection (watch/trace.py) and the data of the first batches (checks/data.py)
        self.sites: Any = None  # ConstructionSites, when the launcher installed them before the script ran
        self._trace: Any = None
        self._trace_state = "pending"  # pending → active → done
        self._trace_root: nn.Module | None = None
        self._profile: Any = None
        self._profiling = False
        self._profile_steps = 0
        self._profile_positions = 0
        self._step_target: Any = None
        self._loader_batch: Any = None
        self._announced: set[str] = set()
        self._other_opts: set[int] = set()
        # the data profile judges one loss: its function and prediction layout (None: the first call's)
        self._profile_match: tuple[str, int, int | None] | None = None
        # GradScaler.scale(loss) outputs awaiting their backward(): (scaled ref, loss ref, loss value,
        # scaled grad_fn, scaler ref); dropped at the match or at the end of the step
        self._scaled: list[tuple[Any, Any, torch.Tensor, Any, Any]] = []
        self._val_note_done = False
        self._calls_before_backward = 0  # training loss calls before the first backward()
        self._first_call_mean: float | None = None
        # the training set scanned once in the background (watch/datascan.py)
        self._loader_dataset: Any = None
        self._scan_state = "pending"  # pending → running → done
        self._scan_thread: threading.Thread | None = None
        self._scan_result: dict[str, Any] | None = None
        # load_state_dict calls seen before the models are known, named once they are:
        # (weak reference to the module, its class name, the event's data, step)
        self._loads: list[tuple[Any, str, dict[str, Any], int]] = []
        self._first_step_done = False  # frozen_init and the parameters' dtypes: once, at the first step
        self._precision_seen = False  # autocast at the model's first training forward
        # evaluation in training mode (V008): once per run, looked at once per evaluation
        self._eval_mode_done = False
        self._eval_checked = False
        self._train_only: dict[int, list[tuple[str, nn.Module]]] = {}
        # the last forward with gradients off, a reference (never a copy), dropped at its loss call
        self._in_eval = False  # between an evaluation forward (gradients off) and the next training forward
        # gradients not cleared between optimizer steps (G008), looked at on sampled steps
        self._stale: dict[str, Any] | None = None
        # functional activations measured on sampled steps: (op, file, line) → series suffix
        self._probe_sites: dict[tuple[str, str, int], str] = {}
        self._probe: Any = None
        self._trace_step = 0
        # train/validation leakage: the training side (a Leakage), hashed by the scan's thread or from
        # the data window; the first evaluation's validation samples; then one event
        self._leak_train: Any = None
        self._leak_train_info: dict[str, Any] = {}
        self._leak_window: Any = None
        self._leak_window_bytes = 0
        self._hash_result: dict[str, Any] | None = None
        self._leak_state = "waiting"  # waiting → collecting → collected → done
        self._leak_val: list[tuple[bytes, int]] = []
        self._leak_val_bytes = 0
        self._leak_val_step = 0
        self._leak_val_positions = 0
        self._leak_skipped = 0  # evaluation samples recognised as the training data itself
        # covariate shift: per-feature moments of the data window's inputs and the first evaluation's
        self._shift_train: Any = None
        self._shift_val: Any = None
        self._shift_done = False
        self._train_regions: list[tuple[int, int, int]] = []  # (storage, first, end) element ranges
        self._train_dataset: Any = None  # weak reference to the training loader's dataset
        self._src_batch: tuple[Any, Any, list[int] | None] | None = None  # the loader's last batch
        self._own = 0  # > 0 while the doctor itself runs the model (replay, eval-mode gap)

        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._writer_main, name="traindoctor-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ containment
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
        and the hook does nothing from then on; it never raises into the script."""
        def hook(*args: Any, **kwargs: Any) -> Any:
            if part in self._disabled:
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

    def record(self, name: str, value: Any, step: int | None = None) -> None:
        """Queue a value (float, or tensor read later by the writer thread)."""
        self._pending.append((name, self.step if step is None else step, value))

    # ------------------------------------------------------------------ attachment
    def attach_model(self, model: nn.Module) -> None:
        if any(m is model for m in self.models):
            return
        self.models.append(model)
        prefix = "" if len(self.models) == 1 else f"model{len(self.models) - 1}."
        pinfo = self.meta.setdefault("params", {})
        for name, p in model.named_parameters():
            self._param_names.setdefault(id(p), prefix + name)
            pinfo[prefix + name] = {"numel": int(p.numel()), "ndim": int(p.dim()), "requires_grad": bool(p.requires_grad)}
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
            if self._in_eval:  # a training forward ends the evaluation before it
                self._in_eval = False
                self._eval_checked = False
                if self._leak_state in ("collecting", "collected"):
                    self._guard("leakage", self._leak_end_of_evaluation)
        elif not self._own and self._watch_eval:
            # an evaluation's forward (gradients off): its mode and its inputs are checked here, so a
            # validation computed by hand, with no torch loss function, is seen as well
            self._guard("eval-forward", self._on_eval_forward, module, args, kwargs)

    @property
    def _watch_eval(self) -> bool:
        """Whether evaluation forwards are still of interest (until V008's check and the leakage check are done)."""
        return not self._eval_mode_done or self._leak_state in ("waiting", "collecting")

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
        self.meta["precision"] = {"param_dtypes": _param_dtypes(models),
                                  "autocast": str(dt).replace("torch.", "") if on and dt is not None else None}

    # ------------------------------------------------------------------ loaded checkpoints, frozen layers
    def on_state_dict_load(self, module: nn.Module, strict: bool, result: Any, site: tuple[str, int] | None) -> None:
        """``module.load_state_dict(...)`` returned ``result``: what it loaded (M013 reads it).

        Not a hot path: a few calls per run. Called after the original returned, so a strict load
        that raises is never seen (the exception is the user's, unchanged)."""
        self._guard("state-dict", self._on_state_dict_load, module, strict, result, site)

    def _on_state_dict_load(self, module: nn.Module, strict: bool, result: Any, site: tuple[str, int] | None) -> None:
        keys = len(module.state_dict(keep_vars=True))
        missing = [str(k) for k in getattr(result, "missing_keys", None) or []]
        unexpected = [str(k) for k in getattr(result, "unexpected_keys", None) or []]
        data = {"module": type(module).__name__, "strict": bool(strict), "keys": keys, "loaded": keys - len(missing),
                "missing": missing[:20], "unexpected": unexpected[:20], "where": _site_text(site),
                # a checkpoint to start from, or one loaded later (the best weights, at the end)
                "before_training": self.opt_steps == 0 and self._primary_opt is None}
        if self.models:
            data["module"] = self._module_name(module)
            self.event("state_dict_load", data)
            return
        # a checkpoint is loaded before training: the model it belongs to is known at the first step
        try:
            ref: Any = weakref.ref(module)
        except TypeError:
            ref = None
        self._loads.append((ref, type(module).__name__, data, self.step))

    def _module_name(self, module: nn.Module) -> str:
        """The module's attribute path inside a known model (the model's class name for the model itself)."""
        for model in self._known_models():
            for name, m in model.named_modules():
                if m is module:
                    return name or type(model).__name__
        return type(module).__name__

    def _flush_loads(self) -> None:
        loads, self._loads = self._loads, []
        for ref, cls, data, step in loads:
            mod = ref() if ref is not None else None
            data["module"] = self._module_name(mod) if mod is not None else cls
            self.event("state_dict_load", data, step)

    def _at_first_step(self) -> None:
        """Once, at the first optimizer step (the models are known): the loads seen before are named,
        frozen layers still at their default initialisation listed, the parameters' dtypes read."""
        self._first_step_done = True
        if self._loads:
            self._guard("state-dict", self._flush_loads)
        self._guard("frozen-init", self._frozen_init)
        if "precision" in self.meta:
            self._guard("precision", self._refresh_param_dtypes)

    def _refresh_param_dtypes(self) -> None:
        models = self._known_models()
        if models:
            self.meta["precision"]["param_dtypes"] = _param_dtypes(models)

    def _frozen_init(self) -> None:
        """``frozen_init``: frozen Linear/Conv weights whose values still fit PyTorch's default init.

        ``kaiming_uniform_(a=√5)`` draws U(−b, b) with b = 1/√fan_in, so every value is within b and
        the standard deviation is b/√3; trained or loaded weights fit neither. A frozen layer that
        still fits both was frozen at its random initialisation: a checkpoint that never loaded.
        One reduction per frozen weight, once per run."""
        layers: list[dict[str, Any]] = []
        numel = 0
        seen: set[int] = set()
        for model in self._known_models():
            names = None
            for mod in model.modules():
                w = getattr(mod, "weight", None) if isinstance(mod, _DEFAULT_INIT_LAYERS) else None
                if not isinstance(w, torch.Tensor) or w.requires_grad or id(w) in seen \
                        or isinstance(w, nn.parameter.UninitializedParameter) or w.is_meta \
                        or not w.is_floating_point() or w.dim() < 2 or w.numel() < 2:
                    continue
                seen.add(id(w))
                fan_in = w[0].numel()  # in_features, or in_channels / groups × kernel size
                bound = 1.0 / math.sqrt(fan_in)
                with torch.no_grad():
                    wd = w.detach()
                    max_abs = float(wd.abs().max())
                    std = float(wd.float().std())
                uniform_std = bound / math.sqrt(3.0)
                tol = max(1e-6, torch.finfo(w.dtype).eps)
                if max_abs > bound * (1 + tol) or abs(std - uniform_std) > 0.05 * uniform_std:
                    continue
                name = self._param_names.get(id(w))
                if name is None:
                    names = names if names is not None else {id(p): n for n, p in model.named_parameters()}
                    name = names.get(id(w), type(mod).__name__)
                layers.append({"name": name, "std": std, "bound": bound, "max_abs": max_abs})
                numel += int(w.numel())
        if layers:
            self.event("frozen_init", {"params": [x["name"] for x in layers], "layers": layers, "count": len(layers),
                                       "numel": numel})

    # ------------------------------------------------------------------ first-step inspection
    def begin_trace(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """The model's first training forward: trace this step up to its ``backward()`` (one-off)."""
        if self._trace_state != "pending" or "trace" in self._disabled:
            return
        if not (torch.is_grad_enabled() and module.training and next(module.parameters(), None) is not None):
            return
        self._trace_state = "active"
        self._guard("trace", self._begin_trace, module, args, kwargs)

    def _begin_trace(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        from .trace import StepTrace

        self._trace_root = module
        self._trace_step = self.step
        tr = StepTrace(self.sites)
        tr.start(module, (args, kwargs))
        self._trace = tr

    def _end_trace(self, loss: torch.Tensor | None) -> None:
        tr, self._trace = self._trace, None
        self._trace_state = "done"
        if tr is None:
            return
        tr.stop()
        try:
            facts = tr.facts(loss)
            root = tr.root
            names = {id(m): (n or type(root).__name__) for n, m in root.named_modules()} if root is not None else {}
            order = [(names.get(id(m), type(m).__name__), m, o) for m, o in tr.leaf_outputs]
            judged = tr.loss_tensors[0] if tr.loss_tensors else (None, None)
            acts = tr.functional_acts()
        finally:
            tr.release()
        if acts:
            self._guard("functional-activations", self._record_functional_acts, acts, root)
        self.event("model_graph", facts)
        losses = facts.get("losses") or []
        if len(losses) == 1:  # a sum of several loss functions is none of them (L009 compares with one)
            lf = losses[0]
            self.meta.setdefault("loss_kind", lf["kind"])
        if order and root is not None:
            from ..checks.model import init_scale

            self.event("init_scale", init_scale(root, order=order))
        self._start_profile(losses[0] if losses else None, judged)

    def _record_functional_acts(self, acts: list[dict[str, Any]], root: nn.Module | None) -> None:
        """The first step's functional ReLU/sigmoid/tanh, recorded as the module hooks record theirs
        (``dead_frac/relu@train.py:23`` …), and the lines to measure again on sampled steps: every
        ReLU, and the sigmoid/tanh that feed a weight layer (gates and outputs saturate by design)."""
        from .trace import act_series

        info, sites = [], {}
        for a in acts:
            fn, line = a["site"]
            name = f"{a['op']}@{os.path.basename(fn)}:{line}"
            for series, value in act_series(a["op"], name, a["stats"]):
                self.record(series, value, self._trace_step)
            sampled = a["op"] == "relu" or bool(a["hidden"])
            info.append({"op": a["op"], "where": f"{fn}:{line}", "count": a["count"], "name": name, "sampled": sampled})
            if sampled:
                sites[(a["op"], fn, line)] = name
        self.meta["functional_activations"] = info
        # a compiled part of the model would see the probe's mode as a change of context and recompile
        compiled = root is None or any(hasattr(m, "_orig_mod") for m in root.modules())
        if sites and not compiled:
            self._probe_sites = sites

    def _start_profile(self, loss_facts: dict[str, Any] | None, tensors: tuple[Any, Any] = (None, None)) -> None:
        """The data profile judges the first loss of the traced step, with that loss's own targets.

        Later steps give it the targets of the call of the same loss function on a prediction of the
        same layout, not the first loss call of the step: with two models trained side by side
        (a classifier and a regressor, an autoencoder and a head), the other loss's targets would
        be judged against this loss's domain.
        """
        from ..checks.data import DataProfile

        kind = out_shape = None
        ignore = None
        if loss_facts is not None:
            kind = loss_facts["kind"]  # the trace names losses with the data checks' kinds
            ps = loss_facts.get("pred_shape")
            out_shape = tuple(ps[1:]) if ps else None
            ig = loss_facts.get("ignore_index")
            ignore = ig if isinstance(ig, int) and kind in ("cross_entropy", "nll") else None
            from .autohooks import LOSS_FUNCTIONS

            pred, target = tensors
            fn = str(loss_facts.get("function"))
            if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor):
                self._step_target = target  # this step's targets of the judged loss, not the first call's
                if fn in LOSS_FUNCTIONS:  # (only a wrapped loss function's calls are seen at later steps)
                    self._profile_match = (fn, *_layout(pred))
        self._profile = DataProfile("train", kind, out_shape, ignore, ids_kind="dataset indices",
                                    input_moment_batches=PROFILE_INPUT_BATCHES)
        self._profile_positions = 0
        self._profiling = True

    def _profile_step(self) -> None:
        """Feed this step's batch (the model's input, the loss's targets) to the data profile."""
        from ..checks.batches import Batch

        prof = self._profile
        root = self._trace_root
        y, self._step_target = self._step_target, None
        loader, self._loader_batch = self._loader_batch, None
        captured = self._last_inputs.get(id(root)) if root is not None else None
        xs = [t for t in _tensors(captured) if t.dim() >= 1] if captured is not None else []
        if not xs:
            return
        x = xs[0].detach()
        rows = int(x.shape[0])
        if y is None and isinstance(loader, (list, tuple)) and len(loader) == 2 and isinstance(loader[1], torch.Tensor):
            y = loader[1]  # a hand-written loss: the loader's targets
        if isinstance(y, torch.Tensor) and (y.dim() == 0 or int(y.shape[0]) != rows):
            y = None  # targets flattened over a sequence (language models): not per sample
        ids = self._batch_ids
        if ids is None or len(ids) != rows:
            if prof.batches == 0:
                prof.ids_kind = "positions in the stream"
            ids = list(range(self._profile_positions, self._profile_positions + rows))
        self._profile_positions += rows
        if self._leak_window is not None and self._leak_window_bytes < LEAK_WINDOW_BYTES:
            from ..checks.data import sample_hashes

            self._leak_window.add_train_hashes(sample_hashes(x), ids)
            self._leak_window_bytes += x.numel() * x.element_size()
        prof.update(Batch(x, y.detach() if isinstance(y, torch.Tensor) else None, ids))
        if not self._shift_done:
            if self._shift_train is None:
                from .shift import FeatureMoments

                self._shift_train = FeatureMoments()
            self._shift_train.update(x)
        self._profile_steps += 1
        done = (self._profile_steps >= PROFILE_STEPS and prof.samples >= PROFILE_SAMPLES) \
            or self._profile_steps >= PROFILE_MAX_STEPS
        if done:
            self._finish_profile()

    def _record_profile(self, first_batch: bool) -> None:
        """The data facts as known now: after the first batch (step 0), then over the whole window."""
        prof = self._profile
        if prof is None or not prof.batches:
            return
        for kind, data in prof.events():
            data["live"] = True
            if first_batch:
                data["first_batch"] = True
            self.event(kind, data, step=0 if first_batch else max(0, self.step))

    def _finish_profile(self) -> None:
        self._profiling = False
        self._record_profile(False)
        self._profile = None
        self._step_target = self._loader_batch = None  # hold no batch past the window
        if self._leak_window is not None:  # the training side of the leakage check: the window's samples
            self._leak_train, self._leak_window = self._leak_window, None
            self._leak_train_info = {"train_source": "first batches", "train_complete": False}
            self._guard("leakage", self._leak_decide)
        self._announce()

    def _announce(self) -> None:
        """Judge the configuration findings now (first step, end of the data window) and say the new ones."""
        from ..rules import all_rules

        with self._lock:
            events = list(self._events)
        run = Run.from_points([], events, dict(self.meta))
        rules = all_rules()
        for code in CONFIG_CODES:
            if code in self._announced or code not in rules:
                continue
            found = rules[code].check(run)
            if not found:
                continue
            self._announced.add(code)
            f = found[0]
            where = f.evidence.get("where")
            self.on_critical(f"traindoctor: {f.code} {f.name} — {f.message}" + (f" [{where}]" if where else ""))

    # ------------------------------------------------------------------ loss
    def on_backward(self, loss: torch.Tensor) -> None:
        """The launcher calls this from ``Tensor.backward``: the loss of the current step."""
        if self._stale is not None:  # a sampled step's backward(): were the gradients cleared since the step?
            self._guard("stale-grad", self._check_stale)
        if self._probe is not None:  # the forward raised past its hook: never leave the mode on
            self._guard("functional-activations", self._finish_probe, self.step)
        if "loss" in self._disabled:
            return
        try:  # inlined containment: this runs every step
            self._on_backward(loss)
        except Exception:  # noqa: BLE001
            self._guard("loss", self._raise_again)

    @staticmethod
    def _raise_again() -> None:
        raise  # re-raised inside _guard so it is reported and the part disabled like any other

    def _on_backward(self, loss: torch.Tensor) -> None:
        if loss.numel() != 1 or not loss.is_floating_point():
            return
        if self._scan_result is not None:
            self._guard("dataset-scan", self._publish_scan)
        if not self._first_backward_seen:
            self._first_backward_seen = True
            if self._trace_state == "active":
                self._guard("trace", self._end_trace, loss)
            self._guard("loss-graph", self._inspect_loss_graph, loss)
            if self._scan_state == "pending":
                self._guard("dataset-scan", self._start_dataset_scan)
            if self._profiling:
                self._guard("data-profile", self._profile_step)
                self._guard("data-profile", self._record_profile, True)
            self._guard("announce", self._announce)
        elif self._profiling and (self._profile_match is None or self._step_target is not None):
            # (a backward without a call of the judged loss is another model's: not this profile's batch)
            self._guard("data-profile", self._profile_step)
        # under a GradScaler the tensor backpropagated is the loss times the scale: read the loss
        true, given = (self._guard("grad-scaler", self._unscaled, loss) or (None, None)) if self._scaled else (None, None)
        value = self._read_loss(true if true is not None else loss, loss)
        if self._first_call_mean is not None:
            self._guard("loss-calls", self._loss_factor, value)
        if self.explicit_steps:
            # Doctor mode: doctor.step(loss) records the loss; here only the first sight of a
            # non-finite value matters, while the weights that produced it are still intact.
            self._bw_seen = (given if given is not None else loss, value)
            return
        if self._primary_opt is None and self._loss_acc:
            # no optimizer has stepped yet: one backward is one step (manual updates)
            self._emit_loss()
            self.step += 1
        self._loss_acc.append(value)

    # ------------------------------------------------------------------ GradScaler
    def on_grad_scale(self, loss: torch.Tensor, scaled: torch.Tensor, scaler: Any) -> None:
        """``GradScaler.scale(loss)`` returned ``scaled``: remember it until its ``backward()``."""
        if "loss" in self._disabled:
            return
        self._guard("grad-scaler", self._on_grad_scale, loss, scaled, scaler)

    def _on_grad_scale(self, loss: torch.Tensor, scaled: torch.Tensor, scaler: Any) -> None:
        if loss.numel() != 1 or not loss.is_floating_point():
            return
        if not self.meta.get("loss_scaled_by_grad_scaler"):
            self.meta["loss_scaled_by_grad_scaler"] = True
        # weak references to the tensors; the loss's value (one element, no graph); the scaled
        # output's graph node, to recognise ``(scaler.scale(loss) / k).backward()``
        entry = (weakref.ref(scaled), weakref.ref(loss), loss.detach(), scaled.grad_fn, weakref.ref(scaler))
        self._scaled.append(entry)
        if len(self._scaled) > 4:
            del self._scaled[0]

    def _unscaled(self, t: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The unscaled value of the tensor being backpropagated, and the loss the user scaled.

        The output of ``scale()`` itself: the loss it scaled (exact, and finite when the scaled
        value overflowed). A tensor computed from that output (``/ accumulation_steps``): its
        value divided by the scale, kept as a tensor (no device sync). Else (None, None).
        """
        for i, entry in enumerate(self._scaled):
            if entry[0]() is t:
                del self._scaled[i]
                return entry[2], entry[1]()
        node = t.grad_fn
        if node is None:
            return None, None
        for _ in range(4):
            node = _first_child(node)
            if node is None:
                break
            for i, entry in enumerate(self._scaled):
                if entry[3] is not None and node is entry[3]:
                    del self._scaled[i]
                    scaler = entry[4]()
                    scale = getattr(scaler, "_scale", None) if scaler is not None else None
                    if not isinstance(scale, torch.Tensor):
                        return None, None
                    # in float32 at least: 65536 is inf in float16
                    dt = torch.promote_types(t.dtype, torch.float32)
                    return t.detach().to(dt) / scale.to(device=t.device, dtype=dt).reshape(()), None
        return None, None

    def on_loss(self, loss: torch.Tensor | float) -> None:
        """Doctor mode: the user hands the loss of a finished step."""
        self._guard("loss", self._on_explicit_loss, loss)

    def _on_explicit_loss(self, loss: torch.Tensor | float) -> None:
        if not self._first_step_done:  # Doctor(model) without an optimizer: its first step is this one
            self._at_first_step()
        if isinstance(loss, torch.Tensor):
            if not self._first_backward_seen and loss.grad_fn is not None:
                self._first_backward_seen = True
                if self._trace_state == "active":
                    self._guard("trace", self._end_trace, loss)
                self._guard("loss-graph", self._inspect_loss_graph, loss)
                self._guard("announce", self._announce)
            seen = self._bw_seen
            if seen is not None and seen[0] is loss:
                self._loss_acc.append(seen[1])  # already read at backward(): no second read
            else:
                self._loss_acc.append(self._read_loss(loss.detach().reshape(-1)[0] if loss.numel() else loss))
            self._bw_seen = None
        else:
            v = float(loss)
            self._loss_acc.append(v)
            if not math.isfinite(v):
                self._nonfinite_loss(v, None)
        self._scaled = []  # the step is over: hold nothing of it
        self._emit_loss()
        self.step += 1
        if self._primary_opt is None:
            self._terms_this_step = 0
        self._arm_activations()

    def _read_loss(self, loss: torch.Tensor, graph: torch.Tensor | None = None) -> Any:
        """The loss as a float (CPU) or a 0-d tensor read later (accelerator); ``graph``: the tensor
        whose autograd graph tells where a non-finite value came from (the scaled loss under a GradScaler)."""
        t = loss.detach()
        if t.device.type == "cpu":
            v = float(t)
            if not math.isfinite(v):
                self._nonfinite_loss(v, graph if graph is not None else loss, _dtype_name(t.dtype))
            return v
        return t.reshape(())  # read by the writer thread; no device sync here

    def _emit_loss(self) -> None:
        acc, self._loss_acc = self._loss_acc, []
        if not acc:
            return
        if len(acc) == 1:
            self.record("loss", acc[0])
        elif all(isinstance(a, float) for a in acc):
            self.record("loss", sum(acc) / len(acc))
        else:
            self.record("loss", torch.stack([torch.as_tensor(a, dtype=torch.float64) for a in acc]).mean())

    # ------------------------------------------------------------------ optimizer hooks
    def opt_pre(self, opt: Any) -> None:
        if self._trace_state == "active":  # gradients came without Tensor.backward (torch.autograd.grad)
            self._guard("trace", self._end_trace, None)
        if self._probe is not None:
            self._guard("functional-activations", self._finish_probe, self.step)
        if not self._first_step_done:
            self._at_first_step()
        self._guard("grad-stats", self._opt_pre, opt)

    def opt_post(self, opt: Any) -> None:
        self._guard("update-stats", self._opt_post, opt)
        if self._primary_opt is None:
            self._primary_opt = opt
        elif opt is not self._primary_opt and id(opt) not in self._other_opts:
            self._other_opts.add(id(opt))  # a second player (GAN): the progress rules stand aside
            self.meta["optimizers_stepping"] = 1 + len(self._other_opts)
        if opt is self._primary_opt:
            self.opt_steps += 1
            self._terms_this_step = 0
            if self._stale is not None:
                self._guard("stale-grad", self._finish_stale)
            if self.opt_steps % self.cadence == 0 and "stale-grad" not in self._disabled:
                # the next backward() starts a sampled step: were this step's gradients cleared by then?
                self._stale = {"opt": opt, "mask": None, "checks": 0, "step": None, "where": None, "closed": False}
            if self._scaled:
                self._scaled = []  # scaled losses never backpropagated: hold nothing past the step
            if not self.explicit_steps:
                self._emit_loss()
                self.step += 1
                self._guard("activations", self._arm_activations)
            if self.opt_steps % 256 == 0 and not self._writer.is_alive():
                self._guard("writer", self._materialise)  # the writer thread died (said once): keep memory bounded

    @property
    def _clock(self) -> int:
        """The step count that drives sampling: optimizer steps once one is seen, else loss steps."""
        return self.opt_steps if self._primary_opt is not None else self.step

    def _sampled(self, opt: Any) -> bool:
        primary = self._primary_opt is None or opt is self._primary_opt
        return primary and self.opt_steps % self.cadence == 0

    def _params_of(self, opt: Any) -> list[torch.Tensor]:
        return [p for g in opt.param_groups for p in g["params"]]

    def _opt_pre(self, opt: Any) -> None:
        if not self._sampled(opt):
            return
        params = self._params_of(opt)
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return
        names = [self._param_names.get(id(p), f"param{i}") for i, p in enumerate(with_grad)]
        step = self.opt_steps
        with torch.no_grad():
            gnorms = _norms([p.grad for p in with_grad])
            # the update/weight ratio needs a copy of the weights: every other sampled step only
            if (self.opt_steps // self.cadence) % 2 == 0:
                before = torch._foreach_mul([p.detach() for p in with_grad], 1.0)
                self._opt_state[id(opt)] = (with_grad, names, before, step)
        self.record("@grad_norms", (names, gnorms), step)
        if len(with_grad) < len(params):
            missing = [self._param_names.get(id(p), f"param{i}") for i, p in enumerate(params) if p.grad is None]
            frozen = [self._param_names.get(id(p), "?") for p in params if not p.requires_grad]
            self.event("no_grad", {"params": missing[:200], "count": len(missing), "requires_grad_false": frozen[:200],
                                   "of": len(params)}, step)
        lr = opt.param_groups[0].get("lr")
        if isinstance(lr, (int, float)):
            self.record("lr", float(lr), step)
            self.meta.setdefault("lr", float(lr))

    def _opt_post(self, opt: Any) -> None:
        state = self._opt_state.pop(id(opt), None)
        if state is None:
            return
        with_grad, names, before, step = state
        with torch.no_grad():
            after = [p.detach() for p in with_grad]
            upd = _norms(torch._foreach_sub(after, before))
            wn = _norms(before)
        self.record("@updates", (names, upd, wn), step)

    # ------------------------------------------------------------------ activations
    def _arm_activations(self) -> None:
        if self._probe is not None:
            self._guard("functional-activations", self._finish_probe, self.step)
        if self._act_handles:
            for h in self._act_handles:
                h.remove()
            self._act_handles = []
        if self._clock % self.cadence != 0 or "activations" in self._disabled:
            return
        step = self.step
        for model in self.models:
            self._act_handles.append(model.register_forward_hook(self._make_output_hook(step)))
            for name, mod in model.named_modules():
                if isinstance(mod, RELU_TYPES + SQUASH_TYPES):
                    self._act_handles.append(mod.register_forward_hook(self._make_act_hook(name, mod, step)))
        root = self._trace_root
        if self._probe_sites and root is not None and "functional-activations" not in self._disabled:
            fired = [False]

            def pre(m: nn.Module, args: Any) -> None:
                if fired[0] or self._probe is not None or self._own or not torch.is_grad_enabled() or not m.training:
                    return
                fired[0] = True
                self._guard("functional-activations", self._start_probe)

            def post(m: nn.Module, args: Any, out: Any) -> None:
                if self._probe is not None:
                    self._guard("functional-activations", self._finish_probe, step)

            self._act_handles.append(root.register_forward_pre_hook(pre))
            self._act_handles.append(root.register_forward_hook(post, always_call=True))

    def _start_probe(self) -> None:
        from .trace import ActivationProbe

        probe = ActivationProbe(self._probe_sites)
        probe.start()
        self._probe = probe

    def _finish_probe(self, step: int) -> None:
        """Leave the sampled forward's probe and record what it measured at each functional line."""
        from .trace import act_series

        probe, self._probe = self._probe, None
        if probe is None:
            return
        probe.stop()
        if probe.error:
            raise RuntimeError(probe.error)
        for name, (op, stats) in probe.stats.items():
            for series, value in act_series(op, name, stats):
                self.record(series, value, step)

    def _make_output_hook(self, step: int) -> Callable[..., None]:
        """Logit magnitude and prediction confidence of the model's output, on a sampled step."""
        fired = [False]

        def hook(m: nn.Module, inp: Any, out: Any) -> None:
            if fired[0] or not torch.is_grad_enabled() or not m.training:
                return
            fired[0] = True
            t = out if isinstance(out, torch.Tensor) else None
            if t is None or not t.is_floating_point() or t.dim() == 0:
                return

            def measure() -> None:
                with torch.no_grad():
                    o = t.detach()
                    self.record("logits_absmax", o.abs().max().to(torch.float64), step)
                    kind = self.meta.get("loss_kind")
                    if kind in ("cross_entropy",) and o.dim() == 2 and o.shape[1] >= 2:
                        self.record("pred_confidence", torch.softmax(o.float(), 1).max(1).values.mean(), step)
                    elif kind == "bce_logits" or (kind == "bce" and o.dim() <= 2):
                        pr = torch.sigmoid(o.float()) if kind == "bce_logits" else o.float()
                        self.record("pred_confidence", torch.maximum(pr, 1 - pr).mean(), step)

            self._guard("outputs", measure)

        return hook

    def _make_act_hook(self, name: str, mod: nn.Module, step: int) -> Callable[..., None]:
        fired = [False]
        relu = isinstance(mod, RELU_TYPES)
        sigmoid_like = isinstance(mod, (nn.Sigmoid, nn.Hardsigmoid))

        def hook(m: nn.Module, inp: Any, out: Any) -> None:
            if fired[0] or not isinstance(out, torch.Tensor) or out.dim() == 0 or not torch.is_grad_enabled():
                return
            fired[0] = True

            def measure() -> None:
                with torch.no_grad():
                    o = out.detach().reshape(out.shape[0], -1)
                    if relu:
                        self.record(f"dead_frac/{name}", 1.0 - (o > 0).any(dim=0).to(torch.float32).mean(), step)
                        self.record(f"act_absmax/{name}", o.abs().max().to(torch.float64), step)
                    elif sigmoid_like:
                        self.record(f"saturated_frac/{name}", ((o < 0.01) | (o > 0.99)).to(torch.float32).mean(), step)
                    else:
                        self.record(f"saturated_frac/{name}", (o.abs() > 0.99).to(torch.float32).mean(), step)

            self._guard("activations", measure)

        return hook

    # ------------------------------------------------------------------ loss function calls
    def on_loss_call(self, fn_name: str, orig: Callable[..., Any], args: tuple, kwargs: dict, out: Any) -> None:
        """Every call of a torch.nn.functional loss (nn loss modules call these too).

        With gradients on it is a term of the training loss: counted per step, valued on sampled
        steps (L011). Without (torch.no_grad(), or a model in eval mode) it is an evaluation: the
        calls between two training steps are averaged into ``val_loss`` (and ``val_accuracy`` for
        class-index targets), so a script's validation loop is seen with no help.
        """
        self._guard("loss-calls", self._on_loss_call, fn_name, orig, args, kwargs, out)

    def _on_loss_call(self, fn_name: str, orig: Callable[..., Any], args: tuple, kwargs: dict, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or len(args) < 2:
            return
        inp, target = args[0], args[1]
        training = torch.is_grad_enabled() and out.requires_grad
        if training and not self._first_backward_seen:
            self._calls_before_backward += 1
            if "loss_reduction" not in self.meta:
                self._reduction_facts(fn_name, orig, args, kwargs, out)  # the training loss's first call, once
        if out.numel() != 1:
            return
        if training:
            self._flush_eval()
            idx = self._terms_this_step
            if isinstance(target, torch.Tensor) and (self._profiling or self._trace_state == "active"):
                m = self._profile_match
                if m is None:
                    if idx == 0:
                        self._step_target = target
                elif self._step_target is None and fn_name == m[0] and isinstance(inp, torch.Tensor) \
                        and _layout(inp) == m[1:]:
                    self._step_target = target  # the judged loss's targets, whatever its place in the step
            self._terms_this_step += 1
            if self._clock % self.cadence == 0:
                self.record(f"loss_term/{idx}:{fn_name}", out.detach().to(torch.float64).reshape(()))
                if fn_name in ("cross_entropy", "nll_loss") and isinstance(target, torch.Tensor) \
                        and not target.is_floating_point() and inp.dim() == 2:
                    hit, seen = _correct(inp, target, loss_arguments(fn_name, orig, args, kwargs))
                    self.record("accuracy", hit.to(torch.float64) / seen.clamp(min=1))
                # not at step 0: the first step is traced already, and BatchNorm statistics at init say little
                if idx == 0 and self._has_train_only and self._clock > 0 and self._clock % (self.cadence * 2) == 0:
                    self._guard("eval-gap", self._eval_gap, orig, args, kwargs, out)
            return
        # an evaluation (its forward was checked for eval mode and leakage when it ran)
        # each call as (sum of its per-element losses, elements), so that a call with
        # reduction='sum' (a Hugging Face causal LM's token sum) and one with 'mean' both give the mean
        # per element over the whole evaluation
        bound = loss_arguments(fn_name, orig, args, kwargs)
        red = loss_reduction(bound)
        v = out.detach().to(torch.float64).reshape(())
        n = loss_elements(fn_name, bound)
        if n is None:
            n = int(inp.shape[0]) if isinstance(inp, torch.Tensor) and inp.dim() > 0 else 1
        if red == "batchmean":  # kl_div: a mean over samples
            n = int(inp.shape[0]) if isinstance(inp, torch.Tensor) and inp.dim() > 0 else 1
        if red == "sum":
            part = v
        elif isinstance(n, torch.Tensor):  # a batch whose targets are all ignored has a NaN mean and weight 0
            part = torch.where(n > 0, v * n, torch.zeros((), dtype=v.dtype, device=v.device))
        else:
            part = v * n
        ev = self._eval_acc
        ev["loss"].append((part, n))
        if fn_name in ("cross_entropy", "nll_loss") and isinstance(target, torch.Tensor) \
                and not target.is_floating_point() and isinstance(inp, torch.Tensor) and inp.dim() == 2:
            ev["correct"].append(_correct(inp, target, bound))

    def _reduction_facts(self, fn_name: str, orig: Callable[..., Any], args: tuple, kwargs: dict,
                         out: torch.Tensor) -> None:
        """How the training loss is reduced: ``loss_reduction`` and ``loss_sum_over`` (elements reduced over),
        and the call's mean per element, for ``loss_per_element_factor`` at the first ``backward()``."""
        bound = loss_arguments(fn_name, orig, args, kwargs)
        red = self.meta["loss_reduction"] = loss_reduction(bound)
        n = loss_elements(fn_name, bound)
        if n is not None:
            n = self.meta["loss_sum_over"] = int(n)  # one read, at the first step
        o = out.detach()
        if not o.numel():
            return
        if red == "none":
            self._first_call_mean = float(o.double().mean())
        elif o.numel() == 1 and (red != "sum" or n):
            self._first_call_mean = float(o) / (n if red == "sum" and n else 1)

    def _loss_factor(self, value: Any) -> None:
        """``loss_per_element_factor``: the first recorded loss over its loss call's mean per element."""
        mean, self._first_call_mean = self._first_call_mean, None
        if mean is None or self._calls_before_backward != 1:
            return  # several loss terms: no one call to compare the loss with
        v = float(value)
        if math.isfinite(v) and math.isfinite(mean) and mean != 0:
            self.meta["loss_per_element_factor"] = v / mean

    def _flush_eval(self) -> None:
        ev = self._eval_acc
        if not ev["loss"]:
            return
        self._eval_acc = {"loss": [], "correct": []}
        if self._leak_state in ("collecting", "collected"):
            self._guard("leakage", self._leak_end_of_evaluation)
        total = sum(n for _, n in ev["loss"])
        step = max(0, self.step - 1)
        num = sum(s for s, _ in ev["loss"])
        if isinstance(total, torch.Tensor):
            self.record("val_loss@auto", num / total.to(torch.float64).clamp(min=1), step)
        else:
            self.record("val_loss@auto", num / max(total, 1), step)
        if ev["correct"]:
            seen = sum(n for _, n in ev["correct"])
            hits = sum(c for c, _ in ev["correct"])
            self.record("val_accuracy@auto", hits.to(torch.float64) / seen.to(torch.float64).clamp(min=1), step)

    def _eval_gap(self, orig: Callable[..., Any], args: tuple, kwargs: dict, out: Any) -> None:
        """Loss of the same batch in eval mode, against train mode (V007).

        Side-effect free by construction: in eval mode BatchNorm neither reads nor updates batch
        statistics and dropout draws no random numbers; every module's train/eval flag is put
        back as it was. Skipped when modules carry forward hooks of their own (user code that
        could observe the extra pass).
        """
        for model in self.models:
            captured = self._last_inputs.get(id(model))
            if captured is None:
                continue
            ours = {h.id for h in self._act_handles + self._handles}
            for m in model.modules():
                if m is not model and (set(m._forward_hooks) - ours or set(m._forward_pre_hooks) - ours):
                    return
            flags = [(m, m.training) for m in model.modules()]
            self._own += 1
            try:
                model.eval()
                with torch.no_grad():
                    out_eval = model(*captured[0], **captured[1])
                    if not isinstance(out_eval, torch.Tensor) or out_eval.shape != args[0].shape:
                        return
                    loss_eval = orig(out_eval, *args[1:], **kwargs)
            finally:
                self._own -= 1
                for m, f in flags:
                    m.training = f
            self.record("eval_mode_loss", loss_eval.detach().to(torch.float64).reshape(()))
            self.record("train_mode_loss", out.detach().to(torch.float64).reshape(()))
            return

    # ------------------------------------------------------------------ evaluation in training mode
    def _train_only_of(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The model's dropout (p > 0) and BatchNorm modules: what behaves differently in eval mode."""
        got = self._train_only.get(id(model))
        if got is None:
            got = [(n or type(model).__name__, m) for n, m in model.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)]
            self._train_only[id(model)] = got
        return got

    def _on_eval_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A forward of the model with gradients off: an evaluation, unless its input is the training
        data itself (a no-grad pass over the training set is not validation). Checked for dropout or
        BatchNorm left in training mode (once per evaluation), and hashed for leakage."""
        xs = [t for t in _tensors((args, kwargs)) if t.dim() >= 1]
        if not xs:
            return
        x = xs[0]
        src = self._src_batch
        training = False
        if src is not None and src[0] is not None and src[0]() is x:
            train = self._train_dataset() if self._train_dataset is not None else None
            training = train is not None and src[1] == id(train)
        elif self._is_training_data(x):
            training = True
        if training:
            if self._leak_state in ("waiting", "collecting"):
                self._leak_skipped += int(x.shape[0])
            return
        self._in_eval = True
        if not self._eval_mode_done and not self._eval_checked:
            self._check_eval_mode(None)
        if self._leak_state in ("waiting", "collecting"):
            self._collect_val((module, args, kwargs))

    def _check_eval_mode(self, fn_name: str | None) -> None:
        """At an evaluation: dropout/BatchNorm still in training mode (``model.eval()`` not called)?
        Looked at once per evaluation (a few attribute reads), recorded once per run."""
        self._eval_checked = True
        found = [(n, m) for model in self._known_models() for n, m in self._train_only_of(model) if m.training]
        if not found:
            return
        self._eval_mode_done = True
        from .trace import user_site

        self.event("eval_train_mode", {"modules": [n for n, _ in found][:20],
                                       "types": [type(m).__name__ for _, m in found][:20],
                                       "where": _site_text(user_site(1)), "loss": fn_name},
                   step=max(0, self.step - 1))

    # ------------------------------------------------------------------ stale gradients
    def _check_stale(self) -> None:
        """The first backward() after a sampled optimizer step, before it accumulates: which of the
        primary optimizer's parameters still hold a non-zero gradient. One fused norm over the
        gradients; on the CPU one bool read, and a clean one ends the check. Deliberate gradient
        accumulation clears after each step, so its first backward finds nothing; a later one
        of the same interval that does (a GAN's other player) is not stale if an earlier one was
        clean: the parameters must hold a gradient at every backward() until the next step."""
        st = self._stale
        if st is None or st["closed"]:
            return
        params = self._params_of(st["opt"])
        if st["checks"] == 0:
            from .trace import user_site

            st["step"] = self.step
            st["where"] = _site_text(user_site(1))
        st["checks"] += 1
        idx, grads = [], []
        for i, p in enumerate(params):
            g = p.grad
            if g is not None and g.layout == torch.strided:
                idx.append(i)
                grads.append(g)
        if not grads:
            self._stale = None  # every gradient cleared (set_to_none)
            return
        dev = grads[0].device
        with torch.no_grad():
            norms = [n if n.device == dev else n.to(dev) for n in torch._foreach_norm(grads)]
            nz = torch.stack(norms) != 0
            if len(idx) == len(params):
                full = nz
            else:  # some gradients are None: the mask over all parameters (an index copied to the device)
                full = torch.zeros(len(params), dtype=torch.bool, device=dev)
                full[torch.tensor(idx, device=dev)] = nz
            mask = full if st["mask"] is None else st["mask"] & full
        st["mask"] = mask
        if dev.type == "cpu" and not bool(mask.any()):
            self._stale = None
            return
        if st["checks"] >= STALE_CHECKS:
            st["closed"] = True

    def _finish_stale(self) -> None:
        """The optimizer stepped again: the parameters that held a gradient at every backward() of the
        interval are stale; the writer thread reads the mask (no sync on an accelerator)."""
        st, self._stale = self._stale, None
        if st is None or st["mask"] is None:
            return
        names = [self._param_names.get(id(p), f"param{i}") for i, p in enumerate(self._params_of(st["opt"]))]
        self.record("@stale", (names, st["mask"], st["where"]), st["step"])

    # ------------------------------------------------------------------ train/validation leakage
    @property
    def wants_batch_source(self) -> bool:
        """Whether each loader batch should be remembered (which dataset it came from), for the leakage check."""
        return self._leak_state in ("waiting", "collecting")

    def set_batch_source(self, data: Any, dataset: Any) -> None:
        """The loader's batch: a weak reference to its input element and its dataset's identity."""
        x = data[0] if isinstance(data, (list, tuple)) and data else data
        self._src_batch = (weakref.ref(x) if isinstance(x, torch.Tensor) else None,
                           id(dataset) if dataset is not None else None, self._batch_ids)

    def _note_train_identity(self, dataset: Any, x0: Any, plan: Any) -> None:
        """What the training data is, to tell an evaluation over it from a validation: the training
        loader's dataset, and the storage ranges of the tensors the training batches are cut from."""
        if dataset is not None:
            try:
                self._train_dataset = weakref.ref(dataset)
            except TypeError:
                self._train_dataset = (lambda d=dataset: d)
        cands: list[Any] = []
        if isinstance(x0, torch.Tensor):
            cands.append(x0._base if x0._base is not None else x0)
        if plan is not None:
            cands += [a.data for a in [*plan.arrays, plan.hash_array] if a is not None]
        for t in cands:
            r = _region(t) if isinstance(t, torch.Tensor) else None
            if r is not None and r not in self._train_regions:
                self._train_regions.append(r)

    def _is_training_data(self, x: torch.Tensor) -> bool:
        r = _region(x)
        return r is not None and any(r[0] == p and a <= r[1] and r[2] <= b for p, a, b in self._train_regions)

    def _collect_val(self, captured: tuple[nn.Module, tuple, dict]) -> None:
        """The evaluation forward's input, hashed per sample (bounded), with validation ids: the
        loader's dataset indices, rows of the tensor it is sliced from, or positions in the stream.
        Inputs that are the training data itself (its loader, its tensors) are not validation."""
        from ..checks.data import sample_hashes
        from .datascan import _base_rows

        xs = [t for t in _tensors((captured[1], captured[2])) if t.dim() >= 1]
        if not xs or self._leak_val_bytes >= LEAK_VAL_BYTES or len(self._leak_val) >= LEAK_VAL_ROWS:
            return
        x = xs[0]
        rows = int(x.shape[0])
        if self._leak_state == "waiting":
            self._leak_state = "collecting"
            self._leak_val_step = max(0, self.step - 1)
        ids: list[int] | None = None
        src = self._src_batch
        if src is not None and src[0] is not None and src[0]() is x:
            train = self._train_dataset() if self._train_dataset is not None else None
            if train is not None and src[1] == id(train):
                self._leak_skipped += rows
                return
            if src[2] is not None and len(src[2]) == rows:
                ids = list(src[2])
        elif self._is_training_data(x):
            self._leak_skipped += rows
            return
        if ids is None:
            base = _base_rows(x)
            if base is not None:
                first = (x.storage_offset() - base.storage_offset()) // x.stride(0)
                ids = list(range(first, first + rows))
            else:
                ids = list(range(self._leak_val_positions, self._leak_val_positions + rows))
                self._leak_val_positions += rows
        self._leak_val.extend(zip(sample_hashes(x), ids))
        self._leak_val_bytes += x.numel() * x.element_size()
        if not self._shift_done and self._shift_train is not None:
            if self._shift_val is None:
                from .shift import FeatureMoments

                self._shift_val = FeatureMoments()
            self._shift_val.update(x)

    def _leak_decide(self) -> None:
        """Once both sides are known (the first evaluation is over, the training side hashed), the
        ``data_leakage`` event of ``checks.data.Leakage``, with ``live: True``, at the first evaluation."""
        if self._leak_state != "collected":
            return
        if self._leak_train is None and self._hash_result is not None:
            hr, self._hash_result = self._hash_result, None
            if "error" in hr:
                self._leak_state = "done"
                raise RuntimeError(hr["error"])
            self._leak_train = hr["leak"]
            self._leak_train_info = {"train_source": "dataset scan", "train_complete": hr["complete"]}
        leak = self._leak_train
        if leak is None:
            return  # the training side is still being hashed: at a later evaluation, or at the end
        self._leak_state = "done"
        val, self._leak_val = self._leak_val, []
        self._leak_train = None
        if not val:
            return
        hashes = [h for h, _ in val]
        cover = leak.train_coverage(set(hashes))
        if cover >= LEAK_TRAIN_PASS:
            self.meta["leakage_check"] = {
                "skipped": f"the evaluation holds {cover * 100:.0f} % of the {leak.distinct_train} training samples "
                           "hashed: a pass over the training data, not a validation"}
            return
        leak.add_val_hashes(hashes, [i for _, i in val])
        kind, data = leak.event()
        data.update({"live": True, **self._leak_train_info, "eval_samples_of_training_data": self._leak_skipped})
        self.event(kind, data, step=self._leak_val_step)

    def _leak_end_of_evaluation(self) -> None:
        if self._leak_state == "collecting":
            self._leak_state = "collected"
            self._guard("input-shift", self._shift_decide)
        self._leak_decide()

    def _shift_decide(self) -> None:
        """Once, at the end of the first evaluation: its inputs against the data window's, feature by
        feature (the ``input_shift`` event; nothing when either side is too small or not numeric)."""
        from .shift import compare

        self._shift_done = True
        tr, va, self._shift_train, self._shift_val = self._shift_train, self._shift_val, None, None
        if tr is None or va is None:
            return
        data = compare(tr, va)
        if data is not None:
            self.event("input_shift", {"live": True, **data}, step=self._leak_val_step)

    # ------------------------------------------------------------------ data ids
    def set_batch_ids(self, ids: Iterable[int] | None) -> None:
        self._batch_ids = list(ids) if ids is not None else None
        if self._scan_result is not None:  # the dataset scan finished: say it before this batch is used
            self._guard("dataset-scan", self._publish_scan)

    @property
    def wants_batches(self) -> bool:
        """Whether the loader's batches are still of interest (the first steps' data profile)."""
        return self._profiling or self._trace_state != "done"

    def set_loader_batch(self, data: Any, dataset: Any = None) -> None:
        self._loader_batch = data
        if self._scan_state == "pending":
            self._loader_dataset = dataset

    # ------------------------------------------------------------------ the training set, scanned once
    def _start_dataset_scan(self) -> None:
        """At the first training step: scan the in-memory training set for NaN/Inf rows in a thread."""
        from .datascan import plan_for_loader, plan_for_slices

        self._scan_state = "done"  # one attempt per run
        ds, self._loader_dataset = self._loader_dataset, None
        plan: Any = None
        reason = None
        root = self._trace_root if self._trace_root is not None else next(iter(self._known_models()), None)
        captured = self._last_inputs.get(id(root)) if root is not None else None
        xs = [t for t in _tensors(captured) if t.dim() >= 1] if captured is not None else []
        x0 = xs[0] if xs else None
        if ds is not None and self._loader_batch is not None:
            got = plan_for_loader(ds, self._loader_batch, self._batch_ids, model_input=x0)
            if isinstance(got, str):
                reason = got
            else:
                plan = got
        if plan is None:
            plan = plan_for_slices(x0, self._step_target)
        self._guard("leakage", self._note_train_identity, ds, x0, plan)
        if plan is None or plan.hash_array is None:
            from ..checks.data import Leakage

            self._leak_window = Leakage()  # the training side: the model's inputs in the data window
        if plan is not None and not plan.arrays and plan.skipped:
            reason = reason or plan.skipped
            self.meta["dataset_scan"] = {"skipped": reason}
            if plan.hash_array is None:
                return
        elif plan is None:
            if reason:
                self.meta["dataset_scan"] = {"skipped": reason}
            return
        self._scan_state = "running"
        self._scan_thread = threading.Thread(target=self._scan_worker, args=(plan,), name="traindoctor-datascan",
                                             daemon=True)
        self._scan_thread.start()

    def _scan_worker(self, plan: Any) -> None:
        from .datascan import hash_rows, run_scan

        if plan.arrays:
            try:
                result = run_scan(plan)
            except Exception as exc:  # noqa: BLE001 - reported on the training thread, by _publish_scan
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                result = {"error": f"{type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})"}
            self._scan_result = result  # published at the next batch, before the hashing below ends
        if plan.hash_array is not None:
            try:
                self._hash_result = hash_rows(plan)
            except Exception as exc:  # noqa: BLE001 - reported on the training thread, by _leak_decide
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                self._hash_result = {"error": f"{type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})"}
        del plan

    def _publish_scan(self) -> None:
        """Record the scan's findings (``data_nonfinite`` with ``scan: "dataset"``) and announce them."""
        res, self._scan_result = self._scan_result, None
        if res is None:
            return
        self._scan_state = "done"
        if "error" in res:
            raise RuntimeError(res["error"])
        self.meta["dataset_scan"] = {**res, "step": self.step}
        found = False
        for a in res["arrays"]:
            if a["nonfinite_rows"]:
                found = True
                self.event("data_nonfinite", {
                    "split": "train", "where": a["where"], "count": a["nonfinite_rows"], "sample_ids": a["sample_ids"],
                    "ids": res["ids"], "samples_scanned": res["rows_scanned"], "scan": "dataset",
                    "complete": res["complete"], "source": res["source"], "array": a["name"], "live": True})
        if found:
            self._guard("announce", self._announce)

    # ------------------------------------------------------------------ first-step inspection
    def _inspect_loss_graph(self, loss: torch.Tensor) -> None:
        fn = loss.grad_fn
        if fn is None:
            return
        node = fn
        # skip a final reduction (mean/sum) and scaling to reach the loss node
        for _ in range(4):
            if type(node).__name__ in LOSS_NODES or node is None:
                break
            node = _first_child(node)
        kind = LOSS_NODES.get(type(node).__name__) if node is not None else None
        below = _graph_below(_through_shape(_first_child(node)), depth=3) if node is not None else []
        info: dict[str, Any] = {"graph": _graph_below(fn, depth=5)}
        if kind == "nll" and below and below[0] == "LogSoftmaxBackward0":
            kind = "cross_entropy"
        if kind:
            self.meta["loss_kind"] = kind
            info["loss_kind"] = kind
        saved_in = getattr(node, "_saved_self", None) if node is not None else None
        saved_tg = getattr(node, "_saved_target", None) if node is not None else None
        if isinstance(saved_in, torch.Tensor):
            info["input_shape"] = list(saved_in.shape)
            if saved_in.dim() >= 1:
                self.meta["batch_size"] = int(saved_in.shape[0])
            if kind in ("cross_entropy", "nll") and saved_in.dim() >= 2:
                self.meta["num_classes"] = int(saved_in.shape[1])
        if isinstance(saved_tg, torch.Tensor) and saved_tg.numel():
            t = saved_tg.detach()
            info["target_dtype"] = str(t.dtype).replace("torch.", "")
            if t.is_floating_point():
                tf = t[torch.isfinite(t)]
                if tf.numel():
                    info["target_range"] = [float(tf.min()), float(tf.max())]
                    if kind in ("mse", "l1", "smooth_l1", "huber") and tf.numel() > 1:
                        self.meta["target_var"] = float(tf.to(torch.float64).var())
                        self.meta["target_sq_mean"] = float(tf.to(torch.float64).pow(2).mean())
            else:
                info["target_range"] = [int(t.min()), int(t.max())]
        # pre-loss operations: the configuration faults that show in the graph itself, looked at through
        # the shape-only operations between them (``sigmoid(z).squeeze(1)``, ``softmax(z, 1).view(-1, C)``)
        through: list[str] = []
        pre = _through_shape(_first_child(node), through) if node is not None else None
        through1 = list(through)
        pre2 = _through_shape(_first_child(pre), through) if pre is not None else None
        name_pre = type(pre).__name__ if pre is not None else ""
        name_pre2 = type(pre2).__name__ if pre2 is not None else ""
        # "through": the shape-only operations looked through on the way (absent when none)
        shaped = {"through": through} if through else {}
        if kind == "cross_entropy" and name_pre2 == "SoftmaxBackward0":
            self.event("config", {"fault": "double_softmax", "graph": [name_pre2, name_pre, type(node).__name__],
                                  "module": self._last_module_of(nn.Softmax), **shaped})
        if kind == "nll" and name_pre == "LogBackward0" and name_pre2 == "SoftmaxBackward0":
            self.event("config", {"fault": "log_softmax_unfused", "graph": [name_pre2, name_pre, type(node).__name__],
                                  **shaped})
        if kind == "bce" and name_pre == "SigmoidBackward0":
            self.event("config", {"fault": "sigmoid_bce", "graph": [name_pre, type(node).__name__],
                                  "module": self._last_module_of(nn.Sigmoid), **({"through": through1} if through1 else {})})
        self.meta["loss_graph"] = info
        self._guard("input-stats", self._input_stats)

    def _input_stats(self) -> None:
        """Scale of the first batch's inputs: tells unscaled data from a bad init later (one-off)."""
        for model in self._known_models():
            captured = self._last_inputs.get(id(model))
            if captured is None:
                continue
            for t in _tensors(captured):
                if t.is_floating_point() and t.numel():
                    x = t.detach().to(torch.float64)
                    x = x[torch.isfinite(x)]
                    if x.numel():
                        self.meta["input_stats"] = {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0,
                                                    "absmax": float(x.abs().max()), "shape": list(t.shape)}
                    return

    def _known_models(self) -> list[nn.Module]:
        if self.models:
            return self.models
        return [m for m in self.candidates if any(True for _ in m.parameters())]

    def _last_module_of(self, cls: type) -> str | None:
        found = None
        for model in self._known_models():
            for name, mod in model.named_modules():
                if isinstance(mod, cls):
                    found = name
        return found

    # ------------------------------------------------------------------ non-finite forensics
    def _nonfinite_loss(self, value: float, loss: torch.Tensor | None, dtype: str | None = None) -> None:
        first = self.nonfinite_loss_step is None
        if first:
            self.nonfinite_loss_step = self.step
        if not first or self._forensics_done:
            return
        self._forensics_done = True
        data: dict[str, Any] = {"value": value}
        if dtype is not None:
            data["dtype"] = dtype  # the loss's own dtype: an Inf in float16 is an overflow of its 65504
        self._guard("forensics", self._forensics, data, loss)
        self.event("nonfinite_loss", data)
        msg = f"traindoctor: L001 nonfinite-loss — the loss is {value} at step {self.step}"
        if data.get("input_nonfinite"):
            inp = data["input_nonfinite"]
            msg += f"; the input batch already holds non-finite values (samples {inp.get('sample_ids') or inp['positions']})"
        elif data.get("weights_nonfinite"):
            msg += f"; weights were already non-finite: {', '.join(data['weights_nonfinite'][:3])}"
        elif data.get("first_module"):
            fm = data["first_module"]
            msg += f"; first non-finite output in module `{fm['name']}` ({fm['type']})"
        elif data.get("in_loss"):
            msg += "; the model's outputs are finite: the loss computation itself produced it"
        self.on_critical(msg)

    def _forensics(self, data: dict[str, Any], loss: torch.Tensor | None) -> None:
        ids = self._batch_ids
        data["batch_ids_known"] = ids is not None
        for model in self._known_models():
            # weights already non-finite?
            params = [p for p in model.parameters()]
            if params:
                with torch.no_grad():
                    norms = torch.stack(torch._foreach_norm([p.detach() for p in params]))
                bad = (~torch.isfinite(norms)).nonzero().flatten().tolist()
                if bad:
                    data["weights_nonfinite"] = [self._param_names.get(id(params[i]), f"param{i}") for i in bad]
                    return
            captured = self._last_inputs.get(id(model))
            if captured is None:
                continue
            args, kwargs = captured
            for i, t in enumerate(_tensors((args, kwargs))):
                rows = _nonfinite_rows(t)
                if rows:
                    data["input_nonfinite"] = {
                        "tensor": f"input[{i}]",
                        "positions": rows[:50],
                        "count": len(rows),
                        "batch_size": int(t.shape[0]),
                        "sample_ids": [ids[r] for r in rows[:50] if ids is not None and r < len(ids)],
                    }
                    return
            self._replay(model, args, kwargs, data, ids)
            if data.get("first_module"):
                return
        if loss is not None and "first_module" not in data:
            data["in_loss"] = True
            if loss.grad_fn is not None:
                data["loss_graph"] = _graph_below(loss.grad_fn, depth=4)

    def _replay(self, model: nn.Module, args: tuple, kwargs: dict, data: dict[str, Any], ids: list[int] | None) -> None:
        """Re-run the forward that produced the non-finite loss, checking every module's output."""
        found: list[tuple[str, nn.Module, Any]] = []
        names = {id(m): n for n, m in model.named_modules()}
        was_discovering = getattr(self, "_replaying", False)
        self._replaying = True
        handles = []

        def check(mod: nn.Module, inp: Any, out: Any) -> None:
            if found:
                return
            for t in _tensors(out):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    found.append((names.get(id(mod), type(mod).__name__), mod, t))
                    return

        for m in model.modules():
            handles.append(m.register_forward_hook(check))
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self._own += 1
        try:
            with torch.no_grad():
                model(*args, **kwargs)
        finally:
            self._own -= 1
            self._replaying = was_discovering
            for h in handles:
                h.remove()
            for b, saved in buffers:
                b.data.copy_(saved)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        if found:
            name, mod, out = found[0]
            rows = _nonfinite_rows(out)
            data["first_module"] = {
                "name": name or type(model).__name__,
                "type": type(mod).__name__,
                "positions": rows[:50],
                "count": len(rows),
                "sample_ids": [ids[r] for r in rows[:50] if ids is not None and r < len(ids)],
            }

    # ------------------------------------------------------------------ writer thread
    def _materialise(self) -> None:
        items = []
        while self._pending:
            items.append(self._pending.popleft())
        points: list[tuple[str, int, float]] = []
        for name, step, value in items:
            if name == "@grad_norms":
                names, g = value
                gl = g.tolist()
                total = math.sqrt(sum(x * x for x in gl)) if all(math.isfinite(x) for x in gl) else float("nan")
                if any(not math.isfinite(x) for x in gl):
                    total = float("inf") if all(not math.isnan(x) for x in gl) else float("nan")
                    bad = [n for n, x in zip(names, gl) if not math.isfinite(x)]
                    self._nonfinite_grads(step, bad)
                points.append(("grad_norm", step, total))
                points.extend((f"grad_norm/{n}", step, x) for n, x in zip(names, gl))
            elif name == "@updates":
                names, u, w = value
                for n, uu, ww in zip(names, u.tolist(), w.tolist()):
                    # a weight of norm 0 (zero init) has no meaningful ratio
                    ratio = uu / ww if ww > 0 else float("nan")
                    points.append((f"update_ratio/{n}", step, ratio))
                    points.append((f"weight_norm/{n}", step, ww))
            elif name == "@stale":
                names, mask, where = value
                hit = [n for n, b in zip(names, mask.tolist()) if b]
                if hit:
                    self.event("stale_grad", {"count": len(hit), "of": len(names), "params": hit[:20], "where": where},
                               step)
            else:
                v = float(value) if not isinstance(value, float) else value
                if name == "loss" and not math.isfinite(v) and self.nonfinite_loss_step is None:
                    # loss read off an accelerator by this thread: too late to replay, not to report
                    self.nonfinite_loss_step = step
                    self._forensics_done = True
                    late: dict[str, Any] = {"value": v, "late": True}
                    if isinstance(value, torch.Tensor):
                        late["dtype"] = _dtype_name(value.dtype)
                    self.event("nonfinite_loss", late, step)
                    self.on_critical(f"traindoctor: L001 nonfinite-loss — the loss is {v} at step {step}")
                points.append((name, step, v))
        with self._lock:
            self._points.extend(points)
            events = list(self._pending_events)
            self._pending_events.clear()
        store = self.store
        if store is not None:
            try:
                store.add_points(points)
                for ev in events:
                    store.add_event(ev.step, ev.kind, ev.data)
                store.flush()
            except Exception as exc:  # noqa: BLE001 - a store that cannot be written never stops the run
                self._store_failed(exc)

    def _store_failed(self, exc: BaseException) -> None:
        """The run store cannot be written (disk full, its directory gone): said once, never tried
        again; the run goes on, kept in memory."""
        store, self.store = self.store, None
        if store is None:
            return
        try:
            store.close()
        except Exception:  # noqa: BLE001 - the same failure again
            pass
        why = " ".join(str(exc).split()) or type(exc).__name__
        self.contain("store", exc, f"cannot write the run store {getattr(store, 'path', '')} ({why}): "
                                   "keeping this run in memory")

    def _close_store(self) -> None:
        store = self.store
        if store is None:
            return
        try:
            self._write_meta()
            store.close()
        except Exception as exc:  # noqa: BLE001
            self._store_failed(exc)

    def _nonfinite_grads(self, step: int, params: list[str]) -> None:
        if any(e.kind == "nonfinite_grad" for e in self._events):
            return
        self.event("nonfinite_grad", {"params": params[:20], "count": len(params)}, step)
        if self.nonfinite_loss_step is not None and step >= self.nonfinite_loss_step:
            return  # an echo of the non-finite loss, already reported
        self.on_critical(
            f"traindoctor: G003 nonfinite-gradients — non-finite gradient at step {step} in {', '.join(params[:3])}"
        )

    def _writer_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._guard("writer", self._materialise)

    def _writer_main(self) -> None:
        try:
            self._writer_loop()
        except BaseException as exc:  # noqa: BLE001 - a dead writer is said once; close() still materialises
            self.contain("writer-thread", exc)

    # ------------------------------------------------------------------ end
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

    def _check_val_sources(self) -> None:
        """One note when the loss functions and the script's printout disagree on a validation loss.

        ``snapshot()`` keeps the precedence (logged > loss functions > printed); the note says which
        value was used, the other one, and why, once per run, at the first evaluation they disagree.
        """
        if self._val_note_done:
            return
        with self._lock:
            pts = [(n, st, v) for n, st, v in self._points if n.startswith("val_loss")]
        auto = {st: v for n, st, v in pts if n == "val_loss@auto"}
        printed = {st: v for n, st, v in pts if n == "val_loss@printed"}
        logged = any(n == "val_loss" for n, _, _ in pts)
        for st in sorted(auto.keys() & printed.keys()):
            a, p = auto[st], printed[st]
            if not (math.isfinite(a) and math.isfinite(p)) or abs(a - p) <= 0.1 * max(abs(a), abs(p)):
                continue
            self._val_note_done = True
            used = ("the val_loss logged with doctor.log(), which always comes first" if logged else
                    f"{a:.4g}, from the loss function (a loss function's value comes before a printed one)")
            self.meta.setdefault("notes", []).append(
                f"val_loss at step {st}: the evaluation's loss-function calls give {a:.4g} (mean per element) but the "
                f"script printed {p:.4g}; used {used}")
            return

    def _write_meta(self) -> None:
        for k, v in self.meta.items():
            self.store.set_meta(k, v)

    def snapshot(self) -> Run:
        """The Run as known now (materialises what is pending)."""
        if not self._closed:
            self._guard("writer", self._materialise)
            self._guard("val-sources", self._check_val_sources)
        with self._lock:
            points = list(self._points)
            events = list(self._events)
        # validation seen automatically stands in only where nothing better exists (what the user
        # logged, then the loss functions, then the printed numbers): the same merge a stored run gets
        return Run.from_points(points, events, dict(self.meta)).resolve_captured()


def wall_clock() -> float:
    return time.perf_counter()
