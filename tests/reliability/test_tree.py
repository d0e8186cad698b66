"""Directory trees and pipes as a hostile user builds them: `traindoctor diagnose` must finish,
list every run it can read and every entry it cannot, and exit with the code that means what
happened (0 done, 1 findings reached --fail-on, 2 something could not be read).

Every CLI call runs in a subprocess with a timeout, so a hang fails the test instead of blocking.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traindoctor.errors import LogError
from traindoctor.logs import find_runs, load

from .conftest import cli

FIX = Path(__file__).parents[1] / "fixtures" / "logs" / "lr_too_high"
HEALTHY = "step,loss\n" + "".join(f"{i},{2.0 - i / 100}\n" for i in range(100))
# NaN from step 50: an error-level finding (L001)
BROKEN = "".join(json.dumps({"step": i, "loss": 1.0 if i < 50 else math.nan}) + "\n" for i in range(60))


def write(root: Path, rel: str, data: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data)
    return p


def diagnose_json(root: Path, *extra: str, unprivileged: bool = False, timeout: float = 60):
    """(exit code, summary JSON, stdout+stderr) of `diagnose ROOT --json -`; no traceback allowed."""
    r = cli("diagnose", str(root), "--json", "-", *extra, cwd=root.parent, unprivileged=unprivileged, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, doc, r.stdout + r.stderr


def paths(doc: dict, key: str) -> list[str]:
    return [e["path"] for e in doc[key]]


# ---- 6: links, FIFOs, unreadable entries ---------------------------------------------------------


def test_file_symlink_loops_and_dangling_links_are_unreadable_rows(tmp_path):
    root = tmp_path / "tree"
    write(root, "ok.csv", HEALTHY)
    os.symlink("loop.csv", root / "loop.csv")
    os.symlink("b.jsonl", root / "a.jsonl")
    os.symlink("a.jsonl", root / "b.jsonl")
    os.symlink("gone.csv", root / "dangling.csv")
    code, doc, _ = diagnose_json(root)
    assert code == 2
    assert paths(doc, "runs") == ["ok.csv"]
    errors = {e["path"]: e["error"] for e in doc["errors"]}
    assert sorted(errors) == ["a.jsonl", "b.jsonl", "dangling.csv", "loop.csv"]
    assert "symbolic link loop" in errors["loop.csv"] and "symbolic link loop" in errors["a.jsonl"]
    assert "dangling symbolic link" in errors["dangling.csv"] and "gone.csv" in errors["dangling.csv"]
    for msg in errors.values():
        assert "\n" not in msg and str(root) in msg
    # the table: one row each, after which the exit is 2
    r = cli("diagnose", str(root), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stdout.count("unreadable") >= 4 and "loop.csv" in r.stdout and "1 healthy, 4 unreadable" in r.stdout


def test_fifo_in_a_tree_is_never_opened(tmp_path):
    root = tmp_path / "tree"
    write(root, "ok.csv", HEALTHY)
    os.mkfifo(root / "pipe.csv")
    (root / "sub").mkdir()
    os.mkfifo(root / "sub" / "trainer_state.json")
    os.mkfifo(root / "sub" / "events.out.tfevents.1")
    code, doc, _ = diagnose_json(root, timeout=30)
    assert code == 0
    assert paths(doc, "runs") == ["ok.csv"]
    skipped = {e["path"]: e["reason"] for e in doc["skipped"]}
    assert set(skipped) == {"pipe.csv", "sub/trainer_state.json", "sub/events.out.tfevents.1"}
    assert all("FIFO" in why for why in skipped.values())


def test_unreadable_store_file_and_directory_are_listed(shared_dir):
    root = shared_dir / "tree"
    write(root, "ok.csv", HEALTHY)
    shutil.copy(FIX / "store.db", root / "secret.db")
    write(root, "secret.csv", HEALTHY)
    write(root, "locked/inner.csv", HEALTHY)
    (root / "secret.db").chmod(0)
    (root / "secret.csv").chmod(0)
    (root / "locked").chmod(0)
    write(root, "listonly/a.csv", HEALTHY)  # its names can be listed, its files not reached
    (root / "listonly").chmod(0o444)
    code, doc, _ = diagnose_json(root, unprivileged=True)
    assert code == 2
    assert paths(doc, "runs") == ["ok.csv"]
    errors = {e["path"]: e["error"] for e in doc["errors"]}
    assert sorted(errors) == ["listonly/a.csv", "locked", "secret.csv", "secret.db"]
    assert all("Permission denied" in m for m in errors.values()), errors
    # the directory named on the command line is itself unreadable: one row, exit 2, no traceback
    for d in (root / "locked", root / "listonly"):
        r = cli("diagnose", str(d), cwd=shared_dir, unprivileged=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "Permission denied" in r.stdout + r.stderr


def test_file_symlink_out_of_the_tree_is_read_with_a_note(tmp_path):
    write(tmp_path, "elsewhere/x.csv", HEALTHY)
    root = tmp_path / "tree"
    write(root, "ok.csv", HEALTHY)
    os.symlink(tmp_path / "elsewhere" / "x.csv", root / "link.csv")
    code, doc, _ = diagnose_json(root)
    assert code == 0
    assert paths(doc, "runs") == ["link.csv", "ok.csv"]
    link = doc["runs"][0]
    assert "outside" in link["note"] and str(tmp_path / "elsewhere" / "x.csv") in link["note"]
    assert "note" not in doc["runs"][1]
    r = cli("diagnose", str(root), cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and "outside" in r.stdout


def test_directory_symlink_loops_do_not_recurse(tmp_path):
    root = tmp_path / "tree"
    write(root, "a/ok.csv", HEALTHY)
    os.symlink("..", root / "a" / "back")
    os.symlink(".", root / "self")
    code, doc, _ = diagnose_json(root, timeout=30)
    assert code == 0 and paths(doc, "runs") == ["a/ok.csv"]


# ---- 7: a log at the top of a tree hides nothing -------------------------------------------------


def test_top_level_metrics_csv_does_not_hide_sub_runs(tmp_path):
    root = tmp_path / "tree"
    write(root, "metrics.csv", HEALTHY)
    write(root, "sub/bad.jsonl", BROKEN)
    write(root, "sub2/version_0/metrics.csv", HEALTHY)
    write(root, "sub2/version_0/hparams.yaml", "lr: 0.01\n")
    code, doc, _ = diagnose_json(root, "--fail-on", "error")
    assert code == 1
    assert paths(doc, "runs") == ["metrics.csv", "sub/bad.jsonl", "sub2/version_0/metrics.csv"]
    with pytest.raises(LogError) as ei:
        load(root)
    assert "holds 3 runs" in str(ei.value)
    # a directory that is one run is still that run's full report
    alone = tmp_path / "alone"
    write(alone, "metrics.csv", HEALTHY)
    r = cli("diagnose", str(alone), "--json", "-", cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["schema"] == "traindoctor/1"


# ---- 15: pipes ------------------------------------------------------------------------------------

PIPED = {
    "csv": HEALTHY,
    "tsv": (FIX / "log.tsv").read_text(),
    "jsonl": BROKEN,
    "trainer_state": (FIX / "huggingface" / "trainer_state.json").read_text(),
}


@pytest.mark.parametrize("how", ["-", "/dev/stdin"])
@pytest.mark.parametrize("kind", list(PIPED))
def test_a_log_piped_on_stdin_is_read(tmp_path, how, kind):
    r = cli("diagnose", how, "--json", "-", input=PIPED[kind], cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    codes = [f["code"] for f in doc["findings"]]
    # the same findings as the same bytes in a file
    as_file = write(tmp_path, "log.json" if kind == "trainer_state" else f"log.{kind}", PIPED[kind])
    same = cli("diagnose", str(as_file), "--json", "-", cwd=tmp_path, timeout=60)
    expected = [f["code"] for f in json.loads(same.stdout)["findings"]]
    assert codes == expected and (codes[0] if codes else None) == {"csv": None, "jsonl": "L001"}.get(kind, "L002")
    assert doc["source"]["source"] == ("<stdin>" if how == "-" else how)
    r = cli("diagnose", how, "--fail-on", "error", input=PIPED[kind], cwd=tmp_path, timeout=60)
    assert r.returncode == (1 if expected else 0) and "Traceback" not in r.stderr


def test_binary_logs_piped_on_stdin_are_read(tmp_path):
    tb = next((FIX / "tensorboard").iterdir()).read_bytes()
    for data in (tb, (FIX / "store.db").read_bytes()):
        r = cli("diagnose", "-", "--json", "-", input=data, cwd=tmp_path, timeout=60, text=False)
        assert r.returncode == 0, r.stderr
        assert [f["code"] for f in json.loads(r.stdout)["findings"]] == ["L002", "L001"]


def test_process_substitution_is_read(tmp_path):
    write(tmp_path, "log.csv", HEALTHY)
    cmd = f"{sys.executable} -m traindoctor diagnose <(cat log.csv) --json -"
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["healthy"] is True


def test_errors_in_a_piped_log_name_the_pipe(tmp_path):
    r = cli("diagnose", "-", input="x,y\n1,2\n", cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("traindoctor: error: <stdin>: ") and tempfile.gettempdir() not in err
    r = cli("diagnose", "-", input="", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "traindoctor: error: <stdin>: is empty"


def test_named_fifo_given_directly_does_not_hang(tmp_path, monkeypatch):
    import traindoctor.logs as logs

    monkeypatch.setattr(logs, "PIPE_WAIT_S", 0.5)
    fifo = tmp_path / "x.csv"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(LogError) as ei:
        load(fifo)
    assert time.monotonic() - t0 < 10
    assert str(ei.value).startswith(f"{fifo}: is a named pipe (FIFO)") and "nothing" in str(ei.value)

    def writer():
        with open(fifo, "w") as f:
            f.write(HEALTHY)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    monkeypatch.setattr(logs, "PIPE_WAIT_S", 20)
    run = load(fifo)
    th.join(5)
    assert len(run.series["loss"]) == 100 and run.meta["source"] == str(fifo)


def test_a_pipe_whose_writer_never_writes_is_an_error_not_a_hang(monkeypatch):
    import traindoctor.logs as logs

    monkeypatch.setattr(logs, "STDIN_WAIT_S", 0.5)
    r, w = os.pipe()  # the writer end stays open and silent
    try:
        t0 = time.monotonic()
        with pytest.raises(LogError) as ei:
            load(f"/dev/fd/{r}")
        assert time.monotonic() - t0 < 10
    finally:
        os.close(r)
        os.close(w)
    assert str(ei.value) == f"/dev/fd/{r}: is a pipe and nothing was written to it for 0.5 s; write the log to a file and name that"


def test_a_pipe_larger_than_the_cap_is_a_clear_error(monkeypatch):
    import traindoctor.logs as logs

    monkeypatch.setattr(logs, "PIPE_CAP", 1000)
    r, w = os.pipe()

    def writer():
        try:
            os.write(w, HEALTHY.encode() * 3)
        except OSError:
            pass
        finally:
            os.close(w)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        with pytest.raises(LogError) as ei:
            load(f"/dev/fd/{r}")
    finally:
        os.close(r)
        th.join(5)
    assert "more than 1000 bytes" in str(ei.value) and "\n" not in str(ei.value)


def test_devices_and_sockets_are_refused_at_once(tmp_path):
    import socket

    with pytest.raises(LogError, match="is a device"):
        load("/dev/zero")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tmp_path / "s.csv"))
        with pytest.raises(LogError, match="is a socket"):
            load(tmp_path / "s.csv")
        found = find_runs(tmp_path)
        assert found.runs == [] and [why for _, why in found.passed_over] == ["a socket, not a regular file: not opened"]
    finally:
        s.close()


# ---- property: any tree of these, every run found, every unreadable entry listed ------------------

KINDS = ("healthy", "broken", "tensorboard", "fifo", "file_loop", "dangling", "unreadable_file", "unreadable_dir",
         "unsearchable_dir", "dir_loop", "top_metrics")
PARENTS = ("", "a", "a/b", "c")


def _build(root: Path, entries: list[tuple[str, str]]) -> tuple[set[str], set[str], set[str], bool]:
    """Make the tree; (runs expected, errors expected, FIFOs passed over, some run has an error finding)."""
    runs, errors, fifos, bad = {"base/ok.csv"}, set(), set(), False
    write(root, "base/ok.csv", HEALTHY)
    tb = next((FIX / "tensorboard").iterdir()).read_bytes()
    for i, (kind, parent) in enumerate(entries):
        rel = f"{parent}/e{i}" if parent else f"e{i}"
        (root / parent).mkdir(parents=True, exist_ok=True)
        if kind == "healthy":
            write(root, rel + ".csv", HEALTHY)
            runs.add(rel + ".csv")
        elif kind == "broken":
            write(root, rel + ".jsonl", BROKEN)
            runs.add(rel + ".jsonl")
            bad = True
        elif kind == "tensorboard":
            write(root, rel + "/events.out.tfevents.1", tb)
            runs.add(rel)
            bad = True
        elif kind == "fifo":
            os.mkfifo(root / (rel + ".csv"))
            fifos.add(rel + ".csv")
        elif kind == "file_loop":
            os.symlink(f"e{i}.csv", root / (rel + ".csv"))
            errors.add(rel + ".csv")
        elif kind == "dangling":
            os.symlink(f"nowhere{i}.jsonl", root / (rel + ".jsonl"))
            errors.add(rel + ".jsonl")
        elif kind == "unreadable_file":
            write(root, rel + ".csv", HEALTHY).chmod(0)
            errors.add(rel + ".csv")
        elif kind == "unreadable_dir":
            write(root, rel + "/inside.csv", HEALTHY)
            (root / rel).chmod(0)
            errors.add(rel)
        elif kind == "unsearchable_dir":  # names listed, files not reached
            write(root, rel + "/inside.csv", HEALTHY)
            (root / rel).chmod(0o444)
            errors.add(rel + "/inside.csv")
        elif kind == "dir_loop":
            os.symlink("..", root / rel)
        elif kind == "top_metrics" and not (root / "metrics.csv").exists():
            write(root, "metrics.csv", HEALTHY)
            runs.add("metrics.csv")
    return runs, errors, fifos, bad


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(PARENTS)), max_size=8))
def test_any_tree_every_run_found_every_unreadable_entry_listed(entries):
    base = Path(tempfile.mkdtemp(prefix="td-tree-"))
    base.chmod(0o777)
    try:
        root = base / "tree"
        runs, errors, fifos, bad = _build(root, entries)
        for p in [root, *[q for q in root.rglob("*") if q.is_dir() and not q.is_symlink()]]:
            if os.access(p, os.W_OK) and (p.stat().st_mode & 0o777) not in (0, 0o444):
                p.chmod(0o777)
        code, doc, out = diagnose_json(root, "--fail-on", "error", unprivileged=True, timeout=60)
        assert set(paths(doc, "runs")) == runs, out
        assert len(doc["runs"]) == len(runs)
        assert set(paths(doc, "errors")) == errors, out
        assert fifos <= set(paths(doc, "skipped"))
        assert code == (2 if errors else 1 if bad else 0), out
    finally:
        for p in [base, *base.rglob("*")]:
            if not p.is_symlink():
                try:
                    p.chmod(0o777)
                except OSError:
                    pass
        shutil.rmtree(base, ignore_errors=True)


# ---- what the soak (benchmarks/soak.py) found in the readers -------------------------------------


@pytest.mark.parametrize("damage", [
    "UPDATE events SET step = NULL",  # int(None) was a TypeError
    "UPDATE meta SET value = CAST(X'22ff22' AS TEXT) WHERE key != 'schema'",  # text not UTF-8
])
def test_a_store_with_values_no_writer_stores_is_a_one_line_error(tmp_path, damage):
    import sqlite3

    from traindoctor.store import RunStore, load_store

    p = tmp_path / "run.db"
    st = RunStore(p, meta={"lr": 0.1})
    for i in range(30):
        st.add_point("loss", i, 1.0 - i / 100)
    st.add_event(29, "end", {"ok": True})
    st.close()
    with sqlite3.connect(p) as conn:
        conn.execute(damage)
    conn.close()
    for fn in (load_store, load):
        with pytest.raises(LogError) as ei:
            fn(p)
        msg = str(ei.value)
        assert msg.startswith(f"{p}: ") and "\n" not in msg and "traindoctor bug" not in msg
        assert "is damaged (" in msg or "decode to UTF-8" in msg
    r = cli("diagnose", str(tmp_path), "--json", "-", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [e["path"] for e in json.loads(r.stdout)["errors"]] == ["run.db"]


def test_a_multi_megabyte_cell_is_quoted_short_and_the_table_stays_fast(tmp_path):
    """The soak found a 3 MB step cell echoed whole in the error row (6 s to lay out the table)."""
    root = tmp_path / "tree"
    write(root, "ok.csv", HEALTHY)
    write(root, "big.csv", HEALTHY + "9" * 3_000_000 + ",1.0\n")
    t0 = time.monotonic()
    r = cli("diagnose", str(root), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 20 and len(r.stdout) < 5000
    with pytest.raises(LogError) as ei:
        load(root / "big.csv")
    msg = str(ei.value)
    assert len(msg) < 600 and "'999" in msg and "...'" in msg and "expected a whole number" in msg
    # whatever a reader quotes, load() keeps the message short
    from traindoctor.logs import _shorten

    e = LogError(f"column {'a' * 5000!r} holds {'9' * 3_000_000!r}, expected a number", path="x.csv", line=3)
    _shorten(e)
    assert str(e) == (f"x.csv:3: column '{'a' * 40}...' (5000 characters) holds '{'9' * 40}...' (3000000 characters), "
                      "expected a number")
