"""The run store: round trips, NaN/Inf, concurrency, crash safety, refusing foreign files."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from traindoctor.errors import LogError, TrainDoctorError
from traindoctor.logs import load
from traindoctor.store import SCHEMA, RunStore, is_store, load_store

SRC = str(Path(__file__).resolve().parents[1] / "src")


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def test_round_trip_series_events_meta(tmp_path):
    path = tmp_path / "deep" / "dir" / "run.tdrun"
    with RunStore(path, meta={"optimizer": "Adam", "num_classes": 10}) as st:
        st.add_points([("loss", 0, 2.5), ("loss", 1, 2.25), ("lr", 0, 1e-3)])
        st.add_point("grad_norm/fc.weight", 0, 0.125)
        st.add_event(1, "treatment", {"action": "lower_lr", "factor": 0.1})
        st.add_event(0, "start", {})
        st.set_meta("loss_kind", "cross_entropy")
    assert st.closed
    assert is_store(path)
    run = load_store(path)
    assert list(run.series) == ["loss", "lr", "grad_norm/fc.weight"]
    assert run.series["loss"].steps.tolist() == [0, 1]
    assert run.series["loss"].values.tolist() == [2.5, 2.25]
    assert run.series["loss"].steps.dtype == np.int64
    assert run.series["lr"].values.tolist() == [1e-3]
    assert run.names("grad_norm") == ["grad_norm/fc.weight"]
    assert [(e.step, e.kind, e.data) for e in run.events] == [
        (1, "treatment", {"action": "lower_lr", "factor": 0.1}),
        (0, "start", {}),
    ]
    assert run.meta == {
        "optimizer": "Adam",
        "num_classes": 10,
        "loss_kind": "cross_entropy",
        "source": str(path),
        "format": "store",
    }
    # a clean close leaves no -wal/-shm behind, and neither does reading
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.tdrun"]


def test_nan_and_inf_round_trip_exactly(tmp_path):
    path = tmp_path / "run.db"
    values = [1.5, float("nan"), float("inf"), float("-inf"), -0.0, 1e-308, 5e-324, 1.7976931348623157e308]
    with RunStore(path) as st:
        st.add_points(("loss", i, v) for i, v in enumerate(values))
        st.add_points([("acc", 0, np.float32(0.5)), ("acc", 1, np.float64("nan"))])
    run = load_store(path)
    got = run.series["loss"].values
    assert got.dtype == np.float64
    assert math.isnan(got[1])
    assert got[2] == math.inf and got[3] == -math.inf
    # (SQLite keeps -0.0 as 0: the sign of zero is the one thing not kept)
    others = [0, 2, 3, 4, 5, 6, 7]
    assert got[others].tolist() == [values[i] for i in others]
    assert run.series["acc"].values[0] == 0.5 and math.isnan(run.series["acc"].values[1])


def test_nan_in_event_and_meta_json(tmp_path):
    path = tmp_path / "run.db"
    with RunStore(path, meta={"init_loss": float("nan")}) as st:
        st.add_event(
            7,
            "nonfinite",
            {
                "loss": float("nan"),
                "grad": [float("inf"), -math.inf, 1.0],
                "np": np.float32(2.0),
                "arr": np.array([1, 2]),
            },
        )
        st.set_meta("worst", float("-inf"))
    run = load_store(path)
    (ev,) = run.events
    assert ev.step == 7 and ev.kind == "nonfinite"
    assert math.isnan(ev.data["loss"])
    assert ev.data["grad"] == [math.inf, -math.inf, 1.0]
    assert ev.data["np"] == 2.0 and ev.data["arr"] == [1, 2]
    assert math.isnan(run.meta["init_loss"]) and run.meta["worst"] == -math.inf


def test_unserialisable_event_fails_at_the_call(tmp_path):
    with RunStore(tmp_path / "run.db") as st:
        with pytest.raises(TypeError):
            st.add_event(0, "bad", {"x": object()})
        st.add_event(1, "good", {})
    assert [e.kind for e in load_store(tmp_path / "run.db").events] == ["good"]


def test_series_sorted_by_step_stable(tmp_path):
    path = tmp_path / "run.db"
    with RunStore(path, batch_size=3) as st:
        st.add_points(
            [("loss", 5, 5.0), ("loss", 2, 2.0), ("loss", 5, 5.5), ("loss", 0, 0.0), ("loss", 2, 2.5)]
        )
    s = load_store(path).series["loss"]
    assert s.steps.tolist() == [0, 2, 2, 5, 5]
    assert s.values.tolist() == [0.0, 2.0, 2.5, 5.0, 5.5]


def test_batches_flush_automatically(tmp_path):
    path = tmp_path / "run.db"
    st = RunStore(path, batch_size=10)
    st.add_points(("loss", i, float(i)) for i in range(25))
    # 20 points were flushed in two batches; 5 still wait in the buffer
    assert len(load_store(path).series["loss"]) == 20
    st.add_event(3, "x", {})  # the 6th buffered record
    assert len(load_store(path).events) == 0
    st.flush()
    run = load_store(path)
    assert len(run.series["loss"]) == 25 and len(run.events) == 1
    st.close()
    st.close()  # idempotent
    with pytest.raises(ValueError):
        st.add_point("loss", 30, 1.0)


def test_flush_is_one_transaction(tmp_path):
    path = tmp_path / "run.db"
    st = RunStore(path, batch_size=10_000)
    calls: list[str] = []
    st._conn.set_trace_callback(calls.append)
    st.add_points(("loss", i, float(i)) for i in range(500))
    st.add_points(("lr", i, 0.1) for i in range(500))
    st.add_event(1, "e", {})
    st.set_meta("k", 1)
    st.flush()
    st._conn.set_trace_callback(None)
    begins = [c for c in calls if c.startswith("BEGIN")]
    commits = [c for c in calls if c.startswith("COMMIT")]
    assert len(begins) == 1 and len(commits) == 1
    st.close()


def test_append_to_existing_store(tmp_path):
    path = tmp_path / "run.db"
    with RunStore(path, meta={"a": 1}) as st:
        st.add_points([("loss", 0, 1.0)])
        st.add_event(0, "first", {})
    with RunStore(path, meta={"b": 2}) as st:
        st.add_points([("loss", 1, 0.5), ("lr", 1, 0.01)])
        st.add_event(1, "second", {})
    run = load_store(path)
    assert run.series["loss"].values.tolist() == [1.0, 0.5]
    assert run.series["lr"].steps.tolist() == [1]
    assert [e.kind for e in run.events] == ["first", "second"]
    assert run.meta["a"] == 1 and run.meta["b"] == 2


def test_threads_write_concurrently(tmp_path):
    path = tmp_path / "run.db"
    st = RunStore(path, batch_size=50)

    def writer(name: str) -> None:
        for i in range(1000):
            st.add_point(name, i, float(i))
            if i % 100 == 0:
                st.add_event(i, name, {"i": i})

    threads = [threading.Thread(target=writer, args=(f"s{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st.close()
    run = load_store(path)
    for k in range(4):
        s = run.series[f"s{k}"]
        assert s.steps.tolist() == list(range(1000))
        assert s.values.tolist() == [float(i) for i in range(1000)]
    assert len(run.events) == 40


def test_schema_row_and_pragmas(tmp_path):
    path = tmp_path / "run.db"
    with RunStore(path):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (f'"{SCHEMA}"',)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"meta", "series", "points", "events"}
    finally:
        conn.close()


def test_set_meta_schema_is_reserved(tmp_path):
    with RunStore(tmp_path / "run.db") as st, pytest.raises(ValueError):
        st.set_meta("schema", "x")


def test_refuses_foreign_files(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("hello\n")
    with pytest.raises(LogError) as ei:
        RunStore(text)
    assert one_line(ei.value) == f"{text}: exists and is not a traindoctor run store (not an SQLite file)"
    assert text.read_text() == "hello\n"

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LogError) as ei:
        RunStore(other)
    assert one_line(ei.value) == f"{other}: is an SQLite database but not a traindoctor run store"
    assert not is_store(other)
    with pytest.raises(LogError) as ei:
        load_store(other)
    assert "not a traindoctor run store" in one_line(ei.value)
    with pytest.raises(LogError) as ei:
        load(other)
    assert one_line(ei.value) == f"{other}: is an SQLite database but not a traindoctor run store"

    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("""INSERT INTO meta VALUES ('schema', '"traindoctor-store/9"')""")
    conn.commit()
    conn.close()
    assert is_store(newer)
    with pytest.raises(LogError) as ei:
        load_store(newer)
    assert "traindoctor-store/9" in one_line(ei.value) and str(newer) in str(ei.value)

    with pytest.raises(LogError) as ei:
        RunStore(tmp_path)
    assert one_line(ei.value) == f"{tmp_path}: is a directory, expected a run store file"


def test_empty_file_becomes_a_store(tmp_path):
    path = tmp_path / "run.db"
    path.touch()
    with RunStore(path) as st:
        st.add_point("loss", 0, 1.0)
    assert load_store(path).series["loss"].values.tolist() == [1.0]


def test_is_store_and_load_store_errors(tmp_path):
    assert not is_store(tmp_path / "missing.db")
    assert not is_store(tmp_path)
    csv = tmp_path / "x.csv"
    csv.write_text("step,loss\n0,1\n")
    assert not is_store(csv)
    with pytest.raises(LogError) as ei:
        load_store(tmp_path / "missing.db")
    assert one_line(ei.value) == f"{tmp_path / 'missing.db'}: no such file"
    with pytest.raises(LogError) as ei:
        load_store(csv)
    assert one_line(ei.value) == f"{csv}: is not a traindoctor run store (not an SQLite file)"
    assert isinstance(ei.value, TrainDoctorError)


def test_load_dispatches_to_store(tmp_path):
    path = tmp_path / "run.weird-extension"
    with RunStore(path, meta={"source": "ignored"}) as st:
        st.add_points([("loss", 0, 1.0), ("smoothed", 0, 0.9)])
    run = load(path)
    assert run.meta["source"] == str(path) and run.meta["format"] == "store"
    assert run.series["loss"].values.tolist() == [1.0]
    run = load(path, overrides={"loss": "smoothed"})
    assert run.series["loss"].values.tolist() == [0.9]
    with pytest.raises(LogError) as ei:
        load(path, overrides={"loss": "nope"})
    assert one_line(ei.value) == (
        f"{path}: no series 'nope' for --metric loss=nope; series are: loss, smoothed"
    )


# ---- other processes: a live reader and a killed writer -------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from traindoctor.store import RunStore
    st = RunStore(sys.argv[1], meta={"writer": "child"}, batch_size=10**9)
    step = 0
    while True:
        st.add_points([("loss", step + i, float(step + i)) for i in range(100)])
        st.add_event(step, "batch", {"upto": step + 99})
        step += 100
        st.flush()
        print(step, flush=True)  # everything below `step` is committed
        st.add_points([("pending", step, -1.0)])  # buffered: written by the next flush only
        time.sleep(0.002)
    """
)


def _start_writer(tmp_path: Path, path: Path) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen(
        [sys.executable, str(script), str(path), SRC],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_prefix(run, upto: int) -> None:
    s = run.series["loss"]
    n = len(s)
    assert n >= upto and n % 100 == 0  # whole batches only: each flush is atomic
    assert s.steps.tolist() == list(range(n))
    assert np.array_equal(s.values, np.arange(n, dtype=np.float64))
    assert [e.data["upto"] for e in run.events] == list(range(99, n, 100))
    pending = run.series.get("pending")
    assert (pending.steps.tolist() if pending is not None else []) == list(range(100, n, 100))


def test_read_while_another_process_writes_then_sigkill(tmp_path):
    path = tmp_path / "live.db"
    proc = _start_writer(tmp_path, path)
    try:
        first = proc.stdout.readline()
        assert first.strip() == "100", proc.stderr.read() if not first else first
        seen = []
        deadline = time.monotonic() + 5
        while len(set(seen)) < 3 and time.monotonic() < deadline:
            committed = int(proc.stdout.readline())
            run = load_store(path)  # reads while the writer keeps writing
            _check_prefix(run, committed)
            assert run.meta["writer"] == "child"
            seen.append(len(run.series["loss"]))
        assert len(set(seen)) >= 3  # saw the store grow while it was written
        for _ in range(5):
            last = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # drain what it printed after our last read: flushed before it died
        rest = proc.stdout.read().split()
        last = int(rest[-1]) if rest else last
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    run = load_store(path)
    _check_prefix(run, last)
    n = len(run.series["loss"])
    assert n in (last, last + 100)  # at most one flush committed after its last print
    # a new writer takes the crashed store over and appends
    with RunStore(path) as st:
        st.add_point("loss", n, float(n))
    s = load_store(path).series["loss"]
    assert s.steps.tolist() == list(range(n + 1))
    assert np.array_equal(s.values, np.arange(n + 1, dtype=np.float64))
