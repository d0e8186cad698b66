"""Find the pipeline of an unmodified training script at its first training step.

``traindoctor checkup train.py`` runs the script as ``python train.py`` would (as ``__main__``, its own
``sys.argv``) until the first loss is about to be computed, then stops it and hands the
pieces to the checkup:

* the **model** — the outermost module with parameters that ran with gradients on, seen by
  PyTorch's global forward hooks (as ``traindoctor run`` finds it);
* the **loss** — a loss module (global forward pre-hook on ``nn.modules.loss._Loss``), a
  functional loss (``F.cross_entropy`` … seen by a ``TorchFunctionMode`` *before* it runs, so
  labels that would crash it are checked first), a parameterless module called on the model's
  output and the targets, or, for a hand-written loss, the operations recorded between the
  model's output, the batch and ``loss.backward()``;
* the **data loader** — the ``DataLoader`` whose iterator yielded the batch in use (its
  ``__iter__``/``__next__`` are wrapped while the script runs), or, for a loop that slices
  tensors by hand, a loader built from those tensors;
* the **optimizer** — the ``torch.optim.Optimizer`` holding the model's parameters;
* the **validation data** — another ``DataLoader``, ``Dataset`` or pair of tensors named like
  validation data (``val_loader``, ``X_val``/``y_val`` …) in the script's frames.

Between the batch and the model, and between the model and the loss, scripts reshape, cast and
scale (``x.view(-1, 784)``, ``y.float().unsqueeze(1)``, ``x / 255``). The function mode records
those top-level operations on the batch and on the model's output, and the checkup replays them
on every batch it reads, so the checks see exactly what the training would have fed.
"""
from __future__ import annotations

import functools
import gc
import inspect
import os
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import TrainDoctorError
from ..inspect.crash import crash_event_data
from ..inspect.data import sample_hashes
from ..inspect.hooks import own_global_hooks
from ..inspect.losses import FUNCTIONAL_LOSSES, MODULE_KINDS
from ..inspect.script import check_script, run_as_main
from ..inspect.tensors import flatten

VAL_NAME = re.compile(r"(^|_)(val|valid|validation|dev|test|eval|holdout)(_|$|\d)", re.I)
X_NAME = re.compile(r"^(x|inputs?|features?|data|images?)_?(val|valid|validation|dev|test|eval)$", re.I)
Y_NAME = re.compile(r"^(y|labels?|targets?)_?(val|valid|validation|dev|test|eval)$", re.I)
MAX_NODES = 4096


class _Stop(BaseException):
    """Raised inside the script at its first loss: unwinds it without running the step."""


@dataclass
class _Node:
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    index: int | None  # element of a tuple result


class Tracer:
    """Top-level tensor operations of the script, replayable on new inputs.

    ``sources`` are the tensors a replay substitutes (the batch's elements, the model's
    output); every other tensor an operation used is a constant (captured by reference, like a
    closure would). Only the most recent ``MAX_NODES`` operations are kept.
    """

    def __init__(self) -> None:
        self.nodes: OrderedDict[int, tuple[Any, _Node]] = OrderedDict()
        self.sources: dict[int, tuple[Any, str]] = {}

    def reset_sources(self, prefix: str) -> None:
        for k in [k for k, (_, p) in self.sources.items() if p.startswith(prefix)]:
            del self.sources[k]

    def source(self, t: torch.Tensor, path: str) -> None:
        self.sources[id(t)] = (t, path)

    def record(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        outs = [(result, None)] if isinstance(result, torch.Tensor) else (
            [(r, i) for i, r in enumerate(result) if isinstance(r, torch.Tensor)] if isinstance(result, tuple) else [])
        for r, i in outs:
            if id(r) in self.sources and self.sources[id(r)][0] is r:
                continue  # an identity op (x.to(same device)): keep it a source
            self.nodes[id(r)] = (r, _Node(func, args, kwargs, i))
            self.nodes.move_to_end(id(r))
        while len(self.nodes) > MAX_NODES:
            self.nodes.popitem(last=False)

    def _lookup(self, t: Any) -> tuple[str, Any] | None:
        if not isinstance(t, torch.Tensor):
            return None
        s = self.sources.get(id(t))
        if s is not None and s[0] is t:
            return ("source", s[1])
        n = self.nodes.get(id(t))
        if n is not None and n[0] is t:
            return ("node", n[1])
        return None

    def paths(self, t: Any, _depth: int = 0) -> set[str]:
        """The sources ``t`` was computed from."""
        hit = self._lookup(t)
        if hit is None or _depth > 200:
            return set()
        if hit[0] == "source":
            return {hit[1]}
        node: _Node = hit[1]
        out: set[str] = set()
        for a in flatten((node.args, node.kwargs)):
            out |= self.paths(a, _depth + 1)
        return out

    def steps(self, t: Any, _depth: int = 0) -> list[str]:
        """The operations from the sources to ``t``, by name (for the report)."""
        hit = self._lookup(t)
        if hit is None or hit[0] == "source" or _depth > 50:
            return []
        node: _Node = hit[1]
        out: list[str] = []
        for a in flatten((node.args, node.kwargs)):
            out += self.steps(a, _depth + 1)
        return out + [getattr(node.func, "__name__", str(node.func))]

    def replayer(self, t: Any) -> Callable[[dict[str, Any]], Any]:
        """``f(env)`` recomputing ``t`` with each source path replaced by ``env[path]``."""
        memo: dict[int, Callable[[dict[str, Any]], Any]] = {}

        def build(x: Any, depth: int = 0) -> Callable[[dict[str, Any]], Any]:
            if isinstance(x, (list, tuple)):
                parts = [build(v, depth + 1) for v in x]
                typ = type(x)
                if typ in (list, tuple):
                    return lambda env: typ(p(env) for p in parts)
                return lambda env: typ(*[p(env) for p in parts])
            if isinstance(x, dict):
                items = [(k, build(v, depth + 1)) for k, v in x.items()]
                return lambda env: {k: p(env) for k, p in items}
            hit = self._lookup(x) if depth < 400 else None
            if hit is None:
                return lambda env: x
            if id(x) in memo:
                return memo[id(x)]
            if hit[0] == "source":
                path = hit[1]
                f = lambda env: env[path]  # noqa: E731
            else:
                node: _Node = hit[1]
                a = build(node.args, depth + 1)
                k = build(node.kwargs, depth + 1)
                idx = node.index
                fn = node.func

                def f(env: dict[str, Any], a: Any = a, k: Any = k, fn: Any = fn, idx: Any = idx) -> Any:
                    r = fn(*a(env), **k(env))
                    return r[idx] if idx is not None else r
            memo[id(x)] = f
            return f

        return build(t)


def _is_default(fn: Any, name: str, value: Any) -> bool:
    """Whether ``fn``'s parameter ``name`` defaults to ``value`` (the function mode passes them all)."""
    try:
        p = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    if p is None or p.default is inspect.Parameter.empty or isinstance(value, torch.Tensor):
        return False
    try:
        return bool(p.default == value) and type(p.default) is type(value)
    except Exception:  # noqa: BLE001
        return False


def _batch_paths(item: Any, prefix: str = "batch") -> list[tuple[str, torch.Tensor]]:
    if isinstance(item, torch.Tensor):
        return [(prefix, item)]
    if isinstance(item, (list, tuple)):
        return [p for i, v in enumerate(item) for p in _batch_paths(v, f"{prefix}[{i}]")]
    if isinstance(item, dict):
        return [p for k, v in item.items() for p in _batch_paths(v, f"{prefix}[{k!r}]")]
    return []


def _env_of(item: Any) -> dict[str, Any]:
    return dict(_batch_paths(item))


@dataclass
class Found:
    """What the script showed at its first loss."""

    model: nn.Module | None = None
    model_name: str | None = None
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    loss_how: str = ""
    optimizer: torch.optim.Optimizer | None = None
    train_loader: Any = None
    train_how: str = ""
    val_loader: Any = None
    val_how: str = ""
    batch_fn: Callable[[Any], Any] | None = None
    output_fn: Callable[[Any], Any] | None = None
    where: str | None = None
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class _Mode(TorchFunctionMode):
    def __init__(self, disc: Discovery) -> None:
        super().__init__()
        self.d = disc

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        d = self.d
        if d.depth == 0 and d.armed:
            if func in FUNCTIONAL_LOSSES and d.roots_with_params():
                d.intercept_loss(("function", func, kwargs), args, kwargs)
            res = func(*args, **kwargs)
            if d.active and (any(isinstance(a, torch.Tensor) for a in flatten((args, kwargs)))):
                d.tracer.record(func, args, kwargs, res)
            return res
        return func(*args, **kwargs)


class Discovery:
    """Installs the hooks, runs the script to its first loss, uninstalls everything."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.tracer = Tracer()
        self.depth = 0
        self.armed = True
        self.active = False  # recording top-level operations (after the first batch or model call)
        self.roots: list[tuple[nn.Module, tuple[Any, ...], Any]] = []  # modules with parameters
        self.calls: list[tuple[nn.Module, tuple[Any, ...], Any]] = []  # parameterless ones
        self.loader_of_iter: dict[int, Any] = {}
        self.last_item: Any = None
        self.last_loader: Any = None
        self.captured: dict[str, Any] | None = None
        self._handles: list[Any] = []
        self._patched: list[tuple[Any, str, Any]] = []

    # ------------------------------------------------------------------ hooks
    def roots_with_params(self) -> list[tuple[nn.Module, tuple[Any, ...], Any]]:
        return self.roots

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.depth == 0 and self.armed and torch.is_grad_enabled():
            if isinstance(module, nn.modules.loss._Loss) and self.roots_with_params():
                self.intercept_loss(("module", module, {}), args, {})
            elif (next(module.parameters(), None) is None and len(args) >= 2
                  and self.roots_with_params() and self._from_output(args[0]) and self._from_batch(args[1])):
                self.intercept_loss(("module", module, {}), args, {})
        self.depth += 1

    def _post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth != 0 or not self.armed or isinstance(module, nn.modules.loss._Loss):
            return
        if next(module.parameters(), None) is None:
            # a parameterless module at top level (Flatten, Softmax, a custom loss): an operation
            self.calls.append((module, args, out))
            self.calls = self.calls[-8:]
            if self.active:
                self.tracer.record(module, args, {}, out)
            return
        if torch.is_grad_enabled():
            self.active = True
            self.roots.append((module, args, out))
            n = len(self.roots) - 1
            for path, t in _batch_paths(out, f"out{n}"):
                self.tracer.source(t, path)

    def _from_output(self, t: Any) -> bool:
        return any(p.startswith("out") for p in self.tracer.paths(t))

    def _from_batch(self, t: Any) -> bool:
        return any(p.startswith("batch") for p in self.tracer.paths(t))

    def _backward(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def backward(t: torch.Tensor, *a: Any, **k: Any) -> Any:
            if self.armed and self.depth == 0 and t.numel() == 1 and t.requires_grad and self.roots_with_params():
                self.intercept_loss(("backward", None, {}), (t,), {})
            return orig(t, *a, **k)

        return backward

    def _iter(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def __iter__(loader: Any) -> Any:
            it = orig(loader)
            self.loader_of_iter[id(it)] = loader
            return it

        return __iter__

    def _next(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def __next__(it: Any) -> Any:
            item = orig(it)
            if self.armed:
                self.last_item = item
                self.last_loader = self.loader_of_iter.get(id(it))
                self.active = True
                self.tracer.reset_sources("batch")
                for path, t in _batch_paths(item):
                    self.tracer.source(t, path)
            return item

        return __next__

    def _patch(self, owner: Any, name: str, new: Any) -> None:
        self._patched.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)

    def install(self) -> None:
        from torch.utils.data import dataloader as dl

        mm = torch.nn.modules.module
        self._handles = [mm.register_module_forward_pre_hook(self._pre), mm.register_module_forward_hook(self._post)]
        own_global_hooks(self._handles, True)  # no torch.compile(module) warning about these
        self._patch(torch.Tensor, "backward", self._backward(torch.Tensor.backward))
        self._patch(dl.DataLoader, "__iter__", self._iter(dl.DataLoader.__iter__))
        self._patch(dl._BaseDataLoaderIter, "__next__", self._next(dl._BaseDataLoaderIter.__next__))

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        own_global_hooks(self._handles, False)
        self._handles = []
        for owner, name, orig in reversed(self._patched):
            setattr(owner, name, orig)
        self._patched = []
        self.armed = False

    # ------------------------------------------------------------------ the first loss
    def intercept_loss(self, how: tuple[str, Any, dict[str, Any]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.armed = False
        frames = []
        f = sys._getframe(1)
        while f is not None:
            frames.append(f)
            f = f.f_back
        self.captured = {"how": how, "args": args, "kwargs": kwargs, "frames": frames}
        raise _Stop()


# ---------------------------------------------------------------------- running the script
def _user_frames(frames: list[Any], script: Path) -> list[Any]:
    target = str(script.resolve())
    out = []
    for f in frames:
        fn = f.f_code.co_filename
        try:
            if os.path.realpath(fn) == target:
                out.append(f)
        except (OSError, ValueError):
            continue
    return out


def _where(frames: list[Any], script: Path) -> str | None:
    uf = _user_frames(frames, script)
    return f"{uf[0].f_code.co_filename}:{uf[0].f_lineno}" if uf else None


def _names(frames: list[Any]) -> dict[int, str]:
    """id(object) → variable name, innermost frame first, locals then globals."""
    out: dict[int, str] = {}
    for f in frames:
        for scope in (f.f_locals, f.f_globals):
            for k, v in list(scope.items()):
                if not k.startswith("__"):
                    out.setdefault(id(v), k)
    return out


def run_to_first_loss(script: str | os.PathLike[str], args: list[str]) -> tuple[Found, Discovery]:
    """Run ``script`` until its first training loss; return what was found (never the step)."""
    path = check_script(script)
    disc = Discovery(path)
    old_argv, old_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [os.fspath(script), *args]  # argv[0] as typed, as python leaves it
    if sys.path:
        sys.path[0] = str(path.resolve().parent)
    else:
        sys.path.insert(0, str(path.resolve().parent))
    ended = "ended"
    disc.install()
    mode = _Mode(disc)
    try:
        with mode:
            run_as_main(script)  # as python runs it: ``__main__``, the absolute ``__file__``
    except _Stop:
        ended = "stopped"
    except SystemExit as exc:
        ended = f"exited (code {exc.code})"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the script crashed before its first loss
        d = crash_event_data(exc)
        raise TrainDoctorError(
            f"{script}: the script raised {d['type']}: {' '.join(d['message'].split())[:200]}"
            f"{' at ' + d['where'] if d.get('where') else ''} before its first training loss; the checkup needs it "
            "to reach loss computation (or use traindoctor.checkup(model, loader, loss_fn) from Python)"
        ) from None
    finally:
        disc.uninstall()
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
    if disc.captured is None:
        raise TrainDoctorError(
            f"{script}: the script {ended} without computing a training loss (no loss with gradients after a model's "
            "forward pass); the checkup stops a script at its first training step — use "
            "traindoctor.checkup(model, loader, loss_fn) from Python for other setups")
    return _assemble(disc, path), disc


def _assemble(disc: Discovery, script: Path) -> Found:
    cap = disc.captured
    assert cap is not None
    tr = disc.tracer
    found = Found(where=_where(cap["frames"], script))
    names = _names(_user_frames(cap["frames"], script) or cap["frames"])
    kind, obj, fkwargs = cap["how"]
    args, kwargs = list(cap["args"]), dict(cap["kwargs"])

    # ---------------------------------------------------------------- the loss and its inputs
    loss_input = target = None
    if kind == "backward":
        loss_t = args[0]
        # a parameterless module called on (output, target) whose output is this loss?
        for m, a, o in reversed(disc.calls):
            if o is loss_t and len(a) >= 2:
                kind, obj, args = "module", m, list(a)
                break
    if kind in ("module", "function"):
        loss_input = args[0] if args else kwargs.get("input")
        target = args[1] if len(args) > 1 else kwargs.get("target")
        extra = {k: v for k, v in kwargs.items() if k not in ("input", "target") and not _is_default(obj, k, v)}
        if kind == "module":
            found.loss_fn = obj
            label = f"nn.{type(obj).__name__}" if type(obj) in MODULE_KINDS else type(obj).__name__
            found.loss_how = f"{label} (`{names.get(id(obj), type(obj).__name__)}`)"
        else:
            found.loss_fn = functools.partial(obj, **extra) if extra else obj
            kw = ", ".join(f"{k}={v!r}" for k, v in extra.items() if not isinstance(v, torch.Tensor))
            found.loss_how = f"F.{obj.__name__}({'…, ' + kw if kw else '…'}) called in the script"
    else:
        loss_t = args[0]
        srcs = tr.paths(loss_t)
        outs = sorted(p for p in srcs if p.startswith("out"))
        batch_srcs = sorted(p for p in srcs if p.startswith("batch"))
        if outs and len(batch_srcs) >= 1:
            replay = tr.replayer(loss_t)
            model_inp = disc.roots_with_params()[-1][1][0] if disc.roots_with_params()[-1][1] else None
            inp_srcs = tr.paths(model_inp) if model_inp is not None else set()
            tgt_paths = [p for p in batch_srcs if p not in inp_srcs] or batch_srcs
            if len(outs) == 1 and len(tgt_paths) == 1:
                out_path, tgt_path = outs[0], tgt_paths[0]
                b0 = _rows(tr.sources[next(k for k, v in tr.sources.items() if v[1] == out_path)][0])
                hand_loss = _fixed_batch_loss(replay, out_path, tgt_path, b0)
                if b0:
                    found.notes.append(
                        f"the hand-written loss is replayed on batches of the script's size ({b0}): smaller groups of "
                        "samples are tiled to that size, larger ones cut into chunks (its tensors built with the batch "
                        "size, like torch.arange(len(x)), keep their size)")

                found.loss_fn = hand_loss
                found.loss_how = (f"hand-written loss at {found.where or 'the script'}, replayed from the operations "
                                  f"recorded before backward ({' → '.join(tr.steps(loss_t)[-6:])})")
                loss_input = ("__out__", out_path)
                target = ("__batch__", tgt_path)
        if found.loss_fn is None:
            found.missing.append(
                "the loss: it is computed by hand from values the checkup could not trace back to the model's output "
                "and the batch; loss-based checks and probes need traindoctor.checkup(model, loader, loss_fn)")
            found.loss_how = "not found (hand-written)"

    # ---------------------------------------------------------------- the model
    roots = disc.roots_with_params()
    model_entry = None
    if isinstance(loss_input, tuple) and loss_input and loss_input[0] == "__out__":
        n = int(re.match(r"out(\d+)", loss_input[1]).group(1))  # type: ignore[union-attr]
        model_entry = disc.roots[n] if n < len(disc.roots) else None
    elif loss_input is not None:
        srcs = tr.paths(loss_input)
        for i in range(len(disc.roots) - 1, -1, -1):
            m, a, o = disc.roots[i]
            if any(p == f"out{i}" or p.startswith(f"out{i}[") for p in srcs) or o is loss_input:
                model_entry = disc.roots[i]
                break
    if model_entry is None and roots:
        model_entry = roots[-1]
    if model_entry is None:
        raise TrainDoctorError("no model with parameters ran before the first loss; use traindoctor.checkup(model, "
                               "loader, loss_fn) from Python")
    model, margs, mout = model_entry
    n_out = next(i for i, r in enumerate(disc.roots) if r is model_entry)
    found.model = model
    found.model_name = names.get(id(model))
    if len(roots) > 1 and any(r[0] is not model for r in roots):
        others = sorted({type(r[0]).__name__ for r in roots if r[0] is not model})
        found.notes.append(f"other modules with parameters also ran before the loss ({', '.join(others)}); the checkup "
                           f"examines `{found.model_name or type(model).__name__}`, the one feeding the loss")
    if len(margs) != 1:
        found.notes.append(f"the model takes {len(margs)} positional inputs; the checkup feeds the first only")

    # output → loss input
    if loss_input is not None and not isinstance(loss_input, tuple):
        if loss_input is mout:
            found.output_fn = None
        else:
            paths = {p for p in tr.paths(loss_input) if p.startswith(f"out{n_out}")}
            if paths:
                rp = tr.replayer(loss_input)
                if len(paths) == 1:
                    p0 = next(iter(paths))
                    if p0 == f"out{n_out}":
                        found.output_fn = lambda o, rp=rp, p0=p0: rp({p0: o})
                    else:
                        found.output_fn = lambda o, rp=rp, n=n_out: rp(dict(_batch_paths(o, f"out{n}")))
                    steps = tr.steps(loss_input)
                    if steps:
                        found.notes.append(f"the loss receives the model's output through {' → '.join(steps[-5:])}; "
                                           "the checkup replays it")
            else:
                raise TrainDoctorError(
                    "the loss's input does not come from the model's output (traced operations); use "
                    "traindoctor.checkup(model, loader, loss_fn) from Python")

    # ---------------------------------------------------------------- the data
    model_input = margs[0] if margs else None
    inp_paths = sorted(p for p in tr.paths(model_input) if p.startswith("batch")) if model_input is not None else []
    if isinstance(target, tuple) and target and target[0] == "__batch__":
        tgt_replay = None
        tgt_paths = [target[1]]
        tgt_is_path = True
    else:
        tgt_paths = sorted(p for p in tr.paths(target) if p.startswith("batch")) if isinstance(target, torch.Tensor) else []
        tgt_replay = tr.replayer(target) if isinstance(target, torch.Tensor) else None
        tgt_is_path = False
    loader = disc.last_loader
    if loader is not None and inp_paths and tgt_paths:
        x_replay = tr.replayer(model_input)
        if tgt_is_path:
            tp = tgt_paths[0]

            def batch_fn(item: Any, x_replay: Any = x_replay, tp: str = tp) -> Any:
                env = _env_of(item)
                return x_replay(env), env[tp]
        else:
            def batch_fn(item: Any, x_replay: Any = x_replay, t_replay: Any = tgt_replay) -> Any:
                env = _env_of(item)
                return x_replay(env), t_replay(env)

        found.batch_fn = batch_fn
        found.train_loader = loader
        found.train_how = f"`{names.get(id(loader), 'the DataLoader')}` (the DataLoader iterated at the first step)"
        for what, t in (("inputs", model_input), ("targets", target if not tgt_is_path else None)):
            st = tr.steps(t) if isinstance(t, torch.Tensor) else []
            if st:
                found.notes.append(f"the training loop turns each batch's {what} into the model's through "
                                   f"{' → '.join(st[-5:])}; the checkup replays it")
    else:
        found.train_loader, found.batch_fn, found.train_how = _hand_sliced(
            model_input, target if isinstance(target, torch.Tensor) else None, cap["frames"], script, names)
    if found.train_loader is None:
        raise TrainDoctorError(
            "could not find the training data: no DataLoader produced the batch of the first step and the model's "
            "input is not a slice of a tensor the script holds; use traindoctor.checkup(model, loader, loss_fn)")

    # ---------------------------------------------------------------- optimizer, validation data
    found.optimizer = _optimizer_of(model, names)
    if found.optimizer is None:
        found.missing.append("the optimizer (none holds the model's parameters yet): the LR range test uses Adam")
    found.val_loader, found.val_how = _validation(cap["frames"], script, found.train_loader, names, disc)
    if found.val_loader is None:
        found.missing.append("validation data (no DataLoader, Dataset or X_val/y_val tensors named like it in the "
                             "script): train/validation leakage (D006) not checked")
    return found


def _rows(t: Any) -> int | None:
    return int(t.shape[0]) if isinstance(t, torch.Tensor) and t.dim() >= 1 else None


def _fixed_batch_loss(replay: Callable[[dict[str, Any]], Any], out_path: str, tgt_path: str, b0: int | None
                      ) -> Callable[[Any, Any], Any]:
    """A replayed loss that always sees batches of the recorded size ``b0``."""

    def call(out: Any, y: Any) -> Any:
        return replay({out_path: out, tgt_path: y})

    def hand_loss(out: Any, y: Any) -> Any:
        n = _rows(out)
        if not b0 or n is None or n == b0 or _rows(y) != n:
            return call(out, y)
        if n < b0:
            idx = torch.arange(b0, device=out.device) % n
            return call(out[idx], y[idx.to(y.device)])
        parts, weights = [], []
        for i in range(0, n, b0):
            o, t = out[i : i + b0], y[i : i + b0]
            k = o.shape[0]
            if k < b0:
                idx = torch.arange(b0, device=o.device) % k
                o, t = o[idx], t[idx.to(t.device)]
            parts.append(call(o, t))
            weights.append(k / n)
        return sum(w * p for w, p in zip(weights, parts))

    hand_loss.__qualname__ = "hand_written_loss"
    return hand_loss


def _hand_sliced(model_input: Any, target: Any, frames: list[Any], script: Path, names: dict[int, str]
                 ) -> tuple[Any, Callable[[Any], Any] | None, str]:
    """A loop that indexes tensors by hand (``X[idx]``, ``y[idx]``): find those tensors in the
    script's frames (the batch's rows are rows of X, its targets the same rows of y) and rebuild
    a shuffled loader over them; failing that, use the first step's batch alone."""
    from torch.utils.data import DataLoader, TensorDataset

    if not (isinstance(model_input, torch.Tensor) and isinstance(target, torch.Tensor)
            and model_input.dim() >= 1 and target.dim() >= 1 and model_input.shape[0] == target.shape[0]):
        return None, None, ""
    b = int(model_input.shape[0])
    tensors: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for f in _user_frames(frames, script):
        for scope in (f.f_locals, f.f_globals):
            for k, v in list(scope.items()):
                if isinstance(v, torch.Tensor) and v.dim() >= 1 and id(v) not in seen and v.shape[0] > b:
                    seen.add(id(v))
                    tensors.append((k, v))
    want = sample_hashes(model_input)
    for kx, X in tensors:
        if X.shape[1:] != model_input.shape[1:] or X.dtype != model_input.dtype or X.device != model_input.device:
            continue
        pos = {h: i for i, h in enumerate(sample_hashes(X))}
        if not all(h in pos for h in want):
            continue
        idx = torch.tensor([pos[h] for h in want], device=X.device)
        per_row = target[0].numel() if target.dim() else 1
        for ky, Y in tensors:
            if Y is X or Y.shape[0] != X.shape[0] or (Y[0].numel() if Y.dim() else 1) != per_row:
                continue
            shape, dtype = tuple(target.shape[1:]), target.dtype
            if torch.equal(Y[idx].to(dtype).reshape(-1, *shape), target):
                g = torch.Generator().manual_seed(0)
                loader = DataLoader(TensorDataset(X.detach(), Y.detach()), batch_size=b, shuffle=True, generator=g)
                same = Y.dtype == dtype and tuple(Y.shape[1:]) == shape
                fn = None if same else (lambda item, dtype=dtype, shape=shape: (item[0],
                                                                               item[1].to(dtype).reshape(-1, *shape)))
                return loader, fn, (f"`{kx}` and `{ky}` sliced by hand in the script (no DataLoader): rebuilt as a "
                                    f"shuffled DataLoader with batch size {b}")
    ds = TensorDataset(model_input.detach(), target.detach())
    return (DataLoader(ds, batch_size=len(ds)), None,
            "the first step's batch only (no DataLoader, and its rows were not found in a tensor the script holds): "
            "the data checks see one batch")


def _optimizer_of(model: nn.Module, names: dict[int, str]) -> torch.optim.Optimizer | None:
    params = {id(p) for p in model.parameters()}
    best = None
    best_n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objs = [o for o in gc.get_objects() if isinstance(o, torch.optim.Optimizer)]
    for obj in objs:
        try:
            if isinstance(obj, torch.optim.Optimizer):
                n = sum(1 for g in obj.param_groups for p in g["params"] if id(p) in params)
                if n > best_n or (n == best_n and n and id(obj) in names and id(best) not in names):
                    best, best_n = obj, n
        except Exception:  # noqa: BLE001 - foreign objects with odd isinstance behaviour
            continue
    return best


def _validation(frames: list[Any], script: Path, train_loader: Any, names: dict[int, str], disc: Discovery
                ) -> tuple[Any, str]:
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    scopes = []
    for f in _user_frames(frames, script):
        scopes.append(f.f_locals)
        scopes.append(f.f_globals)
    loaders, datasets, xs, ys = [], [], {}, {}
    for scope in scopes:
        for k, v in list(scope.items()):
            if isinstance(v, DataLoader) and v is not train_loader and all(v is not o for _, o in loaders):
                loaders.append((k, v))
            elif isinstance(v, Dataset) and not isinstance(v, DataLoader) and VAL_NAME.search(k) \
                    and v is not getattr(train_loader, "dataset", None):
                datasets.append((k, v))
            elif isinstance(v, torch.Tensor) and v.dim() >= 1:
                m = X_NAME.match(k)
                if m:
                    xs.setdefault(m.group(2).lower(), (k, v))
                m = Y_NAME.match(k)
                if m:
                    ys.setdefault(m.group(2).lower(), (k, v))
    named = [(k, v) for k, v in loaders if VAL_NAME.search(k)]
    if named:
        k, v = sorted(named, key=lambda t: 0 if re.search("val", t[0], re.I) else 1)[0]
        return v, f"`{k}` (a DataLoader named like validation data)"
    if len(loaders) == 1:
        k, v = loaders[0]
        return v, f"`{k}` (the script's other DataLoader)"
    if datasets:
        k, v = datasets[0]
        bs = getattr(train_loader, "batch_size", None) or 256
        return DataLoader(v, batch_size=bs), f"`{k}` (a Dataset named like validation data)"
    for suffix in ("val", "valid", "validation", "dev", "eval", "test"):
        if suffix in xs and suffix in ys and xs[suffix][1].shape[0] == ys[suffix][1].shape[0]:
            (kx, X), (ky, Y) = xs[suffix], ys[suffix]
            bs = getattr(train_loader, "batch_size", None) or 256
            return (DataLoader(TensorDataset(X.detach(), Y.detach()), batch_size=bs),
                    f"`{kx}`, `{ky}` (tensors named like validation data)")
    return None, ""
