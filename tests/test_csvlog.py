"""CSV/TSV logs → Run: layouts, column roles, NaN kept as evidence, and one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.errors import LogError
from traindoctor.logs import load
from traindoctor.logs.csvlog import assign_columns, read_csv


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and msg.strip() == msg
    return msg


def write(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def nan_eq(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_nan=True)


# Lightning CSVLogger metrics.csv: training rows leave validation cells empty and vice versa
LIGHTNING = """\
epoch,step,lr-Adam,train_loss_step,train_loss_epoch,val_loss,val_acc
0,0,0.001,,,,
0,0,,2.30,,,
0,1,,2.10,,,
0,1,,,,1.95,0.31
0,1,,,2.20,,
1,2,0.0005,,,,
1,2,,nan,,,
1,3,,inf,,,
1,3,,,,NaN,0.10
"""


def test_lightning_layout_with_empty_cells(tmp_path):
    path = write(tmp_path, "metrics.csv", LIGHTNING)
    run = read_csv(path)
    assert list(run.series) == ["loss", "val_loss", "val_accuracy", "lr", "epoch"]
    loss = run.series["loss"]
    assert loss.steps.tolist() == [0, 1, 2, 3]
    assert nan_eq(loss.values, [2.30, 2.10, math.nan, math.inf])
    assert run.series["val_loss"].steps.tolist() == [1, 3]
    assert nan_eq(run.series["val_loss"].values, [1.95, math.nan])
    assert run.series["val_accuracy"].values.tolist() == [0.31, 0.10]
    assert run.series["lr"].steps.tolist() == [0, 2]
    assert run.series["lr"].values.tolist() == [0.001, 0.0005]
    assert run.series["epoch"].steps.tolist() == [0, 1, 2, 3]
    assert run.series["epoch"].values.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert run.meta == {
        "source": str(path),
        "format": "csv",
        "columns": {
            "loss": "train_loss_step",
            "val_loss": "val_loss",
            "val_accuracy": "val_acc",
            "lr": "lr-Adam",
            "step": "step",
            "epoch": "epoch",
        },
        "step_unit": "step",
        "lr": 0.001,
    }


def test_literal_nan_loss_is_kept_and_empty_is_dropped(tmp_path):
    path = write(
        tmp_path, "log.csv", "step,loss,grad_norm\n0,1.5,2\n1,,3\n2,nan,\n3,-inf,Infinity\n4,NaN,-Infinity\n"
    )
    run = read_csv(path)
    assert run.series["loss"].steps.tolist() == [0, 2, 3, 4]
    assert nan_eq(run.series["loss"].values, [1.5, math.nan, -math.inf, math.nan])
    assert run.series["grad_norm"].steps.tolist() == [0, 1, 3, 4]
    assert run.series["grad_norm"].values.tolist() == [2.0, 3.0, math.inf, -math.inf]


def test_wide_layout_and_role_aliases(tmp_path):
    path = write(
        tmp_path,
        "wide.csv",
        "global_step,train/loss,Val.Loss,train/acc,eval_accuracy,learning_rate,Gradient-Norm,other\n"
        "10,0.9,1.0,0.5,0.4,0.1,3.5,x\n"
        "20,0.8,0.95,0.6,0.45,0.05,2.5,y\n",
    )
    run = read_csv(path)
    assert run.meta["columns"] == {
        "loss": "train/loss",
        "val_loss": "Val.Loss",
        "accuracy": "train/acc",
        "val_accuracy": "eval_accuracy",
        "lr": "learning_rate",
        "grad_norm": "Gradient-Norm",
        "step": "global_step",
    }
    assert run.series["loss"].steps.tolist() == [10, 20]
    assert run.series["loss"].values.tolist() == [0.9, 0.8]
    assert run.series["val_loss"].values.tolist() == [1.0, 0.95]
    assert run.series["accuracy"].values.tolist() == [0.5, 0.6]
    assert run.series["val_accuracy"].values.tolist() == [0.4, 0.45]
    assert run.series["grad_norm"].values.tolist() == [3.5, 2.5]
    assert run.meta["lr"] == 0.1
    assert "other" not in run.series


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["loss", "train_loss_step"], {"loss": "loss"}),
        (["train_loss_epoch", "train_loss_step"], {"loss": "train_loss_step"}),
        (["loss_epoch", "loss_step"], {"loss": "loss_step"}),
        (["training_loss", "trn_loss"], {"loss": "training_loss"}),
        (["loss", "val_loss_step", "val_loss_epoch"], {"loss": "loss", "val_loss": "val_loss_epoch"}),
        (["loss", "test_loss"], {"loss": "loss", "val_loss": "test_loss"}),
        (["loss", "test_loss", "valid_loss"], {"loss": "loss", "val_loss": "valid_loss"}),
        (["loss", "lr-SGD", "lr"], {"loss": "loss", "lr": "lr"}),
        (["iter", "loss", "epoch"], {"step": "iter", "loss": "loss", "epoch": "epoch"}),
        (["Iteration", "LOSS"], {"step": "Iteration", "loss": "LOSS"}),
        (["a", "b"], {}),
    ],
)
def test_column_roles(columns, expected):
    assert assign_columns(columns) == expected


def test_epoch_index_when_no_step(tmp_path):
    path = write(tmp_path, "e.csv", "epoch,loss,val_loss\n0,2.0,2.1\n1,1.5,1.7\n2,1.2,1.6\n")
    run = read_csv(path)
    assert run.meta["step_unit"] == "epoch"
    assert run.series["loss"].steps.tolist() == [0, 1, 2]
    assert "epoch" not in run.series
    assert run.meta["columns"] == {"loss": "loss", "val_loss": "val_loss", "epoch": "epoch"}


def test_row_index_when_no_step_or_epoch(tmp_path):
    path = write(tmp_path, "r.csv", "loss,lr\n3,0.1\n2,0.1\n1,0.1\n")
    run = read_csv(path)
    assert run.meta["step_unit"] == "row"
    assert run.series["loss"].steps.tolist() == [0, 1, 2]
    assert run.series["loss"].values.tolist() == [3.0, 2.0, 1.0]


def test_steps_going_backwards_are_sorted_stably(tmp_path):
    path = write(tmp_path, "b.csv", "step,loss\n5,0.5\n3,0.3\n5,0.55\n4,0.4\n")
    s = read_csv(path).series["loss"]
    assert s.steps.tolist() == [3, 4, 5, 5]
    assert s.values.tolist() == [0.3, 0.4, 0.5, 0.55]


def test_rows_without_step_are_left_out(tmp_path):
    path = write(tmp_path, "s.csv", "step,loss\n0,1.0\n\n,9.0\n2,0.5\n\n")
    s = read_csv(path).series["loss"]
    assert s.steps.tolist() == [0, 2]
    assert s.values.tolist() == [1.0, 0.5]


def test_tsv_semicolon_bom_latin1(tmp_path):
    tsv = write(tmp_path, "log.tsv", "step\tloss\tval_loss\n0\t1.0\t\n1\tnan\t2.0\n")
    run = read_csv(tsv)
    assert run.meta["format"] == "tsv"
    assert nan_eq(run.series["loss"].values, [1.0, math.nan])
    assert run.series["val_loss"].steps.tolist() == [1]

    semi = write(tmp_path, "semi.csv", "step;loss;lr\n0;0,5;0,001\n1;0,25;0,001\n")
    run = read_csv(semi)
    assert run.meta["format"] == "csv"
    assert run.series["loss"].values.tolist() == [0.5, 0.25]
    assert run.meta["lr"] == 0.001

    bom = write(tmp_path, "bom.csv", "\ufeffstep,loss\n0,1.25\n")
    run = read_csv(bom)
    assert run.meta["columns"] == {"loss": "loss", "step": "step"}
    assert run.series["loss"].values.tolist() == [1.25]

    latin = write(tmp_path, "latin.csv", "step,loss,d\u00e9j\u00e0\n0,1.0,x\n", encoding="latin-1")
    assert read_csv(latin).series["loss"].values.tolist() == [1.0]


def test_spaces_after_separators(tmp_path):
    path = write(tmp_path, "sp.csv", "step, loss, lr\n0, 1.5, 0.1\n1, nan, 0.1\n")
    run = read_csv(path)
    assert run.meta["columns"] == {"loss": "loss", "lr": "lr", "step": "step"}
    assert nan_eq(run.series["loss"].values, [1.5, math.nan])


def test_overrides(tmp_path):
    path = write(tmp_path, "o.csv", "it,objective,my_lr,loss\n0,5.0,0.1,9\n1,4.0,0.1,9\n")
    run = read_csv(path, overrides={"loss": "objective", "lr": "my_lr", "step": "it"})
    assert run.series["loss"].values.tolist() == [5.0, 4.0]
    assert run.meta["columns"] == {"loss": "objective", "lr": "my_lr", "step": "it"}
    assert run.meta["lr"] == 0.1
    # the column named loss was not taken for another role
    assert [s.values.tolist() for s in run.series.values()] == [[5.0, 4.0], [0.1, 0.1]]
    # case-insensitive when unambiguous
    assert read_csv(path, overrides={"loss": "OBJECTIVE"}).meta["columns"]["loss"] == "objective"


def test_override_errors(tmp_path):
    path = write(tmp_path, "o.csv", "step,objective\n0,5.0\n")
    with pytest.raises(LogError) as ei:
        read_csv(path, overrides={"loss": "nope"})
    assert one_line(ei.value) == (
        f"{path}: no column 'nope' for --metric loss=nope; columns are: step, objective"
    )
    with pytest.raises(LogError) as ei:
        read_csv(path, overrides={"losss": "objective"})
    msg = one_line(ei.value)
    assert msg.startswith(
        f"{path}: unknown metric role 'losss' in --metric losss=objective; roles are: loss, "
    )
    assert msg.endswith("columns are: step, objective")


def test_non_number_cell_names_line_and_column(tmp_path):
    rows = "".join(f"{i},{1.0 / (i + 1)}\n" for i in range(15))
    path = write(tmp_path, "metrics.csv", "step,train_loss\n" + rows + "15,abc\n16,0.1\n")
    with pytest.raises(LogError) as ei:
        read_csv(path)
    assert one_line(ei.value) == f"{path}:17: column 'train_loss' holds 'abc', expected a number"


def test_blank_lines_above_header_keep_line_numbers(tmp_path):
    path = write(tmp_path, "lead.csv", "\n\nstep,loss\n0,1\n1,oops\n")
    with pytest.raises(LogError) as ei:
        read_csv(path)
    assert one_line(ei.value) == f"{path}:5: column 'loss' holds 'oops', expected a number"
    ragged = write(tmp_path, "ragged.csv", "\nstep,loss\n0,1\n1,2,3\n")
    with pytest.raises(LogError) as ei:
        read_csv(ragged)
    assert one_line(ei.value) == f"{ragged}:4: row has 3 fields, the header has 2"
    ok = write(tmp_path, "ok.csv", "\n \nstep,loss\n0,1\n")
    assert read_csv(ok).series["loss"].values.tolist() == [1.0]


def test_non_whole_step_is_an_error(tmp_path):
    path = write(tmp_path, "s.csv", "step,loss\n0,1\n1.5,2\n")
    with pytest.raises(LogError) as ei:
        read_csv(path)
    assert (
        one_line(ei.value) == f"{path}:3: column 'step' holds '1.5', expected a whole number (the step index)"
    )


def test_ragged_row_is_an_error(tmp_path):
    path = write(tmp_path, "r.csv", "step,loss\n0,1\n1,2,3\n")
    with pytest.raises(LogError) as ei:
        read_csv(path)
    assert one_line(ei.value) == f"{path}:3: row has 3 fields, the header has 2"


def test_file_errors(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(LogError) as ei:
        read_csv(missing)
    assert one_line(ei.value) == f"{missing}: no such file"
    with pytest.raises(LogError) as ei:
        read_csv(tmp_path)
    assert one_line(ei.value) == f"{tmp_path}: is a directory, expected a CSV log file"
    empty = write(tmp_path, "empty.csv", "")
    with pytest.raises(LogError) as ei:
        read_csv(empty)
    assert one_line(ei.value) == f"{empty}: is empty"
    blank = write(tmp_path, "blank.csv", "\n\n  \n")
    with pytest.raises(LogError) as ei:
        read_csv(blank)
    assert one_line(ei.value) == f"{blank}: is empty"
    header = write(tmp_path, "header.csv", "step,loss\n")
    with pytest.raises(LogError) as ei:
        read_csv(header)
    assert one_line(ei.value) == f"{header}: has no data rows (header only: step, loss)"
    noloss = write(tmp_path, "noloss.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(LogError) as ei:
        read_csv(noloss)
    assert one_line(ei.value) == (
        f"{noloss}: no training-loss column found; columns are: a, b, c; name one with --metric loss=COLUMN"
    )
    unlogged = write(tmp_path, "unlogged.csv", "step,loss,val_loss\n0,,1\n")
    with pytest.raises(LogError) as ei:
        read_csv(unlogged)
    assert one_line(ei.value) == f"{unlogged}: training-loss column 'loss' has no values"


def test_binary_files(tmp_path):
    nul = tmp_path / "x.csv"
    nul.write_bytes(b"step,loss\n0,1\x00\x00\x00\n")
    with pytest.raises(LogError) as ei:
        read_csv(nul)
    assert one_line(ei.value) == f"{nul}: is a binary file, not a CSV log"
    noise = tmp_path / "noise.csv"
    noise.write_bytes(bytes(range(1, 32)) * 50)
    with pytest.raises(LogError) as ei:
        read_csv(noise)
    assert one_line(ei.value) == f"{noise}: is a binary file, not a CSV log"


UNKNOWN = (
    "unknown log format (expected a traindoctor run store, CSV/TSV, JSON Lines, a TensorBoard event file, "
    "a Hugging Face trainer_state.json or an MLflow run)"
)


def test_load_dispatch(tmp_path):
    csv = write(tmp_path, "log.txt", "step,loss\n0,1\n")
    run = load(csv)
    assert run.meta["source"] == str(csv) and run.meta["format"] == "csv"
    noext = write(tmp_path, "log", "step\tloss\n0\t1\n")
    assert load(noext).meta["format"] == "tsv"
    assert load(noext, overrides={"loss": "loss"}).series["loss"].values.tolist() == [1.0]

    with pytest.raises(LogError) as ei:
        load(tmp_path / "nope.csv")
    assert one_line(ei.value) == f"{tmp_path / 'nope.csv'}: no such file"
    with pytest.raises(LogError) as ei:
        load(tmp_path)
    msg = one_line(ei.value)
    assert msg == f"{tmp_path}: is a directory that holds no training log; name one log, or diagnose the directory"
    text = write(tmp_path, "train.txt", "epoch 1 loss 0.5\nepoch 2 loss 0.4\n")
    with pytest.raises(LogError) as ei:
        load(text)
    assert one_line(ei.value) == f"{text}: {UNKNOWN}"
    write(tmp_path, "rel.csv", "loss\n1\n")
    assert load(f"{tmp_path}/./rel.csv").meta["source"] == f"{tmp_path}/./rel.csv"
    other = write(tmp_path, "notes.log", "just some words\nno separators\n")
    with pytest.raises(LogError) as ei:
        load(other)
    assert one_line(ei.value) == f"{other}: {UNKNOWN}"
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x80\x02\x00\x01" * 100)
    with pytest.raises(LogError) as ei:
        load(binary)
    assert one_line(ei.value) == f"{binary}: {UNKNOWN}"


def test_large_nan_column_stays_vectorised(tmp_path):
    n = 20_000
    loss = np.where(np.arange(n) >= n // 2, "nan", "0.5")
    body = "\n".join(f"{i},{v}," + ("1.0" if i % 100 == 0 else "") for i, v in enumerate(loss))
    path = write(tmp_path, "big.csv", "step,loss,val_loss\n" + body + "\n")
    run = read_csv(path)
    assert len(run.series["loss"]) == n
    assert np.isnan(run.series["loss"].values[n // 2 :]).all()
    assert (run.series["loss"].values[: n // 2] == 0.5).all()
    assert run.series["val_loss"].steps.tolist() == list(range(0, n, 100))
