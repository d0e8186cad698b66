"""Watching a ``torch.compile``d model: no graph break, no recompilation, no warning, the same training.

A tiny MLP compiled with ``torch.compile(model)`` trains 30 steps three times from the same seed: bare, under
``traindoctor run``'s zero-code hooks and under ``Doctor``. Dynamo's counters and logs (graph breaks,
recompilations) and Python's warnings are read for each; the losses and final weights are compared bit for
bit (observe mode changes nothing). Inductor is used when a C++ compiler is found (it is here: g++), else
``aot_eager`` (the same Dynamo graph capture, run by eager aten ops).

The other ways to compile: a function that calls the model and the loss (``@torch.compile def step(x, y)``),
and a model compiled in place (``model.compile()``), whose own hooks run inside the compiled call: no graph
break and the same training there too; the doctor's hooks reached inside a compiled region do nothing. Under
the zero-code hooks a compiled *function* is compiled once more at the second step, when the discovery's
global module hooks (which Dynamo guards on, and which cannot be stepped aside from outside a function) are
removed at the first optimizer step.
"""
from __future__ import annotations

import logging
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

torch_dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters  # noqa: E402

from traindoctor.watch.autohooks import AutoWatch  # noqa: E402
from traindoctor.watch.doctor import Doctor  # noqa: E402
from traindoctor.watch.monitor import Monitor  # noqa: E402

BACKEND = "inductor" if shutil.which("g++") or shutil.which("c++") or shutil.which("clang++") else "aot_eager"


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Net(nn.Module):
    """A model class of the script's own (its forward is the script's code, which Dynamo compiles)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _train(watch: str | None, steps: int = 30, how: str = "module"):
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = aw = doc = None
    if watch == "run":  # as `traindoctor run` does: its hooks are in place before the script builds anything
        mon = Monitor(cadence=5, on_critical=lambda m: None)
        aw = AutoWatch(mon)
    if how == "module":
        cm = torch.compile(model, backend=BACKEND)
    elif how == "in place":
        model.compile(backend=BACKEND)
        cm = model
    else:
        cm = model
    if watch == "doctor":
        doc = Doctor(cm, opt, cadence=5, live=False)

    def compute(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(cm(x), y)

    if how == "function":
        compute = torch.compile(compute, backend=BACKEND)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        opt.zero_grad()
        loss = compute(x, y)
        loss.backward()
        opt.step()
        if doc is not None:
            doc.step(loss)
        losses.append(loss.detach().clone())
    run = None
    if doc is not None:
        run = doc.close()
    if aw is not None:
        aw.close()
        run = mon.close()
    seen = {"graph_break": dict(counters["graph_break"]), "frames": dict(counters["frames"])}
    return torch.stack(losses), [p.detach().clone() for p in model.parameters()], seen, run


@pytest.fixture(scope="module")
def bare():
    return _train(None)


@pytest.mark.parametrize("watch", ["run", "doctor"])
def test_compiled_model_is_watched_without_graph_breaks_or_recompiles(watch, bare):
    logs = _Logs()
    torch._logging.set_logs(graph_breaks=True, recompiles=True)
    loggers = [lg for name, lg in logging.Logger.manager.loggerDict.items()
               if isinstance(lg, logging.Logger) and name.startswith("torch")]
    for lg in loggers:
        lg.addHandler(logs)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses, weights, seen, run = _train(watch)
    finally:
        for lg in loggers:
            lg.removeHandler(logs)
        torch._logging.set_logs()
    b_losses, b_weights, b_seen, _ = bare
    # the same training, bit for bit
    assert torch.equal(losses, b_losses)
    assert all(torch.equal(a, b) for a, b in zip(weights, b_weights))
    # no graph break, and the one graph the bare run compiles (the doctor causes no recompilation)
    assert seen["graph_break"] == {} == b_seen["graph_break"]
    assert seen["frames"] == b_seen["frames"] and seen["frames"].get("total") == 1
    text = "\n".join(logs.messages)
    assert "Graph break" not in text and "Recompiling" not in text, text[:2000]
    assert not [w for w in caught if "global hooks" in str(w.message) or "torch.compile" in str(w.message)], \
        [str(w.message)[:200] for w in caught]
    # and it was watched: every step's loss, the sampled statistics under the model's own parameter names
    assert run.series["loss"].steps.tolist() == list(range(30))
    assert torch.equal(torch.as_tensor(run.series["loss"].values), losses.double())
    assert "grad_norm/body.0.weight" in run.series and len(run.series["grad_norm/body.0.weight"]) == 6
    assert not [n for n in run.series if "_orig_mod" in n]
    assert run.meta.get("compiled") is True
    assert any(e.kind == "model_graph" for e in run.events)


@pytest.mark.parametrize("how", ["function", "in place"])
@pytest.mark.parametrize("watch", ["run", "doctor"])
def test_other_ways_to_compile_get_no_graph_break_and_train_the_same(watch, how):
    b_losses, b_weights, b_seen, _ = _train(None, steps=12, how=how)
    losses, weights, seen, run = _train(watch, steps=12, how=how)
    assert torch.equal(losses, b_losses)
    assert all(torch.equal(a, b) for a, b in zip(weights, b_weights))
    assert seen["graph_break"] == {} == b_seen["graph_break"]
    # the script's own compiled frames, and at most one more compilation (see the module docstring)
    assert seen["frames"].get("total", 0) <= b_seen["frames"].get("total", 0) + (2 if watch == "run" else 1), \
        (seen["frames"], b_seen["frames"])
    assert run.series["loss"].steps.tolist() == list(range(12))
    assert torch.equal(torch.as_tensor(run.series["loss"].values), losses.double())
