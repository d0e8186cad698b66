"""Memory and store size of a very long watched run: does either grow with the number of steps?

    OMP_WAIT_POLICY=PASSIVE python benchmarks/memory.py [--steps 10000000] [--layers 8] [--retention on|off]

Simulates a run through the real monitor and run store, without a model (a model's step would make ten
million steps take days): a Monitor in Doctor mode (explicit steps) with a RunStore, as ``Doctor(model, opt,
store=...)`` makes them, is handed a Python float loss at every step (``monitor.on_loss``, the path
``doctor.step(loss)`` takes), and at every sampled step (``--cadence``, 50) what the optimizer hooks record
for a model of ``--layers`` weight layers: the total and per-layer gradient norms, update ratios and weight
norms, and the LR (4 × layers + 2 points). The loss is a noisy decaying curve with a spike at 1/3 of the run
and an event (a "treatment") at 1/2; the writer thread materialises, compacts and writes as in a real run.

At each checkpoint (10^5, 10^6, 10^7 steps by default) it prints the process's resident memory (VmRSS), the
points held in memory, the rows and size of the store (.db + -wal), and whether the spike and the event's
surroundings are still there. ``--retention off`` keeps everything (the behaviour before bounded retention)
for comparison; stop it early with ``--steps``.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from traindoctor.retention import Retention
from traindoctor.store import RunStore
from traindoctor.watch.monitor import Monitor


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, where /proc is missing


def store_mb(path: Path) -> float:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=float, default=1e7)
    ap.add_argument("--checkpoints", default="1e5,1e6,1e7")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--cadence", type=int, default=50)
    ap.add_argument("--retention", choices=("on", "off"), default="on")
    ap.add_argument("--flush-interval", type=float, default=0.05,
                    help="the writer thread's period; a simulated step takes ~10 µs, a real one milliseconds, so "
                         "the default 1 s would queue ~100 000 steps here where a real run queues ~1000")
    ap.add_argument("--tracemalloc", action="store_true", help="also report the Python heap in use (slower)")
    a = ap.parse_args()
    if a.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    total = int(a.steps)
    checks = sorted({int(float(c)) for c in a.checkpoints.split(",") if int(float(c)) <= total} | {total})
    spike, event_at = total // 3 + 7, total // 2
    ret = Retention() if a.retention == "on" else None
    tmp = tempfile.mkdtemp(prefix="td-memory-")
    path = Path(tmp) / "run.db"
    store = RunStore(path, stop_on_error=True)
    mon = Monitor(cadence=a.cadence, store=store, explicit_steps=True, on_critical=lambda m: None, retention=ret,
                  flush_interval=a.flush_interval)
    names = [f"layer{i}.weight" for i in range(a.layers)]
    rng = random.Random(0)
    base_rss = rss_mb()
    print(f"retention {ret}, {a.layers} layers, cadence {a.cadence}, flush interval {a.flush_interval} s, "
          f"store {path}")
    print(f"{'steps':>10} {'s':>7} {'µs/step':>8} {'RSS MB':>8} {'Δ RSS MB':>9} {'points held':>12} "
          f"{'store rows':>11} {'store MB':>9}  kept")
    t0 = time.perf_counter()
    last_t, last_step = t0, 0
    for step in range(total):
        v = 2.0 * math.exp(-step / (total / 5)) + 0.3 + 0.05 * rng.gauss(0.0, 1.0)
        if step == spike:
            v *= 30
        mon.on_loss(v)
        if step % a.cadence == 0:
            st = mon.step - 1
            g = [0.1 * (i + 1) * (1 + 0.1 * rng.random()) for i in range(a.layers)]
            mon.record("grad_norm", math.sqrt(sum(x * x for x in g)), st)
            mon.record("lr", 1e-3, st)
            for n, x in zip(names, g):
                mon.record(f"grad_norm/{n}", x, st)
                mon.record(f"update_ratio/{n}", 1e-3 * (1 + rng.random()), st)
                mon.record(f"weight_norm/{n}", 10.0 + 0.001 * st / a.cadence, st)
        if step == event_at:
            mon.event("treatment", {"action": "lower_lr", "factor": 0.5}, step)
        if step + 1 in checks:
            run = mon.snapshot()  # materialised and compacted as the writer thread would, now
            now = time.perf_counter()
            con = sqlite3.connect(path)
            rows = con.execute("SELECT COUNT(*) FROM points").fetchone()[0]
            con.close()
            loss = run.series["loss"]
            kept = set(loss.steps.tolist())
            notes = []
            if step >= spike:
                notes.append(f"spike@{spike}:{'yes' if spike in kept else 'NO'}")
            if step >= event_at + 256:
                around = all(s in kept for s in range(event_at - 256, event_at + 257))
                notes.append(f"event±256:{'yes' if around else 'NO'}")
            held = sum(len(s) for s in run.series.values())
            del run, loss, kept
            if a.tracemalloc:
                import tracemalloc

                cur, peak = tracemalloc.get_traced_memory()
                notes.append(f"python heap {cur / 2**20:.1f} MB (peak {peak / 2**20:.1f})")
                tracemalloc.reset_peak()
            per = (now - last_t) / max(1, step + 1 - last_step) * 1e6
            r = rss_mb()
            print(f"{step + 1:>10} {now - t0:7.1f} {per:8.2f} {r:8.1f} {r - base_rss:9.1f} {held:>12} {rows:>11} "
                  f"{store_mb(path):9.2f}  {' '.join(notes)}", flush=True)
            last_t, last_step = now, step + 1
    mon.close()
    print(f"closed: store {store_mb(path):.2f} MB ({path}), RSS {rss_mb():.1f} MB")


if __name__ == "__main__":
    main()
