"""Size and time of the HTML report of a very long run: a million steps must give < 10 MB in < 10 s.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/report_size.py [--steps 1000000] [--layers 12] [--out DIR]

Builds a Run of ``--steps`` steps as a long training with everything recorded would hold it: the loss
and the LR at every step, accuracy every step, validation loss and accuracy every 1000 steps, and every
10 steps the total and per-layer gradient norms, update ratios and weight norms for ``--layers`` weight
tensors, dead fractions for half of them. The loss is a noisy decaying curve with a one-step spike at 1/3
and a NaN at 2/3; a treatment (an LR cut) at 1/2. Then it times, side by side in one run:

- ``diagnose``: the rules on the whole Run (what ``traindoctor report`` does before drawing);
- ``render``: building every chart and the page (:func:`render_html`), the figure of the issue;
- ``write``: the CLI's whole path on a CSV log of the same run (``traindoctor report run.csv``: read the
  log, diagnose, render, write), in a subprocess;

and prints the page's size, the points shipped for display against the points in the run, and whether
every finding's step survived thinning in the loss chart.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from traindoctor.diagnosis import diagnose
from traindoctor.report.figures import figures
from traindoctor.report.html import render_html
from traindoctor.run import Event, Run, Series


def build(steps: int, layers: int, seed: int = 0) -> Run:
    rng = np.random.default_rng(seed)
    s = np.arange(steps, dtype=np.int64)
    loss = 2.3 * np.exp(-s / (steps / 5)) + 0.1 + 0.05 * np.abs(rng.standard_normal(steps))
    loss[steps // 3] = 40.0
    loss[2 * steps // 3] = np.nan
    lr = np.where(s < steps // 2, 0.1, 0.01)
    acc = np.clip(1 - loss / 2.5 + 0.02 * rng.standard_normal(steps), 0, 1)
    series: dict[str, Series] = {"loss": Series(s, loss), "lr": Series(s, lr), "accuracy": Series(s, acc)}
    v = s[::1000]
    series["val_loss"] = Series(v, 2.3 * np.exp(-v / (steps / 5)) + 0.15 + 0.01 * rng.standard_normal(len(v)))
    series["val_accuracy"] = Series(v, np.clip(1 - series["val_loss"].values / 2.5, 0, 1))
    k = s[::10]
    series["grad_norm"] = Series(k, 1 + rng.random(len(k)))
    for i in range(layers):
        name = f"layers.{i}.weight"
        series[f"grad_norm/{name}"] = Series(k, (0.5 ** i) * (1 + rng.random(len(k))))
        series[f"update_ratio/{name}"] = Series(k, 1e-3 * (1 + rng.random(len(k))))
        series[f"weight_norm/{name}"] = Series(k, 10 + rng.random(len(k)))
        if i % 2 == 0:
            series[f"dead_frac/layers.{i}"] = Series(k, np.clip(0.05 * i / layers + 0.01 * rng.random(len(k)), 0, 1))
    events = [Event(steps // 2, "treatment", {"code": "L003", "cause": "lr-too-high", "action": "learning rate ×0.1",
                                               "changes": {"lr": [0.1, 0.01]}})]
    return Run(series=series, events=events, meta={"loss_kind": "cross_entropy", "num_classes": 10,
                                                    "source": f"simulated {steps:,}-step run", "format": "simulated"})


def to_csv(run: Run, path: Path) -> None:
    """The per-step series as a CSV log (loss, lr, accuracy; validation every 1000 steps)."""
    loss, lr, acc = run.series["loss"], run.series["lr"], run.series["accuracy"]
    val = dict(zip(run.series["val_loss"].steps.tolist(), run.series["val_loss"].values.tolist(), strict=True))
    with open(path, "w") as f:
        f.write("step,loss,lr,accuracy,val_loss\n")
        for st, lo, l_, a in zip(loss.steps.tolist(), loss.values.tolist(), lr.values.tolist(), acc.values.tolist(),
                                 strict=True):
            vl = val.get(st)
            f.write(f"{st},{lo:.6g},{l_:.6g},{a:.4g},{'' if vl is None else f'{vl:.6g}'}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--out", default=None, help="keep the pages here (default: a temporary directory)")
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="td-report-"))
    out.mkdir(parents=True, exist_ok=True)
    run = build(a.steps, a.layers)
    points = sum(len(s) for s in run.series.values())
    t0 = time.perf_counter()
    diag = diagnose(run)
    t_diag = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = render_html(run, diag)
    t_render = time.perf_counter() - t0
    (out / "report.html").write_text(page)
    figs = figures(run, diag)
    shipped = sum(len(t.get("x") or []) for f in figs for t in f["figure"]["data"] if t.get("type") != "heatmap")
    heat = sum(len(t["x"]) * len(t["y"]) for f in figs for t in f["figure"]["data"] if t.get("type") == "heatmap")
    loss_fig = next(f for f in figs if f["id"] == "loss")
    loss_x = set(loss_fig["figure"]["data"][0]["x"])
    kept = all(f.step in loss_x for f in diag.findings if isinstance(f.step, int) and f.step < a.steps)
    csv = out / "run.csv"
    to_csv(run, csv)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "traindoctor", "report", str(csv), "--html", str(out / "csv.html"),
                        "--quiet"], capture_output=True, text=True, env={**os.environ, "TRAINDOCTOR_STATUS": "0"})
    t_cli = time.perf_counter() - t0
    print(json.dumps({
        "steps": a.steps, "layers": a.layers, "points_in_run": points,
        "findings": [f"{f.code}@{f.step}" for f in diag.findings],
        "finding_steps_kept_in_loss_chart": kept,
        "points_shipped_lines": shipped, "heatmap_cells": heat,
        "diagnose_s": round(t_diag, 2), "render_s": round(t_render, 2),
        "report_mb": round(len(page.encode()) / 2**20, 2),
        "plotly_js_mb": round(len(__import__("traindoctor.report.html", fromlist=["plotly_js"]).plotly_js()) / 2**20, 2),
        "cli_csv_s": round(t_cli, 2), "cli_rc": p.returncode,
        "cli_csv_mb": round((out / "csv.html").stat().st_size / 2**20, 2) if (out / "csv.html").exists() else None,
        "csv_mb": round(csv.stat().st_size / 2**20, 1),
    }, indent=1))
    if p.returncode not in (0, 1):
        print(p.stderr, file=sys.stderr)
    if not math.isfinite(t_render):
        sys.exit(1)


if __name__ == "__main__":
    main()
