"""Soak: thousands of hostile inputs through every log reader and the directory-tree scan.

Each input is drawn from its own seed: a valid CSV/TSV, JSON Lines, ``trainer_state.json``,
TensorBoard event file or run store, then mutated (cut short, bytes flipped, inserted, deleted or
repeated, replaced by random binary, a multi-megabyte field, re-encoded as UTF-16/UTF-32/latin-1,
CR or CRLF line ends, NUL bytes, every number made ``nan``/``inf``/``1e999``, JSON nested 100,000
deep, a 50,000-column header) and named with its right extension or a wrong one; or a pipe
(``/dev/fd/N``) carrying such bytes; or a named FIFO nobody writes to; or a directory tree mixing
runs of every format at several depths (Lightning version dirs, Hugging Face checkpoints, MLflow
runs, a top-level ``metrics.csv``) with file and directory symbolic-link loops, dangling links,
links out of the tree, FIFOs and sockets under log names, and files and directories nobody may
read. Files go through :func:`traindoctor.logs.load` (then ``diagnose``) and the format's own
reader; trees through ``traindoctor diagnose DIR --json`` (the CLI's ``main``), ``find_runs`` and
``load(DIR)``.

Counted: a *traceback* is any exception other than the readers' declared error type
(:class:`~traindoctor.errors.LogError`, whose subclasses include ``NoTrainingLoss`` and a damaged
store's error) or, for the CLI, an exit code outside 0/1/2; a *hang* is an input still running
after ``--timeout`` seconds (a SIGALRM per input in the worker; the parent also gives up on a
worker silent for four times that). For trees, every planted link loop, dangling link and
unreadable entry must be listed among the errors (a *miss* otherwise). Workers run as ``nobody``
when started as root, so that permissions mean something.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/soak.py              # 10,000 inputs
    python benchmarks/soak.py --only 1234 --verbose                # one input again, its traceback

Not part of the test suite (minutes, not seconds); see benchmarks/README.md for the last run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import traindoctor.logs as logs  # noqa: E402
from traindoctor.diagnosis import diagnose  # noqa: E402
from traindoctor.errors import LogError  # noqa: E402
from traindoctor.logs import find_runs, load  # noqa: E402
from traindoctor.logs.csvlog import read_csv  # noqa: E402
from traindoctor.logs.hf import read_trainer_state  # noqa: E402
from traindoctor.logs.jsonlog import read_jsonl  # noqa: E402
from traindoctor.logs.mlflow import read_mlflow  # noqa: E402
from traindoctor.logs.tensorboard import masked_crc32c, read_tensorboard  # noqa: E402
from traindoctor.store import RunStore, load_store  # noqa: E402

FORMATS = ("csv", "jsonl", "hf", "tb", "store")
EXT = {"csv": ".csv", "jsonl": ".jsonl", "hf": ".json", "tb": "", "store": ".db"}


TALLY = {"read": 0, "refused": 0}  # this input's reader calls: a Run, or the declared LogError


def _call(fn, short: bool = False) -> object | None:
    """``fn()``; a LogError is a refusal (counted), anything else propagates (a traceback); with
    ``short`` (``load``, what the CLI prints), a message over 1,000 characters is a failure too."""
    try:
        out = fn()
    except LogError as e:
        if "traindoctor bug" in str(e):  # load() caught a reader's unexpected exception: still a bug
            raise
        if short and len(str(e)) > 1000:
            raise AssertionError(f"a message of {len(str(e))} characters: {str(e)[:200]}") from e
        TALLY["refused"] += 1
        return None
    TALLY["read"] += 1
    return out


class Hang(BaseException):
    """Raised by the per-input alarm: a BaseException, so no reader's ``except Exception`` eats it."""


# ---- valid inputs --------------------------------------------------------------------------------


def _curve(r: random.Random, n: int) -> list[float]:
    kind = r.choice(("decay", "flat", "nan_tail", "explode", "noisy"))
    out, v = [], r.uniform(0.5, 5)
    for i in range(n):
        if kind == "decay":
            v *= r.uniform(0.97, 1.0)
        elif kind == "explode" and i > n // 2:
            v *= r.uniform(1.2, 3)
        elif kind == "noisy":
            v = abs(v + r.gauss(0, 0.3))
        out.append(math.nan if kind == "nan_tail" and i > 0.7 * n else v)
    return out


def csv_log(r: random.Random) -> bytes:
    n = r.randint(1, 400)
    sep = r.choice((",", ",", "\t", ";"))
    cols = ["step", r.choice(("loss", "train_loss", "train/loss", "Loss"))]
    extra = r.sample(["val_loss", "lr", "grad_norm", "epoch", "accuracy", "val_accuracy", "time"], r.randint(0, 4))
    cols += extra
    loss = _curve(r, n)
    lines = [sep.join(cols)]
    for i in range(n):
        row = [str(i * r.choice((1, 1, 10))), repr(loss[i])]
        for c in extra:
            if c == "val_loss":
                row.append(repr(loss[i] * 1.1) if i % 10 == 0 else "")
            elif c == "time":
                row.append("12:00:00")
            else:
                row.append(repr(r.random()))
        lines.append(sep.join(row))
    return ("\n".join(lines) + "\n").encode()


def jsonl_log(r: random.Random) -> bytes:
    n = r.randint(1, 400)
    loss = _curve(r, n)
    nested = r.random() < 0.3
    out = []
    for i in range(n):
        rec: dict = {"step": i, "train": {"loss": loss[i]}} if nested else {"step": i, "loss": loss[i]}
        if r.random() < 0.3:
            rec["lr"] = r.random()
        if i % 10 == 0 and r.random() < 0.5:
            rec["val_loss"] = loss[i] * 1.1
        out.append(json.dumps(rec))
    if r.random() < 0.15:  # one JSON array instead of lines
        return ("[" + ",\n".join(out) + "]").encode()
    return ("\n".join(out) + "\n").encode()


def hf_state(r: random.Random) -> bytes:
    n = r.randint(1, 300)
    loss = _curve(r, n)
    hist = []
    for i in range(n):
        hist.append({"epoch": i / 50, "grad_norm": r.random(), "learning_rate": 1e-3, "loss": loss[i], "step": i + 1})
        if i % 25 == 0:
            hist.append({"epoch": i / 50, "eval_loss": loss[i] * 1.1, "step": i + 1})
    state = {"best_metric": None, "epoch": n / 50, "global_step": n, "log_history": hist, "max_steps": n,
             "train_batch_size": 8}
    return json.dumps(state, indent=r.choice((None, 2)), sort_keys=True).encode()


def _tb_record(payload: bytes) -> bytes:
    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", masked_crc32c(head)) + payload + struct.pack("<I", masked_crc32c(payload))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _tb_scalar(tag: str, step: int, value: float) -> bytes:
    tb = tag.encode()
    if math.isfinite(value) and abs(value) > 3.4e38:  # float32, as SummaryWriter stores it
        value = math.copysign(math.inf, value)
    val = b"\x0a" + _varint(len(tb)) + tb + b"\x15" + struct.pack("<f", value)
    summ = b"\x0a" + _varint(len(val)) + val
    return (b"\x09" + struct.pack("<d", 1.7e9) + (b"\x10" + _varint(step) if step else b"")
            + b"\x2a" + _varint(len(summ)) + summ)


def tb_log(r: random.Random) -> bytes:
    n = r.randint(1, 400)
    loss = _curve(r, n)
    tags = ["train/loss"] + r.sample(["train/lr", "eval/loss", "grad_norm"], r.randint(0, 2))
    body = [_tb_record(b"\x09" + struct.pack("<d", 1.7e9) + b"\x1a\x0dbrain.Event:2")]
    for i in range(n):
        for t in tags:
            body.append(_tb_record(_tb_scalar(t, i, loss[i] if t.endswith("loss") else r.random())))
    return b"".join(body)


def store_log(r: random.Random, scratch: Path) -> bytes:
    p = scratch / f"seed-{r.random()}.db"
    st = RunStore(p, meta={"script": "train.py", "lr": 0.1})
    n = r.randint(1, 300)
    for i, v in enumerate(_curve(r, n)):
        st.add_point("loss", i, v)
        if r.random() < 0.2:
            st.add_point("grad_norm", i, r.random())
    if r.random() < 0.3:
        st.add_event(n, "end", {"ok": True})
    st.close()
    data = p.read_bytes()
    for q in scratch.glob(p.name + "*"):
        q.unlink()
    return data


def valid(fmt: str, r: random.Random, scratch: Path) -> bytes:
    return {"csv": csv_log, "jsonl": jsonl_log, "hf": hf_state, "tb": tb_log}[fmt](r) if fmt != "store" \
        else store_log(r, scratch)


# ---- mutations -----------------------------------------------------------------------------------


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def mutate(b: bytes, r: random.Random) -> tuple[bytes, str]:
    kind = r.choice(("truncate", "flip", "insert", "delete", "repeat", "binary", "huge_field", "encoding",
                     "line_ends", "nul", "nonfinite", "deep_json", "wide_header", "long_line", "empty",
                     "whitespace", "swap_lines"))
    n = len(b)
    at = r.randint(0, n) if n else 0
    if kind == "truncate":
        return b[:at], kind
    if kind == "flip" and n:
        a = bytearray(b)
        for _ in range(r.randint(1, 20)):
            a[r.randrange(n)] = r.randrange(256)
        return bytes(a), kind
    if kind == "insert":
        return b[:at] + r.randbytes(r.randint(1, 300)) + b[at:], kind
    if kind == "delete" and n:
        return b[:at] + b[at + r.randint(1, max(1, n // 4)):], kind
    if kind == "repeat" and n:
        piece = b[at:at + r.randint(1, 400)]
        return b[:at] + piece * r.randint(2, 50) + b[at:], kind
    if kind == "binary":
        return r.randbytes(r.randint(1, 20000)), kind
    if kind == "huge_field":
        big = r.choice((b"9", b"a", b"-", b"\xff", b"1.", b"e")) * r.randint(1 << 20, 6 << 20)
        return b[:at] + big + b[at:], kind
    if kind == "encoding":
        enc = r.choice(("utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "utf-8-sig"))
        return _text(b).replace("loss", r.choice(("loss", "lösś", "loss\u200b", "损失"))).encode(enc, errors="replace"), kind
    if kind == "line_ends":
        return b.replace(b"\n", r.choice((b"\r\n", b"\r", b"\n\n", b"\x0b", b"\x85"))), kind
    if kind == "nul":
        return b[:at] + b"\x00" * r.randint(1, 64) + b[at:], kind
    if kind == "nonfinite":
        import re

        word = r.choice((b"nan", b"inf", b"-inf", b"1e999", b"NaN", b"Infinity", b"-0", b"1e-400", b"0x1p3"))
        return re.sub(rb"(?<![0-9])[0-9]{1,30}\.[0-9]{1,30}(e-?[0-9]{1,3})?", word, b, count=r.randint(1, 1000)), kind
    if kind == "deep_json":
        d = r.choice((1000, 100_000))
        return (b"[" * d + b"]" * d) if r.random() < 0.5 else (b'{"a":' * d + b"1" + b"}" * d), kind
    if kind == "wide_header":
        return (",".join(f"c{i}" for i in range(r.choice((5000, 50_000)))) + ",loss\n").encode() + b, kind
    if kind == "long_line":
        return b.replace(b"\n", b" ", r.randint(1, 10_000)), kind
    if kind == "empty":
        return b"", kind
    if kind == "whitespace":
        return r.choice((b" ", b"\n", b"\r\n", b"\t")) * r.randint(1, 100_000), kind
    if kind == "swap_lines":
        lines = b.split(b"\n")
        r.shuffle(lines)
        return b"\n".join(lines), kind
    return b, "none"


def make_bytes(r: random.Random, scratch: Path) -> tuple[str, bytes, list[str]]:
    fmt = r.choice(FORMATS)
    b = valid(fmt, r, scratch)
    done = []
    for _ in range(r.choice((0, 1, 1, 1, 2, 3))):
        b, kind = mutate(b, r)
        done.append(kind)
    return fmt, b, done


def name_for(fmt: str, r: random.Random, i: int) -> str:
    roll = r.random()
    if roll < 0.75:
        base = {"hf": "trainer_state", "tb": "events.out.tfevents.1700000000.host"}.get(fmt, f"log{i}")
        return base + EXT[fmt]
    return f"log{i}" + r.choice(("", ".csv", ".tsv", ".jsonl", ".json", ".db", ".sqlite", ".txt", ".ndjson"))


# ---- one input -----------------------------------------------------------------------------------

READERS = {"csv": read_csv, "jsonl": read_jsonl, "hf": read_trainer_state, "tb": read_tensorboard, "store": load_store}


def _file_case(r: random.Random, work: Path, i: int) -> str:
    fmt, data, muts = make_bytes(r, work)
    p = work / name_for(fmt, r, i)
    p.write_bytes(data)
    for fn, short in ((lambda: load(p), True), (lambda: READERS[fmt](p), False)):
        run = _call(fn, short)
        if run is not None:
            diagnose(run)
    return f"file {fmt} {'+'.join(muts) or 'valid'} {p.name}"


def _pipe_case(r: random.Random, work: Path, i: int) -> str:
    fmt, data, muts = make_bytes(r, work)
    data = data[: 8 << 20]
    rfd, wfd = os.pipe()

    def writer() -> None:
        try:
            with open(wfd, "wb") as w:
                w.write(data)
        except OSError:
            pass

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        run = _call(lambda: load(f"/dev/fd/{rfd}"), short=True)
        if run is not None:
            diagnose(run)
    finally:
        os.close(rfd)
        th.join(5)
    return f"pipe {fmt} {'+'.join(muts) or 'valid'}"


def _fifo_case(r: random.Random, work: Path, i: int) -> str:
    p = work / f"fifo{i}{r.choice(('.csv', '.jsonl', '', '.db'))}"
    os.mkfifo(p)
    for fn in (lambda: load(p), lambda: READERS[r.choice(FORMATS)](p), lambda: find_runs(work)):
        _call(fn)
    return f"fifo {p.name}"


def _tree_case(r: random.Random, work: Path, i: int) -> str:
    root = work / f"tree{i}"
    root.mkdir()
    expect_errors: set[str] = set()
    planted = []
    dirs = ["", "a", "a/b", "c", "c/d/e"]
    can_deny = os.geteuid() != 0
    for k in range(r.randint(1, 10)):
        parent = r.choice(dirs)
        (root / parent).mkdir(parents=True, exist_ok=True)
        rel = f"{parent}/n{k}" if parent else f"n{k}"
        kind = r.choice(("file", "file", "file", "lightning", "hf", "mlflow", "tbdir", "top_metrics", "fifo",
                         "file_loop", "dangling", "dir_loop", "outside", "socket", "deny_file", "deny_dir",
                         "deny_search"))
        planted.append(kind)
        if kind == "file":
            fmt, data, _ = make_bytes(r, work)
            if fmt == "tb":
                (root / rel).mkdir()
                (root / rel / "events.out.tfevents.1").write_bytes(data)
            else:
                (root / (rel + EXT[fmt])).write_bytes(data)
        elif kind == "lightning":
            (root / rel / "version_0").mkdir(parents=True)
            _, data, _ = make_bytes(random.Random(r.random()), work) if r.random() < 0.3 else ("csv", csv_log(r), [])
            (root / rel / "version_0" / "metrics.csv").write_bytes(data)
            hp = root / rel / "version_0" / "hparams.yaml"
            os.mkfifo(hp) if r.random() < 0.2 else hp.write_text(r.choice(("lr: 0.1\nbatch_size: 8\n", "lr: [", "")))
        elif kind == "hf":
            for c in r.sample((10, 20, 30), r.randint(1, 3)):
                (root / rel / f"checkpoint-{c}").mkdir(parents=True)
                data = hf_state(r) if r.random() < 0.7 else mutate(hf_state(r), r)[0]
                (root / rel / f"checkpoint-{c}" / "trainer_state.json").write_bytes(data)
        elif kind == "mlflow":
            run = root / rel / "0" / f"run{k}"
            (run / "metrics").mkdir(parents=True)
            (run / "meta.yaml").write_text("run_id: x\nexperiment_id: 0\n")
            lines = "".join(f"1700000000 {v!r} {s}\n" for s, v in enumerate(_curve(r, r.randint(1, 200))))
            data = lines.encode() if r.random() < 0.6 else mutate(lines.encode(), r)[0]
            (run / "metrics" / "loss").write_bytes(data)
            if r.random() < 0.2:
                os.mkfifo(run / "metrics" / "lr")
            if r.random() < 0.2:
                os.symlink("loss2", run / "metrics" / "loss2")
        elif kind == "tbdir":
            (root / rel).mkdir()
            (root / rel / "events.out.tfevents.1").write_bytes(tb_log(r))
            if r.random() < 0.3:
                (root / rel / "events.out.tfevents.2").write_bytes(mutate(tb_log(r), r)[0])
        elif kind == "top_metrics":
            (root / "metrics.csv").write_bytes(csv_log(r))
        elif kind == "fifo":
            os.mkfifo(root / (rel + r.choice((".csv", ".jsonl", ".db"))))
        elif kind == "file_loop":
            os.symlink(f"n{k}.csv", root / (rel + ".csv"))
            expect_errors.add(rel + ".csv")
        elif kind == "dangling":
            os.symlink(f"gone{k}.jsonl", root / (rel + ".jsonl"))
            expect_errors.add(rel + ".jsonl")
        elif kind == "dir_loop":
            os.symlink(r.choice(("..", ".", "../..", str(root))), root / rel)
        elif kind == "outside":
            out = work / f"outside{i}_{k}.csv"
            out.write_bytes(csv_log(r))
            os.symlink(out, root / (rel + ".csv"))
        elif kind == "socket":
            s = socket.socket(socket.AF_UNIX)
            try:
                s.bind(str(root / (rel + ".csv")))
            except OSError:
                pass
            finally:
                s.close()
        elif kind == "deny_file":
            p = root / (rel + ".csv")
            p.write_bytes(csv_log(r))
            p.chmod(0)
            if can_deny:
                expect_errors.add(rel + ".csv")
        elif kind == "deny_search":  # its names can be listed, its files not reached
            (root / rel).mkdir()
            (root / rel / "inner.csv").write_bytes(csv_log(r))
            (root / rel).chmod(0o444)
            if can_deny:
                expect_errors.add(rel + "/inner.csv")
        elif kind == "deny_dir":
            (root / rel).mkdir()
            (root / rel / "inner.csv").write_bytes(csv_log(r))
            (root / rel).chmod(0)
            if can_deny:
                expect_errors.add(rel)
    from traindoctor.cli import main

    out = work / f"tree{i}.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(["diagnose", str(root), "--json", str(out)])
    if code not in (0, 1, 2):
        raise AssertionError(f"exit code {code}")
    doc = json.loads(out.read_text()) if out.exists() else {"errors": []}
    bugs = [e["error"] for e in doc.get("errors", []) if "traindoctor bug" in e["error"] or len(e["error"]) > 1000]
    if bugs:  # a reader's unexpected exception, turned into a row: still a bug
        raise AssertionError(bugs[0])
    if expect_errors:
        # a denied directory hides what it holds, so only the shallowest planted entries are checked
        listed = {e["path"] for e in doc.get("errors", [])}
        hidden = {e for e in expect_errors if any(e.startswith(d + "/") for d in expect_errors)}
        missing = expect_errors - listed - hidden
        if missing:
            raise Miss(f"not listed as unreadable: {sorted(missing)}")
    for ref in find_runs(root).runs:
        if ref.format == "mlflow":
            _call(lambda ref=ref: read_mlflow(ref.path))
    _call(lambda: load(root))
    return f"tree {'+'.join(planted)}"


class Miss(Exception):
    pass


def run_one(i: int, seed: int, timeout: float, base: str) -> tuple[int, str, str, float, dict[str, int]]:
    """(index, status, what, seconds, reader outcomes): status ok | traceback | hang | miss."""
    TALLY.update(read=0, refused=0)
    r = random.Random(seed * 1_000_003 + i)
    work = Path(base) / f"i{i}"
    work.mkdir()
    roll = r.random()
    case = _tree_case if roll < 0.12 else _pipe_case if roll < 0.15 else _fifo_case if roll < 0.16 else _file_case
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    what = case.__name__
    try:
        what = case(r, work, i)
        status = "ok"
    except Hang:
        status = "hang"
        what = f"{what}: still running after {timeout:g} s, at:\n{traceback.format_exc()}"
    except Miss as e:
        status, what = "miss", f"{what}: {e}"
    except BaseException as e:  # noqa: BLE001 - counting them is the point
        status = "traceback"
        what = f"{what}: {type(e).__name__}: {' '.join(str(e).split())[:200]}\n{traceback.format_exc()}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    dt = time.perf_counter() - t0
    for p in [work, *work.rglob("*")]:
        with contextlib.suppress(OSError):
            if not p.is_symlink():
                p.chmod(0o700)
    shutil.rmtree(work, ignore_errors=True)
    return i, status, what, dt, dict(TALLY)


def _init(drop: bool) -> None:
    def alarm(signum, frame):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    logs.PIPE_WAIT_S = 0.2  # a FIFO nobody writes to: an error after 0.2 s, not 10
    if drop and os.geteuid() == 0:
        os.setgid(65534)
        os.setgroups([])
        os.setuid(65534)


def _warm(base: Path) -> None:
    """Import now, as whoever started the soak, what the inputs will import lazily: a worker that
    dropped to ``nobody`` may not read this interpreter's standard library (it can live in root's home)."""
    import importlib

    for m in ("colorsys", "encodings.utf_8_sig", "encodings.utf_16", "encodings.utf_16_le", "encodings.utf_16_be",
              "encodings.utf_32", "encodings.utf_32_le", "encodings.utf_32_be", "encodings.latin_1",
              "encodings.cp1252", "encodings.ascii", "encodings.idna", "traindoctor.cli", "traindoctor.report",
              "traindoctor.report.summary", "rich.console", "rich.table", "rich.markup", "rich.text", "rich.panel",
              "rich.rule", "rich.padding", "rich._wrap", "rich.cells", "rich.emoji", "rich.containers"):
        with contextlib.suppress(ImportError):
            importlib.import_module(m)
    signal.signal(signal.SIGALRM, lambda signum, frame: (_ for _ in ()).throw(Hang()))
    for i in range(200):  # every case and most mutations once, not counted
        run_one(10_000_000 + i, 0, 60.0, str(base))


def _work(args: tuple[int, int, float, str]) -> tuple[int, str, str, float, dict[str, int]]:
    return run_one(*args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", type=int, default=None, help="run input I alone, in this process")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--as-root", action="store_true", help="keep root's privileges (permissions then mean nothing)")
    a = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="td-soak-"))
    base.chmod(0o777)
    t0 = time.perf_counter()
    counts = {"ok": 0, "traceback": 0, "hang": 0, "miss": 0}
    failures: list[tuple[int, str, str]] = []
    slowest = (0.0, -1, "")
    outcomes = {"read": 0, "refused": 0}
    try:
        _warm(base)
        if a.only is not None:
            _init(not a.as_root)
            results = [run_one(a.only, a.seed, a.timeout, str(base))]
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork")
            with ctx.Pool(a.workers, initializer=_init, initargs=(not a.as_root,), maxtasksperchild=500) as pool:
                it = pool.imap_unordered(_work, [(i, a.seed, a.timeout, str(base)) for i in range(a.n)], chunksize=1)
                results = []
                for k in range(a.n):
                    try:
                        results.append(it.next(timeout=4 * a.timeout + 60))
                    except mp.TimeoutError:
                        counts["hang"] += 1
                        failures.append((-1, "hang", f"a worker was silent for {4 * a.timeout + 60:.0f} s; stopped"))
                        pool.terminate()
                        break
                    if a.verbose or (k + 1) % 1000 == 0:
                        print(f"{k + 1}/{a.n} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        for i, status, what, dt, tally in results:
            counts[status] += 1
            for k, v in tally.items():
                outcomes[k] += v
            if status != "ok":
                failures.append((i, status, what))
            if dt > slowest[0]:
                slowest = (dt, i, what.split("\n")[0])
            if a.verbose and a.only is not None:
                print(f"{i} {status} {dt:.2f} s {what}")
    finally:
        for p in [base, *base.rglob("*")]:
            with contextlib.suppress(OSError):
                if not p.is_symlink():
                    p.chmod(0o700)
        shutil.rmtree(base, ignore_errors=True)
    wall = time.perf_counter() - t0
    for i, status, what in failures[:20]:
        print(f"--- input {i}: {status}: {what}")
    n_done = sum(counts.values())
    print(f"soak: {n_done} inputs (seed {a.seed}), {counts['traceback']} tracebacks, {counts['hang']} hangs, "
          f"{counts['miss']} unlisted unreadable entries; reader calls: {outcomes['read']} read a run, "
          f"{outcomes['refused']} refused with a one-line LogError; wall {wall:.0f} s on {a.workers} workers; "
          f"slowest input {slowest[1]} ({slowest[0]:.1f} s: {slowest[2]})")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
