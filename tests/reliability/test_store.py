"""The run store under hostile conditions: read-only places, damage, reuse, a full disk, killed and live writers."""
from __future__ import annotations

import json
import os
import shutil
import signal
import site
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from traindoctor.errors import LogError
from traindoctor.logs import find_runs, load
from traindoctor.store import RunStore, StoreDamaged, is_store, load_store

from .conftest import ROOT, cli

SRC = str(Path(__file__).resolve().parents[2] / "src")

TRAIN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    Path(sys.argv[1]).write_text("ran")  # proves the script ran
    import torch
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x.sum(1) > 0).long()
    m = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for step in range(int(sys.argv[2])):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
    """
)


def make_store(path: Path, steps: int = 200, meta: dict | None = None) -> Path:
    with RunStore(path, meta=meta or {"script": "train.py"}) as st:
        st.add_points([("loss", i, 2.0 / (1 + i / 20)) for i in range(steps)])
    return path


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


_NOBODY: list = []


def _nobody() -> tuple[list[str], dict[str, str]]:
    """The command line (and environment) that runs this Python as an unprivileged user: as ``nobody``
    under root. When ``nobody`` cannot reach this interpreter (installed under a private /root), the
    system's interpreter of the same version runs with this environment's packages on its path."""
    if _NOBODY:
        return _NOBODY[0]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_WAIT_POLICY="PASSIVE")
    if not ROOT:
        _NOBODY.append(([sys.executable], env))
        return _NOBODY[0]
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root without setpriv: permission tests cannot run as an unprivileged user")
    prefix = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = os.pathsep.join([SRC, *site.getsitepackages()])
    tried = []
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        e = dict(env, PYTHONPATH=paths, HOME="/tmp")
        r = subprocess.run([*prefix, python, "-c", "import numpy, traindoctor.store"], capture_output=True,
                           text=True, cwd="/", env=e, timeout=60)
        if r.returncode == 0:
            _NOBODY.append(([*prefix, python], e))
            return _NOBODY[0]
        tried.append(f"{python}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    pytest.skip("user nobody can run no Python with traindoctor: " + "; ".join(tried))


def as_nobody(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python ARGS`` as an unprivileged user."""
    cmd, env = _nobody()
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


# ---- 4. a store the reader cannot write ---------------------------------------------------------------


def _read_only(d: Path) -> None:
    for f in d.iterdir():
        f.chmod(0o444)
    d.chmod(0o555)


def test_store_in_a_read_only_directory_is_read(shared_dir):
    d = shared_dir / "ro"
    d.mkdir()
    path = make_store(d / "run.db")
    _read_only(d)
    before = sorted(p.name for p in d.iterdir())
    r = as_nobody("-m", "traindoctor", "diagnose", str(path), "--json", "-", cwd=shared_dir)
    assert r.returncode == 0, r.stderr
    assert "not a traindoctor run store" not in r.stderr
    assert json.loads(r.stdout)["source"]["format"] == "store"
    assert sorted(p.name for p in d.iterdir()) == before


def test_read_only_store_with_a_wal_is_read_whole(shared_dir):
    """A killed run copied into a read-only place: its points in the -wal are read too, and nothing is left."""
    d = shared_dir / "ro"
    d.mkdir()
    live = shared_dir / "live.db"
    st = RunStore(live, batch_size=10**9)
    st.add_points([("loss", i, 1.0) for i in range(300)])
    st.flush()  # committed to the -wal, not yet in the .db
    for suffix in ("", "-wal"):
        shutil.copy(f"{live}{suffix}", d / f"run.db{suffix}")
    st.close()
    _read_only(d)
    before = sorted(p.name for p in d.iterdir())
    r = as_nobody("-c", "import sys; from traindoctor.store import load_store; r = load_store(sys.argv[1]); "
                  "print(len(r.series['loss']))", str(d / "run.db"), cwd=shared_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["300"]
    assert sorted(p.name for p in d.iterdir()) == before


def test_reader_leaves_no_files_beside_another_users_store(shared_dir):
    path = make_store(shared_dir / "run.db")
    path.chmod(0o444)  # the directory is writable by all, the store is not the reader's
    r = as_nobody("-m", "traindoctor", "diagnose", str(path), cwd=shared_dir)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in shared_dir.iterdir()) == ["run.db"]


def test_live_run_of_another_user_is_read_in_place(shared_dir, tmp_path):
    """A colleague's run still being written, in a directory the reader cannot write: read through the
    writer's own -wal/-shm, noted as live, and nothing is created or removed beside it."""
    d = shared_dir / "theirs"
    d.mkdir()
    d.chmod(0o755)
    path = d / "run.db"
    proc = _writer(tmp_path, path)
    try:
        before = sorted(p.name for p in d.iterdir())
        assert before == ["run.db", "run.db-shm", "run.db-wal"]
        r = as_nobody("-m", "traindoctor", "diagnose", str(path), "--json", "-", cwd=shared_dir)
        assert r.returncode == 0, r.stderr
        assert any(f"still being written (pid {proc.pid}" in n for n in json.loads(r.stdout)["notes"])
        assert sorted(p.name for p in d.iterdir()) == before
    finally:
        _kill(proc)


def test_damaged_store_is_said_damaged_to_a_reader_who_cannot_write(shared_dir):
    d = shared_dir / "ro"
    d.mkdir()
    _truncated(d)
    _read_only(d)
    r = as_nobody("-m", "traindoctor", "diagnose", str(d / "cut.db"), cwd=shared_dir)
    assert r.returncode == 2
    assert "is damaged" in one_line(r.stderr) and "malformed" in r.stderr
    assert sorted(p.name for p in d.iterdir()) == ["cut.db"]


# ---- 5. a damaged store ---------------------------------------------------------------------------------


def _truncated(tmp_path: Path) -> Path:
    path = make_store(tmp_path / "cut.db", steps=20000)
    os.truncate(path, path.stat().st_size // 2)
    return path


def _overwritten(tmp_path: Path) -> Path:
    path = make_store(tmp_path / "hit.db", steps=20000)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(range(256)) * 16)
    return path


@pytest.mark.parametrize("damage", [_truncated, _overwritten])
def test_damaged_store_says_so_in_sqlites_words(tmp_path, damage):
    path = damage(tmp_path)
    with pytest.raises(StoreDamaged) as ei:
        load_store(path)
    assert isinstance(ei.value, LogError)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: is damaged") and "database disk image is malformed" in msg
    assert "not a traindoctor run store" not in msg
    with pytest.raises(StoreDamaged):
        load(path)
    r = cli("diagnose", str(path), cwd=tmp_path)
    assert r.returncode == 2
    assert "is damaged" in one_line(r.stderr) and "malformed" in r.stderr


def test_directory_scan_counts_a_damaged_store_as_an_error(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    make_store(runs / "good.db")
    _truncated(runs)
    (runs / "notes.bin").write_bytes(b"not sqlite at all\n")
    found = find_runs(runs)
    assert [r.path.name for r in found.runs] == ["good.db"]
    assert [(p.name, fmt) for p, fmt, _ in found.unreadable] == [("cut.db", "store")]
    assert "is damaged" in found.unreadable[0][2] and "malformed" in found.unreadable[0][2]
    assert not any(p.name == "cut.db" for p, _ in found.passed_over)
    r = cli("diagnose", str(runs), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cut.db" in r.stdout + r.stderr and "malformed" in r.stdout + r.stderr
    assert not is_store(runs / "notes.bin")


# ---- 10. `run --store` on an existing store ---------------------------------------------------------------


def test_run_refuses_an_existing_store_unless_overwrite(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    store = make_store(tmp_path / "old.db", steps=500, meta={"script": "other.py"})
    marker = tmp_path / "ran"
    r = cli("run", "--store", str(store), str(script), str(marker), "30", cwd=tmp_path)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert str(store) in line and "--overwrite" in line
    assert not marker.exists()  # refused before the script ran
    assert len(load_store(store).series["loss"]) == 500  # untouched

    r = cli("run", "--store", str(store), "--overwrite", str(script), str(marker), "30", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    run = load_store(store)
    assert len(run.series["loss"]) == 30 and run.meta["script"] == str(script)

    assert "--overwrite" in cli("run", "--help").stdout


def test_overwrite_never_replaces_a_file_that_is_not_a_store(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    precious = tmp_path / "thesis.db"
    precious.write_text("my thesis\n")
    r = cli("run", "--store", str(precious), "--overwrite", str(script), str(tmp_path / "ran"), "5", cwd=tmp_path)
    assert r.returncode == 2
    assert "not a traindoctor run store" in one_line(r.stderr)
    assert precious.read_text() == "my thesis\n" and not (tmp_path / "ran").exists()


# ---- 11. a full disk mid-run --------------------------------------------------------------------------------


class _DiskFills:
    """A connection that reports a full disk once ``ok`` transactions have committed."""

    def __init__(self, conn: sqlite3.Connection, ok: int, fails: int = 10**9) -> None:
        self._conn = conn
        self.left = ok
        self.fails = fails  # then the disk has room again

    def execute(self, sql: str, *args):
        if sql.strip().upper() == "COMMIT":
            if self.left <= 0 and self.fails > 0:
                self.fails -= 1
                raise sqlite3.OperationalError("database or disk is full")
            self.left -= 1
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_full_disk_mid_run_says_where_the_store_stopped(tmp_path, monkeypatch, capsys):
    import traindoctor.store as store_mod
    from traindoctor.cli import main

    real = store_mod._connect_rw
    monkeypatch.setattr(store_mod, "_connect_rw", lambda path: _DiskFills(real(path), ok=2))
    script = tmp_path / "train.py"
    script.write_text(TRAIN + "    if step % 10 == 0:\n        __import__('time').sleep(0.15)\n")
    db = tmp_path / "full.db"
    json_out = tmp_path / "d.json"
    code = main(["run", "--store", str(db), "--json", str(json_out), str(script), str(tmp_path / "ran"), "120"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "internal error" not in err
    assert "run stored in" not in err
    stopped = [ln for ln in err.splitlines() if "stopped at step" in ln]
    assert len(stopped) == 1, err
    assert "database or disk is full" in stopped[0] and str(db) in stopped[0] and "from memory" in stopped[0]
    monkeypatch.setattr(store_mod, "_connect_rw", real)
    run = load_store(db)
    last = max(int(s.steps.max()) for s in run.series.values() if len(s))
    assert f"stopped at step {last}:" in stopped[0]
    assert last < 119


def test_store_that_fails_stops_quietly_when_asked(tmp_path, monkeypatch):
    import traindoctor.store as store_mod

    real = store_mod._connect_rw
    monkeypatch.setattr(store_mod, "_connect_rw", lambda path: _DiskFills(real(path), ok=2))
    st = RunStore(tmp_path / "s.db", batch_size=10, stop_on_error=True)  # the open commits once
    st.add_points([("loss", i, 1.0) for i in range(10)])  # commit 2: stored
    st.add_points([("loss", i, 1.0) for i in range(10, 20)])  # the disk is full
    st.add_points([("loss", i, 1.0) for i in range(20, 30)])  # dropped, no error
    st.close()
    assert st.stopped == (9, "database or disk is full")


def test_a_stopped_store_says_where_it_stopped_when_it_still_can(tmp_path, monkeypatch):
    import traindoctor.store as store_mod

    real = store_mod._connect_rw
    monkeypatch.setattr(store_mod, "_connect_rw", lambda path: _DiskFills(real(path), ok=2, fails=1))
    st = RunStore(tmp_path / "s.db", batch_size=10, stop_on_error=True)
    st.add_points([("loss", i, 1.0) for i in range(25)])  # 0-9 stored, 10-19 fail, 20-24 dropped
    st.close()  # room again: the stop is recorded
    monkeypatch.setattr(store_mod, "_connect_rw", real)
    run = load_store(tmp_path / "s.db")
    assert run.series["loss"].steps.tolist() == list(range(10))
    assert run.meta["notes"] == [
        "the store stopped at step 9 while the run went on (database or disk is full): later steps are not in it"
    ]


# ---- 12. a killed writer and its -wal -----------------------------------------------------------------------

KILLED = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from traindoctor.store import RunStore
    st = RunStore(sys.argv[1], batch_size=10**9)
    st.add_points([("loss", i, float(i)) for i in range(int(sys.argv[3]))])
    st.flush()
    print("flushed", flush=True)
    time.sleep(600)
    """
)


def _writer(tmp_path: Path, path: Path, n: int = 300) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(KILLED)
    proc = subprocess.Popen([sys.executable, str(script), str(path), SRC, str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "flushed", proc.stderr.read()
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()


def test_a_writer_that_exits_without_close_closes_its_store(tmp_path):
    """SQLite removes the -wal of a process that ends normally: the store must say it was closed, or a
    reader would take the missing -wal for lost points."""
    path = tmp_path / "run.db"
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from traindoctor.store import RunStore; "
            "st = RunStore(sys.argv[1], batch_size=10**9); st.add_points([('loss', i, 1.0) for i in range(50)])")
    subprocess.run([sys.executable, "-c", code, str(path), SRC], check=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.db"]
    run = load_store(path)
    assert len(run.series["loss"]) == 50  # the buffer was flushed at exit
    assert not run.meta.get("notes")


def test_clean_close_leaves_everything_in_the_db(tmp_path):
    path = tmp_path / "run.db"
    st = RunStore(path)
    reader = sqlite3.connect(path)  # another connection open: the writer's close is not the last one
    try:
        reader.execute("SELECT COUNT(*) FROM points").fetchall()
        st.add_points([("loss", i, 1.0) for i in range(300)])
        st.close()
        copy = tmp_path / "copy"
        copy.mkdir()
        shutil.copy(path, copy / "run.db")  # the .db alone
    finally:
        reader.close()
    run = load_store(copy / "run.db")
    assert len(run.series["loss"]) == 300
    assert not run.meta.get("notes")


def test_reader_checkpoints_a_killed_run_so_the_db_alone_is_whole(tmp_path):
    path = tmp_path / "run.db"
    proc = _writer(tmp_path, path)
    _kill(proc)
    run = load_store(path)
    assert len(run.series["loss"]) == 300
    assert any("not closed" in n and str(proc.pid) in n for n in run.meta["notes"]), run.meta
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(path, copy / "run.db")
    again = load_store(copy / "run.db")
    assert len(again.series["loss"]) == 300
    assert not any("-wal" in n for n in again.meta.get("notes", []))


def test_killed_run_copied_without_its_wal_says_points_may_be_lost(tmp_path):
    path = tmp_path / "run.db"
    proc = _writer(tmp_path, path)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(path, copy / "run.db")  # the .db alone, as `cp *.db` does
    _kill(proc)
    run = load_store(copy / "run.db")
    notes = run.meta.get("notes", [])
    assert any("not closed cleanly" in n and "-wal file is missing" in n and "points may be lost" in n
               for n in notes), notes
    r = cli("diagnose", str(copy / "run.db"), "--json", "-", cwd=tmp_path)
    assert any("-wal file is missing" in n for n in json.loads(r.stdout)["notes"])


# ---- 17. diagnosing a live run --------------------------------------------------------------------------------


def test_live_store_says_the_run_is_still_being_written(tmp_path):
    path = tmp_path / "run.db"
    proc = _writer(tmp_path, path)
    try:
        time.sleep(1.1)
        r = cli("diagnose", str(path), "--json", "-", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        notes = json.loads(r.stdout)["notes"]
        live = [n for n in notes if "still being written" in n]
        assert len(live) == 1, notes
        assert f"pid {proc.pid}" in live[0] and "last write" in live[0]
        assert "-wal" not in " ".join(notes) and "not closed" not in " ".join(notes)
        r = cli("diagnose", str(path), cwd=tmp_path)
        assert "still being written" in r.stdout + r.stderr
        assert Path(f"{path}-wal").exists()  # the reader did not take the live store over
    finally:
        _kill(proc)
    run = load_store(path)
    assert not any("still being written" in n for n in run.meta.get("notes", []))
