"""The command line: one-line errors with non-zero exit codes, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys

from traindoctor.cli import main


def cli(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "traindoctor", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


def one_line_error(capsys, argv, *expect):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for e in expect:
        assert e in lines[0], lines[0]


def test_missing_file(capsys, tmp_path):
    one_line_error(capsys, ["diagnose", str(tmp_path / "nope.csv")], "nope.csv", "no such file")


def test_empty_csv(capsys, tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    one_line_error(capsys, ["diagnose", str(p)], "empty.csv", "empty")


def test_csv_without_loss_column(capsys, tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("step,accuracy\n0,0.1\n1,0.2\n")
    one_line_error(capsys, ["diagnose", str(p)], "m.csv", "loss")


def test_binary_file(capsys, tmp_path):
    p = tmp_path / "blob.csv"
    p.write_bytes(bytes(range(256)) * 10)
    one_line_error(capsys, ["diagnose", str(p)], "blob.csv", "binary")


def test_script_that_does_not_exist(capsys, tmp_path):
    one_line_error(capsys, ["run", str(tmp_path / "train.py")], "train.py", "no such script")


def test_unknown_explain_key(capsys):
    one_line_error(capsys, ["explain", "Z999"], "Z999")


def test_bad_metric_override(capsys, tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("step,loss\n0,1\n")
    one_line_error(capsys, ["diagnose", str(p), "--metric", "loss"], "ROLE=NAME")


def test_explain_rule_and_cause(capsys):
    assert main(["explain", "L008"]) == 0
    out = capsys.readouterr().out
    assert "87.3365" in out and "What it does" in out
    assert main(["explain", "lr-too-high"]) == 0
    assert "lower LR" in capsys.readouterr().out
    assert main(["explain", "--list"]) == 0
    out = capsys.readouterr().out
    assert "* L001 nonfinite-loss" in out and "* V001 overfitting" in out and "    lr-too-high" in out


def test_diagnose_csv_json(tmp_path, capsys):
    import math

    rows = ["step,loss,val_loss"]
    for i in range(60):
        rows.append(f"{i},{2.3 * math.exp(-i / 10) + 0.1 if i < 50 else 'nan'},")
    p = tmp_path / "log.csv"
    p.write_text("\n".join(rows) + "\n")
    out_json = tmp_path / "d.json"
    assert main(["diagnose", str(p), "--json", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert doc["schema"] == "traindoctor/1"
    assert doc["findings"][0]["code"] == "L001" and doc["findings"][0]["step"] == 50
    assert doc["causes"][0]["id"] in {"lr-too-high", "numerically-unstable-loss", "nonfinite-data"}


def test_json_to_stdout_is_only_json(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss\n" + "".join(f"{i},{2.0 - i / 100}\n" for i in range(100)))
    code, out, err = cli("diagnose", str(p), "--json", "-")
    assert code == 0
    assert json.loads(out)["healthy"] is True


def test_help_mentions_every_verb():
    code, out, _ = cli("--help")
    assert code == 0
    for verb in ("run", "diagnose", "explain", "demo"):
        assert verb in out
