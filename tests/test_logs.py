"""Log readers other than CSV: JSON Lines, TensorBoard, Hugging Face, MLflow, Lightning directories,
directory discovery, unfinished logs, and what cannot be judged."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from traindoctor.diagnosis import diagnose
from traindoctor.errors import LogError
from traindoctor.logs import NoTrainingLoss, detect_format, find_runs, load
from traindoctor.logs.roles import assign_columns
from traindoctor.logs.tensorboard import masked_crc32c, read_event_file

FIX = Path(__file__).parent / "fixtures" / "logs" / "lr_too_high"


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and msg.strip() == msg
    return msg


def nan_eq(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_nan=True)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


# ---- a minimal TFRecord writer for exact bytes (the real SummaryWriter is used below too) -------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def scalar_event(tag: str, step: int, value: float) -> bytes:
    tb = tag.encode()
    val = b"\x0a" + bytes([len(tb)]) + tb + b"\x15" + struct.pack("<f", value)
    summ = b"\x0a" + bytes([len(val)]) + val
    return b"\x09" + struct.pack("<d", 1.7e9) + (b"\x10" + _varint(step) if step else b"") + b"\x2a" + bytes([len(summ)]) + summ


def record(payload: bytes) -> bytes:
    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", masked_crc32c(head)) + payload + struct.pack("<I", masked_crc32c(payload))


VERSION = record(b"\x09" + struct.pack("<d", 1.7e9) + b"\x1a\x0dbrain.Event:2")


def tb_file(points: list[tuple[str, int, float]]) -> bytes:
    return VERSION + b"".join(record(scalar_event(t, s, v)) for t, s, v in points)


# ---- roles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names, expected",
    [
        (["Loss/train", "Loss/test", "Accuracy/train"], {"loss": "Loss/train", "val_loss": "Loss/test", "accuracy": "Accuracy/train"}),
        (["train/loss", "train/learning_rate", "train/grad_norm", "eval/loss", "train/epoch"],
         {"loss": "train/loss", "val_loss": "eval/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm",
          "epoch": "train/epoch"}),
        (["_step", "loss", "val/acc"], {"loss": "loss", "val_accuracy": "val/acc", "step": "_step"}),
        (["loss", "train_loss", "eval_loss"], {"loss": "loss", "val_loss": "eval_loss"}),
    ],
)
def test_roles_across_formats(names, expected):
    assert assign_columns(names) == expected


def test_roles_million_names_fast():
    import time

    names = [f"c{i}" for i in range(1_000_000)] + ["train/loss"]
    t = time.perf_counter()
    assert assign_columns(names) == {"loss": "train/loss"}
    assert time.perf_counter() - t < 10


# ---- JSON Lines ----------------------------------------------------------------------------------


def test_jsonl_wide_nested_nan_and_order(tmp_path):
    lines = [
        {"step": 0, "train": {"loss": 2.0}, "lr": 0.1, "time": "12:00"},
        {"step": 2, "train": {"loss": "nan"}, "lr": 0.1},
        {"step": 1, "train": {"loss": 1.5}, "lr": None},
        {"step": 3, "train": {"loss": float("inf")}, "val_loss": 1.0},
        {"step": 3, "train": {"loss": 0.5}},
    ]
    p = write(tmp_path, "log.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    run = load(p)
    assert run.meta["format"] == "jsonl" and run.meta["step_unit"] == "step"
    assert run.meta["columns"] == {"loss": "train/loss", "val_loss": "val_loss", "lr": "lr"}
    loss = run.series["loss"]
    assert loss.steps.tolist() == [0, 1, 2, 3, 3]  # sorted, duplicates kept in log order
    assert nan_eq(loss.values, [2.0, 1.5, math.nan, math.inf, 0.5])
    assert run.series["lr"].steps.tolist() == [0, 2]  # null: not logged
    assert run.meta["lr"] == 0.1


def test_jsonl_long_layout_and_record_steps(tmp_path):
    p = write(tmp_path, "m.ndjson", "".join(
        json.dumps({"name": n, "value": v, "step": s}) + "\n"
        for s, (n, v) in enumerate([("loss", 1.0), ("lr", 0.1), ("loss", 0.9), ("val_loss", 1.2)])
    ))
    run = load(p)
    assert run.series["loss"].steps.tolist() == [0, 2] and run.series["val_loss"].values.tolist() == [1.2]
    q = write(tmp_path, "nostep.jsonl", '{"loss": 3}\n{"loss": 2}\n{"loss": 1}\n')
    run = load(q)
    assert run.meta["step_unit"] == "record" and run.series["loss"].steps.tolist() == [0, 1, 2]


def test_jsonl_errors_name_the_line(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"step": 0, "loss": 1}\n{"step": 1, "loss": "abc"}\n')
    with pytest.raises(LogError) as ei:
        load(p)
    assert one_line(ei.value) == f"{p}:2: 'loss' is 'abc', expected a number"
    p = write(tmp_path, "b.jsonl", '{"step": 0, "loss": true}\n')
    with pytest.raises(LogError) as ei:
        load(p)
    assert one_line(ei.value) == f"{p}:1: 'loss' is true, expected a number"
    p = write(tmp_path, "c.jsonl", '{"step": 0, "loss": 1}\n{"step": 1, "loss": \n{"step": 2, "loss": 1}\n')
    with pytest.raises(LogError) as ei:
        load(p)
    assert one_line(ei.value).startswith(f"{p}:2: is not valid JSON")
    p = write(tmp_path, "d.jsonl", '{"step": 0.5, "loss": 1}\n')
    with pytest.raises(LogError) as ei:
        load(p)
    assert one_line(ei.value) == f"{p}:1: 'step' is 0.5, expected a whole number (the step)"
    p = write(tmp_path, "e.jsonl", b'{"step": 0, "loss": 1}\n{"x": "\xff"}\n')
    with pytest.raises(LogError) as ei:
        load(p)
    assert one_line(ei.value).startswith(f"{p}:2: byte 30 (0xff) is not UTF-8")
    p = write(tmp_path, "f.jsonl", '{"step": 0, "accuracy": 1}\n')
    with pytest.raises(NoTrainingLoss) as ei:
        load(p)
    assert one_line(ei.value) == (
        f"{p}: no training-loss key found; keys are: step, accuracy; name one with --metric loss=NAME"
    )
    run = load(p, overrides={"loss": "accuracy"})
    assert run.meta["columns"] == {"loss": "accuracy"}


def test_jsonl_unfinished_last_line_is_left_out_with_a_note(tmp_path):
    p = write(tmp_path, "live.jsonl", '{"step": 0, "loss": 1}\n{"step": 1, "loss": 0.9}\n{"step": 2, "lo')
    run = load(p)
    assert run.series["loss"].steps.tolist() == [0, 1]
    assert run.meta["notes"] == [
        "the last line (3) is unfinished (no line end, not yet valid JSON): read up to line 2; "
        "the log may still be being written"
    ]
    assert diagnose(run).notes[0].startswith("the last line (3) is unfinished")


def test_json_array_of_records(tmp_path):
    p = write(tmp_path, "log.json", json.dumps([{"epoch": e, "loss": 1 / (e + 1)} for e in range(5)]))
    run = load(p)
    assert run.meta["format"] == "json" and run.meta["step_unit"] == "epoch"
    assert run.series["loss"].steps.tolist() == [0, 1, 2, 3, 4]


# ---- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_matches_tensorboards_own_reader(tmp_path):
    """Written by torch's SummaryWriter (scalars old and new style, a histogram, text, a negative and a
    huge step): every scalar equals what tensorboard's EventFileLoader reads."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "run"))
    for i in range(200):
        w.add_scalar("train/loss", 2.3 * math.exp(-i / 50) if i < 150 else math.nan, i)
        w.add_scalar("train/lr", 0.1 if i < 100 else math.inf, i)
        if i % 50 == 0:
            w.add_scalar("val/loss", 2.0 - i / 100, i)
            w.add_histogram("h", np.arange(10), i)
            w.add_scalar("new", 3.0 + i, i, new_style=True)
            w.add_text("t", "hello", i)
    w.add_scalar("big", 1.0, 2**40)
    w.add_scalar("neg", 1.0, -5)
    w.close()
    (f,) = (tmp_path / "run").glob("events.out.tfevents.*")
    ref: dict[str, list[tuple[int, float]]] = {}
    for ev in EventFileLoader(str(f)).Load():
        for v in ev.summary.value:
            if v.HasField("tensor") and v.metadata.plugin_data.plugin_name in ("scalars", ""):
                arr = tensor_util.make_ndarray(v.tensor)
                if arr.size == 1 and arr.dtype.kind == "f":
                    ref.setdefault(v.tag, []).append((ev.step, float(arr.reshape(-1)[0])))
    series, notes, _ = read_event_file(f)
    assert list(series) == list(ref) == ["train/loss", "train/lr", "val/loss", "new", "big", "neg"]
    for tag, pts in ref.items():
        assert series[tag][0].tolist() == [s for s, _ in pts]
        assert nan_eq(series[tag][1], [v for _, v in pts])
    assert notes == []
    run = load(tmp_path / "run")
    assert run.meta["format"] == "tensorboard"
    assert run.meta["columns"] == {"loss": "train/loss", "val_loss": "val/loss", "lr": "train/lr"}


def test_tensorboard_unfinished_record_and_every_cut(tmp_path):
    data = tb_file([("loss", s, 1.0 / (s + 1)) for s in range(30)])
    whole = len(VERSION)
    for cut in range(len(data) + 1):
        p = write(tmp_path, f"cut/events.out.tfevents.{cut}", data[:cut])
        try:
            run = load(p)
        except LogError as e:
            msg = one_line(e)
            assert cut <= whole + len(record(scalar_event("loss", 0, 1.0))), (cut, msg)
            assert "traindoctor bug" not in msg
            continue
        n = len(run.series["loss"])
        if cut == len(data):
            assert n == 30 and "notes" not in run.meta
        elif "notes" in run.meta:
            assert "is unfinished" in run.meta["notes"][0] and "may still be being written" in run.meta["notes"][0]


def test_tensorboard_corruption_names_the_record(tmp_path):
    recs = [record(scalar_event("loss", s, 1.0)) for s in range(10)]
    data = bytearray(VERSION + b"".join(recs))
    start = len(VERSION) + sum(len(r) for r in recs[:3])  # record 4 (record 0 is the file version)
    data[start + 20] ^= 0x40
    p = write(tmp_path, "events.out.tfevents.bad", bytes(data))
    with pytest.raises(LogError) as ei:
        load(p)
    assert one_line(ei.value) == (
        f"{p}: record 4 (byte {start}) fails its data checksum: the file is corrupt there "
        "(1 record(s) in all); expected CRC32C-checked TFRecords"
    )
    p = write(tmp_path, "events.out.tfevents.noise", os.urandom(64) + b"x" * 100)
    with pytest.raises(LogError) as ei:
        load(p)
    assert "not a TensorBoard event file" in one_line(ei.value)


def test_tensorboard_restarted_run_directory(tmp_path):
    write(tmp_path, "run/events.out.tfevents.1", tb_file([("loss", s, 2.0) for s in range(10)]))
    write(tmp_path, "run/events.out.tfevents.2", tb_file([("loss", s, 1.0) for s in range(6, 12)]))
    run = load(tmp_path / "run")
    assert run.series["loss"].steps.tolist() == list(range(12))
    assert run.series["loss"].values.tolist() == [2.0] * 6 + [1.0] * 6
    assert run.meta["notes"] == [
        "events.out.tfevents.2 logs 'loss' again from step 6: its points replace 4 earlier ones (a restarted run)"
    ]


def test_tensorboard_fast_and_protobuf_paths_agree_on_many_tags(tmp_path):
    """More than 64 tags and tags longer than 16 bytes take the other grouping paths."""
    tags = [f"layer{i:03d}/grad_norm/weight_and_bias" for i in range(70)] + ["loss"]
    pts = [(t, s, float(s + j)) for s in range(5) for j, t in enumerate(tags)]
    series, _, _ = read_event_file(write(tmp_path, "events.out.tfevents.x", tb_file(pts)))
    assert list(series) == tags
    for j, t in enumerate(tags):
        assert series[t][1].tolist() == [float(s + j) for s in range(5)]


# ---- Hugging Face --------------------------------------------------------------------------------


HF_STATE = {
    "global_step": 30,
    "train_batch_size": 8,
    "log_history": [
        {"epoch": 0.33, "grad_norm": 1.5, "learning_rate": 5e-5, "loss": 2.3, "step": 10},
        {"epoch": 0.67, "grad_norm": 1.2, "learning_rate": 4e-5, "loss": 1.9, "step": 20},
        {"epoch": 1.0, "eval_loss": 1.7, "eval_accuracy": 0.4, "eval_runtime": 1.0, "step": 30},
        {"epoch": 1.0, "grad_norm": 1.1, "learning_rate": 3e-5, "loss": 1.6, "step": 30},
        {"epoch": 1.0, "step": 30, "total_flos": 1.0, "train_loss": 1.93, "train_runtime": 9.0},
    ],
}


def test_trainer_state(tmp_path):
    p = write(tmp_path, "out/checkpoint-30/trainer_state.json", json.dumps(HF_STATE, indent=2))
    run = load(p)
    assert run.meta["format"] == "huggingface" and run.meta["batch_size"] == 8
    assert run.meta["columns"] == {
        "loss": "loss", "val_loss": "eval_loss", "val_accuracy": "eval_accuracy", "lr": "learning_rate",
        "grad_norm": "grad_norm", "epoch": "epoch",
    }
    assert run.series["loss"].steps.tolist() == [10, 20, 30]  # the train_loss summary is not a point
    assert run.series["val_loss"].values.tolist() == [1.7]
    assert load(tmp_path / "out" / "checkpoint-30").series["loss"].values.tolist() == [2.3, 1.9, 1.6]


def test_trainer_state_cut_short_keeps_complete_records(tmp_path):
    text = json.dumps(HF_STATE, indent=2)
    cut = text.index('"eval_loss"') + 5
    p = write(tmp_path, "trainer_state.json", text[:cut])
    run = load(p)
    assert run.series["loss"].steps.tolist() == [10, 20]
    assert "cut short" in run.meta["notes"][0] and "2 complete log_history records" in run.meta["notes"][0]
    bad = dict(HF_STATE, log_history=[{"step": 1, "loss": "x"}])
    p = write(tmp_path, "bad/trainer_state.json", json.dumps(bad))
    with pytest.raises(LogError) as ei:
        load(p)
    assert one_line(ei.value) == f"{p}: log_history record 0: 'loss' is 'x', expected a number"


# ---- MLflow, Lightning ---------------------------------------------------------------------------


def mlflow_run(tmp_path: Path, metrics: dict[str, str], status: int = 3) -> Path:
    d = tmp_path / "mlruns" / "1" / "abc"
    write(tmp_path, "mlruns/1/meta.yaml", "name: exp\n")
    write(tmp_path, "mlruns/1/abc/meta.yaml", f"run_name: r1\nstatus: {status}\n")
    write(tmp_path, "mlruns/1/abc/params/learning_rate", "0.01")
    for name, text in metrics.items():
        write(tmp_path, f"mlruns/1/abc/metrics/{name}", text)
    return d


def test_mlflow_run(tmp_path):
    d = mlflow_run(tmp_path, {"train/loss": "1 2.0 0\n2 nan 1\n3 inf 2\n", "val_loss": "1 1.0 0\n"})
    run = load(d)
    assert run.meta["format"] == "mlflow" and run.meta["run_name"] == "r1" and run.meta["lr"] == 0.01
    assert run.meta["columns"] == {"loss": "train/loss", "val_loss": "val_loss"}
    assert nan_eq(run.series["loss"].values, [2.0, math.nan, math.inf])
    assert detect_format(d / "metrics" / "val_loss") == "mlflow"


def test_mlflow_unfinished_and_bad_lines(tmp_path):
    d = mlflow_run(tmp_path, {"loss": "1 2.0 0\n2 1.0 1\n3 0.5"}, status=1)
    run = load(d)
    assert run.series["loss"].steps.tolist() == [0, 1]
    assert run.meta["notes"] == [
        "metric 'loss': the last line (3) is unfinished (no line end): read up to line 2; "
        "the run may still be being written",
        "MLflow marks this run RUNNING: it may still be being written (or it died without ending)",
    ]
    shutil.rmtree(tmp_path / "mlruns")
    d = mlflow_run(tmp_path, {"loss": "1 2.0 0\n2 oops 1\n"})
    with pytest.raises(LogError) as ei:
        load(d)
    assert one_line(ei.value) == f"{d / 'metrics' / 'loss'}:2: value 'oops' of metric 'loss' is not a number"


def test_lightning_version_directory(tmp_path):
    write(tmp_path, "lightning_logs/version_0/hparams.yaml", "lr: 0.05\nbatch_size: 16\n")
    write(tmp_path, "lightning_logs/version_0/metrics.csv", "epoch,step,train_loss\n0,0,1.0\n0,1,0.9\n")
    run = load(tmp_path / "lightning_logs" / "version_0")
    assert run.meta["format"] == "lightning-csv" and run.meta["lr"] == 0.05 and run.meta["batch_size"] == 16


# ---- directories ---------------------------------------------------------------------------------


def test_find_runs(tmp_path):
    write(tmp_path, "a/log.csv", "step,loss\n0,1\n")
    write(tmp_path, "a/notes.txt", "hello")
    write(tmp_path, "tb/run1/events.out.tfevents.1", tb_file([("loss", 0, 1.0)]))
    write(tmp_path, "tb/run1/events.out.tfevents.2", tb_file([("loss", 1, 1.0)]))
    write(tmp_path, "hf/checkpoint-10/trainer_state.json", json.dumps(HF_STATE))
    write(tmp_path, "hf/checkpoint-20/trainer_state.json", json.dumps(HF_STATE))
    write(tmp_path, ".venv/lib/x.csv", "step,loss\n0,1\n")
    write(tmp_path, ".hidden/y.jsonl", '{"loss": 1}\n')
    write(tmp_path, ".traindoctor/runs/z.jsonl", '{"loss": 1}\n')
    write(tmp_path, "data.db", b"SQLite format 3\x00" + b"\x00" * 100)  # damaged: an unreadable entry
    import sqlite3

    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    mlflow_run(tmp_path, {"loss": "1 1 0\n"})
    write(tmp_path, "mlruns/.trash/dead/metrics/loss", "1 1 0\n")
    found = find_runs(tmp_path)
    got = [(r.path.relative_to(tmp_path).as_posix(), r.format) for r in found.runs]
    assert got == [
        (".traindoctor/runs/z.jsonl", "jsonl"),
        ("a/log.csv", "csv"),
        ("hf/checkpoint-20/trainer_state.json", "huggingface"),
        ("mlruns/1/abc", "mlflow"),
        ("tb/run1", "tensorboard"),
    ]
    passed = [(p.relative_to(tmp_path).as_posix(), why) for p, why in found.passed_over]
    assert [(p.relative_to(tmp_path).as_posix(), fmt) for p, fmt, _ in found.unreadable] == [("data.db", "store")]
    assert "is damaged" in found.unreadable[0][2]
    assert passed == [
        ("other.db", "an SQLite file, not a traindoctor run store"),
        ("hf/checkpoint-10/trainer_state.json", f"an earlier checkpoint of {tmp_path}/hf/checkpoint-20/trainer_state.json"),
    ]
    with pytest.raises(LogError) as ei:
        load(tmp_path)
    assert one_line(ei.value) == f"{tmp_path}: is a directory that holds 5 runs; name one log, or diagnose the directory"


# ---- what cannot be judged -----------------------------------------------------------------------


def test_all_nan_single_point_no_validation_are_stated_not_judged(tmp_path):
    nan = load(write(tmp_path, "nan.csv", "step,loss\n" + "".join(f"{i},nan\n" for i in range(50))))
    d = diagnose(nan)
    assert [f.code for f in d.findings] == ["L001"]  # true: the loss is NaN; nothing else is claimed
    assert any(s.startswith("the training loss is never finite (50 points") for s in d.not_judged)
    one = diagnose(load(write(tmp_path, "one.jsonl", '{"step": 3, "loss": 2.3}\n')))
    assert one.findings == []
    assert "only 1 finite loss point: too few to judge trends (need 20)" in one.not_judged
    assert any(s.startswith("no validation metric") for s in one.not_judged)
    vnan = load(write(tmp_path, "v.csv", "step,loss,val_loss\n" + "".join(
        f"{i},{2 - i / 100},{'nan' if i % 10 == 0 else ''}\n" for i in range(100))))
    d = diagnose(vnan)
    assert "val_loss has no finite value (10 logged): the rules reading it could not judge" in d.not_judged
    assert not any(f.code.startswith("V") for f in d.findings)


# ---- the command line on files and directories ---------------------------------------------------


def cli(capsys, *argv):
    from traindoctor.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_cli_fail_on_single_file(tmp_path, capsys):
    healthy = write(tmp_path, "ok.csv", "step,loss\n" + "".join(f"{i},{2.0 - i / 100}\n" for i in range(100)))
    bad = write(tmp_path, "bad.jsonl", "".join(json.dumps({"step": i, "loss": 1.0 if i < 50 else math.nan}) + "\n" for i in range(60)))
    assert cli(capsys, "diagnose", str(healthy), "--fail-on", "warning")[0] == 0
    assert cli(capsys, "diagnose", str(bad))[0] == 0
    assert cli(capsys, "diagnose", str(bad), "--fail-on", "error")[0] == 1
    code, out, err = cli(capsys, "diagnose", str(bad), "--fail-on", "warning", "--json", "-")
    assert code == 1 and json.loads(out)["findings"][0]["code"] == "L001"
    from traindoctor.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["diagnose", str(bad), "--fail-on", "never"])
    assert ei.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_cli_directory_table_json_and_exit_codes(tmp_path, capsys):
    write(tmp_path, "runs/ok.csv", "step,loss\n" + "".join(f"{i},{2.0 - i / 100}\n" for i in range(100)))
    write(tmp_path, "runs/nan/events.out.tfevents.1", tb_file([("loss", s, 1.0 if s < 40 else math.nan) for s in range(60)]))
    write(tmp_path, "runs/data.csv", "x,y\n1,2\n")  # not a training log
    code, out, err = cli(capsys, "diagnose", str(tmp_path / "runs"), "--fail-on", "error", "--json", str(tmp_path / "o.json"))
    assert code == 1 and err == ""
    assert "nan" in out and "error: L001" in out and "healthy" in out
    assert "passed over: data.csv (not a training log: no training-loss metric)" in out
    doc = json.loads((tmp_path / "o.json").read_text())
    assert [(r["path"], r["format"], r["healthy"]) for r in doc["runs"]] == [("nan", "tensorboard", False), ("ok.csv", "csv", True)]
    assert doc["skipped"] == [{"path": "data.csv", "reason": "not a training log: no training-loss metric"}]
    assert doc["worst_severity"] == "error"
    # a log that cannot be read: a row of its own, and exit 2 (an input error), after the table
    write(tmp_path, "runs/broken.jsonl", '{"step": 0, "loss": "oops"}\n')
    code, out, err = cli(capsys, "diagnose", str(tmp_path / "runs"), "--json", "-")
    assert code == 2
    doc = json.loads(out)
    assert doc["errors"] == [{"path": "broken.jsonl", "format": "jsonl",
                              "error": f"{tmp_path}/runs/broken.jsonl:1: 'loss' is 'oops', expected a number"}]


def test_cli_directory_edge_cases(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "diagnose", str(tmp_path / "empty"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "holds no training log" in err
    write(tmp_path, "one/sub/log.csv", "step,loss\n" + "".join(f"{i},{2.0 - i / 100}\n" for i in range(100)))
    code, out, _ = cli(capsys, "diagnose", str(tmp_path / "one"))
    # the full report of the one run, then the table
    assert code == 0 and "traindoctor diagnose sub/log.csv" in out and out.count("traindoctor diagnose") == 2
    assert "1 healthy" in out
    code, out, _ = cli(capsys, "diagnose", str(tmp_path / "one"), "--metric", "loss=nope")
    assert code == 2 and "unreadable" in out
    code, out, _ = cli(capsys, "diagnose", str(tmp_path / "one"), "--metric", "loss=nope", "--json", "-")
    assert code == 2 and "no column 'nope' for --metric loss=nope" in json.loads(out)["errors"][0]["error"]


def test_json_document_of_columns(tmp_path):
    """Keras' history.history saved with json.dump(indent=...): one list per metric, one element per epoch."""
    p = write(tmp_path, "history.json", json.dumps({"loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.7, None],
                                                    "accuracy": [0.1, 0.5, 0.7]}, indent=2))
    run = load(p)
    assert run.meta["format"] == "json" and run.meta["step_unit"] == "record"
    assert run.series["loss"].values.tolist() == [2.0, 1.5, 1.2]
    assert run.series["val_loss"].steps.tolist() == [0, 1]
    q = write(tmp_path, "bad.json", json.dumps({"loss": [2.0, "x"]}, indent=1))
    with pytest.raises(LogError) as ei:
        load(q)
    assert one_line(ei.value) == f"{q}: element 1: 'loss' is 'x', expected a number"
