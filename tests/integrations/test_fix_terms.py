"""The fixes in each framework's own terms, from the settings its callback records (no framework imported:
the judging half reads only the run's meta)."""
from __future__ import annotations

import numpy as np

from traindoctor.causes import frameworks, get
from traindoctor.causes.facts import Facts
from traindoctor.run import Run, Series


def facts(framework: str | None, args: dict, lr: float = 1.0, norms: tuple[float, ...] = (2.0, 2.0, 2.0)) -> Facts:
    run = Run(series={"loss": Series(np.arange(40), np.linspace(2.3, 2.0, 40)),
                      "grad_norm": Series(np.arange(len(norms)) * 10, np.array(norms))},
              meta={"lr": lr, "optimizer": {"class": "Adam", "lr": lr},
                    **({"framework": framework, "framework_args": args} if framework else {})})
    return Facts(run, [])


def fixes(cause: str, f: Facts) -> str:
    return " | ".join(get(cause).all_fixes(f))


def test_hugging_face_warm_up_is_spelled_for_the_trainers_version():
    v5 = fixes("lr-too-high", facts("huggingface", {"warmup_steps": 0, "version": "5.25.0", "max_grad_norm": 0}))
    assert "TrainingArguments(warmup_steps=0.05)" in v5 and "warmup_ratio" not in v5
    assert "TrainingArguments(max_grad_norm=10)" in v5  # the Trainer was told not to clip: clipping is offered
    v4 = fixes("lr-too-high", facts("huggingface", {"warmup_ratio": 0.0, "warmup_steps": 0, "version": "4.46.0"}))
    assert "TrainingArguments(warmup_ratio=0.05)" in v4
    longer = fixes("lr-too-high", facts("huggingface", {"warmup_steps": 100, "version": "5.0.0"}))
    assert "lengthen the warm-up: TrainingArguments(warmup_steps=100 → 400)" in longer
    const = fixes("lr-too-high", facts("huggingface", {"warmup_steps": 0, "version": "5.0.0",
                                                      "lr_scheduler_type": "constant"}))
    assert "lr_scheduler_type='constant_with_warmup'" in const


def test_a_constant_hugging_face_schedule_is_told_to_decay():
    said = fixes("no-lr-decay", facts("huggingface", {"lr_scheduler_type": "constant"}))
    assert "TrainingArguments(lr_scheduler_type='cosine')" in said
    assert "lr_scheduler_type" not in fixes("no-lr-decay", facts("huggingface", {"lr_scheduler_type": "linear"}))


def test_lightning_keras_and_a_plain_loop_each_get_their_own_words():
    pl = fixes("lr-too-high", facts("lightning", {"schedulers": ["CosineAnnealingLR"], "max_epochs": 5}))
    assert "lr=0.1 in configure_optimizers()" in pl and "Trainer(gradient_clip_val=10" in pl
    assert "SequentialLR" in pl and "CosineAnnealingLR" in pl  # the warm-up goes before the module's own schedule
    ks = fixes("lr-too-high", facts("keras", {"optimizer": "SGD", "epochs": 4, "steps_per_epoch": 50}, lr=0.5))
    assert "keras.optimizers.SGD(learning_rate=0.05)" in ks and "global_clipnorm=10" in ks
    assert "CosineDecay(0.0, decay_steps=200, warmup_target=0.5, warmup_steps=10)" in ks
    plain = fixes("lr-too-high", facts(None, {}))
    assert "1 → 0.1" in plain and "torch.nn.utils.clip_grad_norm_" in plain and "TrainingArguments" not in plain


def test_raising_the_lr_stopping_early_and_training_longer_in_the_frameworks_terms():
    assert "TrainingArguments(learning_rate=10)" in fixes("lr-too-low", facts("huggingface", {}))
    assert "restore_best_weights=True" in frameworks.early_stopping(facts("keras", {}))
    assert frameworks.train_longer(facts("lightning", {"max_epochs": 4}), 2.0) == "Trainer(max_epochs=4 → 8)"
    assert frameworks.train_longer(facts("huggingface", {"num_train_epochs": 3.0, "max_steps": -1}), 2.0) \
        == "TrainingArguments(num_train_epochs=3 → 6)"
    assert frameworks.train_longer(facts(None, {}), 2.0) is None
