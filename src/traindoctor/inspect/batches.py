"""Batches from a user's loader, as ``(inputs, targets, sample ids)``, or a one-line error.

A checkup needs ``(inputs, targets)`` pairs of tensors with one row per sample. Anything else —
a dict, a tuple of three, single tensors, a list of tensors of different lengths, rows that do
not match, a loader that yields nothing — is refused up front with a :class:`TrainDoctorError`
that says what came and what was expected (and how to adapt it with ``batch_fn``), instead of a
traceback from deep inside a probe.

For a ``torch.utils.data.DataLoader`` over a map-style dataset the batches are built the way
the loader's single-process iterator builds them (its sampler, ``dataset[i]``, its
``collate_fn``) so every sample is named by its dataset index; any other iterable is read as is
and samples are named by their position in the stream.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TrainDoctorError

BatchFn = Callable[[Any], Any]


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    ids: list[int]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select(self, rows: list[int] | torch.Tensor) -> Batch:
        idx = torch.as_tensor(rows, dtype=torch.long)
        ids = [self.ids[int(i)] for i in idx.tolist()]
        return Batch(self.x[idx.to(self.x.device)], self.y[idx.to(self.y.device)], ids)

    def to(self, device: torch.device) -> Batch:
        if self.x.device == device and self.y.device == device:
            return self
        return Batch(self.x.to(device), self.y.to(device), self.ids)


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"tensor{list(obj.shape)}"
    if isinstance(obj, dict):
        return f"dict with keys {list(obj)[:6]}"
    if isinstance(obj, (list, tuple)):
        inner = ", ".join(_describe(o) for o in list(obj)[:4])
        more = ", …" if len(obj) > 4 else ""
        return f"{type(obj).__name__} of {len(obj)} ({inner}{more})"
    return type(obj).__name__


HINT = "checkup expects each batch as an (inputs, targets) pair of tensors"


def unpack(item: Any, index: int, name: str, batch_fn: BatchFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` from one loader item, or a one-line error saying what was expected."""
    where = f"{name}: batch {index}"
    if batch_fn is not None:
        try:
            item = batch_fn(item)
        except Exception as exc:  # noqa: BLE001 - the user's adapter failed: say so in one line
            raise TrainDoctorError(f"{where}: batch_fn raised {type(exc).__name__}: {exc}") from None
    if isinstance(item, dict):
        raise TrainDoctorError(
            f"{where} is a {_describe(item)}; {HINT} — pass batch_fn=lambda b: (b[{list(item)[0]!r}], b[...]) "
            "to pick them"
        )
    if isinstance(item, torch.Tensor):
        raise TrainDoctorError(f"{where} is a single {_describe(item)} with no targets; {HINT}")
    if not isinstance(item, (list, tuple)):
        raise TrainDoctorError(f"{where} is a {_describe(item)}; {HINT}")
    if len(item) != 2:
        raise TrainDoctorError(
            f"{where} is a {_describe(item)}; {HINT} — pass batch_fn=lambda b: (b[0], b[1]) to pick the two"
        )
    x, y = item
    x = _tensor(x, f"{where} inputs")
    y = _tensor(y, f"{where} targets")
    if x.dim() == 0:
        raise TrainDoctorError(f"{where}: inputs are a 0-d tensor; expected one row per sample (shape [batch, ...])")
    if y.dim() == 0:
        raise TrainDoctorError(f"{where}: targets are a 0-d tensor; expected one target per sample (shape [batch, ...])")
    if x.shape[0] != y.shape[0]:
        raise TrainDoctorError(
            f"{where}: inputs have {x.shape[0]} rows but targets {y.shape[0]} (shapes {list(x.shape)} and "
            f"{list(y.shape)}); expected one target per input row"
        )
    if x.shape[0] == 0:
        raise TrainDoctorError(f"{where} is empty (0 samples); expected at least one sample per batch")
    return x, y


def _tensor(v: Any, what: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
        shapes = {tuple(t.shape) for t in v}
        if len(shapes) > 1:
            some = ", ".join(str(list(s)) for s in list(shapes)[:3])
            raise TrainDoctorError(
                f"{what} are a ragged {type(v).__name__} of {len(v)} tensors of different shapes ({some}, …); "
                "expected one tensor per batch — pad them to one length in a collate_fn"
            )
        raise TrainDoctorError(
            f"{what} are a {type(v).__name__} of {len(v)} tensors; expected one tensor per batch "
            "(stack them, or pass batch_fn= to build it)"
        )
    if isinstance(v, (list, tuple)) and v and all(isinstance(t, (int, float, bool)) for t in v):
        return torch.as_tensor(v)
    raise TrainDoctorError(f"{what} are a {_describe(v)}; expected a tensor")


def _is_map_loader(loader: Any) -> bool:
    from torch.utils.data import DataLoader, IterableDataset

    return (
        isinstance(loader, DataLoader)
        and not isinstance(loader.dataset, IterableDataset)
        and getattr(loader, "_auto_collation", False)
        and loader.batch_sampler is not None
    )


def _raw_items(loader: Any, name: str) -> Iterator[tuple[Any, list[int] | None]]:
    """Loader items with their dataset indices when the loader tells them."""
    if _is_map_loader(loader):
        ds, collate = loader.dataset, loader.collate_fn
        getitems = getattr(ds, "__getitems__", None)
        for i, idx in enumerate(loader.batch_sampler):
            idx = list(idx)
            try:
                samples = getitems(idx) if getitems is not None else [ds[j] for j in idx]
                yield collate(samples), [int(j) for j in idx]
            except TrainDoctorError:
                raise
            except Exception as exc:  # noqa: BLE001 - the data pipeline failed: one line, no traceback
                raise TrainDoctorError(f"{name}: batch {i} could not be built ({_why(exc)})") from None
        return
    try:
        it = iter(loader)
    except TypeError:
        raise TrainDoctorError(f"{name} is a {type(loader).__name__}, not an iterable of batches; {HINT}") from None
    i = 0
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except TrainDoctorError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise TrainDoctorError(f"{name}: batch {i} could not be built ({_why(exc)})") from None
        yield item, None
        i += 1


def _why(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())[:300]
    hint = ""
    if "stack expects each tensor to be equal size" in msg or "must match the size" in msg:
        hint = "; samples of different shapes need a collate_fn that pads them to one length"
    return f"{type(exc).__name__}: {msg}{hint}"


@dataclass
class Scan:
    """What reading a loader gave: the batches kept for probes, and how far it read."""

    kept: list[Batch]
    samples_read: int
    batches_read: int
    exhausted: bool
    ids_kind: str  # "dataset indices" or "positions"
    # dtype of the targets as the loader gave them, before ``batch_fn`` (a script's ``y.float()``)
    raw_target_dtype: str | None = None


def read_batches(
    loader: Any,
    name: str,
    *,
    batch_fn: BatchFn | None = None,
    max_samples: int = 20000,
    keep_samples: int = 2048,
    on_batch: Callable[[Batch, int], None] | None = None,
) -> Scan:
    """Stream ``loader`` (up to ``max_samples``), call ``on_batch`` on each, keep the first ones.

    Raises a one-line :class:`TrainDoctorError` for a loader that yields nothing or yields
    something that is not an ``(inputs, targets)`` pair.
    """
    if loader is None:
        raise TrainDoctorError(f"{name} is None; {HINT}")
    kept: list[Batch] = []
    kept_n = read = nb = 0
    ids_kind = "dataset indices" if _is_map_loader(loader) else "positions"
    first_shape: tuple[int, ...] | None = None
    exhausted = True
    raw_dtype = None
    for item, idx in _raw_items(loader, name):
        if nb == 0 and isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            raw_dtype = str(item[1].dtype).replace("torch.", "")
        x, y = unpack(item, nb, name, batch_fn)
        ids = idx if idx is not None and len(idx) == x.shape[0] else list(range(read, read + int(x.shape[0])))
        shape = tuple(x.shape[1:])
        if first_shape is None:
            first_shape = shape
        elif len(shape) != len(first_shape):
            raise TrainDoctorError(
                f"{name}: batch {nb} inputs have per-sample shape {list(shape)} but batch 0 had {list(first_shape)}; "
                "expected samples of one rank in every batch"
            )
        b = Batch(x, y, ids)
        if on_batch is not None:
            on_batch(b, nb)
        if kept_n < keep_samples:
            kept.append(b)
            kept_n += len(b)
        read += len(b)
        nb += 1
        if read >= max_samples:
            exhausted = False
            break
    if nb == 0:
        raise TrainDoctorError(f"{name} yielded no batches; expected at least one (inputs, targets) batch")
    return Scan(kept, read, nb, exhausted, ids_kind, raw_dtype)


def concat(batches: list[Batch], limit: int | None = None) -> Batch | None:
    """One batch of the kept samples (same per-sample shape only), the first ``limit`` of them."""
    if not batches:
        return None
    shape = tuple(batches[0].x.shape[1:])
    yshape = tuple(batches[0].y.shape[1:])
    same = [b for b in batches if tuple(b.x.shape[1:]) == shape and tuple(b.y.shape[1:]) == yshape]
    if not same:
        return None
    x = torch.cat([b.x for b in same])
    y = torch.cat([b.y for b in same])
    ids = [i for b in same for i in b.ids]
    if limit is not None:
        x, y, ids = x[:limit], y[:limit], ids[:limit]
    return Batch(x, y, ids)
