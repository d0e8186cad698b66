"""`traindoctor checkup SCRIPT.py` on unmodified scripts: the model, loss, optimizer and loaders are
found at the first loss, the script is stopped before its training step, the checkup runs on
what it built. What could not be found is said in the report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from traindoctor.checks.checkup import checkup_script
from traindoctor.cli import main
from traindoctor.examples import script_path

SCRIPTS = Path(__file__).parent / "scripts"


def _lines(r) -> dict[str, str]:
    return {p.probe: p.outcome for p in r.lines}


def test_builtin_healthy_example_is_silent_and_everything_is_found():
    r = checkup_script(str(script_path("healthy")), [], probes=["overfit"])
    assert r.findings == []
    found = _lines(r)
    assert found["found: model"].startswith("`model` (Sequential")
    assert found["found: loss"] == "nn.CrossEntropyLoss (`loss_fn`)"
    assert found["found: optimizer"] == "Adam lr 0.001"
    assert "`loader`" in found["found: training data"]
    assert "`X_val`, `y_val`" in found["found: validation data"]
    assert "healthy.py:" in found["stopped at"]


def test_labels_out_of_range_found_before_the_crash():
    r = checkup_script(str(script_path("label-out-of-range")), [], probes=[])
    assert r.codes == ["D004"] and r.causes[0].id == "label-domain-error"
    assert not r.run.events_of("crash")


def test_functional_loss_found_before_it_runs():
    r = checkup_script(str(SCRIPTS / "functional_loss.py"), [], probes=[])
    assert "D004" in r.codes
    assert _lines(r)["found: loss"].startswith("F.cross_entropy(…, label_smoothing=0.05)")
    assert r.run.meta["loss"]["label_smoothing"] == 0.05
    assert any("validation data" in m for m in r.not_checked)  # said, not guessed


def test_hand_written_loss_and_dict_batches_are_replayed():
    r = checkup_script(str(SCRIPTS / "hand_written_loss.py"), [], probes=["overfit", "lr_range"])
    assert r.findings == [], [f.message for f in r.findings]
    lines = _lines(r)
    assert lines["found: loss"].startswith("hand-written loss")
    assert "overfit 10 samples" in lines and not lines["overfit 10 samples"].startswith("failed")
    # the loop's own scaling of the raw 0..16 pixels is replayed: no unnormalised-input alarm
    prof = r.run.events_of("data_profile")[0].data
    assert -1.5 < prof["inputs"]["mean"] < 0 and prof["samples"] == 1400
    # the same script with a learning rate far too high
    r = checkup_script(str(SCRIPTS / "hand_written_loss.py"), ["50"], probes=["lr_range"])
    assert "M012" in r.codes


def test_loop_slicing_tensors_by_hand():
    r = checkup_script(str(SCRIPTS / "hand_sliced.py"), [], probes=[])
    assert r.findings == []
    assert "`X` and `y` sliced by hand" in _lines(r)["found: training data"]
    assert r.run.events_of("data_profile")[0].data["samples"] == 569


def test_cli_exit_codes_and_json(tmp_path, capsys):
    out = tmp_path / "c.json"
    code = main(["checkup", "--json", str(out), "--skip", "lr_range", "--skip", "short_training",
                 str(script_path("double-softmax"))])
    err = capsys.readouterr().err
    assert code == 1, err  # an error-level finding
    assert "M001" in err and "Traceback" not in err
    d = json.loads(out.read_text())
    assert d["schema"] == "traindoctor/1" and {f["code"] for f in d["findings"]} >= {"M001", "M004"}
    assert d["checkup"]["restored"] is True and d["checkup"]["probes"]


@pytest.mark.parametrize("script,expect", [
    ("never_trains.py", "without computing a training loss"),
    ("crashes_early.py", "raised FileNotFoundError"),
    ("missing.py", "no such script"),
])
def test_cli_one_line_errors(capsys, script, expect):
    code = main(["checkup", str(SCRIPTS / script)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("just a tensor")]
    assert code == 2 and len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err


def test_cli_bad_options(capsys):
    assert main(["checkup", "--skip", "nothing", str(SCRIPTS / "hand_sliced.py")]) == 2
    assert "not a probe" in capsys.readouterr().err


def test_public_api_is_the_function():
    import traindoctor
    from traindoctor.checks.checkup import checkup

    assert traindoctor.checkup is checkup


FAULT_SCRIPTS = Path(__file__).parent.parent / "faults" / "scripts"


@pytest.mark.parametrize("script, code, cause", [
    ("config_relu_ce", "M009", "wrong-output-activation"),
    ("config_keras_ce", "M009", "wrong-output-activation"),  # a hand-written loss, replayed and traced
    ("config_mse_classes", "M008", "wrong-loss-function"),  # y.float() ran as batch preparation
    ("config_stacked_linear", "M010", "missing-nonlinearity"),
    ("config_raw_pixels", "D002", "unnormalized-input"),
])
def test_checkup_of_a_script_says_what_the_live_run_says(script, code, cause):
    """The same scripts as tests/faults/test_config.py, checked before training: same code and cause."""
    r = checkup_script(str(FAULT_SCRIPTS / f"{script}.py"), [], probes=["overfit"])
    assert code in r.codes, [(f.code, f.message) for f in r.findings]
    assert cause in [c.id for c in r.causes[:2]]
