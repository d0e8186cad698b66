"""Model and loss checks over tensors: what the loss is, how the layers are scaled at
initialisation, how close the activations come to the float16 range, which custom autograd
functions the model uses. Each returns plain numbers (an event's data); ``rules/model.py``
and ``rules/probes.py`` judge them. Callable from a checkup or, on the first batches, from a
live monitor.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..layerkinds import KAIMING_GAIN_MODULES, RELU_MODULES, SQUASH_MODULES, WEIGHT_MODULES
from .tensors import tensors_of

# the families of layerkinds.py as classes
RELU_TYPES: tuple[type, ...] = tuple(getattr(nn, n) for n in RELU_MODULES)
SQUASH_TYPES: tuple[type, ...] = tuple(getattr(nn, n) for n in SQUASH_MODULES)
RELU_LIKE: tuple[type, ...] = tuple(getattr(nn, n) for n in KAIMING_GAIN_MODULES)
WEIGHT_LAYERS: tuple[type, ...] = tuple(getattr(nn, n) for n in WEIGHT_MODULES)
DTYPE_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38}


# ---------------------------------------------------------------------- execution order
def leaf_order(model: nn.Module, run_forward: Callable[[], Any]) -> list[tuple[str, nn.Module, Any]]:
    """Leaf modules in the order they ran in one forward, with their outputs (detached)."""
    names = {id(m): n for n, m in model.named_modules()}
    seen: list[tuple[str, nn.Module, Any]] = []

    def hook(mod: nn.Module, inp: Any, out: Any) -> None:
        if next(mod.children(), None) is None:
            o = out.detach() if isinstance(out, torch.Tensor) else out
            seen.append((names.get(id(mod), type(mod).__name__), mod, o))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for h in handles:
            h.remove()
    return seen


def _gain_name(act: nn.Module | None) -> tuple[float, str]:
    if act is None:
        return 1.0, "none"
    if isinstance(act, nn.LeakyReLU):
        return math.sqrt(2.0 / (1 + act.negative_slope**2)), "leaky_relu"
    if isinstance(act, nn.SELU):
        return 0.75, "selu"
    if isinstance(act, RELU_LIKE):
        return math.sqrt(2.0), type(act).__name__.lower()
    if isinstance(act, nn.Tanh):
        return 5.0 / 3.0, "tanh"
    if isinstance(act, (nn.Sigmoid, nn.Softmax, nn.LogSoftmax)):
        return 1.0, type(act).__name__.lower()
    return 1.0, "none"


def init_scale(model: nn.Module, run_forward: Callable[[], Any] | None = None,
               order: list[tuple[str, nn.Module, Any]] | None = None) -> dict[str, Any]:
    """Each weight layer's initial std against PyTorch's default, Xavier and Kaiming scales.

    With ``run_forward`` (one forward on a real batch) or the ``order`` a live trace recorded
    (leaf modules as they ran, with their outputs or a weight layer's output spread as a 0-d
    tensor), the nonlinearity that follows each layer is
    read off the execution order and the std of every weight layer's output is measured, so a
    rule can see activations grow or shrink with depth.
    """
    if order is None:
        order = leaf_order(model, run_forward) if run_forward is not None else []
    follows: dict[int, nn.Module | None] = {}
    out_std: dict[int, float] = {}
    for i, (_, mod, out) in enumerate(order):
        if isinstance(mod, WEIGHT_LAYERS):
            nxt = None
            for _, m2, _ in order[i + 1 : i + 4]:
                if isinstance(m2, (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm,
                                   nn.GroupNorm, nn.Identity, nn.Flatten)):
                    continue
                if isinstance(m2, WEIGHT_LAYERS):
                    break
                nxt = m2
                break
            follows.setdefault(id(mod), nxt)
            if isinstance(out, torch.Tensor) and out.dim() == 0 and id(mod) not in out_std:
                # measured already (a live trace keeps the spread, not the activations)
                v = float(out)
                if math.isfinite(v):
                    out_std[id(mod)] = v
            elif isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() >= 1 and out.shape[0] > 1 \
                    and id(mod) not in out_std:
                # the input-dependent part: spread across the batch per unit (a bias adds none)
                o = out.to(torch.float64).reshape(out.shape[0], -1)
                if bool(torch.isfinite(o).all()):
                    out_std[id(mod)] = float(o.var(0).mean().sqrt())
    layers: list[dict[str, Any]] = []
    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)
                and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]
    if order:
        ran = {id(m): i for i, (_, m, _) in enumerate(order)}
        weighted = sorted((t for t in weighted if id(t[1]) in ran), key=lambda t: ran[id(t[1])])
    for k, (name, mod) in enumerate(weighted):
        w = mod.weight.detach()
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
        gain, act = _gain_name(follows.get(id(mod)))
        wf = w.to(torch.float64)
        std = float(wf.std()) if w.numel() > 1 else 0.0
        layers.append({
            "name": name or type(model).__name__, "type": type(mod).__name__, "fan_in": fan_in, "fan_out": fan_out,
            "std": std, "mean": float(wf.mean()),
            "default_std": 1.0 / math.sqrt(3.0 * fan_in),
            "xavier_std": math.sqrt(2.0 / (fan_in + fan_out)),
            "kaiming_std": gain / math.sqrt(fan_in),
            "activation": act, "last": k == len(weighted) - 1,
            "output_std": out_std.get(id(mod)),
        })
    return {"layers": layers, "measured": bool(order)}


# ---------------------------------------------------------------------- precision
def precision_facts(model: nn.Module, run_forward: Callable[[], Any], declared: str | None = None) -> dict[str, Any]:
    """Largest magnitudes each module outputs on a real batch, with the dtypes in play.

    A rule compares them with the float16/bfloat16 range: values a quarter of the way to 65504
    in float32 overflow once autocast runs the same layers in float16.
    """
    dtypes: dict[str, int] = {}
    for p in model.parameters():
        k = str(p.dtype).replace("torch.", "")
        dtypes[k] = dtypes.get(k, 0) + p.numel()
    peaks: list[dict[str, Any]] = []
    nonfinite: list[str] = []
    for name, mod, out in leaf_order(model, run_forward):
        for t in ([out] if isinstance(out, torch.Tensor) else [o for o in (out or ()) if isinstance(o, torch.Tensor)]
                  if isinstance(out, (tuple, list)) else []):
            if not t.is_floating_point() or t.numel() == 0:
                continue
            fin = torch.isfinite(t)
            if not bool(fin.all()):
                nonfinite.append(name)
            a = t.abs().where(fin, torch.zeros((), dtype=t.dtype))
            peaks.append({"name": name, "type": type(mod).__name__, "absmax": float(a.max()),
                          "dtype": str(t.dtype).replace("torch.", "")})
    peaks.sort(key=lambda d: -d["absmax"])
    return {
        "param_dtypes": dtypes,
        "declared": declared,
        "absmax": peaks[:5],
        "overall_absmax": peaks[0]["absmax"] if peaks else None,
        "nonfinite_modules": nonfinite[:5],
    }


# ---------------------------------------------------------------------- custom autograd functions
def custom_functions(output: Any) -> list[type]:
    """Classes of the ``torch.autograd.Function``s in the graph that produced ``output``."""
    roots = [t.grad_fn for t in tensors_of(output) if t.grad_fn is not None]
    found: list[type] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack and len(seen) < 100000:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
        stack.extend(n for n, _ in getattr(node, "next_functions", ()) if n is not None)
    return found




def capture_function_calls(model: nn.Module, classes: list[type], run_forward: Callable[[], Any]
                           ) -> dict[type, dict[str, Any]]:
    """The first call of each class's ``apply`` in one forward: its arguments and the module calling it."""
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[str] = []
    calls: dict[type, dict[str, Any]] = {}
    saved: dict[type, Any] = {}

    def pre(mod: nn.Module, inp: Any) -> None:
        stack.append(names.get(id(mod)) or type(mod).__name__)

    def post(mod: nn.Module, inp: Any, out: Any) -> None:
        if stack:
            stack.pop()

    def wrap(cls: type) -> None:
        orig = cls.apply  # bound classmethod of the user's Function

        def apply(c: type, *args: Any, **kwargs: Any) -> Any:
            if c not in calls:
                calls[c] = {"args": [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args],
                            "kwargs": dict(kwargs), "module": stack[-1] if stack else None}
            return orig(*args, **kwargs)

        saved[cls] = cls.__dict__.get("apply", None)
        cls.apply = classmethod(apply)  # type: ignore[attr-defined]

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles += [m.register_forward_hook(post) for m in model.modules()]
    try:
        for cls in classes:
            wrap(cls)
        with torch.no_grad():
            run_forward()
    finally:
        for cls, orig in saved.items():
            if orig is None:
                try:
                    delattr(cls, "apply")
                except AttributeError:
                    pass
            else:
                cls.apply = orig  # type: ignore[attr-defined]
        for h in handles:
            h.remove()
    return calls


def gradcheck_function(cls: type, args: list[Any], kwargs: dict[str, Any], batch_size: int | None,
                       max_elements: int = 4096) -> dict[str, Any]:
    """``torch.autograd.gradcheck`` of one Function in float64 on (a slice of) its real inputs."""
    info: dict[str, Any] = {"function": f"{cls.__module__}.{cls.__qualname__}".replace("__main__.", "")}
    inputs: list[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            t = a
            if batch_size and t.dim() >= 1 and t.shape[0] == batch_size and batch_size > 2:
                t = t[:2]
            inputs.append(t.detach().to(torch.float64).clone().requires_grad_(True))
        else:
            inputs.append(a)
    diff = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    info["inputs"] = [list(t.shape) for t in diff]
    total = sum(t.numel() for t in diff)
    if not diff:
        info["skipped"] = "no floating-point tensor inputs"
        return info
    if total > max_elements:
        info["skipped"] = f"{total} input elements: too many for a finite-difference check"
        return info

    from torch.autograd.gradcheck import GradcheckError

    def fn(*xs: Any) -> Any:
        return cls.apply(*xs, **kwargs)  # type: ignore[attr-defined]

    try:
        ok = torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
                                      fast_mode=total > 256)
        info["passed"] = bool(ok)
    except GradcheckError as exc:
        info["passed"] = False
        info["message"] = " ".join(str(exc).split())[:200]
    except Exception as exc:  # noqa: BLE001 - the function cannot be checked (e.g. float32 only): say so
        info["skipped"] = f"gradcheck could not run: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        return info
    try:
        info["directional_rel_error"] = _directional_error(fn, inputs)
    except Exception:  # noqa: BLE001 - evidence only
        pass
    return info


def _directional_error(fn: Callable[..., Any], inputs: list[Any]) -> float:
    """|analytic − numeric| / |numeric| of one random directional derivative (float64)."""
    g = torch.Generator().manual_seed(0)
    diff = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor) and t.requires_grad]
    vs = {i: torch.randn(inputs[i].shape, generator=g, dtype=torch.float64) for i in diff}
    out = tensors_of(fn(*inputs))
    us = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in out]
    s = sum((o.to(torch.float64) * u).sum() for o, u in zip(out, us))
    grads = torch.autograd.grad(s, [inputs[i] for i in diff], allow_unused=True)
    analytic = sum(float((gr * vs[i]).sum()) for gr, i in zip(grads, diff) if gr is not None)
    eps = 1e-6

    def shifted(sign: float) -> float:
        xs = list(inputs)
        for i in diff:
            xs[i] = (inputs[i].detach() + sign * eps * vs[i])
        with torch.no_grad():
            o2 = tensors_of(fn(*xs))
        return float(sum((o.to(torch.float64) * u).sum() for o, u in zip(o2, us)))

    numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    return abs(analytic - numeric) / max(abs(numeric), 1e-12)
