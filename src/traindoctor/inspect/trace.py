"""The first training step, traced: modules and tensor operations in execution order, with data flow.

Curves say nothing until a run has gone on for a while; the configuration faults behind many
failed runs — a ReLU on the logits, a loss that does not fit the labels, two layers stacked with
nothing between them, probabilities fed to a log — are visible in the first step. This module
watches that one step, from the model's first training forward to ``loss.backward()``:

* PyTorch's global module hooks give the module tree as it runs (the innermost module around
  every operation, and each leaf module's output for the init-scale check);
* a ``torch.overrides.TorchFunctionMode`` sees every top-level tensor operation — inside modules
  (``F.linear`` of an ``nn.Linear``) and between them (``torch.relu``, ``F.softmax``,
  ``torch.log``, ``y.float()``, ``1 - p``) — with its arguments and results, so the data flow
  from the model's input, its parameters and the batch's targets to the loss is known exactly,
  and every operation carries the file and line of the user code that called it.

``StepTrace.facts(loss)`` summarises what rules need as plain JSON (``model_graph`` event): the
losses with what feeds them (the last operation on the prediction, the targets' dtype, range,
one-hot-ness and whether they were cast from integers), hand-written log-of-probability terms,
weight layers that feed each other with no nonlinearity, and the operations applied to the input
before the first weight layer. Nothing here judges; ``rules/model.py`` does.

Cost: one step runs with a Python call per tensor operation (about 10–30 µs each); the mode and
the hooks are removed at that step's ``backward()``, so later steps pay nothing.

ReLU/sigmoid/tanh applied as functions (``F.relu``, ``torch.sigmoid``, ``x.tanh()``) have no module
for the monitor's activation hooks, so the trace measures their outputs as it sees them (dead units,
saturated outputs: ``act_stats``, small 0-d tensors, the outputs themselves not kept) keyed by the
user line, and ``ActivationProbe`` measures the same lines again on sampled steps: a minimal
torch-function mode armed for one forward, a dictionary look-up per operation (measured: 0.14–0.25 %
of a step at cadence 50 on the CPU, ``benchmarks/overhead.py``'s models with ``F.relu``).
"""
from __future__ import annotations

import ast
import linecache
import os
import re
import sys
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .hooks import own_global_hooks
from .losses import LOSS_OPS
from .model import RELU_TYPES, SQUASH_TYPES, WEIGHT_LAYERS
from .tensors import flatten

MAX_NODES = 20_000  # a step with more operations is cut off (the facts say so)

WEIGHT_OPS = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
              "bilinear"}
# operations that move or copy values without changing what they are
SHAPE_OPS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "t", "contiguous",
             "float", "double", "half", "bfloat16", "to", "type", "clone", "detach", "unflatten", "movedim",
             "view_as", "reshape_as", "expand", "expand_as", "cpu", "cuda", "identity", "getitem", "select",
             "narrow", "squeeze_", "unsqueeze_", "swapaxes", "swapdims", "moveaxis", "ravel", "T", "mT", "H", "mH",
             "data", "real"}
# what may stand between the model's last activation and the loss without changing what the values are:
# the shape operations, and taking some of the outputs (a slice, one chunk, selected columns)
HEAD_PASS = SHAPE_OPS | {"split", "chunk", "unbind", "tensor_split", "index_select", "split_with_sizes"}
DROPOUT_OPS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"}
# affine at inference: two weight layers with only these between still compose into one affine map
AFFINE_NORMS = {"batch_norm"}
NORM_OPS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "normalize", "local_response_norm"}
CAST_OPS = {"float", "double", "half", "bfloat16", "to", "type"}
PROB_OPS = {"sigmoid", "softmax", "hardsigmoid"}
# what a probability passes through on its way into a hand-written log: clamps, an epsilon, 1 - p
PROB_PASS = SHAPE_OPS | {"clamp", "clip", "clamp_min", "clamp_max", "add", "radd", "sub", "rsub", "mul", "rmul"}

# activations applied as functions (``F.relu``, ``torch.sigmoid``, ``x.tanh()``): no module to hook, so the
# trace measures them at the first step and ``ActivationProbe`` on sampled steps, keyed by the user line
FUNC_ACTS = ("relu", "sigmoid", "tanh")
# modules the monitor's forward hooks measure already (their forward calls the function inside)
ACT_MODULES: tuple[type, ...] = RELU_TYPES + SQUASH_TYPES
# what a hidden layer's activation passes through before the next weight layer reads it
_HIDDEN_PASS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
                "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "max_pool1d", "max_pool2d",
                "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                "adaptive_max_pool2d", "max_pool2d_with_indices", "cat", "stack", "pad"}
_HIDDEN_READERS = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                   "conv_transpose3d", "bilinear", "matmul", "mm", "bmm", "addmm"}

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_EXAMPLES_DIR = _OWN_DIR + "examples" + os.sep  # the built-in example scripts are user code


def _ours(fn: str) -> bool:
    return fn.startswith(_TORCH_DIR) or (fn.startswith(_OWN_DIR) and not fn.startswith(_EXAMPLES_DIR)) \
        or fn.startswith("<frozen")


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except Exception:  # noqa: BLE001 - an old torch without torch.compiler
        return False


def op_name(func: Any) -> str:
    """``torch.relu``/``F.relu``/``Tensor.relu_`` → ``relu``; ``Tensor.__rsub__`` → ``rsub``."""
    name = getattr(func, "__name__", "") or ""
    if name == "__get__":  # a tensor property (``x.T``, ``x.mT``, ``x.data``): the property's name
        return str(getattr(getattr(func, "__self__", None), "__name__", "get"))
    if isinstance(func, torch._ops.OpOverload):  # aten ops run by a compiled graph: relu.default → relu
        name = name.split(".", 1)[0]
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        name = {"truediv": "div", "rtruediv": "rdiv", "matmul": "matmul", "iadd": "add", "imul": "mul",
                "isub": "sub", "itruediv": "div"}.get(name, name)
    elif name.endswith("_") and not name.startswith("_") and name not in ("squeeze_", "unsqueeze_"):
        name = name[:-1]  # in place: same operation
    return name


def _user_frame(depth: int) -> Any:
    try:
        f = sys._getframe(depth + 1)
    except ValueError:
        return None
    while f is not None:
        if not _ours(f.f_code.co_filename):
            return f
        f = f.f_back
    return None


def user_site(depth: int = 2) -> tuple[str, int] | None:
    """File and line of the innermost caller outside torch and traindoctor."""
    f = _user_frame(depth)
    return (f.f_code.co_filename, f.f_lineno) if f is not None else None


def _argument_line(frame: Any, index: int) -> tuple[str, int] | None:
    """The line of positional argument ``index`` of the call the frame is executing (or of the
    ``index``-th element of a list literal inside it: ``nn.Sequential(*[...])`` is not followed)."""
    try:
        pos = list(frame.f_code.co_positions())[frame.f_lasti // 2]
    except (AttributeError, IndexError, ValueError):
        return None
    line, end, col, end_col = pos
    if None in pos:
        return None
    fn = frame.f_code.co_filename
    lines = [linecache.getline(fn, i) for i in range(line, end + 1)]
    if not lines or not lines[0]:
        return None
    lines[-1] = lines[-1].encode()[:end_col].decode(errors="ignore")
    lines[0] = " " * col + lines[0].encode()[col:].decode(errors="ignore")
    try:
        tree = ast.parse("\n".join(x.rstrip("\n") for x in lines).strip(), mode="eval")
    except SyntaxError:
        try:
            tree = ast.parse("(" + "\n".join(x.rstrip("\n") for x in lines).strip() + ")", mode="eval")
        except SyntaxError:
            return None
    call = tree.body
    if not isinstance(call, ast.Call) or index >= len(call.args) or isinstance(call.args[index], ast.Starred):
        return None
    return fn, line + call.args[index].lineno - 1


def site_text(site: tuple[str, int] | None) -> dict[str, Any]:
    """``{"where": "train.py:23", "code": "<the source line>"}`` for a user site."""
    if not site:
        return {}
    fn, line = site
    code = linecache.getline(fn, line).strip()
    out: dict[str, Any] = {"where": f"{fn}:{line}"}
    if code:
        out["code"] = code[:160]
    return out


class ConstructionSites:
    """Where each submodule was created: the user line of ``nn.Sequential(...)`` or ``self.fc = nn.Linear(...)``.

    PyTorch's global module-registration hook fires when a module is assigned into another (an
    attribute, ``add_module``, the containers); the innermost user frame at that moment is the
    line that built it. Installed by ``traindoctor run`` before the script starts; one frame walk
    per registered submodule.
    """

    def __init__(self) -> None:
        self.sites: weakref.WeakKeyDictionary[nn.Module, tuple[str, int]] = weakref.WeakKeyDictionary()
        self._handle: Any = None

    def install(self) -> None:
        from torch.nn.modules.module import register_module_module_registration_hook

        self._handle = register_module_module_registration_hook(self._hook)

    def _hook(self, module: nn.Module, name: str, submodule: Any) -> None:
        try:
            if isinstance(submodule, nn.Module) and submodule not in self.sites:
                frame = _user_frame(2)
                if frame is not None:
                    site = (frame.f_code.co_filename, frame.f_lineno)
                    if isinstance(module, (nn.Sequential, nn.ModuleList)) and name.isdigit():
                        # nn.Sequential(a, b, c) over several lines: the line of the argument itself
                        site = _argument_line(frame, int(name)) or site
                    self.sites[submodule] = site
        except Exception:  # noqa: BLE001 - never break model construction
            pass
        return None

    def get(self, module: nn.Module) -> tuple[str, int] | None:
        try:
            return self.sites.get(module)
        except TypeError:
            return None

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _attr_site(parent: nn.Module, attr: str) -> tuple[str, int] | None:
    """``self.<attr> = ...`` in the parent class's ``__init__`` (Doctor mode: the model exists already).

    Read line by line from the file's cached text from ``__init__``'s first line on: no parsing.
    """
    init = getattr(type(parent).__init__, "__code__", None)
    if init is None or type(parent).__module__.startswith("torch."):
        return None
    fn, start = init.co_filename, init.co_firstlineno
    lines = linecache.getlines(fn)
    if not lines:
        return None
    pat = re.compile(rf"\bself\.{re.escape(attr)}\s*(:[^=]*)?=(?!=)")
    for i in range(start - 1, min(len(lines), start + 400)):
        if pat.search(lines[i]):
            return fn, i + 1
        if i > start and lines[i].lstrip().startswith("def ") and not lines[i].startswith((" " * 9, "\t\t")):
            break  # the next method: __init__ is over
    return None


@dataclass
class Node:
    idx: int
    op: str
    module: nn.Module | None
    # ("node", idx) | ("param", name) | ("input", i) | ("data", None) | ("const", None) for tensor arguments,
    # ("scalar", v) for Python numbers
    inputs: list[tuple[str, Any]]
    # strong references only where the facts need values: a loss call's prediction and targets,
    # the data-only operands of a product (a hand-written loss's targets); nothing else is kept
    # alive, so the traced step needs no more memory than the step itself
    tensors: list[torch.Tensor | None]
    out: Any  # weakref.ref to the (first) output tensor
    site: tuple[str, int] | None
    extra: dict[str, Any] = field(default_factory=dict)

    def output(self) -> torch.Tensor | None:
        return self.out() if self.out is not None else None


def act_stats(op: str, out: torch.Tensor) -> dict[str, Any]:
    """What the monitor's activation hooks measure, for one output (0-d tensors, no device sync):
    units silent for every sample of the batch (ReLU), outputs in the flat tails (sigmoid < 0.01 or
    > 0.99, |tanh| > 0.99). Nothing of the output is kept."""
    with torch.no_grad():
        o = out.detach().reshape(out.shape[0], -1)
        if op == "relu":
            # one pass: a ReLU's output is ≥ 0, so a unit is alive iff its largest value is > 0 (the
            # hooks' ``(o > 0).any(0)``) and the largest |value| is the largest column maximum
            col = o.amax(dim=0)
            return {"dead": (~(col > 0)).sum(), "units": int(o.shape[1]), "absmax": col.max()}
        tails = ((o < 0.01) | (o > 0.99)) if op == "sigmoid" else (o.abs() > 0.99)
        return {"sat": tails.sum(), "elems": int(o.numel())}


def merge_act_stats(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Several calls at one line (a loop over layers): the counts added, the largest value kept."""
    if a is None:
        return b
    out = {k: a[k] + b[k] for k in a if k != "absmax"}
    if "absmax" in a:
        out["absmax"] = torch.maximum(a["absmax"], b["absmax"])
    return out


def act_series(op: str, name: str, stats: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The series the activation hooks write (``dead_frac/``, ``act_absmax/``, ``saturated_frac/``)."""
    if op == "relu":
        return [(f"dead_frac/{name}", stats["dead"].to(torch.float64) / max(stats["units"], 1)),
                (f"act_absmax/{name}", stats["absmax"].to(torch.float64))]
    return [(f"saturated_frac/{name}", stats["sat"].to(torch.float64) / max(stats["elems"], 1))]


def leave_mode(mode: TorchFunctionMode) -> None:
    """Take ``mode`` off the torch-function mode stack, wherever it sits: a mode the user entered
    after ours is lifted off and put back, so the user's own stays active."""
    from torch.overrides import _get_current_function_mode_stack

    stack = _get_current_function_mode_stack()
    if stack and stack[-1] is mode:
        mode.__exit__(None, None, None)
    elif any(m is mode for m in stack):
        above = []
        while True:
            m = torch._C._pop_torch_function_stack()
            if m is mode:
                break
            above.append(m)
        for m in reversed(above):
            torch._C._push_on_torch_function_stack(m)


_ACT_OF: dict[Any, str | None] = {}  # torch function → "relu"/"sigmoid"/"tanh" or None, filled as seen


def _act_op(func: Any) -> str | None:
    try:
        return _ACT_OF[func]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable
        return None
    name = op_name(func)
    op = name if name in FUNC_ACTS else None
    _ACT_OF[func] = op
    return op


class ActivationProbe(TorchFunctionMode):
    """The functional activations of a sampled step, measured at the lines the first step found.

    Armed by the monitor for one forward of the model (entered in its forward pre-hook, left in its
    forward hook), so the other steps pay nothing. Every torch function of that forward passes
    through ``__torch_function__``: one call and one dictionary look-up each; only a ``relu``,
    ``sigmoid`` or ``tanh`` call also reads its user line and measures its output (``act_stats``).
    """

    def __init__(self, sites: dict[tuple[str, str, int], str]) -> None:
        super().__init__()
        self.sites = sites  # (op, file, line) → the series' suffix
        self.stats: dict[str, tuple[str, dict[str, Any]]] = {}
        self.active = False
        self.paused = 0  # > 0 while the doctor itself computes
        self.error: str | None = None

    def start(self) -> None:
        self.active = True
        self.__enter__()

    def stop(self) -> None:
        if self.active:
            self.active = False
            leave_mode(self)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.paused or not self.active or self.error is not None:
            return out
        op = _act_op(func)
        if op is not None and isinstance(out, torch.Tensor) and not _compiling():
            try:
                site = user_site(1)
                name = self.sites.get((op, *site)) if site is not None else None
                if name is not None and out.is_floating_point() and out.dim() >= 1 and out.numel():
                    prev = self.stats.get(name)
                    self.stats[name] = (op, merge_act_stats(prev[1] if prev else None, act_stats(op, out)))
            except Exception as exc:  # noqa: BLE001 - measuring fails, the step does not
                self.error = f"{type(exc).__name__}: {exc}"
        return out


# what the last operation makes of the values the loss receives
_INPUT_KIND = {"logits": "logits (unbounded)", "softmax": "probabilities", "sigmoid": "probabilities",
               "hardsigmoid": "probabilities", "log_softmax": "log-probabilities", "log": "log-probabilities",
               "logsigmoid": "log-probabilities", "relu": "non-negative", "relu6": "non-negative",
               "softplus": "non-negative", "tanh": "bounded [-1, 1]", "hardtanh": "bounded [-1, 1]",
               "input": "the model's input", "data": "data"}


def _target_kind(t: dict[str, Any], pred_shape: list[int] | None) -> str:
    """class indices, one-hot, multi-label, binary, probabilities or continuous (from the facts)."""
    dtype = str(t.get("dtype", ""))
    if not dtype:
        return "unknown"
    if dtype.startswith(("int", "uint", "long")):
        return "class indices"
    if dtype == "bool":
        return "binary"
    if t.get("one_hot"):
        return "one-hot"
    if t.get("multi_hot"):
        return "multi-label"
    zero_one = t.get("integer_valued") and t.get("min", 0) >= 0 and t.get("max", 0) <= 1
    if zero_one:
        return "binary"
    if t.get("rows_sum_to_one") and pred_shape and t.get("shape") == pred_shape:
        return "probabilities"
    if t.get("integer_valued") and t.get("cast_from"):
        return "integers cast to float"
    return "continuous"


class StepTrace(TorchFunctionMode):
    """Record one training step: ``start(root, inputs)`` … ``stop()``, then ``facts(loss)``."""

    def __init__(self, sites: ConstructionSites | None = None) -> None:
        super().__init__()
        self.sites = sites
        self.nodes: list[Node] = []
        self.producer: dict[int, tuple[int, Any]] = {}  # id(tensor) → (node, weakref) : ids are checked, not trusted
        self._dep: list[bool] = []  # node depends on the model's input or parameters
        self.root: nn.Module | None = None
        # leaf modules in execution order, with the spread of a weight layer's output (0-d tensor, read later)
        self.leaf_outputs: list[tuple[nn.Module, Any]] = []
        self._params: dict[int, str] = {}
        self._inputs: dict[int, tuple[int, Any]] = {}
        self._mods: list[nn.Module] = []
        self._hooks: list[Any] = []
        self.active = False
        self.paused = 0  # > 0 while the doctor itself computes: its operations are not recorded
        self.forward_site: tuple[str, int] | None = None
        # (prediction, targets) of each loss in ``facts()["losses"]``, set by ``facts()``
        self.loss_tensors: list[tuple[Any, Any]] = []
        self.truncated = False
        self.error: str | None = None
        # functional activations by (op, file, line): calls, node indices, ``act_stats`` merged
        self.act_sites: dict[tuple[str, str, int], dict[str, Any]] = {}

    # ------------------------------------------------------------------ start / stop
    def start(self, root: nn.Module, inputs: Iterable[Any], *, inside: bool = True) -> None:
        """Begin recording; ``inside``: called from the root's forward pre-hook (its forward is running)."""
        self.root = root
        self._params = {id(p): n for n, p in root.named_parameters()}
        for i, t in enumerate(t for t in flatten(list(inputs)) if isinstance(t, torch.Tensor)):
            self._inputs.setdefault(id(t), (i, weakref.ref(t)))
        self._mods = [root] if inside else []  # inside its pre-hook: the global pre-hook missed the root
        mm = torch.nn.modules.module
        self._hooks = [mm.register_module_forward_pre_hook(self._pre), mm.register_module_forward_hook(self._post)]
        own_global_hooks(self._hooks, True)  # torch.compile must not warn about the doctor's own global hooks
        self.forward_site = user_site(2)  # the user's `model(x)` line
        self.active = True
        self.__enter__()

    def stop(self) -> None:
        """Leave the function mode and remove the hooks (idempotent, safe if another mode sits above)."""
        if not self.active:
            return
        self.active = False
        own_global_hooks(self._hooks, False)
        for h in self._hooks:
            h.remove()
        self._hooks = []
        leave_mode(self)

    def _pre(self, module: nn.Module, args: Any) -> None:
        if _compiling():
            return
        if self.truncated:
            # too many operations and no backward() yet (a script that never trains, a huge step):
            # leave the mode now, from a hook (inside __torch_function__ the mode stack is not ours)
            self.stop()
            return
        self._mods.append(module)

    def _post(self, module: nn.Module, args: Any, out: Any) -> None:
        if _compiling():
            return
        try:
            for i in range(len(self._mods) - 1, -1, -1):
                if self._mods[i] is module:
                    del self._mods[i:]
                    break
            if module is not self.root and next(module.children(), None) is None:
                spread = None
                if isinstance(module, WEIGHT_LAYERS) and isinstance(out, torch.Tensor) and out.is_floating_point() \
                        and out.dim() >= 1 and out.shape[0] > 1:
                    self.paused += 1
                    try:
                        with torch.no_grad():  # the input-dependent part: spread across the batch per unit
                            o = out.detach()[:256].reshape(min(out.shape[0], 256), -1)
                            if o.shape[1] > 4096:  # a conv map: a strided sample of its units is enough
                                o = o[:, :: -(-o.shape[1] // 4096)]
                            spread = o.float().var(0).mean().sqrt()
                    finally:
                        self.paused -= 1
                self.leaf_outputs.append((module, spread))
        except Exception as exc:  # noqa: BLE001
            self.error = repr(exc)

    # ------------------------------------------------------------------ recording
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if not self.active or self.paused or self.truncated or _compiling():
            # (under torch.compile the operations become a graph: recording them would break it)
            return func(*args, **kwargs)  # the doctor's own work (hooks, measurements) is not the script's
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = func(*args, **kwargs)
        for w in caught:
            # a warning whose stacklevel points at this frame is re-issued at the user's line, as without us
            fn, line = (w.filename, w.lineno)
            if fn == __file__:
                site = user_site(2)
                fn, line = site if site is not None else (fn, line)
            warnings.warn_explicit(w.message, w.category, fn, line, module=None, registry=None)
        if self.active and self.error is None:
            try:
                self._record(func, args, kwargs, out)
            except Exception as exc:  # noqa: BLE001 - recording fails, the step does not
                self.error = f"{type(exc).__name__}: {exc}"
        return out

    def _source(self, t: torch.Tensor) -> tuple[str, Any]:
        hit = self.producer.get(id(t))
        if hit is not None and hit[1]() is t:
            return ("node", hit[0])
        n = self._params.get(id(t))
        if n is not None:
            return ("param", n)
        k = self._inputs.get(id(t))
        if k is not None and k[1]() is t:
            return ("input", k[0])
        if t.requires_grad and t.is_leaf:
            return ("param", "")  # a parameter of another model (a GAN's discriminator) or a free tensor
        if t.numel() == 1:
            return ("const", None)  # torch.tensor(1e-7), a 1-element batch: data, but not targets
        return ("data", None)

    def _record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        outs = [out] if isinstance(out, torch.Tensor) else (
            [o for o in out if isinstance(o, torch.Tensor)] if isinstance(out, (tuple, list)) else [])
        if not outs:
            return  # .dim(), .shape, .dtype: no data flow
        if len(self.nodes) >= MAX_NODES:
            self.truncated = True  # recording stops here; the mode is left at the next module call
            return
        name = op_name(func)
        inputs: list[tuple[str, Any]] = []
        tensors: list[torch.Tensor | None] = []
        for a in flatten((args, kwargs)):
            if isinstance(a, torch.Tensor):
                inputs.append(self._source(a))
                tensors.append(a)
            elif isinstance(a, (int, float)) and not isinstance(a, bool):
                inputs.append(("scalar", a))
        srcs = [x for x in inputs if x[0] != "scalar"]
        dep = any(x[0] in ("param", "input") or (x[0] == "node" and self._dep[x[1]]) for x in srcs)
        if name not in LOSS_OPS:
            keep_data = name in ("mul", "rmul")
            tensors = [t if keep_data and not (x[0] in ("param", "input") or (x[0] == "node" and self._dep[x[1]]))
                       else None for x, t in zip(srcs, tensors)]
        mod = self._mods[-1] if self._mods else None
        node = Node(len(self.nodes), name, mod, inputs, tensors, weakref.ref(outs[0]), user_site(3))
        if name in WEIGHT_OPS and len(args) >= 2 and isinstance(args[1], torch.Tensor):
            node.extra["weight_shape"] = list(args[1].shape)
            if name.startswith("conv") and not name.startswith("conv_t"):
                g = kwargs.get("groups", args[6] if len(args) > 6 else 1)
                node.extra["groups"] = int(g) if isinstance(g, int) else 1
        if name in LOSS_OPS:
            node.extra.update({k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))})
        if name in CAST_OPS and args and isinstance(args[0], torch.Tensor):
            node.extra["from_dtype"] = str(args[0].dtype).replace("torch.", "")
        self.nodes.append(node)
        self._dep.append(dep)
        for o in outs:
            self.producer[id(o)] = (node.idx, weakref.ref(o))
        if name in FUNC_ACTS and node.site is not None and not isinstance(mod, ACT_MODULES):
            self._measure_act(name, outs[0], node)

    def _measure_act(self, op: str, out: torch.Tensor, node: Node) -> None:
        """A functional ReLU/sigmoid/tanh: its output measured now (small 0-d tensors kept, not the output)."""
        if not out.is_floating_point() or out.dim() < 1 or not out.numel():
            return
        key = (op, node.site[0], node.site[1])
        entry = self.act_sites.get(key)
        if entry is None:
            entry = self.act_sites[key] = {"op": op, "site": node.site, "count": 0, "nodes": [], "stats": None}
        entry["count"] += 1
        entry["nodes"].append(node.idx)
        self.paused += 1
        try:
            entry["stats"] = merge_act_stats(entry["stats"], act_stats(op, out))
        finally:
            self.paused -= 1

    # ------------------------------------------------------------------ reading the graph
    def _names(self) -> dict[int, str]:
        if self.root is None:
            return {}
        return {id(m): (n or type(self.root).__name__) for n, m in self.root.named_modules()}

    def _module_info(self, mod: nn.Module | None, names: dict[int, str]) -> dict[str, Any]:
        if mod is None:
            return {}
        name = names.get(id(mod))
        info: dict[str, Any] = {"module": name, "module_type": type(mod).__name__}
        site = self.sites.get(mod) if self.sites is not None else None
        if site is None and name and self.root is not None and mod is not self.root:
            parent_name, _, attr = name.rpartition(".")
            try:
                parent = self.root.get_submodule(parent_name) if parent_name else self.root
                site = _attr_site(parent, attr)
            except AttributeError:
                site = None
        if site is not None:
            info["defined"] = site_text(site)
        return info

    def _node_of(self, t: Any) -> Node | None:
        if not isinstance(t, torch.Tensor):
            return None
        hit = self.producer.get(id(t))
        return self.nodes[hit[0]] if hit is not None and hit[1]() is t else None

    def _first_tensor_src(self, node: Node) -> tuple[str, Any] | None:
        return next((s for s in node.inputs if s[0] != "scalar"), None)

    def _back(self, src: tuple[str, Any] | None, through: set[str], limit: int = 64
              ) -> tuple[tuple[str, Any] | None, list[str]]:
        """Follow first tensor arguments back through ``through`` ops; the source reached and the ops passed."""
        passed: list[str] = []
        for _ in range(limit):
            if src is None or src[0] != "node":
                return src, passed
            n = self.nodes[src[1]]
            if n.op not in through:
                return src, passed
            passed.append(n.op)
            src = self._first_tensor_src(n)
        return src, passed

    def _ancestors(self, idx: int) -> list[int]:
        seen = {idx}
        stack = [idx]
        while stack:
            for s in self.nodes[stack.pop()].inputs:
                if s[0] == "node" and s[1] not in seen:
                    seen.add(s[1])
                    stack.append(s[1])
        return sorted(seen)

    # ------------------------------------------------------------------ facts
    def facts(self, loss: torch.Tensor | None) -> dict[str, Any]:
        names = self._names()
        out: dict[str, Any] = {"operations": len(self.nodes), "truncated": self.truncated}
        if self.error:
            out["trace_error"] = self.error
        out["modules"] = [{"name": names.get(id(m), type(m).__name__), "type": type(m).__name__}
                          for m, _ in self.leaf_outputs][:400]
        loss_node = self._node_of(loss) if loss is not None else None
        anc = self._ancestors(loss_node.idx) if loss_node is not None else []
        dep = self._dep
        loss_nodes = [self.nodes[i] for i in anc if self.nodes[i].op in LOSS_OPS]
        out["losses"] = [self._loss_facts(n, names) for n in loss_nodes]
        # the tensors each of those losses compared (same order), for the data profile; dropped by release()
        self.loss_tensors = [(n.tensors[0] if n.tensors else None, n.tensors[1] if len(n.tensors) > 1 else None)
                             for n in loss_nodes]
        out["handwritten"] = [] if out["losses"] else self._handwritten(anc, dep, names)
        if loss_node is not None:
            out["loss_site"] = site_text(loss_node.site)
        out["forward_site"] = site_text(self.forward_site)
        out["stacked_linear"] = self._stacked(names)
        out["input_ops"] = self._input_ops()
        # the step as it ran: each operation with the module it ran in (functional calls included)
        seq = []
        for n in self.nodes[:300]:
            where = names.get(id(n.module)) if n.module is not None else None
            seq.append(f"{n.op}@{where}" if where else n.op)
        out["sequence"] = seq
        return out

    def _head(self, src: tuple[str, Any] | None, names: dict[int, str], values: torch.Tensor | None = None
              ) -> dict[str, Any]:
        """The last operation that shaped the values of ``src`` (shape-only ops skipped); its value
        range from ``values`` (the tensor that reached the loss) or its own output if still alive."""
        end, passed = self._back(src, HEAD_PASS | DROPOUT_OPS)
        if end is None:
            return {"op": "none"}
        if end[0] != "node":
            return {"op": end[0]}  # the model's input, a parameter, a data tensor
        n = self.nodes[end[1]]
        head: dict[str, Any] = {"op": "logits" if n.op in WEIGHT_OPS else n.op, "function": n.op,
                                "in_model": n.module is not None, **self._module_info(n.module, names),
                                **({"call": site_text(n.site)} if n.site else {})}
        if n.op in ("softmax", "log_softmax"):
            # the class dimension it normalised over
            dims = [s[1] for s in n.inputs if s[0] == "scalar" and isinstance(s[1], int)]
            if dims:
                head["dim"] = dims[0]
        o = values if values is not None else n.output()
        if isinstance(o, torch.Tensor) and o.is_floating_point() and o.numel():
            with torch.no_grad():
                f = o.detach().float()
                fin = f[torch.isfinite(f)]
                if fin.numel():
                    head["min"], head["max"] = float(fin.min()), float(fin.max())
                    head["zero_fraction"] = float((fin == 0).float().mean())
        if passed:
            head["then"] = passed[::-1]
        return head

    def _target_facts(self, t: Any, src: tuple[str, Any] | None) -> dict[str, Any]:
        if not isinstance(t, torch.Tensor):
            return {}
        info: dict[str, Any] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
        # cast from integers on the way (y.float(), y.to(torch.float32)): class labels, most likely
        s = src
        for _ in range(8):
            if s is None or s[0] != "node":
                break
            n = self.nodes[s[1]]
            if n.op in CAST_OPS and str(n.extra.get("from_dtype", "")).startswith(("int", "uint")):
                info["cast_from"] = n.extra["from_dtype"]
                break
            if n.op not in SHAPE_OPS:
                if n.op == "one_hot":
                    info["one_hot_op"] = True
                break
            s = self._first_tensor_src(n)
        if not t.numel():
            return info
        with torch.no_grad():
            v = t.detach()
            if v.is_complex():
                return info
            vf = v.to(torch.float64).reshape(-1)
            fin = vf[torch.isfinite(vf)]
            info["nonfinite"] = int(vf.numel() - fin.numel())
            if not fin.numel():
                return info
            info["min"], info["max"] = float(fin.min()), float(fin.max())
            info["integer_valued"] = bool((fin == torch.round(fin)).all())
            if fin.numel() <= 1_000_000:
                u = torch.unique(fin)
                info["distinct"] = int(u.numel())
                info["values"] = [float(x) for x in u[:12].tolist()]
            if v.dim() == 2 and v.shape[1] >= 2 and v.is_floating_point() and info["nonfinite"] == 0:
                zero_one = bool(((v == 0) | (v == 1)).all())
                rows = v.to(torch.float64).sum(1)
                info["rows_sum_to_one"] = bool(torch.allclose(rows, torch.ones_like(rows), atol=1e-4))
                info["one_hot"] = zero_one and info["rows_sum_to_one"]
                info["multi_hot"] = zero_one and bool((rows > 1).any())
        return info

    def _loss_facts(self, n: Node, names: dict[int, str]) -> dict[str, Any]:
        srcs = [s for s in n.inputs if s[0] != "scalar"]
        pred_src = srcs[0] if srcs else None
        tgt_src = srcs[1] if len(srcs) > 1 else None
        pred = n.tensors[0] if n.tensors else None
        tgt = n.tensors[1] if len(n.tensors) > 1 else None
        mod = n.module if isinstance(n.module, nn.modules.loss._Loss) else None
        f: dict[str, Any] = {"function": n.op, "kind": LOSS_OPS[n.op], **site_text(n.site),
                             "pred_shape": list(pred.shape) if isinstance(pred, torch.Tensor) else None,
                             "head": self._head(pred_src, names, pred if isinstance(pred, torch.Tensor) else None),
                             "target": self._target_facts(tgt, tgt_src)}
        f["input_kind"] = _INPUT_KIND.get(f["head"].get("op"), "values")
        f["target"]["kind"] = _target_kind(f["target"], f["pred_shape"])
        if mod is not None:
            f["loss_module"] = type(mod).__name__
        else:
            # nn loss modules are called from the user's line; a loss module outside the model is not in `names`
            f["loss_module"] = None
        for k in ("reduction", "ignore_index", "label_smoothing"):
            if k in n.extra:
                f[k] = n.extra[k]
        if mod is not None:
            for k in ("reduction", "ignore_index", "label_smoothing"):
                v = getattr(mod, k, None)
                if isinstance(v, (int, float, str)):
                    f[k] = v
        return f

    def _handwritten(self, anc: list[int], dep: list[bool], names: dict[int, str]) -> list[dict[str, Any]]:
        """Logs of probabilities in a hand-written loss: ``-(y * torch.log(torch.sigmoid(z))).sum(1).mean()``."""
        consumers: dict[int, list[int]] = {}
        for i in anc:
            for s in self.nodes[i].inputs:
                if s[0] == "node":
                    consumers.setdefault(s[1], []).append(i)
        found: list[dict[str, Any]] = []
        by_prob: dict[Any, dict[str, Any]] = {}
        for i in anc:
            n = self.nodes[i]
            if n.op not in ("log", "log2", "log10", "log1p"):
                continue
            passed: list[str] = []
            src = self._first_tensor_src(n)
            for _ in range(32):
                if src is None or src[0] != "node":
                    break
                m = self.nodes[src[1]]
                if m.op not in PROB_PASS:
                    break
                passed.append(m.op)
                # follow the model-dependent operand (1 - p: the p; p + eps: the p)
                nxt = [s for s in m.inputs if s[0] == "node" and dep[s[1]]]
                src = nxt[0] if nxt else self._first_tensor_src(m)
            if src is None or src[0] != "node" or self.nodes[src[1]].op not in PROB_OPS:
                continue
            p = self.nodes[src[1]]
            # torch.sigmoid(z) computed twice (log(p) and log(1 - p)) is one probability: key by its input
            key = self._first_tensor_src(p) or ("node", p.idx)
            entry = by_prob.get(key)
            if entry is None:
                entry = {"prob_op": p.op, "prob": self._head(("node", p.idx), names), "log_calls": [],
                         "complement": False, "clamped": False, "target": {}}
                by_prob[key] = entry
                found.append(entry)
            entry["log_calls"].append(site_text(n.site))
            if "rsub" in passed or "sub" in passed:
                entry["complement"] = True
            if any(o in passed for o in ("clamp", "clip", "clamp_min", "clamp_max", "add", "radd")):
                entry["clamped"] = True
            # the targets: the data-only operand multiplied with this log term
            for c in consumers.get(n.idx, []):
                cn = self.nodes[c]
                if cn.op in ("mul", "rmul") and not entry["target"]:
                    for s, t in zip([s for s in cn.inputs if s[0] != "scalar"], cn.tensors):
                        if not (s[0] == "node" and dep[s[1]]) and s[0] not in ("param", "input"):
                            if isinstance(t, torch.Tensor) and t.numel() > 1:
                                entry["target"] = self._target_facts(t, s)
                                break
        for e in found:
            e["log_calls"] = e["log_calls"][:4]
            if e["target"]:
                e["target"]["kind"] = _target_kind(e["target"], None)
        return found

    def _stacked(self, names: dict[int, str]) -> list[dict[str, Any]]:
        """Weight layers whose input comes straight from another weight layer (shape ops, dropout, BatchNorm between)."""
        pairs: list[dict[str, Any]] = []
        uses: dict[int, int] = {}
        for n in self.nodes:
            for s in n.inputs:
                if s[0] == "node":
                    uses[s[1]] = uses.get(s[1], 0) + 1
        for n in self.nodes:
            if n.op not in WEIGHT_OPS:
                continue
            end, passed = self._back(self._first_tensor_src(n), SHAPE_OPS | DROPOUT_OPS | AFFINE_NORMS)
            if end is None or end[0] != "node" or self.nodes[end[1]].op not in WEIGHT_OPS:
                continue
            # the first layer's output read elsewhere too (q, k and v of one projection, a residual):
            # the composition is not the whole story, the other path can be nonlinear
            chain, src = [], self._first_tensor_src(n)
            while src is not None and src[0] == "node" and src[1] != end[1]:
                chain.append(src[1])
                src = self._first_tensor_src(self.nodes[src[1]])
            if any(uses.get(i, 0) > 1 for i in [end[1], *chain]):
                continue
            p = self.nodes[end[1]]
            pw, nw = p.extra.get("weight_shape") or [], n.extra.get("weight_shape") or []
            if len(pw) < 2 or len(nw) < 2:
                continue
            groups = p.extra.get("groups", 1)
            conv_t = p.op.startswith("conv_t")
            p_in, p_out = (pw[0], pw[1] * groups) if conv_t else (pw[1] * groups, pw[0])
            n_out = nw[1] if n.op.startswith("conv_t") else nw[0]
            pairs.append({
                "first": {**self._module_info(p.module, names), "op": p.op, **site_text(p.site)},
                "second": {**self._module_info(n.module, names), "op": n.op, **site_text(n.site)},
                "between": passed[::-1], "dims": [p_in, p_out, n_out], "first_groups": groups,
            })
            if len(pairs) >= 20:
                break
        return pairs

    def _input_ops(self) -> list[str]:
        """Operations applied to the model's input before the first weight layer (in order, distinct)."""
        ops: list[str] = []
        frontier = {("input", k) for k, _ in self._inputs.values()}
        reached: set[int] = set()
        for n in self.nodes:
            if any(s in frontier or (s[0] == "node" and s[1] in reached) for s in n.inputs):
                if n.op in WEIGHT_OPS or n.op == "embedding":
                    break
                reached.add(n.idx)
                if n.op not in ops:
                    ops.append(n.op)
                if len(ops) >= 12:
                    break
        return ops

    def functional_acts(self) -> list[dict[str, Any]]:
        """The functional activations of the step in execution order: op, user site, calls, merged
        ``act_stats``, and ``hidden``: whether an output is read by a weight layer (through dropout,
        normalisation, pooling or shape operations). A sigmoid or tanh that is not hidden is a gate
        (multiplied with another tensor) or an output (fed to the loss): saturation there is by
        design, so only hidden ones are worth measuring on later steps."""
        consumers: dict[int, list[int]] = {}
        for n in self.nodes:
            for src in n.inputs:
                if src[0] == "node":
                    consumers.setdefault(src[1], []).append(n.idx)
        out = []
        for e in self.act_sites.values():
            hidden = False
            frontier, seen = list(e["nodes"]), set(e["nodes"])
            for _ in range(64):
                if hidden or not frontier:
                    break
                nxt = []
                for i in frontier:
                    for c in consumers.get(i, []):
                        op = self.nodes[c].op
                        if op in _HIDDEN_READERS:
                            hidden = True
                        elif (op in SHAPE_OPS or op in _HIDDEN_PASS) and c not in seen:
                            seen.add(c)
                            nxt.append(c)
                frontier = nxt
            out.append({"op": e["op"], "site": e["site"], "count": e["count"], "stats": e["stats"], "hidden": hidden})
        return out

    def release(self) -> None:
        """Drop every tensor reference (the facts are plain data)."""
        self.nodes, self.producer, self.leaf_outputs, self._dep, self._inputs = [], {}, [], [], {}
        self.loss_tensors = []
        self.act_sites = {}
