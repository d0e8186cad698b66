"""The training set, scanned once for non-finite rows, off the training thread.

The first steps' data profile sees only the batches of its window; a NaN sample further into an
epoch is found when its batch turns the loss into NaN. When the training data sits in memory,
the whole of it can be read once at the first step, in a background thread, and the NaN samples
named before the batch that carries them arrives.

What is covered (``plan_for_loader`` / ``plan_for_slices``):

* the DataLoader's dataset is a ``TensorDataset``, or a map-style dataset holding tensors or
  NumPy arrays with one row per sample as attributes (``self.X``), possibly behind
  ``Subset``s (``random_split``): each array is matched to an element of the first batch by
  reading the batch's dataset indices out of it and comparing the values exactly, so an
  array is scanned only when the loader's samples are known to be its rows unchanged;
* batches sliced by hand from one tensor (``X[i:i + 32]``, a view): the tensor they are views of.

Not covered: datasets that build or transform samples in ``__getitem__`` (files, images, a
normalisation), ``ConcatDataset``, iterable datasets, hand slicing by index tensors
(``X[perm[i:i + 32]]`` copies), data resident on an accelerator, and arrays of other dtypes than
floating point and complex (integers cannot be non-finite).

Cost: the plan reads a few rows on the training thread, once. The scan runs in a daemon thread in
chunks of ``CHUNK_BYTES`` with NumPy reductions (which release the GIL and leave torch's
intra-op thread pool alone), and stops after ``MAX_SCAN_BYTES`` (the result says how far it got).

The same thread then hashes every row of the array the model receives as its input (``hash_rows``,
any dtype, bounded by the same budget): the training side of a live train/validation leakage check
(``checks.data.Leakage``), so the validation samples of the first evaluation can be matched against
the whole training set rather than the few batches the data profile sees. The array is hashed only
when the model's input at the first step is the loader's batch element itself (not reshaped or
rescaled in the loop): the hashes must be of the bytes the model receives.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..inspect.data import Leakage, sample_hashes

MAX_SCAN_BYTES = 256 << 20  # read at most this much of the training set
CHUNK_BYTES = 8 << 20
MAX_IDS = 50  # sample ids kept per array (as the data profile keeps)
VERIFY_ROWS = 8  # rows of the first batch compared with the arrays
MAX_ATTRIBUTES = 32


@dataclass
class _Array:
    where: str  # "inputs", "targets", "element 2", a dict key
    name: str  # "tensors[0]", "X", "tensor sliced by hand"
    data: Any  # numpy array or torch tensor (CPU), rows = samples
    nbytes_row: int


@dataclass
class ScanPlan:
    """What to scan: arrays whose rows are the loader's samples (through ``chain`` of Subset indices)."""

    source: str
    rows: int  # samples as the loader numbers them
    arrays: list[_Array] = field(default_factory=list)
    chain: list[Any] = field(default_factory=list)  # Subset indices, outermost first
    ids: str = "dataset indices"
    # the array whose rows are the model's input, any dtype, and the dtype the model receives them in
    hash_array: _Array | None = None
    hash_dtype: Any = None
    # why nothing is scanned for NaN when only ``hash_array`` was found (integer inputs)
    skipped: str | None = None


def _floating(a: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return a.is_floating_point() or a.is_complex()
    return isinstance(a, np.ndarray) and a.dtype.kind in "fc"


def _row_bytes(a: Any) -> int:
    per = math.prod(a.shape[1:]) if a.ndim > 1 else 1
    item = a.element_size() if isinstance(a, torch.Tensor) else a.itemsize
    return int(per * item)


def _map_rows(chain: list[Any], positions: list[int]) -> list[int]:
    """Loader positions → rows of the arrays, through Subset indices (a few positions: plain indexing)."""
    rows = list(positions)
    for idx in chain:
        rows = [int(idx[r]) for r in rows]
    return rows


def _same(a: Any, e: torch.Tensor) -> bool:
    """The array's rows equal the batch element exactly (NaN where NaN), after the collate's dtype."""
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if tuple(t.shape) != tuple(e.shape):
        return False
    try:
        t = t.to(e.dtype)
    except (RuntimeError, TypeError):
        return False
    eq = t == e
    if e.is_floating_point() or e.is_complex():
        eq = eq | (torch.isnan(t) & torch.isnan(e))
    return bool(eq.all())


def _elements(batch: Any) -> list[tuple[str, Any]]:
    if isinstance(batch, torch.Tensor):
        return [("inputs", batch)]
    if isinstance(batch, dict):
        return [(str(k), v) for k, v in batch.items()]
    if isinstance(batch, (list, tuple)):
        n = len(batch)
        return [("inputs" if k == 0 else "targets" if (k == 1 and n == 2) else f"element {k}", v)
                for k, v in enumerate(batch)]
    return []


def _is_model_input(e: torch.Tensor, model_input: Any) -> bool:
    """The batch element is what the model received: the same tensor, or equal values of the same
    dtype and shape (``xb.to(device)``). Read once, at the first step."""
    if not isinstance(model_input, torch.Tensor):
        return False
    if e is model_input:
        return True
    if e.dtype != model_input.dtype or tuple(e.shape) != tuple(model_input.shape):
        return False
    return bool(torch.equal(e.detach(), model_input.detach().to(e.device)))


def plan_for_loader(dataset: Any, batch: Any, ids: list[int] | None, model_input: Any = None) -> ScanPlan | str:
    """A plan for the loader's dataset, verified against its first batch; else why there is none.

    ``model_input``: the tensor the model received at that step; the array matching the batch
    element that is this tensor becomes ``hash_array`` (hashed for the leakage check)."""
    from torch.utils.data import IterableDataset, Subset, TensorDataset

    if dataset is None or isinstance(dataset, IterableDataset):
        return "not a map-style dataset"
    if not ids:
        return "the batch's dataset indices are unknown"
    try:
        rows = len(dataset)
    except TypeError:
        return "the dataset has no length"
    chain: list[Any] = []
    names: list[str] = []
    base = dataset
    while isinstance(base, Subset):
        chain.append(base.indices)
        names.append("Subset")
        base = base.dataset
    try:
        base_rows = len(base)
    except TypeError:
        return "the dataset has no length"
    if isinstance(base, TensorDataset):
        cands = [(f"tensors[{k}]", t) for k, t in enumerate(base.tensors)]
        kind = "TensorDataset"
    else:
        # (a NumPy memmap is on disk, not in memory: not read)
        cands = [(k, v) for k, v in list(getattr(base, "__dict__", {}).items())[:MAX_ATTRIBUTES]
                 if isinstance(v, (torch.Tensor, np.ndarray)) and not isinstance(v, np.memmap)
                 and v.ndim >= 1 and v.shape[0] == base_rows]
        kind = type(base).__name__
    source = "(".join([*names, kind]) + ")" * len(names)
    if not cands:
        return f"{source}: no tensor or array with one row per sample"
    try:
        vrows = _map_rows(chain, ids[:VERIFY_ROWS])
    except (IndexError, TypeError, ValueError):
        return f"{source}: the batch's indices do not map to its rows"
    plan = ScanPlan(source, rows, chain=chain)
    used: set[int] = set()
    elsewhere = sorted({str(a.device) for _, a in cands if isinstance(a, torch.Tensor) and a.device.type != "cpu"})
    for where, e in _elements(batch):
        if not isinstance(e, torch.Tensor) or e.dim() < 1 or e.shape[0] != len(ids):
            continue
        e_rows = e.detach()[: len(vrows)].cpu()
        for name, a in cands:
            if id(a) in used or tuple(a.shape[1:]) != tuple(e.shape[1:]):
                continue
            if isinstance(a, torch.Tensor) and a.device.type != "cpu":
                continue
            if not _same(a[vrows], e_rows):
                continue
            used.add(id(a))
            name = name if isinstance(base, TensorDataset) else f"{kind}.{name}"
            if plan.hash_array is None and _is_model_input(e, model_input):
                plan.hash_array, plan.hash_dtype = _Array(where, name, a, _row_bytes(a)), e.dtype
            if _floating(a):
                plan.arrays.append(_Array(where, name, a, _row_bytes(a)))
            break
    if not plan.arrays:
        if elsewhere:
            return f"{source}: its tensors are on {', '.join(elsewhere)}, not in host memory"
        reason = f"{source}: no floating-point array of it matches the loader's batch"
        if plan.hash_array is None:
            return reason
        plan.skipped = reason  # integer inputs: nothing can be non-finite, the rows are still hashed
    return plan


def _base_rows(t: Any) -> Any:
    """The tensor ``t`` is a row range of (``X[i:i + B]``), or None."""
    if not isinstance(t, torch.Tensor) or t.dim() < 1:
        return None
    b = t._base
    if b is None or b.dim() != t.dim() or b.device.type != "cpu" or tuple(b.shape[1:]) != tuple(t.shape[1:]) \
            or b.shape[0] <= t.shape[0] or b.stride() != t.stride():
        return None
    return b


def plan_for_slices(x: Any, y: Any) -> ScanPlan | None:
    """Batches cut from one tensor by basic slicing: scan the tensor (rows are the ids). ``x`` is the
    model's input, so the tensor it is cut from is also the one hashed for the leakage check."""
    arrays = []
    rows = None
    hashed = None
    for where, t in (("inputs", x), ("targets", y)):
        b = _base_rows(t)
        if b is None or (rows is not None and b.shape[0] != rows):
            continue
        if where == "inputs":
            hashed = _Array(where, "tensor sliced by hand", b, _row_bytes(b))
        if not _floating(b):
            continue
        rows = int(b.shape[0])
        arrays.append(_Array(where, "tensor sliced by hand", b, _row_bytes(b)))
    if hashed is not None and rows is None:
        rows = int(hashed.data.shape[0])
    if not arrays and hashed is None:
        return None
    plan = ScanPlan("tensor sliced by hand", int(rows or 0), arrays, ids="rows of the sliced tensor")
    if hashed is not None:
        plan.hash_array, plan.hash_dtype = hashed, hashed.data.dtype
    if not arrays:
        plan.skipped = "tensor sliced by hand: not floating point"
    return plan


def _as_numpy(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        a = a.detach()
        if a.dtype == torch.bfloat16:
            return a  # NumPy has no bfloat16: torch reads it
        return a.numpy()
    return a


def _bad(block: Any) -> np.ndarray:
    n = block.shape[0]
    if isinstance(block, torch.Tensor):
        return (~torch.isfinite(block.reshape(n, -1)).all(1)).numpy()
    return ~np.isfinite(block.reshape(n, -1)).all(axis=1)


def run_scan(plan: ScanPlan, max_bytes: int | None = None) -> dict[str, Any]:
    """Read every row of the plan's arrays (up to ``max_bytes``, default ``MAX_SCAN_BYTES``); the rows
    holding NaN/Inf, per array. Rows are read in order: a cut scan covers the first rows."""
    t0 = time.perf_counter()
    if max_bytes is None:
        max_bytes = MAX_SCAN_BYTES
    index = _position_index(plan)
    per_row = sum(a.nbytes_row for a in plan.arrays)
    limit = plan.rows if per_row == 0 else min(plan.rows, max(1, max_bytes // per_row))
    out_arrays = []
    read = 0
    for a in plan.arrays:
        data = _as_numpy(a.data)
        step = max(1, CHUNK_BYTES // max(a.nbytes_row, 1))
        bad_ids: list[int] = []
        count = 0
        for p0 in range(0, limit, step):
            p1 = min(limit, p0 + step)
            block = _block(data, index, p0, p1)
            bad = _bad(block)
            read += a.nbytes_row * (p1 - p0)
            if bad.any():
                hit = np.nonzero(bad)[0]
                count += int(hit.size)
                if len(bad_ids) < MAX_IDS:
                    bad_ids += [int(p0 + h) for h in hit[: MAX_IDS - len(bad_ids)]]
        out_arrays.append({"where": a.where, "name": a.name, "shape": list(a.data.shape),
                           "dtype": str(a.data.dtype).replace("torch.", ""), "nonfinite_rows": count,
                           "sample_ids": bad_ids})
    return {"source": plan.source, "ids": plan.ids, "rows": plan.rows, "rows_scanned": int(limit),
            "complete": limit >= plan.rows, "bytes": int(read), "seconds": round(time.perf_counter() - t0, 4),
            "arrays": out_arrays}


def _block(data: Any, index: np.ndarray | None, p0: int, p1: int) -> Any:
    """Rows p0:p1 of the scan order: contiguous, or through the position index (a Subset's)."""
    if index is None:
        return data[p0:p1]
    rows = index[p0:p1]
    return data[torch.from_numpy(rows)] if isinstance(data, torch.Tensor) else data[rows]


def _position_index(plan: ScanPlan) -> Any:
    """Loader position → row of the arrays, through the Subset chain (None: the identity)."""
    index = None
    for idx in plan.chain:  # outermost first: position → row of the next dataset down
        arr = np.asarray(idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        index = arr if index is None else arr[index]
    return index


def hash_rows(plan: ScanPlan, max_bytes: int | None = None) -> dict[str, Any] | None:
    """The plan's model-input array hashed row by row (``sample_hashes``, in the dtype the model
    receives), as a ``Leakage`` holding the training side, up to ``max_bytes`` (default
    ``MAX_SCAN_BYTES``) read in order. Runs in the scan's thread; between chunks it yields the GIL,
    since the per-row loop is Python and the training thread must not wait on it."""
    a = plan.hash_array
    if a is None:
        return None
    t0 = time.perf_counter()
    if max_bytes is None:
        max_bytes = MAX_SCAN_BYTES
    index = _position_index(plan)
    limit = plan.rows if a.nbytes_row == 0 else min(plan.rows, max(1, max_bytes // a.nbytes_row))
    data = _as_numpy(a.data)
    step = max(1, min(4096, CHUNK_BYTES // max(a.nbytes_row, 1)))
    leak = Leakage()
    for p0 in range(0, limit, step):
        p1 = min(limit, p0 + step)
        block = _block(data, index, p0, p1)
        t = block if isinstance(block, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(block))
        if plan.hash_dtype is not None and t.dtype != plan.hash_dtype:
            t = t.to(plan.hash_dtype)
        leak.add_train_hashes(sample_hashes(t), list(range(p0, p1)))
        time.sleep(0)
    return {"leak": leak, "rows": int(limit), "complete": limit >= plan.rows, "ids": plan.ids,
            "seconds": round(time.perf_counter() - t0, 4)}
