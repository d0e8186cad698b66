"""Reading logs fast: a 1,000,000-step run diagnosed end to end from CSV and from TensorBoard.

The run: step, loss, val_loss every 1,000 steps, lr (cosine), grad_norm. It trains well, then
overfits (val_loss rises from step 600,000), and diverges at the end (the LR is raised at step
900,000; the gradient norm explodes and the loss is NaN from step 950,000). The same content is
written as a CSV (``nan`` for a NaN loss, an empty cell where val_loss was not logged) and as a
TensorBoard event file of 3,001,001 records (one scalar per record, as ``SummaryWriter.add_scalar``
writes them; float32 values).

Each measurement runs in a fresh Python process, timed after the imports: ``load`` + ``diagnose``
(median of ``--repeat`` runs). Memory is measured in the first of them: the growth of the
resident set (peak ``VmHWM`` after, minus ``VmRSS`` before ``load`` + ``diagnose``: every byte, the
C parser's too), and in one more process the tracemalloc peak (Python and numpy allocations),
both against the numeric data size (4 × 1,000,000 + 1,000 float64 = 32 MB).

``--others`` also times ``losslint check`` and ``trainspotter analyze`` (both on PyPI;
trainspotter reads TensorBoard through tbparse) on the same files, each stopped after
``--timeout`` seconds; ``--tb-stock`` times tensorboard's own ``EventFileLoader`` over a 10,000-step
file of the same shape (3% of the records) to show what reading all of it that way costs.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/logs.py --others --tb-stock

Files are cached in ``benchmarks/.cache/`` (about 170 MB; not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(HERE.parent / "src"))


def make_run(n: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.int64)
    t = steps / n
    lr = 3e-4 * 0.5 * (1 + np.cos(np.pi * t))
    lr[int(0.9 * n) :] = 3e-2  # a restart with a far too high LR
    loss = 0.25 + 2.05 * np.exp(-t * 12) + 0.03 * rng.standard_normal(n)
    grad = 1.0 + 0.2 * rng.standard_normal(n)
    k0, k1 = int(0.9 * n), int(0.95 * n)
    ramp = np.linspace(0, 1, k1 - k0)
    loss[k0:k1] *= np.exp(ramp * 8)  # diverges
    grad[k0:k1] *= np.exp(ramp * 12)
    loss[k1:] = np.nan
    grad[k1:] = np.nan
    vsteps = steps[:: max(n // 1000, 1)]
    vt = vsteps / n
    val = 0.32 + 2.05 * np.exp(-vt * 12) + np.where(vt > 0.6, (vt - 0.6) * 0.8, 0.0)
    val = val + 0.005 * rng.standard_normal(vsteps.size)
    val[vsteps >= k1] = np.nan
    return {"loss": (steps, loss), "val_loss": (vsteps, val), "lr": (steps, lr), "grad_norm": (steps, grad)}


def numeric_bytes(run: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """step + one float64 per logged value."""
    n = len(run["loss"][0])
    return 8 * n + sum(8 * len(v) for _, v in run.values())


def write_csv(run: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import pandas as pd

    steps, loss = run["loss"]
    val = np.full(len(steps), "", dtype=object)
    vs, vv = run["val_loss"]
    val[vs] = [f"{v:.6g}" for v in vv]
    df = pd.DataFrame(
        {"step": steps, "loss": loss, "val_loss": val, "lr": run["lr"][1], "grad_norm": run["grad_norm"][1]}
    )
    df.to_csv(path, index=False, float_format="%.6g", na_rep="nan")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def write_tensorboard(run: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """The records SummaryWriter.add_scalar writes (checked against tensorboard's reader below),
    built directly: writing 3 million scalars through SummaryWriter takes many minutes."""
    from traindoctor.logs.tensorboard import _crc_batch, _masked, _views

    tags = list(run)
    steps = np.concatenate([run[t][0] for t in tags])
    which = np.concatenate([np.full(len(run[t][0]), i) for i, t in enumerate(tags)])
    vals = np.concatenate([run[t][1] for t in tags]).astype(np.float32)
    order = np.lexsort((which, steps))
    wt = struct.pack("<d", 1.7e9)
    records = [b"\x09" + wt + b"\x1a\x0dbrain.Event:2"]
    vb = vals.tobytes()
    tb = [t.encode() for t in tags]
    for j in order.tolist():
        s, tag = int(steps[j]), tb[which[j]]
        value = b"\x0a" + bytes([len(tag)]) + tag + b"\x15" + vb[4 * j : 4 * j + 4]
        summary = b"\x0a" + bytes([len(value)]) + value
        records.append(b"\x09" + wt + (b"\x10" + _varint(s) if s else b"") + b"\x2a" + bytes([len(summary)]) + summary)
    lens = np.array([len(r) for r in records], dtype=np.int64)
    blob = b"\0" * 8 + b"".join(records)
    u8, u32, _, _ = _views(blob)
    starts = 8 + np.concatenate(([0], np.cumsum(lens)[:-1]))
    dcrc = _masked(_crc_batch(u8, u32, starts, lens))
    heads = lens.astype("<u8").tobytes()
    h8, h32, _, _ = _views(heads)
    hcrc = _masked(_crc_batch(h8, h32, np.arange(len(records)) * 8, np.full(len(records), 8)))
    with open(path, "wb") as f:
        f.write(
            b"".join(
                heads[8 * i : 8 * i + 8] + struct.pack("<I", int(hcrc[i])) + r + struct.pack("<I", int(dcrc[i]))
                for i, r in enumerate(records)
            )
        )


def check_tensorboard(path: Path, run: dict[str, tuple[np.ndarray, np.ndarray]], records: int = 2000) -> None:
    """tensorboard's own reader agrees with the first records."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen: dict[str, list[float]] = {}
    for k, ev in enumerate(EventFileLoader(str(path)).Load()):
        for v in ev.summary.value:
            seen.setdefault(v.tag, []).append(float(v.tensor.float_val[0]) if v.HasField("tensor") else v.simple_value)
        if k >= records:
            break
    got = np.array(seen["loss"])
    assert np.allclose(got, run["loss"][1][: len(got)].astype(np.float32), equal_nan=True)


MEASURE = r"""
import json, sys, time, tracemalloc
from traindoctor.diagnosis import diagnose
from traindoctor.logs import load
path, memory = sys.argv[1], sys.argv[2] == "1"
def status(key):
    # VmHWM: this process's peak resident set (ru_maxrss would also count the parent's, from before exec)
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key + ":"))
before = status("VmRSS")
if memory:
    tracemalloc.start()
t0 = time.perf_counter()
run = load(path)
t1 = time.perf_counter()
d = diagnose(run)
t2 = time.perf_counter()
out = {"load": t1 - t0, "diagnose": t2 - t1, "total": t2 - t0,
       "findings": [f"{f.code}@{f.step}" for f in d.findings], "causes": [c.id for c in d.causes[:2]],
       "rss_growth": status("VmHWM") - before}
if memory:
    out["traced_peak"] = tracemalloc.get_traced_memory()[1]
print(json.dumps(out))
"""


def measure(path: Path, memory: bool) -> dict:
    p = subprocess.run([sys.executable, "-c", MEASURE, str(path), "1" if memory else "0"],
                       capture_output=True, text=True, env=ENV, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def other_tool(cmd: list[str], timeout: float) -> dict:
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"time": None, "timeout": timeout, "found": f"stopped after {timeout:.0f} s", "rc": None}
    except FileNotFoundError:
        return {"time": None, "found": "not installed", "rc": None}
    elapsed = time.perf_counter() - t
    return {"time": elapsed, "rc": p.returncode, "found": summarize(cmd[0], p.stdout, p.stderr)}


def summarize(tool: str, stdout: str, stderr: str) -> str:
    try:
        doc = json.loads(stdout)
    except ValueError:
        tail = (stderr.strip().splitlines() or stdout.strip().splitlines() or ["(no output)"])[-1]
        return tail[:160]
    items = doc.get("findings") if isinstance(doc, dict) else None
    if items is None and isinstance(doc, dict) and isinstance(doc.get("files"), list):
        items = [f for file in doc["files"] for f in file.get("findings", [])]
    if items is None and isinstance(doc, list):
        items = [f for file in doc for f in (file.get("findings", []) if isinstance(file, dict) else [])]
    if not items:
        return "no findings" if items == [] else json.dumps(doc)[:160]
    names = []
    for f in items:
        name = f.get("code") or f.get("detector") or f.get("check") or f.get("id") or f.get("name") or "?"
        step = f.get("step") if f.get("step") is not None else f.get("step_start")
        if step is None and isinstance(f.get("details"), dict):
            step = (f["details"].get("steps") or [None])[0]
        series = f.get("metric") or (f.get("details") or {}).get("series") if isinstance(f, dict) else None
        where = f"({series})" if series else ""
        names.append(f"{name}{where}@{step}" if step is not None else f"{name}{where}")
    return ", ".join(dict.fromkeys(names))


def stock_tensorboard(n: int = 10_000) -> dict:
    run = make_run(n)
    path = CACHE / f"events.out.tfevents.{n}"
    if not path.exists():
        write_tensorboard(run, path)
    code = (
        "import sys, time\n"
        "from tensorboard.backend.event_processing.event_file_loader import EventFileLoader\n"
        "t=time.perf_counter(); k=sum(1 for _ in EventFileLoader(sys.argv[1]).Load()); "
        "print(k, time.perf_counter()-t)"
    )
    p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=ENV, check=True)
    k, secs = p.stdout.split()
    return {"records": int(k), "seconds": float(secs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--others", action="store_true", help="also time losslint and trainspotter")
    ap.add_argument("--tb-stock", action="store_true", help="time tensorboard's EventFileLoader on 10,000 steps")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before another tool is stopped")
    a = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "src"))
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # generated data: never committed
    run = make_run(a.steps)
    size = numeric_bytes(run)
    csv = CACHE / f"log-{a.steps}.csv"
    tbdir = CACHE / f"tb-{a.steps}"
    tb = tbdir / "events.out.tfevents.1700000000.bench"
    if not csv.exists():
        write_csv(run, csv)
    if not tb.exists():
        tbdir.mkdir(exist_ok=True)
        write_tensorboard(run, tb)
        check_tensorboard(tb, run)
    print(f"{a.steps:,} steps; numeric data {size / 1e6:.0f} MB; CSV {csv.stat().st_size / 1e6:.0f} MB; "
          f"TensorBoard {tb.stat().st_size / 1e6:.0f} MB (3 × {a.steps:,} + {len(run['val_loss'][0]):,} records)\n")
    rows = []
    results = {}
    for name, path in (("CSV", csv), ("TensorBoard", tb)):
        times = [measure(path, memory=False) for _ in range(a.repeat)]
        mem = measure(path, memory=True)
        mem["rss_growth"] = times[0]["rss_growth"]
        med = {k: statistics.median(t[k] for t in times) for k in ("load", "diagnose", "total")}
        results[name] = (med, times, mem)
        rows.append(
            f"| traindoctor | {name} | {med['total']:.2f} s (load {med['load']:.2f} + diagnose {med['diagnose']:.2f}; "
            f"min {min(t['total'] for t in times):.2f}, max {max(t['total'] for t in times):.2f}) | "
            f"{mem['traced_peak'] / 1e6:.0f} MB traced = {mem['traced_peak'] / size:.1f}×, RSS +{mem['rss_growth'] / 1e6:.0f} MB "
            f"= {mem['rss_growth'] / size:.1f}× | {', '.join(times[0]['findings'])} → {', '.join(times[0]['causes'])} |"
        )
    if a.others:
        base = {n: results[n][0]["total"] for n in results}
        for tool, cmds in (
            ("losslint 0.4.1", {"CSV": ["losslint", "check", "--format", "json", str(csv)],
                                "TensorBoard": ["losslint", "check", "--format", "json", str(tb)]}),
            ("trainspotter 0.2.6", {"CSV": ["trainspotter", "analyze", "--output", "json", str(csv)],
                                    "TensorBoard": ["trainspotter", "analyze", "--output", "json", str(tbdir)]}),
        ):
            for name, cmd in cmds.items():
                r = other_tool(cmd, a.timeout)
                if r["time"] is None:
                    shown = f"> {r['timeout']:.0f} s (stopped)" if r.get("timeout") else "—"
                else:
                    shown = f"{r['time']:.2f} s ({r['time'] / base[name]:.1f}× traindoctor)"
                rows.append(f"| {tool} | {name} | {shown} | — | {r['found']} (exit {r['rc']}) |")
    print("| tool | format | time, load + diagnose | peak memory vs numeric data | found |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if a.tb_stock:
        s = stock_tensorboard()
        per = s["seconds"] / s["records"]
        total = per * (3 * a.steps + len(run["val_loss"][0]))
        print(f"\ntensorboard EventFileLoader: {s['records']:,} records in {s['seconds']:.2f} s "
              f"({per * 1e6:.0f} µs/record) → about {total:.0f} s for the {a.steps:,}-step file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
