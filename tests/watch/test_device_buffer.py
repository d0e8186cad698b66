"""The per-step loss is not read on the training thread when it is deferred to the device buffer, and the
exact step of a first non-finite loss is still reported when it falls between two reads of the buffer.

There is no accelerator here: the buffer's path is forced on the CPU (``defer_loss_reads=True``), which runs
the same code an accelerator's loss takes (``watch/devicebuffer.py``), and a loss on the ``meta`` device shows
that a loss off the CPU takes that path by itself. The CUDA event that orders the writer's read after the
buffered copies is not exercised here.
"""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from traindoctor.diagnosis import diagnose
from traindoctor.watch.autohooks import AutoWatch
from traindoctor.watch.monitor import Monitor

_READS = {"item", "__float__", "__int__", "__bool__", "__index__", "tolist", "numpy", "__format__", "__repr__"}


class SpyLoss(torch.Tensor):
    """A loss that notes every read of its value (or of anything computed from it) on the main thread."""

    reads: list[tuple[str, int]] = []
    step = [0]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _READS and threading.current_thread() is threading.main_thread():
            cls.reads.append((name, cls.step[0]))
        return super().__torch_function__(func, types, args, kwargs or {})


def _train(mon: Monitor, steps: int, nan_at: int | None = None) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    w = AutoWatch(mon)
    losses = []
    SpyLoss.reads.clear()
    try:
        for step in range(steps):
            SpyLoss.step[0] = step
            x = torch.randn(32, 6, generator=g)
            y = torch.randint(0, 3, (32,), generator=g)
            if step == nan_at:
                x[3, 2] = float("nan")
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y).as_subclass(SpyLoss)
            loss.backward()
            opt.step()
            losses.append(loss.detach().as_subclass(torch.Tensor).clone())  # read after the run, not now
    finally:
        w.close()
    return losses


def test_deferred_loss_is_never_read_on_the_training_thread():
    mon = Monitor(cadence=10, on_critical=lambda m: None, defer_loss_reads=True)
    losses = _train(mon, 45)
    run = mon.close()
    # the first step is inspected once (the loss graph, the per-element factor); after it, never a read
    assert [r for r in SpyLoss.reads if r[1] > 0] == []
    s = run.series["loss"]
    assert s.steps.tolist() == list(range(45))  # every step, the last partial block too
    assert s.values.tolist() == [float(v) for v in losses]  # exactly the losses (float32 → float64)


def test_the_spy_sees_the_per_step_read_of_the_cpu_path():
    """Without deferring (a CPU loss, by default) the loss is read at each backward: the spy sees it, so the
    test above would fail if the deferred path still read the loss."""
    mon = Monitor(cadence=10, on_critical=lambda m: None)
    _train(mon, 12)
    mon.close()
    steps = {st for name, st in SpyLoss.reads if name == "__float__"}
    assert steps >= set(range(1, 12))


def test_first_nonfinite_step_between_two_reads_is_exact():
    alerts: list[str] = []
    mon = Monitor(cadence=10, on_critical=alerts.append, defer_loss_reads=True)
    _train(mon, 40, nan_at=23)  # the buffer is read after steps 9, 19, 29, 39: 23 falls between two reads
    run = mon.close()
    ev = [e for e in run.events if e.kind == "nonfinite_loss"]
    assert [e.step for e in ev] == [23]
    assert ev[0].data.get("late") is True and ev[0].data.get("dtype") == "float32"
    assert any("L001" in a and "at step 23" in a for a in alerts), alerts
    f = next(f for f in diagnose(run).findings if f.code == "L001")
    assert f.step == 23
    assert [r for r in SpyLoss.reads if r[1] > 0] == []


def test_a_loss_off_the_cpu_goes_to_the_device_buffer():
    """A loss on another device (``meta`` here: no GPU on this machine) is copied into the buffer and
    never read by the training thread; the buffer is handed on when full."""
    mon = Monitor(cadence=4, on_critical=lambda m: None)
    try:
        for step in range(3):
            v = mon._read_loss(torch.empty((), device="meta"))
            assert isinstance(v, torch.Tensor) and v.device.type == "meta"
            mon.record("loss", v, step)
        assert len(mon._loss_buf) == 3 and not any(n == "loss" for n, _, _ in mon._pending)
        mon.record("loss", torch.empty((), device="meta"), 3)
        assert len(mon._loss_buf) == 0
        blocks = [v for n, _, v in mon._pending if n == "@loss_block"]
        assert len(blocks) == 1 and blocks[0][0] == [0, 1, 2, 3] and blocks[0][1].device.type == "meta"
    finally:
        mon._pending.clear()  # a meta tensor has no value to read
        mon._stop.set()


@pytest.mark.parametrize("doctor", [False, True])
def test_deferred_and_immediate_reads_record_the_same_run(doctor):
    """Deferring changes when the loss is read, not what is recorded (Doctor mode's explicit steps too)."""
    from traindoctor.watch.doctor import Doctor

    def go(defer: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        d = Doctor(model, opt, cadence=10, live=False)
        d.monitor.defer_loss_reads = defer
        for _ in range(33):
            x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            d.step(loss if doctor else loss.detach())
        return d.close()

    a, b = go(False), go(True)
    assert a.series["loss"].steps.tolist() == b.series["loss"].steps.tolist() == list(range(33))
    assert a.series["loss"].values.tolist() == b.series["loss"].values.tolist()
