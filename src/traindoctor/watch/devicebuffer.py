"""The per-step loss kept on its device and read every few steps: no host synchronisation per step.

On an accelerator, reading a loss (``float(loss)``, ``loss.item()``) makes the host wait until the device
has computed it, which stalls the queue of kernels the training thread is ahead by. The monitor does not
read it there: each step's loss is copied (one small asynchronous kernel) into a slot of a preallocated
buffer on the loss's device, and every ``capacity`` steps the filled part is cloned on the device and handed,
with an event recorded after the clone on the training thread's stream, to the writer thread, which waits
for that event and reads the block in one transfer. The exact step of a first non-finite loss is known
from the block itself: every step's value is in it, with its step.

The copy happens at the step (not a reference kept for later), so a loss whose memory is reused by the next
step (a CUDA-graph output under ``torch.compile(mode="reduce-overhead")``) is read as it was. The buffer is
float64 where the device has it (float32 on MPS): every float16/bfloat16/float32 loss is exact in it.
"""
from __future__ import annotations

from typing import Any

import torch


def ready_event(device: torch.device) -> Any:
    """An event recorded now on ``device``'s current stream (None on the CPU, or where none can be made):
    the writer thread waits for it before reading what was queued before it."""
    if device.type == "cpu":
        return None
    try:
        if device.type == "cuda":
            ev = torch.cuda.Event()
        else:
            ev = torch.Event(device=device)  # type: ignore[attr-defined]
        ev.record()
        return ev
    except Exception:  # noqa: BLE001 - no event API here: the writer's read then waits on its own
        return None


class LossBuffer:
    """Per-step losses of one device, ``capacity`` at a time."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._buf: torch.Tensor | None = None
        self._slots: tuple[torch.Tensor, ...] = ()
        self._steps: list[int] = []
        self._dtype: torch.dtype | None = None

    def __len__(self) -> int:
        return len(self._steps)

    def push(self, step: int, loss: torch.Tensor) -> tuple[Any, ...]:
        """Copy ``loss`` (one element) into the next slot; returns the blocks to hand on (see :meth:`drain`):
        none until the buffer is full. Never reads the value on the host."""
        buf = self._buf
        blocks: tuple[Any, ...] = ()
        if buf is None or buf.device != loss.device:
            old = self.drain()  # a loss on another device (rare): what was buffered goes first
            blocks = (old,) if old is not None else ()
            dt = torch.float32 if loss.device.type == "mps" else torch.float64
            buf = self._buf = torch.empty(self.capacity, dtype=dt, device=loss.device)
            self._slots = buf.unbind(0)
        with torch.no_grad():
            self._slots[len(self._steps)].copy_(loss.detach().reshape(()))
        self._steps.append(step)
        self._dtype = loss.dtype
        if len(self._steps) >= self.capacity:
            return (*blocks, self.drain())
        return blocks

    def drain(self) -> tuple[list[int], torch.Tensor, Any, Any] | None:
        """The buffered losses as ``(steps, values on the device, event, the losses' dtype)``; the buffer is
        then empty. The values are a device-side clone, so later steps may refill the buffer at once."""
        n = len(self._steps)
        if not n or self._buf is None:
            return None
        with torch.no_grad():
            vals = self._buf[:n].clone()
        steps, self._steps = self._steps, []
        return steps, vals, ready_event(vals.device), self._dtype
