"""Bounded retention: a long run's series and store stay bounded, and what the rules need survives.

Full resolution for the last steps and around every event, older stretches downsampled (each bucket's first
point, and its spikes and first non-finite value for run-level series), per-layer series thinned alike.
"""
from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from traindoctor.diagnosis import diagnose
from traindoctor.retention import Retention, SeriesTable
from traindoctor.rules._signals import first_nonfinite_loss_step
from traindoctor.run import Event, Run, Series
from traindoctor.store import RunStore, load_store
from traindoctor.watch.monitor import Monitor

SMALL = Retention(recent=1000, window=50, budget=500, layer_budget=100)


def _loss(step: int, rng: np.random.Generator) -> float:
    return 2.0 * math.exp(-step / 40_000) + 0.3 + 0.05 * float(rng.standard_normal())


def _feed(table: SeriesTable, events: list[Event], n: int, *, spike: int, nan: int, every: int = 50) -> list[Event]:
    """``n`` steps of a loss (a spike at ``spike``, NaN from ``nan`` on) and per-layer statistics every ``every``
    steps; compacted as the writer thread does. Returns the events kept."""
    rng = np.random.default_rng(0)
    for step in range(n):
        v = _loss(step, rng)
        if step == spike:
            v *= 40
        if step >= nan:
            v = float("nan")
        pts = [("loss", step, v)]
        if step % every == 0:
            pts += [("grad_norm", step, 1.0 + rng.random())]
            pts += [(f"grad_norm/layer{i}.weight", step, 0.1 * (i + 1) * (1 + rng.random())) for i in range(3)]
            events.append(Event(step, "no_grad", {"params": ["frozen.weight"], "count": 1}))
        table.add(pts)
        if table.due():
            _, events, _ = table.compact(events)
    return events


def test_series_stay_bounded_and_keep_what_matters():
    table = SeriesTable(SMALL)
    events = [Event(0, "model_graph", {}), Event(120_000, "treatment", {"action": "lower_lr"})]
    n = 200_000
    events = _feed(table, events, n, spike=60_001, nan=190_123)
    loss = table.series("loss")
    assert loss is not None
    # bounded: the recent stretch, the buckets, the windows around events, a few outliers; not 200 000
    assert len(loss) < SMALL.recent + SMALL.budget + 4 * (2 * SMALL.window + 1) + 200
    st, va = loss.steps, loss.values
    assert np.all(np.diff(st) >= 0)
    # every step of the last `recent` steps
    assert set(range(n - SMALL.recent + 1, n)) <= set(st.tolist())
    # every step around the treatment, and the first non-finite loss at its exact step
    assert set(range(120_000 - SMALL.window, 120_000 + SMALL.window + 1)) <= set(st.tolist())
    assert first_nonfinite_loss_step(Run(series={"loss": loss})) == 190_123
    # the spike (far from any event) survives as its bucket's outlier, with its value
    i = int(np.flatnonzero(st == 60_001)[0])
    assert va[i] > 20
    # the older stretch still spans the run (one point per bucket at least)
    assert st[0] == 0 and len(np.unique(st[st < 100_000] // 4096)) == len(range(0, 100_000, 4096))
    # per-layer series: bounded, and every layer keeps the same steps (the rules compare them sample by sample)
    layers = [table.series(f"grad_norm/layer{i}.weight") for i in range(3)]
    assert all(s is not None and len(s) < 2 * SMALL.layer_budget + SMALL.recent // 50 + 20 for s in layers)
    assert all(np.array_equal(layers[0].steps, s.steps) for s in layers)
    # the per-sample events follow the series they are counted against (G005 compares the two counts)
    g = table.series("grad_norm")
    no_grad = [e.step for e in events if e.kind == "no_grad"]
    assert len(no_grad) == len(g) and no_grad == g.steps.tolist()
    assert [e.kind for e in events[:2]] == ["model_graph", "treatment"]


def test_short_runs_are_kept_whole():
    """Nothing of a run-level series is thinned before ``recent + budget`` steps, nor of a per-layer series
    sampled every 50 steps before its buckets outgrow the sampling (stride 64: past 69 632 steps)."""
    table = SeriesTable()  # the default retention
    rng = np.random.default_rng(1)
    r = table.retention
    for step in range(r.recent + r.budget):
        pts = [("loss", step, _loss(step, rng))]
        if step % 50 == 0:
            pts.append(("grad_norm/fc.weight", step, 1.0))
        table.add(pts)
        if table.due():
            dropped, _, _ = table.compact([])
            assert not dropped
    assert len(table.series("loss")) == r.recent + r.budget
    for step in range(r.recent + r.budget, 69_000):
        if step % 50 == 0:
            table.add([("grad_norm/fc.weight", step, 1.0)])
        if table.due():
            table.compact([])
    assert len(table.series("grad_norm/fc.weight")) == len(range(0, 69_000, 50))


def test_points_sharing_a_step_go_or_stay_together():
    table = SeriesTable(SMALL)
    for step in range(5_000):
        table.add([("val_loss", step, 1.0), ("val_loss", step, 2.0)])
    dropped, _, _ = table.compact([])
    s = table.series("val_loss")
    kept = s.steps.tolist()
    assert all(kept.count(k) == 2 for k in set(kept))
    assert not (set(kept) & {st for _, st in dropped})
    assert len(dropped) == len({st for _, st in dropped})


def test_monitor_and_store_stay_bounded_and_agree(tmp_path):
    """The real path: losses handed to a Monitor (Doctor mode), its writer thread compacting, the store
    deleting what the memory dropped. The store's row count stays bounded; the first non-finite loss
    keeps its exact step in both."""
    path = tmp_path / "run.db"
    store = RunStore(path, stop_on_error=True)
    mon = Monitor(cadence=50, store=store, explicit_steps=True, on_critical=lambda m: None, retention=SMALL,
                  flush_interval=0.02)
    rng = np.random.default_rng(2)
    n, nan_at = 100_000, 97_321
    rows_seen = []
    for step in range(n):
        v = float("nan") if step >= nan_at else _loss(step, rng)
        mon.on_loss(v)
        if step % 20_000 == 19_999:
            mon.snapshot()  # materialise and compact now (the writer thread does it every flush_interval)
            con = sqlite3.connect(path)
            rows_seen.append(con.execute("SELECT COUNT(*) FROM points").fetchone()[0])
            con.close()
    live = mon.close()
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM points").fetchone()[0]
    bound = SMALL.recent + SMALL.budget + 3 * (2 * SMALL.window + 1) + 200
    assert max(rows_seen + [rows]) < bound, (rows_seen, rows)
    stored = load_store(path)
    assert stored.series["loss"].steps.tolist() == live.series["loss"].steps.tolist()
    np.testing.assert_array_equal(stored.series["loss"].values, live.series["loss"].values)
    assert first_nonfinite_loss_step(stored) == nan_at == first_nonfinite_loss_step(live)
    assert [e.step for e in stored.events if e.kind == "nonfinite_loss"] == [nan_at]
    assert stored.meta["retention"]["thinned_before_step"] > 0


def _scenario(kind: str, n: int = 300_000) -> Run:
    rng = np.random.default_rng(3)
    steps = np.arange(n)
    base = 2.3 * np.exp(-steps / 30_000) + 0.2
    v = base * (1 + 0.1 * rng.standard_normal(n))
    events: list[Event] = []
    if kind == "spikes":  # a bad batch coming back every 25 000 steps
        v[np.arange(20_000, n - 20_000, 25_000)] *= 30
    if kind == "nan":
        v[240_017:] = np.nan
        events.append(Event(240_017, "nonfinite_loss", {"value": float("nan")}))
    return Run(series={"loss": Series(steps, v)}, events=events,
               meta={"loss_kind": "cross_entropy", "num_classes": 10})


def _retained(run: Run) -> Run:
    table = SeriesTable()  # the default retention
    events = list(run.events)
    s = run.series["loss"]
    for a in range(0, len(s), 1000):
        table.add(zip(["loss"] * 1000, s.steps[a:a + 1000].tolist(), s.values[a:a + 1000].tolist()))
        if table.due():
            _, events, _ = table.compact(events)
    return Run(series=table.all_series(), events=events, meta=dict(run.meta))


@pytest.mark.parametrize("kind", ["healthy", "spikes", "nan"])
def test_the_rules_judge_a_long_run_the_same_after_downsampling(kind):
    full = _scenario(kind)
    kept = _retained(full)
    assert len(kept.series["loss"]) < len(full.series["loss"]) / 10
    a, b = diagnose(full), diagnose(kept)
    assert sorted(f.code for f in a.findings) == sorted(f.code for f in b.findings)
    if kind == "nan":
        fa = next(f for f in a.findings if f.code == "L001")
        fb = next(f for f in b.findings if f.code == "L001")
        assert fa.step == fb.step == 240_017
    if kind == "spikes":
        assert any(f.code == "L003" for f in b.findings), [f.code for f in b.findings]
