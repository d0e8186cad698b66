"""Blind spots seen on public scripts and hidden suites (issue 10, section 3), each as a real tiny run.

The measuring-side ones (GradScaler, sum-reduced validation, two models, shapes between the last
activation and the loss, in-memory datasets) are in tests/test_watch_blindspots.py; here are the
ones the judging side must get right.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from traindoctor.cli import main
from traindoctor.diagnosis import diagnose
from traindoctor.logs import load
from traindoctor.store import load_store
from traindoctor.watch.launcher import watch_script

SCRIPTS = Path(__file__).parent / "scripts"
FIX = Path(__file__).parent.parent / "fixtures" / "logs"
_cache: dict[str, object] = {}


def watch(name: str, tmp: Path | None = None):
    if name not in _cache:
        _cache[name] = watch_script(SCRIPTS / f"{name}.py", [], store=str(tmp / "run.db") if tmp else "",
                                    err=io.StringIO())
    return _cache[name]


def by_code(res) -> dict:
    return {f.code: f for f in res.diagnosis.findings}


def test_an_early_blowup_is_not_the_baseline():
    """Adam at lr=1: the loss jumps 10^3-10^4× in the first steps, then sits near ln 10. The report
    names the blow-up and the LR, and never says "fell from 17 000, then stalled"."""
    res = watch("spot_early_blowup")
    f = by_code(res)
    l2 = f["L002"]
    assert l2.evidence["jump"] >= 10 and l2.evidence["peak_step"] <= 5 and l2.evidence["start"] < 3
    assert l2.evidence.get("ended_at_chance") is True
    assert "L006" not in f  # the plateau after the blow-up is not a stall from a high start
    assert res.diagnosis.causes[0].id == "lr-too-high"
    assert "no-lr-decay" not in [c.id for c in res.diagnosis.causes]
    # the step-0 update ratio (weights moved ~19× their own norm) is evidence too
    assert f["G004"].evidence["steps"][0] == 0 and f["G004"].evidence["max_ratio"] > 3


def test_a_midrun_blowup_that_recovers_is_reported_with_the_lr_step_up():
    res = watch("spot_midrun_blowup")
    f = by_code(res)
    l3 = f["L003"]
    assert 0.1 <= l3.evidence["fraction_of_run"] <= 0.3
    assert l3.evidence["peak"] >= 5 * l3.evidence["level_before"]
    assert l3.evidence["level_after"] <= 0.5 * l3.evidence["peak"]
    assert l3.evidence["lr_raised"]["factor"] >= 30
    assert res.diagnosis.causes[0].id == "lr-too-high"


def test_a_network_that_died_after_step_0_is_reported():
    """7 of 8 tensors get exactly zero gradient from ~step 150 on; they had gradients before."""
    res = watch("spot_died_after_start")
    g6 = by_code(res)["G006"]
    assert g6.evidence["count"] == 7 and g6.evidence["of"] == 8 and g6.evidence["from_step"] <= 200
    top2 = [c.id for c in res.diagnosis.causes[:2]]
    assert set(top2) == {"dying-relu", "lr-too-high"}
    assert "lr-too-low" not in [c.id for c in res.diagnosis.causes]  # zero updates of dead units are not a small LR


def test_a_thin_log_is_not_judged_never_healthy(tmp_path, capsys):
    log = tmp_path / "thin.csv"
    log.write_text("step,loss\n0,2.30\n1,2.29\n2,2.31\n3,2.28\n")
    out = tmp_path / "d.json"
    assert main(["diagnose", str(log), "--json", str(out)]) == 0
    j = json.loads(out.read_text())
    assert j["verdict"] == "not judged" and j["healthy"] is False and j["findings"] == []
    assert main(["diagnose", str(log), "--fail-on", "warning"]) == 0
    assert main(["diagnose", str(log), "--fail-on", "not-judged"]) == 1
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "thin.csv").write_text(log.read_text())
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path / "runs")]) == 0
    assert "not judged" in capsys.readouterr().out
    # absolute checks still apply to a thin log: four NaN points are not "not judged"
    log.write_text("step,loss\n0,2.30\n1,nan\n2,nan\n3,nan\n")
    assert main(["diagnose", str(log), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["verdict"] == "error"


def test_rediagnosing_a_stored_run_gives_the_live_diagnosis(tmp_path):
    """Validation captured automatically (a loss under no_grad, and printed) is in the store too."""
    res = watch_script(SCRIPTS / "tiny_train_big_model.py", [], store=str(tmp_path / "run.db"), err=io.StringIO())
    live = res.diagnosis.to_json()
    stored = diagnose(load_store(tmp_path / "run.db")).to_json()
    assert "V001" in {f["code"] for f in live["findings"]}  # judged on the auto-captured validation
    for key in ("verdict", "findings", "causes", "ruled_out", "not_judged"):
        assert stored[key] == live[key], key


def test_fixes_in_the_frameworks_own_terms_and_never_a_looser_clip():
    hf = diagnose(load(FIX / "lr_too_high" / "huggingface" / "trainer_state.json"))
    assert hf.causes[0].id == "lr-too-high"
    fixes = " ".join(hf.causes[0].fixes)
    assert "TrainingArguments(learning_rate=1)" in fixes and "warmup_ratio" in fixes
    assert "already clips the gradient norm at 1" in fixes and "max_grad_norm=5" not in fixes
    assert "clip_grad_norm_" not in fixes  # not the hand-written loop's advice
    pl = diagnose(load(FIX / "lr_too_high" / "lightning_logs" / "version_0" / "metrics.csv"))
    assert "gradient_clip_val" in " ".join(pl.causes[0].fixes)


def test_an_adam_eps_that_swamps_the_gradients_is_named():
    """Adam(eps=0.5): the loss crawls down from ln 10. The run's own gradients (a per-weight RMS
    ~5e-3) show eps dwarfs them, so the optimizer's setting, not the LR, is ranked first, with
    the concrete fix."""
    res = watch("adam_big_eps")
    f = by_code(res)
    sw = f["V002"].evidence["eps_swamps"]
    assert sw["eps"] == 0.5 and sw["eps"] >= 10 * sw["grad_rms"]
    top = res.diagnosis.causes[0]
    assert top.id == "wrong-optimizer-settings"
    assert any("eps=0.5" in x and "1e-8" in x for x in top.fixes)


def test_a_default_eps_is_never_blamed():
    from traindoctor.rules._signals import eps_swamps

    for name in ("healthy_cnn", "healthy_fullbatch"):  # Adam/AdamW at their default eps
        res = watch(name)
        assert res.run.meta["optimizer"]["class"] in ("Adam", "AdamW")
        assert eps_swamps(res.run) is None and not res.diagnosis.findings


def test_an_unscaled_auxiliary_term_that_blows_the_run_up_is_named():
    """CE ≈ 2.3 + MSE on a raw target ≈ 1e5: the run is non-finite by step 4, leaving one sample
    of the loss terms. That one finite sample is enough for L011 in a run that died, and the
    blow-up is put on the term imbalance before the LR."""
    res = watch("aux_unscaled")
    f = by_code(res)
    assert f["L011"].evidence["samples"] == 1 and f["L011"].evidence["ratio"] > 1000
    assert f["L001"].evidence["term_imbalance"] > 1000
    assert res.diagnosis.causes[0].id == "unbalanced-loss-terms"
