"""Overhead of watching, with anchors: a bare training step against the same step under `traindoctor run`'s
hooks, under `Doctor`, and under three other ways of watching a run, side by side in one process.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/overhead.py [--reps 20] [--steps 50] [--device cpu|cuda]
                                                         [--workloads mlp,cnn,transformer] [--cadence 50]

Methods, each in its own blocks of steps, alternating in a shuffled order every round:

* ``bare``: the loop alone;
* ``run (zero-code)``: the same AutoWatch that `traindoctor run` installs (global module/optimizer hooks,
  the backward wrapper, the loss-function and loader wrappers), in process, so interpreter start-up is
  excluded and everything that runs per step is included;
* ``Doctor``: ``Doctor(model, opt)`` and one ``doctor.step(loss)`` per step;
* anchors: ``torch.autograd.set_detect_anomaly(True)``; a naive per-parameter ``p.grad.norm().item()``
  loop after each backward; Cockpit's economy configuration (``cockpit.Cockpit(params,
  quantities=configuration("economy"))``, every step, as that configuration schedules it, with BackPACK's
  ``extend`` on a copy of the model and on the loss), in ``--cockpit-reps`` rounds of ``--cockpit-steps``
  steps (it is two to three orders of magnitude slower). Cockpit is optional: without it the row says
  "not installed"; a model BackPACK cannot extend says so.

Each round's time per step of a method is divided by that round's bare time; the table gives the median
step time and the median of those paired ratios. For the doctor's two modes the wall time spent inside its
own callbacks on the training thread is clocked too (outermost calls only): on a shared machine the step
ratio wobbles by several percent between rounds, while this is measured directly.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import random
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from traindoctor.watch.autohooks import AutoWatch
from traindoctor.watch.doctor import Doctor
from traindoctor.watch.monitor import DEFAULT_CADENCE, Monitor


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


class Encoder(nn.Module):
    """A small transformer classifier: token embedding, 2 encoder layers (d_model 64, 4 heads), mean pool."""

    def __init__(self, vocab: int = 1000, d: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 4, dim_feedforward=2 * d, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(x)).mean(1))


# name → (model, one input batch)
WORKLOADS: dict[str, tuple[str, Callable[[], nn.Module], Callable[[str], torch.Tensor]]] = {
    "mlp": ("mlp 784-512-512-10, batch 128", mlp, lambda dev: torch.randn(128, 784, device=dev)),
    "cnn": ("cnn 2 conv + linear, 28x28, batch 64", cnn, lambda dev: torch.randn(64, 1, 28, 28, device=dev)),
    "transformer": ("transformer 2 layers d64, seq 32, batch 32", Encoder,
                    lambda dev: torch.randint(0, 1000, (32, 32), device=dev)),
}
METHODS = ["bare", "run (zero-code)", "Doctor", "detect_anomaly", "naive .item() norms", "cockpit economy"]


class HookClock:
    """Adds up the wall time spent inside the doctor's per-step callbacks (training thread)."""

    NAMES = ("on_backward", "on_loss", "opt_pre", "opt_post", "_pre_forward", "_arm_activations", "_make_act_hook",
             "on_loss_call")

    def __init__(self) -> None:
        self.total = 0.0
        self._depth = 0
        self._orig = {n: getattr(Monitor, n) for n in self.NAMES}

    def _timed(self, fn):
        def wrapper(*a, **k):
            if self._depth:  # nested (opt_post arms the activation hooks): counted by the outer call
                return fn(*a, **k)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.total += time.perf_counter() - t0
                self._depth -= 1
        return wrapper

    def install(self) -> None:
        for n, fn in self._orig.items():
            if n == "_make_act_hook":
                def make(mon, *a, _fn=fn, **k):
                    return self._timed(_fn(mon, *a, **k))
                setattr(Monitor, n, make)
            else:
                setattr(Monitor, n, self._timed(fn))

    def remove(self) -> None:
        for n, fn in self._orig.items():
            setattr(Monitor, n, fn)


# steps run before timing a doctor mode: the first-step trace and the data window (at most
# PROFILE_MAX_STEPS, 20 here) are one-off costs measured by first_step.py, not the steady state measured here
WARM = 25
WARM_ANCHOR = 3


class CockpitAnchor:
    """Cockpit's economy configuration on a BackPACK-extended copy of the model (None + why, when it cannot)."""

    def __init__(self, model: nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        self.error: str | None = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import cockpit
                from backpack import extend
                from cockpit.utils.configuration import configuration
        except ImportError as exc:
            self.error = f"not installed ({exc.name})"
            return
        self.model = extend(copy.deepcopy(model))
        self.loss_fn = extend(nn.CrossEntropyLoss())
        self.each_fn = nn.CrossEntropyLoss(reduction="none")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.cockpit = cockpit.Cockpit(self.model.parameters(), quantities=configuration("economy"))
        self.xs, self.ys = xs, ys
        self.step_no = 0
        try:
            self.block(1)
        except Exception as exc:  # noqa: BLE001 - a model BackPACK cannot extend
            self.error = f"fails: {type(exc).__name__}: {exc}"[:160]

    def block(self, n: int) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Alpha warns at every step that Adam's update is not modelled
            t0 = time.perf_counter()
            for i in range(n):
                x, y = self.xs[i % len(self.xs)], self.ys[i % len(self.ys)]
                self.opt.zero_grad(set_to_none=True)
                out = self.model(x)
                loss = self.loss_fn(out, y)
                losses = self.each_fn(out, y)
                s = self.step_no
                info = {"batch_size": x.shape[0], "individual_losses": losses, "loss": loss, "optimizer": self.opt}
                with self.cockpit(s, info=info):
                    loss.backward(create_graph=self.cockpit.create_graph(s))
                self.opt.step()
                self.step_no += 1
                self.cockpit.output.clear()  # what it tracked is not kept across the benchmark
            return (time.perf_counter() - t0) / n


def bench(make, make_x, reps: int, steps: int, device: str, cadence: int, cockpit_reps: int,
          cockpit_steps: int) -> tuple[dict[str, list[float]], dict[str, float], dict[str, str]]:
    torch.manual_seed(0)
    model = make().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xs = [make_x(device) for _ in range(8)]
    ys = [torch.randint(0, 10, (xs[0].shape[0],), device=device) for _ in range(8)]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def block(n: int, doctor: Doctor | None = None, after_backward: Callable[[], Any] | None = None) -> float:
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i % 8]), ys[i % 8])
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            if doctor is not None:
                doctor.step(loss)
        sync()
        return (time.perf_counter() - t0) / n

    def naive() -> None:
        [p.grad.norm().item() for p in model.parameters() if p.grad is not None]

    notes: dict[str, str] = {}
    cp = CockpitAnchor(model, xs, ys)
    if cp is not None and cp.error:
        notes["cockpit economy"] = cp.error
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    inside: dict[str, float] = {"run (zero-code)": 0.0, "Doctor": 0.0}
    counted: dict[str, int] = {"run (zero-code)": 0, "Doctor": 0}
    clock = HookClock()
    block(20)  # warm-up
    for rep in range(reps):
        modes = [m for m in METHODS if m != "cockpit economy" or (cp is not None and not cp.error and rep < cockpit_reps)]
        random.shuffle(modes)
        bare_now = None
        for mode in modes:
            if mode == "bare":
                block(WARM_ANCHOR)
                bare_now = block(steps)
                times[mode].append(bare_now)
            elif mode == "Doctor":
                d = Doctor(model, opt, cadence=cadence, live=False)
                block(WARM, d)  # past the one-off first-step inspection and data window (first_step.py)
                times[mode].append(block(steps, d))
                clock.install()
                clock.total = 0.0
                block(steps, d)
                inside[mode] += clock.total
                counted[mode] += steps
                clock.remove()
                d.close()
            elif mode == "run (zero-code)":
                mon = Monitor(cadence=cadence, on_critical=lambda m: None)
                w = AutoWatch(mon)
                block(WARM)
                times[mode].append(block(steps))
                clock.install()
                clock.total = 0.0
                block(steps)
                inside[mode] += clock.total
                counted[mode] += steps
                clock.remove()
                w.close()
                mon.close()
            elif mode == "detect_anomaly":
                with torch.autograd.set_detect_anomaly(True), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Anomaly Detection has been enabled ..."
                    block(WARM_ANCHOR)
                    times[mode].append(block(steps))
            elif mode == "naive .item() norms":
                block(WARM_ANCHOR, after_backward=naive)
                times[mode].append(block(steps, after_backward=naive))
            elif mode == "cockpit economy":
                assert cp is not None
                times[mode].append(cp.block(cockpit_steps))
                times[mode + " @round"] = [*times.get(mode + " @round", []), float(rep)]
    per_step_inside = {m: inside[m] / max(1, counted[m]) for m in inside}
    return times, per_step_inside, notes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cadence", type=int, default=DEFAULT_CADENCE)
    ap.add_argument("--cockpit-reps", type=int, default=3, help="rounds that include Cockpit (the first ones)")
    ap.add_argument("--cockpit-steps", type=int, default=3, help="Cockpit steps per round")
    ap.add_argument("--workloads", default="mlp,cnn,transformer")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, device {a.device}, threads {torch.get_num_threads()}, cadence {a.cadence}, "
          f"{a.reps} alternating rounds of {a.steps} steps per method (Cockpit: {a.cockpit_reps} rounds of "
          f"{a.cockpit_steps}), load average at start {load[0]:.2f}" if load else "")
    print(f"{'workload':44} {'method':22} {'ms/step':>9} {'× bare':>8}")
    for key in a.workloads.split(","):
        label, make, make_x = WORKLOADS[key]
        t, ins, notes = bench(make, make_x, a.reps, a.steps, a.device, a.cadence, a.cockpit_reps, a.cockpit_steps)
        bare = t["bare"]
        for m in METHODS:
            xs = t[m]
            if not xs:
                print(f"{label:44} {m:22} {notes.get(m, 'not measured'):>18}")
                continue
            rounds = [int(r) for r in t.get(m + " @round", [])] or list(range(len(xs)))
            paired = statistics.median(x / bare[r] for x, r in zip(xs, rounds))
            print(f"{label:44} {m:22} {statistics.median(xs) * 1e3:9.3f} {paired:8.3f}")
        for m in ("run (zero-code)", "Doctor"):
            print(f"{label:44} {m:22} inside the doctor's callbacks: {ins[m] * 1e6:.1f} µs/step = "
                  f"{ins[m] / statistics.median(bare) * 100:.2f} % of a bare step")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
