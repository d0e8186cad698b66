"""Walking tensors and autograd graphs (no state): shared by the live monitor, the first-step trace and
the checkup."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

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


def graph_below(fn: Any, depth: int = 6, limit: int = 64) -> list[str]:
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


def first_child(fn: Any) -> Any:
    for n, _ in getattr(fn, "next_functions", ()):
        if n is not None and type(n).__name__ != "AccumulateGrad":
            return n
    return None


def through_shape(fn: Any, passed: list[str] | None = None) -> Any:
    """The first node at or below ``fn`` that is not a shape-only operation (bounded); the shape
    nodes gone through are appended to ``passed``."""
    for _ in range(32):
        if fn is None or type(fn).__name__ not in SHAPE_NODES:
            return fn
        if passed is not None:
            passed.append(type(fn).__name__)
        fn = first_child(fn)
    return fn


def tensors_of(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in tensors_of(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors_of(o)]
    return []


def flatten(obj: Any) -> list[Any]:
    """Every leaf of nested lists, tuples and dicts (tensors or not), in order."""
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in flatten(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in flatten(o)]
    return [obj]


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def param_dtypes(models: Iterable[nn.Module]) -> list[str]:
    return sorted({dtype_name(p.dtype) for m in models for p in m.parameters()})


def site_label(site: tuple[str, int] | None) -> str | None:
    return f"{site[0]}:{site[1]}" if site else None


def own_forward_target(model: Any) -> Any:
    """The module the doctor runs when it runs the model itself (a NaN forward replayed, the eval-mode gap):
    inside ``DistributedDataParallel``/``DataParallel``, the wrapped module. The wrapper's forward on one
    rank alone would broadcast buffers (a collective the other ranks never join: a hang) or scatter to devices."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model
