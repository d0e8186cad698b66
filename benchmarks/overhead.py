"""Overhead of watching: bare training step vs the same step under `traindoctor run`'s hooks and
under `Doctor`, side by side in one process, alternating blocks, medians.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/overhead.py [--reps 15] [--steps 50] [--device cpu|cuda]

Zero-code mode is measured in process with the same AutoWatch that `traindoctor run` installs
(global module/optimizer hooks, the backward wrapper, the loader-index wrapper), so the numbers
exclude interpreter start-up and include everything that runs per step.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

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


CONFIGS = {
    "mlp 784-512-512-10, batch 128": (mlp, (128, 784)),
    "cnn 2 conv + linear, 28x28, batch 64": (cnn, (64, 1, 28, 28)),
}


class HookClock:
    """Adds up the wall time spent inside the doctor's per-step callbacks (training thread).

    A second, noise-robust view of the cost: on a shared machine the step-time ratio of two
    runs wobbles by several percent, while the time inside our own code is measured directly.
    """

    NAMES = ("on_backward", "on_loss", "opt_pre", "opt_post", "_pre_forward", "_arm_activations", "_make_act_hook")

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


# steps run before timing: the first-step trace and the data window (at most PROFILE_MAX_STEPS,
# 20 here) are one-off costs measured by first_step.py, not the steady state measured here
WARM = 25


def bench(make, shape, reps: int, steps: int, device: str, cadence: int) -> dict[str, list[float]]:
    torch.manual_seed(0)
    model = make().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xs = [torch.randn(*shape, device=device) for _ in range(8)]
    ys = [torch.randint(0, 10, (shape[0],), device=device) for _ in range(8)]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def block(n: int, doctor: Doctor | None) -> float:
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i % 8]), ys[i % 8])
            loss.backward()
            opt.step()
            if doctor is not None:
                doctor.step(loss)
        sync()
        return (time.perf_counter() - t0) / n

    times: dict[str, list[float]] = {"bare": [], "run (zero-code)": [], "Doctor": []}
    inside: dict[str, float] = {"run (zero-code)": 0.0, "Doctor": 0.0}
    counted: dict[str, int] = {"run (zero-code)": 0, "Doctor": 0}
    clock = HookClock()
    block(20, None)  # warm-up
    for _ in range(reps):
        modes = list(times)
        random.shuffle(modes)
        for mode in modes:
            if mode == "bare":
                block(WARM, None)
                times[mode].append(block(steps, None))
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
            else:
                mon = Monitor(cadence=cadence, on_critical=lambda m: None)
                w = AutoWatch(mon)
                block(WARM, None)
                times[mode].append(block(steps, None))
                clock.install()
                clock.total = 0.0
                block(steps, None)
                inside[mode] += clock.total
                counted[mode] += steps
                clock.remove()
                w.close()
                mon.close()
    for mode in inside:
        times[mode + " @inside"] = [inside[mode] / max(1, counted[mode])]
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cadence", type=int, default=DEFAULT_CADENCE)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, device {a.device}, threads {torch.get_num_threads()}, "
          f"cadence {a.cadence}, {a.reps} alternating blocks of {a.steps} steps per mode")
    print(f"{'model':40} {'mode':16} {'median step':>12} {'vs bare':>8} {'paired median':>14}")
    for name, (make, shape) in CONFIGS.items():
        t = bench(make, shape, a.reps, a.steps, a.device, a.cadence)
        bare = statistics.median(t["bare"])
        for mode, xs in t.items():
            if mode.endswith("@inside"):
                continue
            med = statistics.median(xs)
            paired = statistics.median(x / b for x, b in zip(xs, t["bare"]))
            print(f"{name:40} {mode:16} {med * 1e3:10.3f}ms {med / bare:8.3f} {paired:14.3f}")
        for mode in ("run (zero-code)", "Doctor"):
            ins = t[mode + " @inside"][0]
            print(f"{name:40} {mode:16} time inside the doctor's callbacks: {ins * 1e6:.1f} us/step"
                  f" = {ins / bare * 100:.2f} % of a bare step")


if __name__ == "__main__":
    main()
