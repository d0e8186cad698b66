"""The same faulty run, written by every library traindoctor reads, gives the same findings.

tests/fixtures/logs/lr_too_high/ holds the per-step losses of the built-in example ``lr-too-high``
logged through torch's SummaryWriter, a real Hugging Face Trainer, a real Lightning run with
CSVLogger, a real MLflow run, json, csv and traindoctor's RunStore (see
tests/fixtures/make_log_fixtures.py for how, and the library versions). The committed files are
always tested; regenerating them runs only where the library is installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from traindoctor.cli import main
from traindoctor.diagnosis import diagnose
from traindoctor.logs import find_runs, load

FIX = Path(__file__).parent / "fixtures"
RUN = FIX / "logs" / "lr_too_high"
LOSSES = json.loads((RUN / "losses.json").read_text())["losses"]
MLFLOW_RUN = next((RUN / "mlruns").glob("*/*/metrics")).parent

FIXTURES = {
    "tensorboard": (RUN / "tensorboard", {"loss": "train/loss", "lr": "train/lr"}),
    "huggingface": (
        RUN / "huggingface" / "trainer_state.json",
        {"loss": "loss", "lr": "learning_rate", "grad_norm": "grad_norm", "epoch": "epoch"},
    ),
    "lightning-csv": (RUN / "lightning_logs" / "version_0", {"loss": "train_loss", "lr": "lr-SGD", "step": "step", "epoch": "epoch"}),
    "mlflow": (MLFLOW_RUN, {"loss": "loss", "lr": "learning_rate"}),
    "jsonl": (RUN / "log.jsonl", {"loss": "loss", "lr": "lr"}),
    "tsv": (RUN / "log.tsv", {"loss": "train_loss", "lr": "learning_rate", "step": "step"}),
    "store": (RUN / "store.db", None),
}

# lr-too-high: the loss grows ~40x a step from the first logged step, is NaN from the 27th on
EXPECTED = [("L002", "error", 1, 25), ("L001", "error", 26, 224)]


def findings(path: Path) -> tuple[list[tuple], list[str], object]:
    run = load(path)
    first = int(run.series["loss"].steps[0])  # Lightning numbers the first batch 0, the others 1
    d = diagnose(run)
    got = [(f.code, f.severity, f.step - first, f.step_end - first) for f in d.findings]
    return got, [c.id for c in d.causes], run


@pytest.mark.parametrize("fmt", list(FIXTURES))
def test_every_format_gives_the_same_findings(fmt):
    path, columns = FIXTURES[fmt]
    got, causes, run = findings(path)
    assert got == EXPECTED
    assert causes[0] == "lr-too-high"
    assert run.meta["format"] == fmt
    if columns is not None:
        assert run.meta["columns"] == columns
    assert run.meta["lr"] == 10.0
    loss = run.series["loss"]
    assert len(loss) == len(LOSSES) == 225
    # the values are the example's: float32 where the format stores float32 (TensorBoard)
    tol = 1e-6 if fmt == "tensorboard" else 0
    assert np.allclose(loss.values, LOSSES, rtol=tol, atol=0, equal_nan=True)


def test_directory_of_all_formats(tmp_path, capsys):
    found = find_runs(RUN)
    assert sorted(r.format for r in found.runs) == sorted(
        ["tensorboard", "huggingface", "lightning-csv", "mlflow", "jsonl", "csv", "store"]
    )
    out = tmp_path / "all.json"
    assert main(["diagnose", str(FIX / "logs"), "--json", str(out)]) == 0
    assert main(["diagnose", str(FIX / "logs"), "--fail-on", "warning"]) == 1
    assert main(["diagnose", str(FIX / "logs"), "--fail-on", "error"]) == 1
    text = capsys.readouterr().out
    assert "7 runs" in text and "7 error" in text
    # the confidence comes from the calibrated model: high, whatever its exact fit
    confs = [float(c) for c in re.findall(r"lr-too-high \((\d\.\d\d)\)", text)]
    assert len(confs) >= 7 and min(confs) >= 0.8
    doc = json.loads(out.read_text())
    assert doc["schema"] == "traindoctor-runs/1" and doc["worst_severity"] == "error"
    assert doc["errors"] == [] and doc["skipped"] == []
    assert len(doc["runs"]) == 7
    for r in doc["runs"]:
        assert r["schema"] == "traindoctor/1" and r["path"].startswith("lr_too_high/")
        assert [f["code"] for f in r["findings"]] == ["L002", "L001"]
        assert r["causes"][0]["id"] == "lr-too-high"


def test_fixtures_are_small():
    total = sum(f.stat().st_size for f in (FIX / "logs").rglob("*") if f.is_file())
    assert total < 1_000_000, total


# ---- regenerate with the real libraries, where installed ------------------------------------------


def _generator():
    spec = importlib.util.spec_from_file_location("make_log_fixtures", FIX / "make_log_fixtures.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_log_fixtures"] = mod
    spec.loader.exec_module(mod)
    return mod


REGENERATE = {
    "tensorboard": (("torch", "tensorboard"), lambda d: d / "tensorboard"),
    "huggingface": (("transformers", "accelerate"), lambda d: d / "huggingface" / "trainer_state.json"),
    "lightning": (("lightning",), lambda d: d / "lightning_logs" / "version_0"),
    "mlflow": (("mlflow",), lambda d: next((d / "mlruns").glob("*/*/metrics")).parent),
    "jsonl": ((), lambda d: d / "log.jsonl"),
    "tsv": ((), lambda d: d / "log.tsv"),
    "store": ((), lambda d: d / "store.db"),
}


@pytest.mark.parametrize("writer", list(REGENERATE))
def test_regenerated_with_the_real_library_matches(writer, tmp_path):
    needs, where = REGENERATE[writer]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed: the committed {writer} fixture is tested above; "
            "see tests/fixtures/make_log_fixtures.py to regenerate it"
        )
    gen = _generator()
    assert gen.main(["--out", str(tmp_path), "--only", writer]) == 0
    got, causes, run = findings(where(tmp_path))
    assert got == EXPECTED and causes[0] == "lr-too-high"
    assert np.allclose(run.series["loss"].values, LOSSES, rtol=1e-6, equal_nan=True)
    assert not any(math.isinf(v) for v in run.series["loss"].values[:26])
