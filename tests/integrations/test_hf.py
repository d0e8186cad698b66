"""The Hugging Face Trainer: the callback on a tiny GPT-2 built from its config, trained on synthetic token
sequences (arithmetic progressions, learnable in a few dozen steps)."""
from __future__ import annotations

import io

import pytest
import torch
from _integration_runs import codes, contained, same_weights, serious, snapshot
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments, set_seed
from transformers.utils import logging as hf_logging

import traindoctor
from traindoctor.heal import HealPolicy
from traindoctor.integrations.hf import DoctorCallback
from traindoctor.watch.monitor import Monitor

hf_logging.set_verbosity_error()


class Progressions(torch.utils.data.Dataset):
    """Sequences x_t = (a + d·t) mod 47 + 3 with d ∈ {1, 2}: the next token follows from the last two."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, 47, (n, 1), generator=g)
        step = torch.randint(1, 3, (n, 1), generator=g)
        self.ids = (start + step * torch.arange(12)) % 47 + 3

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class NaNAfter(Trainer):
    """A Trainer whose loss turns NaN at step 10 and stays so: nothing healing does can hold."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if return_outputs or self.state.global_step < 10:  # (an evaluation asks for the outputs too)
            return loss
        return loss * float("nan")


def train(tmp_path, lr: float, epochs: float, callbacks: list, trainer_cls: type = Trainer,
          **args) -> tuple[Trainer, GPT2LMHeadModel]:
    set_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16, n_inner=32))
    targs = TrainingArguments(output_dir=str(tmp_path / "out"), learning_rate=lr, num_train_epochs=epochs,
                              per_device_train_batch_size=16, eval_strategy="epoch", save_strategy="no",
                              report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                              dataloader_num_workers=0, **{"logging_steps": 1000, **args})
    trainer = trainer_cls(model=model, args=targs, train_dataset=Progressions(512, 0), eval_dataset=Progressions(128, 1),
                      callbacks=callbacks)
    trainer.train()
    return trainer, model


STEPS_PER_EPOCH = 32  # 512 sequences in batches of 16


def test_a_healthy_training_is_healthy(tmp_path):
    out = io.StringIO()
    cb = DoctorCallback(report_file=out, store=tmp_path / "run.db")
    trainer, _ = train(tmp_path, 5e-3, 4, [cb])
    d = cb.diagnosis
    assert serious(d) == [] and d.verdict == "healthy" and not contained(d), serious(d)
    run = cb.doctor.run_record()
    assert len(run.get("loss")) == trainer.state.global_step == 4 * STEPS_PER_EPOCH  # every step, not every logging_steps
    assert list(run.get("val_loss").values) == pytest.approx(
        [r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r])
    assert run.meta["framework"] == "huggingface" and run.meta["optimizer"]["class"] == "AdamW"
    args = run.meta["framework_args"]
    assert args["learning_rate"] == 5e-3 and args["max_grad_norm"] == 1.0 and args["lr_scheduler_type"] == "linear"
    assert "traindoctor (huggingface)" in out.getvalue()
    again = traindoctor.diagnose(traindoctor.load(tmp_path / "run.db"))  # `traindoctor diagnose run.db` later
    assert again.verdict == "healthy" and again.to_json()["findings"] == d.to_json()["findings"]


def test_the_step_loss_is_the_one_the_trainer_logs_under_gradient_accumulation(tmp_path):
    cb = DoctorCallback(report=False)
    trainer, _ = train(tmp_path, 5e-3, 1, [cb], gradient_accumulation_steps=2, logging_steps=1)
    logged = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    seen = cb.doctor.run_record().get("loss").values
    assert len(seen) == len(logged) == STEPS_PER_EPOCH // 2
    assert list(seen) == pytest.approx(logged, rel=1e-3)


def test_learning_rate_far_too_high_is_named_in_the_trainers_terms(tmp_path):
    cb = DoctorCallback(report=False)
    train(tmp_path, 10.0, 1, [cb])
    d = cb.diagnosis
    assert codes(d).get("L002") == "error" or codes(d).get("L001") == "error"
    top = d.causes[0]
    assert top.id == "lr-too-high"
    fixes = " ".join(top.fixes)
    assert "TrainingArguments(learning_rate=1)" in fixes  # from its 10
    # the Trainer already clips at max_grad_norm=1.0: no clip is asked for as if there were none
    assert "already clips the gradient norm at 1 (the Trainer's default, TrainingArguments(max_grad_norm=1))" in fixes
    assert "clip_grad_norm_" not in fixes and "max_grad_norm=" not in fixes.replace("TrainingArguments(max_grad_norm=1)", "")
    # transformers 5 has no warmup_ratio: its warmup_steps below 1 is the ratio
    assert "TrainingArguments(warmup_steps=0.05)" in fixes and "warmup_ratio" not in fixes


def test_healing_acts_on_the_trainers_optimizer_and_schedule(tmp_path):
    sick = DoctorCallback(report=False)
    train(tmp_path, 10.0, 2, [sick])
    healed = DoctorCallback(heal=True, report=False)
    trainer, _ = train(tmp_path, 10.0, 2, [healed])
    t = healed.treatments
    assert t and t[0]["cause"] == "lr-too-high" and t[0]["changes"]["lr"][0] == 10.0
    # the linear schedule carries the lower LR on: its base LR was lowered with the optimizer's
    sched = getattr(trainer.lr_scheduler, "scheduler", trainer.lr_scheduler)  # inside accelerate's wrapper, if any
    assert sched.base_lrs[0] < 1.0
    s, h = sick.doctor.run_record().get("loss").values, healed.doctor.run_record().get("loss").values
    assert h[-10:].mean() < 3.0 < s[-10:].mean()


def test_when_healing_gives_up_the_trainer_stops(tmp_path):
    cb = DoctorCallback(heal=True, report=False, heal_policy=HealPolicy(max_treatments=1))
    trainer, _ = train(tmp_path, 5e-3, 2, [cb], trainer_cls=NaNAfter)
    assert cb.doctor.should_stop and cb.diagnosis.heal_stopped is not None
    assert trainer.state.global_step < 2 * STEPS_PER_EPOCH  # control.should_training_stop ended it
    assert "L001" in codes(cb.diagnosis)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the last good weights


def test_observing_changes_nothing_bit_for_bit(tmp_path):
    _, bare = train(tmp_path, 5e-3, 1, [])
    w0 = snapshot(bare)
    cb = DoctorCallback(report=False, cadence=4)
    _, watched = train(tmp_path, 5e-3, 1, [cb])
    assert same_weights(w0, snapshot(watched)) == []
    assert len(cb.doctor.run_record().get("loss")) == STEPS_PER_EPOCH


def test_a_failure_inside_the_doctor_never_stops_training(tmp_path, monkeypatch, capsys):
    def broken(self, loss):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Monitor, "on_loss", broken)
    cb = DoctorCallback(report=False)
    trainer, _ = train(tmp_path, 5e-3, 1, [cb])
    assert trainer.state.global_step == STEPS_PER_EPOCH
    notes = contained(cb.diagnosis)
    assert len(notes) == 1 and "injected fault" in notes[0]
    assert capsys.readouterr().err.count("internal error contained") == 1


class FirstToken(torch.utils.data.Dataset):
    """Sequence classification: the label is whether the first token is above the vocabulary's middle."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, 50, (n, 12), generator=g)
        self.y = (self.ids[:, 0] > 26).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.y[i]}


def test_a_healthy_tiny_bert_classifier_gets_no_warning(tmp_path):
    """A BERT's first weight layers are an embedding table (its gradient spread over unused rows) and
    attention's query/key (little gradient while attention is near uniform): not a vanishing gradient."""
    from transformers import BertConfig, BertForSequenceClassification

    set_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=2))
    cb = DoctorCallback(live=False, report=False)
    targs = TrainingArguments(output_dir=str(tmp_path / "out"), learning_rate=1e-3, num_train_epochs=20,
                              per_device_train_batch_size=16, eval_strategy="epoch", save_strategy="no",
                              report_to="none", use_cpu=True, disable_tqdm=True, seed=0, logging_steps=1000)
    trainer = Trainer(model=model, args=targs, train_dataset=FirstToken(512, 0), eval_dataset=FirstToken(128, 1),
                      callbacks=[cb])
    trainer.train()
    d = cb.diagnosis
    assert trainer.state.log_history[-2]["eval_loss"] < 0.05  # it learned
    assert not serious(d), [(f.code, f.message) for f in d.findings]
