"""Draw the clinic's population: healthy runs at random, then faulty runs derived from them.

Healthy runs draw width, depth, initialisation, optimizer (SGD, momentum, Nesterov, Adam, AdamW,
RMSprop, Adagrad) with a learning rate inside its working range, batch size, schedule, epochs,
precision and the code style, plus the hard negatives that fool tools (deep narrow tanh nets
started small, noisy small-batch SGD, long runs that converge early and sit on their plateau,
warm-up, warm restarts that spike and recover, mixed precision with a GradScaler).

Every faulty run is one healthy run (its twin: same task, seed and hyperparameters) with one
fault operator applied at a random severity. The split into a development and a held-out half is
by (task, seed), so no twin pair straddles it, and a few tasks are held out entirely: the rules
and weights are calibrated on the development half only.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from .faults import OPERATORS
from .spec import Spec
from .tasks import TASKS, Task

# working learning-rate ranges per optimizer (mean reduction), log-uniform
LR_RANGE = {
    "sgd": (0.03, 0.2), "momentum": (0.005, 0.03), "nesterov": (0.005, 0.03), "adam": (5e-4, 3e-3),
    "adamw": (5e-4, 3e-3), "rmsprop": (2e-4, 1e-3), "adagrad": (0.01, 0.05),
}
# what a task's model trains well with (transformers and RNNs: adaptive methods and momentum)
OPTS = {
    "default": ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad"],
    "lm": ["adam", "adamw"],
    "rnn": ["adam", "adamw", "rmsprop"],
}
SCHEDULES = ["none", "none", "none", "step", "cosine", "warmup", "warmup_cosine", "plateau", "exp", "onecycle"]


def split_of(task: Task, seed: int) -> str:
    if task.held_out_only:
        return "held-out"
    h = int(hashlib.sha256(f"{task.name}:{seed}".encode()).hexdigest(), 16)
    return "dev" if h % 2 == 0 else "held-out"


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.2g}")


HARD = ("deep-narrow-tanh", "noisy-small-batch", "early-plateau", "warm-restarts", "grad-scaler")


def draw_healthy(task: Task, seed: int, rng: np.random.Generator, force: str | None = None) -> Spec:
    space = task.hp_space
    hp: dict = {}
    for k, choices in space.items():
        hp[k] = choices[int(rng.integers(len(choices)))]
    family = "lm" if task.kind == "lm" else "rnn" if task.model_fn.__name__ == "rnn" else "default"
    hp["opt"] = OPTS[family][int(rng.integers(len(OPTS[family])))]
    lo, hi = LR_RANGE[hp["opt"]]
    if task.kind == "lm" or family == "rnn":
        lo, hi = lo * 2, hi * 2 if hp["opt"] != "momentum" else hi
    hp["lr"] = _logu(rng, lo, hi)
    if hp["opt"] == "adamw":
        hp["wd"] = [0.01, 0.05, 1e-4][int(rng.integers(3))]
    elif rng.random() < 0.2:
        hp["wd"] = 1e-4
    hp["schedule"] = SCHEDULES[int(rng.integers(len(SCHEDULES)))]
    if hp["schedule"] == "onecycle" and hp["opt"] in ("adagrad",):
        hp["schedule"] = "none"
    hp["clip"] = [None, None, None, 1.0, 5.0][int(rng.integers(5))]
    hp["precision"] = ["fp32"] * 7 + ["bf16", "fp16_scaler", "fp16_scaler"]
    hp["precision"] = hp["precision"][int(rng.integers(10))]
    if (task.kind == "lm" or family == "rnn") and hp["precision"] == "fp16_scaler":
        hp["precision"] = "bf16"  # oneDNN has no float16 LSTM/GRU kernels on the CPU
    hp["loop"] = ["loader", "loader", "loader_zero_after", "manual"][int(rng.integers(4))]
    hp["eval"] = ["loop", "full", "full", "inference", "manual"][int(rng.integers(5))]
    hp["style"] = ["nn", "class", "functional"][int(rng.integers(3))]
    hp["scaler"] = ["manual", "sklearn"][int(rng.integers(2))] if task.x_scaling == "feature" else "manual"
    if task.model_fn.__name__ == "mlp" and rng.random() < 0.3:
        hp["init"] = "kaiming" if hp.get("act", "relu") == "relu" else "xavier"
    if "dropout" in task.supports and task.model_fn.__name__ in ("mlp", "cnn") and rng.random() < 0.3:
        hp["dropout"] = [0.1, 0.2, 0.3][int(rng.integers(3))]
    if task.model_fn.__name__ == "mlp" and "depth" in task.supports and rng.random() < 0.15:
        hp["norm"] = ["bn", "ln"][int(rng.integers(2))]
    if rng.random() < 0.12 and task.kind in ("multiclass", "binary", "regression", "multilabel"):
        hp["reduction"] = "sum"
        hp["clip"] = None  # a clip set for a mean loss would cap a summed one
        if hp["opt"] in ("sgd", "momentum", "nesterov"):  # adaptive methods do not see the loss's scale
            hp["lr"] = float(f"{hp['lr'] / hp['batch_size']:.2g}")
    if task.name == "finetune_digits":
        hp["params"] = "trainable"
    tags: list[str] = []
    # hard negatives: each kind forced on some draws of the tasks it applies to (see draw())
    mlp_like = task.model_fn.__name__ == "mlp" and task.kind in ("multiclass", "binary", "regression")
    if force == "deep-narrow-tanh" and task.name in ("circles_mlp", "moons_mlp"):
        hp.update(act="tanh", depth=6, width=16, opt="adam", lr=_logu(rng, 2e-3, 5e-3), init="small", norm="none",
                  reduction="mean", precision="fp32")
        # long enough to leave the plateau at ln 2 it starts on: the point of this negative is a
        # run that looks stuck for a while and then learns
        hp["epochs"] = int(hp["epochs"]) * 4
        hp.pop("dropout", None)
        tags.append("hard:deep-narrow-tanh")
    elif force == "noisy-small-batch" and mlp_like:
        hp.update(opt="sgd", batch_size=[4, 8][int(rng.integers(2))], reduction="mean", clip=None,
                  lr=float(f"{_logu(rng, *LR_RANGE['sgd']) / 3:.2g}"))
        hp["epochs"] = max(2, int(hp["epochs"]) // 4)
        tags.append("hard:noisy-small-batch")
    elif force == "early-plateau" and task.name in ("moons_mlp", "blobs_mlp", "cancer_mlp", "wine_mlp"):
        hp["epochs"] = int(hp["epochs"]) * 3
        tags.append("hard:early-plateau")
    elif force == "warm-restarts" and task.kind != "lm":
        hp["schedule"] = "restarts"
        tags.append("hard:warm-restarts")
    elif force == "grad-scaler" and task.kind != "lm" and task.model_fn.__name__ != "rnn":
        hp["precision"] = "fp16_scaler"
    if hp["schedule"] in ("warmup", "warmup_cosine", "onecycle"):
        tags.append("hard:warm-up")
    if hp["precision"] == "fp16_scaler":
        tags.append("hard:grad-scaler")
    return Spec(task.name, seed, hp, tags=tuple(tags))


def draw(n_healthy_per_task: int = 11, n_per_operator: int = 11, seed: int = 0) -> list[Spec]:
    """The whole population, deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    healthy: list[Spec] = []
    for ti, task in enumerate(TASKS.values()):
        for j in range(n_healthy_per_task):
            # the first draws of each task are the hard negatives that apply to it (two for the
            # deep narrow tanh net, the case that fooled tools most), the rest drawn freely
            force = ([h for h in HARD for _ in range(3 if h == "deep-narrow-tanh" else 1)] + [None] * 99)[j]
            healthy.append(draw_healthy(task, 1000 * ti + j + 100000 * seed, rng, force))
    faulty: list[Spec] = []
    for op in OPERATORS.values():
        bases = [h for h in healthy if op.applies(TASKS[h.task], h.hp)]
        if not bases:
            continue
        # spread over tasks: round-robin over the tasks that qualify, random base within each
        by_task: dict[str, list[Spec]] = {}
        for b in bases:
            by_task.setdefault(b.task, []).append(b)
        names = sorted(by_task)
        rng.shuffle(names)
        seen: set[str] = set()
        i = 0
        while len(seen) < n_per_operator and i < 20 * n_per_operator:
            pool = by_task[names[i % len(names)]]
            i += 1
            base = pool[int(rng.integers(len(pool)))]
            sev = round(float(rng.uniform(0, 1)), 2)
            knobs = op.knobs(sev, TASKS[base.task], base.hp, rng)
            spec = Spec(base.task, base.seed, base.hp, op.name, sev, knobs, base.id, base.tags)
            if spec.id not in seen:  # the same knobs on the same twin is the same run
                seen.add(spec.id)
                faulty.append(spec)
    return healthy + faulty


def split(spec: Spec) -> str:
    return split_of(TASKS[spec.task], spec.seed)
