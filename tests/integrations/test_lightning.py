"""PyTorch Lightning: the callback on real tiny fits, and ``traindoctor run`` on an unmodified Lightning script."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from _integration_runs import codes, contained, same_weights, serious, snapshot

import traindoctor
from traindoctor.heal import HealPolicy
from traindoctor.integrations.lightning import DoctorCallback
from traindoctor.watch.monitor import Monitor

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from lit_digits import fit  # noqa: E402

STEPS_PER_EPOCH = 44  # 1400 samples in batches of 32


def test_a_healthy_fit_is_healthy_and_its_layers_are_named(tmp_path):
    out = io.StringIO()
    cb = DoctorCallback(report_file=out, store=tmp_path / "run.db")
    trainer, _ = fit(3e-3, 4, [cb])
    d = cb.diagnosis
    assert d is not None and serious(d) == [], serious(d)
    assert d.verdict == "healthy" and not contained(d)
    run = cb.doctor.run_record()
    assert len(run.get("loss")) == 4 * STEPS_PER_EPOCH == trainer.global_step
    assert len(run.get("val_loss")) == 4 and run.get("val_accuracy").values[-1] > 0.8  # the module's own val_acc
    assert "grad_norm/net.0.weight" in run.series and "dead_frac/net.1" in run.series  # this step's gradients, named
    assert run.meta["framework"] == "lightning" and run.meta["framework_args"]["max_epochs"] == 4
    assert "traindoctor (lightning)" in out.getvalue() and "healthy" in out.getvalue()
    # the stored run diagnoses the same later (`traindoctor diagnose run.db`)
    again = traindoctor.diagnose(traindoctor.load(tmp_path / "run.db"))
    assert again.verdict == "healthy" and again.to_json()["findings"] == d.to_json()["findings"]


def test_a_step_loss_is_its_micro_batches_mean_under_gradient_accumulation():
    cb = DoctorCallback(report=False)
    trainer, model = fit(3e-3, 1, [cb], trainer_args={"accumulate_grad_batches": 2}, record=True)
    seen = cb.doctor.run_record().get("loss").values
    per_batch = model.losses  # 44 micro-batches, 22 optimizer steps
    assert len(seen) == trainer.global_step == STEPS_PER_EPOCH // 2
    assert list(seen) == pytest.approx([(a + b) / 2 for a, b in zip(per_batch[::2], per_batch[1::2])], rel=1e-5)


def test_learning_rate_far_too_high_is_named_in_lightnings_terms():
    cb = DoctorCallback(report=False)
    fit(1.0, 2, [cb])
    d = cb.diagnosis
    assert {"L001", "L002"} & set(codes(d)) and codes(d).get("L002", codes(d).get("L001")) == "error"
    top = d.causes[0]
    assert top.id == "lr-too-high"
    fixes = " ".join(top.fixes)
    assert "lr=0.1 in configure_optimizers()" in fixes and "Trainer(gradient_clip_val=" in fixes
    assert "clip_grad_norm_" not in fixes and "'interval': 'step'" in fixes


def test_a_clip_the_trainer_already_applies_is_not_asked_for_again():
    import lightning.pytorch as pl
    from lit_digits import DigitsNet, loaders

    cb = DoctorCallback(report=False)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=0.5, callbacks=[cb])
    trainer.fit(DigitsNet(1.0), *loaders())
    d = cb.diagnosis
    args = cb.doctor.run_record().meta["framework_args"]
    assert args["gradient_clip_val"] == 0.5 and args["max_grad_norm_source"] == "Trainer(gradient_clip_val=0.5)"
    top = next(c for c in d.causes if c.id == "lr-too-high")
    fixes = " ".join(top.fixes)
    assert "already clips the gradient norm at 0.5 (Trainer(gradient_clip_val=0.5))" in fixes
    assert "clip the gradient norm near" not in fixes


def test_healing_lowers_the_lr_through_the_trainers_optimizer_and_the_fit_recovers():
    sick = DoctorCallback(report=False)
    _, m0 = fit(1.0, 3, [sick])
    healed = DoctorCallback(heal=True, report=False)
    trainer, m1 = fit(1.0, 3, [healed])
    t = healed.treatments
    assert t and t[0]["cause"] == "lr-too-high" and t[0]["code"] in ("L001", "L002")
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(t[-1]["changes"]["lr"][1]) and lr < 0.1  # the Trainer's own optimizer
    loss0, loss1 = sick.doctor.run_record().get("loss").values, healed.doctor.run_record().get("loss").values
    assert loss1[-20:].mean() < 0.5 < loss0[-20:].mean()  # the healed fit learned, the sick one did not
    assert [x.step for x in healed.diagnosis.treatments] == [x["step"] for x in t]


def test_when_healing_gives_up_the_trainer_stops():
    cb = DoctorCallback(heal=True, report=False, heal_policy=HealPolicy(max_treatments=1))
    trainer, _ = fit(1e-3, 3, [cb], nan_after=20)  # a loss that turns NaN for good: no treatment holds
    assert cb.doctor.should_stop and cb.diagnosis.heal_stopped is not None
    assert trainer.should_stop and trainer.global_step < 3 * STEPS_PER_EPOCH
    assert "L001" in codes(cb.diagnosis)


def test_observing_changes_nothing_bit_for_bit():
    """Same seed, same data order, dropout on (an RNG draw by the doctor would shift it): the weights at the
    end are identical with and without the callback, whose Doctor calls Lightning's closure before its
    hooks."""
    _, bare = fit(3e-3, 2, [], dropout=0.2)
    w0 = snapshot(bare)
    cb = DoctorCallback(report=False, cadence=5)  # sampled often: every hook at work
    _, watched = fit(3e-3, 2, [cb], dropout=0.2)
    assert same_weights(w0, snapshot(watched)) == []
    assert len(cb.doctor.run_record().get("loss")) == 2 * STEPS_PER_EPOCH


def test_a_failure_inside_the_doctor_never_stops_the_fit(monkeypatch, capsys):
    def broken(self, loss):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Monitor, "on_loss", broken)
    cb = DoctorCallback(report=False)
    trainer, _ = fit(1e-3, 2, [cb])
    assert trainer.global_step == 2 * STEPS_PER_EPOCH  # trained to the end
    notes = contained(cb.diagnosis)
    assert len(notes) == 1 and "injected fault" in notes[0]
    assert capsys.readouterr().err.count("internal error contained") == 1


def test_traindoctor_run_watches_a_lightning_script_unmodified():
    from traindoctor.watch.launcher import watch_script

    script = SCRIPTS / "lit_digits.py"
    healthy = watch_script(script, ["1e-3", "3"], store="", err=io.StringIO())
    assert healthy.exit_code == 0
    assert not serious(healthy.diagnosis), serious(healthy.diagnosis)
    assert len(healthy.run.get("loss")) == 3 * STEPS_PER_EPOCH and healthy.run.get("val_loss") is not None
    # the model is found although Lightning runs it inside optimizer.step(closure): its layers are named
    names = list(healthy.run.meta["params"])
    assert names and not any(n.startswith("param") for n in names), names
    assert healthy.run.names("dead_frac") or healthy.run.names("saturated_frac")  # activations sampled
    sick = watch_script(script, ["1.0", "2"], store="", err=io.StringIO())
    assert {"L001", "L002"} & set(codes(sick.diagnosis))
    assert sick.diagnosis.causes[0].id == "lr-too-high"


def test_the_callback_lives_in_both_lightning_packages():
    import lightning.pytorch as pl
    import pytorch_lightning

    from traindoctor.integrations.pytorch_lightning import DoctorCallback as Standalone

    assert isinstance(DoctorCallback(), pl.Callback) and isinstance(Standalone(), pytorch_lightning.Callback)
    with pytest.raises(ValueError):
        DoctorCallback(heal="sometimes")
