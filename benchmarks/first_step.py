"""Cost of the first-step inspection: step 0 traced, the data-profile window, the steady state after it.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/first_step.py [--reps 7] [--first-reps 15]

One process, side by side, alternating (shuffled order each round), medians. Every run starts
from a fresh copy of the same template model (``copy.deepcopy``: same initial weights) with a
fresh Adam, so step 0 is a real first step in both modes:

* bare: the plain loop;
* Doctor: the same loop with ``Doctor(model, opt, live=False)`` attached and ``doctor.step(loss)``
  after ``optimizer.step()``.

What is measured (per model):

1. step 0 (forward + loss + backward + optimizer step + ``doctor.step``): the one-off cost of the
   first-step inspection. ``--first-reps`` rounds of one fresh step 0 per mode, plus the step 0 of
   each full run below. Split by phase (forward+loss runs under the trace's TorchFunctionMode;
   ``backward()`` is where the monitor ends the trace and builds the facts; the optimizer step and
   ``doctor.step`` carry the step-0 sampled statistics, as every ``cadence``-th step does) and by
   the monitor's own one-off methods (wrapped with a clock, like overhead.py's HookClock);
2. the data-profile window, steps 1 .. W-1 (W = the step at which the monitor stops profiling:
   ``max(PROFILE_STEPS, ceil(PROFILE_SAMPLES / batch))``, at most ``PROFILE_MAX_STEPS``): total
   added time, per step, ratio;
3. the steady state after the window: steps W .. W + 2*cadence - 1. Any 2*cadence consecutive
   steps hold exactly two sampled steps (one with the weight copy for update ratios, one without:
   they alternate) and one eval-mode-gap step (models with dropout/batch norm: every 2*cadence
   steps), so the per-step average includes the sampled work at its long-run rate — the same
   rate overhead.py's blocks of 50 steps average over.

``--reps`` full runs per mode (W + 2*cadence steps each). The clock wrappers (a few Python calls
per step) stay installed in both modes; bare runs call none of them.
"""
from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import cnn, mlp  # noqa: E402  (the same models as the steady-state benchmark)

from traindoctor.watch.doctor import Doctor  # noqa: E402
from traindoctor.watch.monitor import (  # noqa: E402
    DEFAULT_CADENCE,
    PROFILE_MAX_STEPS,
    PROFILE_SAMPLES,
    PROFILE_STEPS,
    Monitor,
)


class TokenClassifier(nn.Module):
    """A small transformer over token ids: embedding, 2 encoder layers, mean pool, linear head."""

    def __init__(self, vocab: int = 1000, d: int = 64, layers: int = 2, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, batch_first=True)  # dropout 0.1
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(x)).mean(1))


def _floats(shape: tuple[int, ...]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    return lambda: (torch.randn(*shape), torch.randint(0, 10, (shape[0],)))


def _tokens(batch: int, seq: int, vocab: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    return lambda: (torch.randint(0, vocab, (batch, seq)), torch.randint(0, 10, (batch,)))


CONFIGS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple[torch.Tensor, torch.Tensor]], int]] = {
    "mlp 784-512-512-10, batch 128": (mlp, _floats((128, 784)), 128),
    "cnn 2 conv + linear, 28x28, batch 64": (cnn, _floats((64, 1, 28, 28)), 64),
    "transformer 2x d64, seq 32, batch 32": (TokenClassifier, _tokens(32, 32, 1000), 32),
}


class Clock:
    """Wall time inside the monitor, per step: the outermost calls (all of the doctor's own code on
    the training thread) and, inclusive, each of the one-off methods of the first-step inspection."""

    OUTER = ("on_backward", "on_loss", "on_loss_call", "opt_pre", "opt_post", "_pre_forward", "_arm_activations")
    FACTORIES = ("_make_act_hook", "_make_output_hook")
    NAMED = ("begin_trace", "_end_trace", "_inspect_loss_graph", "_profile_step", "_finish_profile", "_announce",
             "_eval_gap")

    def __init__(self) -> None:
        self.acc: dict[str, float] = defaultdict(float)
        self._depth = 0
        self._orig = {n: getattr(Monitor, n) for n in self.OUTER + self.FACTORIES + self.NAMED}

    def take(self) -> dict[str, float]:
        acc, self.acc = self.acc, defaultdict(float)
        return acc

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        named = name in self.NAMED

        def wrapper(*a: Any, **k: Any) -> Any:
            outer = self._depth == 0
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                self._depth -= 1
                if outer:
                    self.acc["inside"] += dt
                if named:
                    self.acc[name] += dt
                    self.acc[name + "#"] += 1
        return wrapper

    def install(self) -> None:  # before any Doctor exists: attach_model binds _pre_forward
        for n, fn in self._orig.items():
            if n in self.FACTORIES:
                def make(mon: Monitor, *a: Any, _fn: Any = fn, **k: Any) -> Any:
                    return self._timed("hook", _fn(mon, *a, **k))
                setattr(Monitor, n, make)
            else:
                setattr(Monitor, n, self._timed(n, fn))

    def remove(self) -> None:
        for n, fn in self._orig.items():
            setattr(Monitor, n, fn)


def run(template: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int, doctor: bool,
        clock: Clock) -> dict[str, Any]:
    """Train a fresh copy for ``steps`` steps; per-step phase times and clock readings."""
    model = copy.deepcopy(template)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    d = Doctor(model, opt, live=False) if doctor else None
    found: list[str] = []
    if d is not None:
        d.monitor.on_critical = found.append  # what a live Doctor would print: should stay empty
    fwd, bwd, opt_t, inside = [], [], [], []
    named: list[dict[str, float]] = []
    window_end = None
    gc.collect()
    clock.take()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        t1 = time.perf_counter()
        c1 = clock.acc["inside"]
        loss.backward()
        t2 = time.perf_counter()
        c2 = clock.acc["inside"]
        opt.step()
        if d is not None:
            d.step(loss)
        t3 = time.perf_counter()
        acc = clock.take()
        fwd.append((t1 - t0, c1))
        bwd.append((t2 - t1, c2 - c1))
        opt_t.append((t3 - t2, acc["inside"] - c2))
        inside.append(acc["inside"])
        named.append(acc)
        if d is not None and window_end is None and i > 0 and not d.monitor._profiling:
            window_end = i + 1
    out: dict[str, Any] = {"fwd": fwd, "bwd": bwd, "opt": opt_t, "inside": inside, "named": named,
                           "window_end": window_end, "found": found}
    if d is not None:
        r = d.close()
        graph = next((e.data for e in r.events if e.kind == "model_graph"), {})
        out["ops"] = graph.get("operations")
        out["modules"] = len(graph.get("modules") or [])
        out["errors"] = [e.data.get("message") for e in r.events if e.kind == "doctor_error"]
    return out


def step_time(r: dict[str, Any], i: int) -> float:
    return r["fwd"][i][0] + r["bwd"][i][0] + r["opt"][i][0]


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def expected_window(batch: int) -> int:
    return min(PROFILE_MAX_STEPS, max(PROFILE_STEPS, math.ceil(PROFILE_SAMPLES / batch)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7, help="full runs per mode and model (window + steady state)")
    ap.add_argument("--first-reps", type=int, default=15, help="extra one-step runs per mode and model (step 0)")
    ap.add_argument("--only", default=None, help="substring of a model name")
    a = ap.parse_args()
    cadence = DEFAULT_CADENCE
    configs = {k: v for k, v in CONFIGS.items() if a.only is None or a.only in k}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cadence {cadence}, step 0: "
          f"{a.first_reps + a.reps} alternating fresh runs per mode; window and steady state: {a.reps} alternating "
          f"full runs per mode")
    clock = Clock()
    clock.install()
    t_start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    cold: float | None = None
    try:
        for ci, (name, (make, data, batch)) in enumerate(configs.items()):
            torch.manual_seed(0)
            template = make()
            batches = [data() for _ in range(8)]
            w_exp = expected_window(batch)
            total = w_exp + 2 * cadence
            run(template, batches, 10, False, clock)  # warm-up: torch's own first calls
            if ci == 0:  # the first Doctor in the process: lazy imports (trace, checks, rules) included
                rc = run(template, batches, 1, True, clock)
                rb = run(template, batches, 1, False, clock)
                cold = step_time(rc, 0) - step_time(rb, 0)
            run(template, batches, 3, True, clock)  # warm-up of the Doctor's paths
            first: dict[str, list[dict[str, Any]]] = {"bare": [], "Doctor": []}
            full: dict[str, list[dict[str, Any]]] = {"bare": [], "Doctor": []}
            for _ in range(a.first_reps):
                modes = ["bare", "Doctor"]
                random.shuffle(modes)
                for mode in modes:
                    first[mode].append(run(template, batches, 1, mode == "Doctor", clock))
            for _ in range(a.reps):
                modes = ["bare", "Doctor"]
                random.shuffle(modes)
                for mode in modes:
                    r = run(template, batches, total, mode == "Doctor", clock)
                    full[mode].append(r)
                    first[mode].append(r)
            results[name] = {"first": first, "full": full, "w_exp": w_exp, "batch": batch}
    finally:
        clock.remove()
    report(results, cadence, cold, time.perf_counter() - t_start)


def report(results: dict[str, dict[str, Any]], cadence: int, cold: float | None, elapsed: float) -> None:
    ms = 1e3
    print()
    print("1) step 0 (forward + loss + backward + optimizer step), fresh model copy: medians; added = median of "
          "paired differences")
    print(f"{'model':38} {'bare':>9} {'Doctor':>9} {'added':>9} {'ratio':>6} | {'fwd+loss':>9} {'(trace)':>9} "
          f"{'backward':>9} {'opt+step':>9} | {'ops':>5}")
    for name, res in results.items():
        b, d = res["first"]["bare"], res["first"]["Doctor"]
        tb = [step_time(r, 0) for r in b]
        td = [step_time(r, 0) for r in d]
        added = med([x - y for x, y in zip(td, tb)])
        ph = {k: med([r[k][0][0] for r in d]) - med([r[k][0][0] for r in b]) for k in ("fwd", "bwd", "opt")}
        # the trace itself: the forward+loss phase under the mode, less the monitor's own callbacks in it
        trace = med([r["fwd"][0][0] - r["fwd"][0][1] for r in d]) - med([r["fwd"][0][0] for r in b])
        ops = d[0].get("ops")
        print(f"{name:38} {med(tb) * ms:7.2f}ms {med(td) * ms:7.2f}ms {added * ms:+7.2f}ms {med(td) / med(tb):6.2f} | "
              f"{ph['fwd'] * ms:+7.2f}ms {trace * ms:+7.2f}ms {ph['bwd'] * ms:+7.2f}ms {ph['opt'] * ms:+7.2f}ms | "
              f"{ops:>5}")
    print("   inside the monitor at step 0 (clock, medians, ms): "
          "fwd+loss = begin_trace + step-0 sampled hooks (+ eval-mode gap where the model has dropout);")
    print("   backward = _end_trace (trace facts, init scale) + _inspect_loss_graph + _profile_step + _announce")
    print(f"{'model':38} {'fwd+loss':>9} {'begin':>7} {'evalgap':>7} | {'backward':>9} {'end_trace':>9} "
          f"{'lossgraph':>9} {'profile':>7} {'announce':>8} | {'opt+step':>8}")
    for name, res in results.items():
        d = res["first"]["Doctor"]

        def m(key: str, rs: list[dict[str, Any]] = d) -> float:
            return med([r["named"][0].get(key, 0.0) for r in rs]) * ms
        fw = med([r["fwd"][0][1] for r in d]) * ms
        bw = med([r["bwd"][0][1] for r in d]) * ms
        op = med([r["opt"][0][1] for r in d]) * ms
        print(f"{name:38} {fw:7.2f}ms {m('begin_trace'):7.2f} {m('_eval_gap'):7.2f} | {bw:7.2f}ms "
              f"{m('_end_trace'):9.2f} {m('_inspect_loss_graph'):9.2f} {m('_profile_step'):7.2f} "
              f"{m('_announce'):8.2f} | {op:6.2f}ms")
    if cold is not None:
        print(f"   first Doctor in the process (lazy imports of the trace, checks and rules included), "
              f"{next(iter(results))}: added {cold * ms:+.1f} ms at step 0 (one sample)")

    print()
    print("2) data-profile window: steps 1 .. W-1 (W = the step the profile ends), medians of the totals")
    print(f"{'model':38} {'W':>3} {'bare total':>10} {'Doctor':>10} {'added':>9} {'per step':>9} {'ratio':>6} | "
          f"{'inside/step':>11} {'profile/step':>12} {'finish+announce':>15}")
    for name, res in results.items():
        b, d = res["full"]["bare"], res["full"]["Doctor"]
        ws = {r["window_end"] for r in d}
        w = d[0]["window_end"]
        assert ws == {res["w_exp"]}, (name, ws, res["w_exp"])
        tb = [sum(step_time(r, i) for i in range(1, w)) for r in b]
        td = [sum(step_time(r, i) for i in range(1, w)) for r in d]
        added = med([x - y for x, y in zip(td, tb)])
        prof = med([sum(r["named"][i].get("_profile_step", 0.0) for i in range(1, w)) / (w - 1) for r in d])
        fin = med([r["named"][w - 1].get("_finish_profile", 0.0) for r in d])
        ins = med([sum(r["inside"][1:w]) / (w - 1) for r in d])
        print(f"{name:38} {w:3d} {med(tb) * ms:8.1f}ms {med(td) * ms:8.1f}ms {added * ms:+7.1f}ms "
              f"{added / (w - 1) * ms:+7.3f}ms {med(td) / med(tb):6.3f} | {ins * 1e6:9.0f}us {prof * 1e6:10.0f}us "
              f"{fin * ms:13.2f}ms")

    print()
    print(f"3) steady state after the window: steps W .. W+{2 * cadence - 1} (two sampled steps, one eval-gap step "
          f"at the long-run rate), medians of the per-step means")
    print(f"{'model':38} {'bare':>9} {'Doctor':>9} {'ratio':>6} {'paired':>7} | {'inside callbacks':>16} "
          f"{'% of bare':>9} | {'inspection calls':>16} {'findings':>8}")
    for name, res in results.items():
        b, d = res["full"]["bare"], res["full"]["Doctor"]
        w = d[0]["window_end"]
        n = 2 * cadence
        tb = [sum(step_time(r, i) for i in range(w, w + n)) / n for r in b]
        td = [sum(step_time(r, i) for i in range(w, w + n)) / n for r in d]
        ins = med([sum(r["inside"][w:w + n]) / n for r in d])
        # calls of the first-step inspection's own methods after the window (the eval-mode gap is sampled work)
        extra = max(sum(int(v) for i in range(w, len(r["named"])) for k, v in r["named"][i].items()
                        if k.endswith("#") and k[:-1] != "_eval_gap") for r in d)
        found = sorted({f.split(" — ")[0] for r in d for f in r["found"]})
        errors = sorted({e for r in d for e in r.get("errors", [])})
        paired = med([x / y for x, y in zip(td, tb)])
        print(f"{name:38} {med(tb) * ms:7.3f}ms {med(td) * ms:7.3f}ms {med(td) / med(tb):6.3f} {paired:7.3f} | "
              f"{ins * 1e6:12.1f}us/st {ins / med(tb) * 100:8.2f}% | {extra:16d} {len(found):8d}")
        if found:
            print(f"   findings announced: {found}")
        if errors:
            print(f"   doctor errors: {errors}")
    print("   inspection calls: begin_trace/_end_trace/_inspect_loss_graph/_profile_step/_finish_profile/_announce "
          "after the window (max over runs); findings: announced in the whole run (live=False, collected)")
    print(f"\ntotal {elapsed:.0f} s")


if __name__ == "__main__":
    main()
