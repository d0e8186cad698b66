"""Synthetic fixtures per symptom code, in one table (ruff's fixture-per-code, for traindoctor's rules).

``FIXTURES[code]`` lists small hand-built Runs for the rule of ``code``: at least one that must fire it
(``fires=True``, with the key evidence it must report) and one near miss just on the healthy side of
its threshold or condition (``fires=False``). Each Run is built the way the sources record it —
``Run(meta=...)``, ``run.series[name] = Series(steps, values)``, ``run.events.append(Event(step,
kind, data))`` with the series names and event data shapes of ``watch/``, ``checks/`` and
``inspect/`` — so a threshold can be changed and tested without training a model.

A fixture's ``example`` reads like the rule docstring's ``Example:`` section, with its numbers: the
fixture is the example. Builders are pure and seeded (``np.random.default_rng(seed)``), so every
call returns an identical Run. tests/test_rule_fixtures.py runs the table.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from traindoctor.run import Event, Run, Series

# the rule families whose every rule must have fixtures here
FAMILIES = ("G", "A", "V", "D", "M", "P")


@dataclass(frozen=True)
class Fixture:
    """One synthetic Run for one rule, and what the rule must say about it."""

    code: str
    fires: bool
    example: str
    build: Callable[[], Run]
    # evidence key → expected value (floats compared with a relative tolerance of 2 %), or a
    # predicate on the value
    evidence: dict[str, Any] = field(default_factory=dict)
    step: int | None = None  # the finding's step, when the fixture pins it
    xfail: str | None = None  # a known rule bug this fixture shows (strict xfail)

    @property
    def id(self) -> str:
        return f"{self.code}-{'fires' if self.fires else 'silent'}-{self.build.__name__.lstrip('_')}"


FIXTURES: dict[str, list[Fixture]] = {}


def fixture(code: str, fires: bool, example: str, *, evidence: dict[str, Any] | None = None,
            step: int | None = None, xfail: str | None = None) -> Callable[[Callable[[], Run]], Callable[[], Run]]:
    """Register the decorated builder as a fixture of ``code``."""

    def wrap(build: Callable[[], Run]) -> Callable[[], Run]:
        FIXTURES.setdefault(code, []).append(Fixture(code, fires, example, build, dict(evidence or {}), step, xfail))
        return build

    return wrap


# ------------------------------------------------------------------------------------------ helpers
def put(run: Run, name: str, steps: Any, values: Any) -> None:
    run.series[name] = Series(np.asarray(steps), np.asarray(values, dtype=float))


def event(run: Run, step: int, kind: str, data: dict[str, Any]) -> None:
    run.events.append(Event(step, kind, data))


def loss_curve(n: int, start: float, end: float, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A loss falling geometrically from ``start`` to ``end`` over ``n`` steps, with multiplicative noise."""
    rng = np.random.default_rng(seed)
    v = np.geomspace(start, end, n)
    return v * np.exp(rng.normal(0.0, noise, n)) if noise else v


def params_meta(*names: str, numel: int = 4096, ndim: int = 2) -> dict[str, dict[str, Any]]:
    """``meta["params"]`` as ``Monitor.attach_model`` records it."""
    return {n: {"numel": numel, "ndim": ndim, "requires_grad": True} for n in names}


def close(a: Any, b: Any, rel: float = 0.02) -> bool:
    if isinstance(b, float) and isinstance(a, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), b, rel_tol=rel, abs_tol=1e-12)
    return a == b


def with_train_val(train: np.ndarray, val_steps: np.ndarray, val: np.ndarray, **meta: Any) -> Run:
    """A run with a per-step training loss and a validation loss at ``val_steps``."""
    run = Run(meta=dict(meta))
    put(run, "loss", np.arange(len(train)), train)
    put(run, "val_loss", val_steps, val)
    return run


def epochs(levels: np.ndarray, per: int = 50, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A per-step training loss holding ``levels[i]`` (± multiplicative noise) over epoch ``i`` of ``per`` steps."""
    rng = np.random.default_rng(seed)
    v = np.repeat(np.asarray(levels, dtype=float), per)
    return v * np.exp(rng.normal(0.0, noise, v.size)) if noise else v


# =========================================================================================== G: gradients
@fixture("G001", True, "grad_norm 0.8 at step 0, 95 at step 50, 3e+04 at step 75, then NaN; most in `fc2.weight`",
         evidence={"baseline": 0.8, "onset_step": 50, "peak_step": 75, "went_nonfinite": True, "layer": "fc2.weight"},
         step=50)
def _g001_explodes_to_nan() -> Run:
    run = Run(meta={"params": params_meta("fc1.weight", "fc2.weight")})
    loss = np.concatenate([loss_curve(50, 2.3, 1.0, noise=0.02, seed=1), np.geomspace(1.0, 1e4, 30), np.full(20, np.nan)])
    put(run, "loss", np.arange(100), loss)
    st = np.arange(0, 100, 5)
    g = np.full(st.size, 0.8)
    g[10:16] = np.geomspace(95.0, 3e4, 6)  # steps 50 … 75
    g[16:] = np.nan  # step 80 on: the loss broke
    put(run, "grad_norm", st, g)
    put(run, "grad_norm/fc1.weight", st, np.where(np.isfinite(g), np.minimum(g, 8.0), np.nan) * 0.1)
    put(run, "grad_norm/fc2.weight", st, g * 0.99)
    return run


@fixture("G001", False, "grad_norm 0.8 → 72 (90×, under the 100× bar) and stays finite, though the loss doubles")
def _g001_grows_90x() -> Run:
    run = Run(meta={"params": params_meta("fc1.weight", "fc2.weight")})
    put(run, "loss", np.arange(100), np.concatenate([loss_curve(50, 2.3, 1.0), np.linspace(1.0, 3.0, 50)]))
    st = np.arange(0, 100, 5)
    g = np.full(st.size, 0.8)
    g[10:] = np.linspace(8.0, 72.0, 10)
    put(run, "grad_norm", st, g)
    put(run, "grad_norm/fc2.weight", st, g)
    return run


@fixture("G001", False, "grad_norm 0.8 → 240 (300×) in a deep net started small while the loss keeps falling: "
         "growth that does not hurt")
def _g001_grows_while_learning() -> Run:
    run = Run()
    put(run, "loss", np.arange(100), loss_curve(100, 2.3, 0.1, noise=0.02, seed=2))
    st = np.arange(0, 100, 5)
    put(run, "grad_norm", st, np.concatenate([np.full(4, 0.8), np.geomspace(1.0, 240.0, 16)]))
    return run


@fixture("G002", True, "10-layer sigmoid MLP: `0.weight` RMS grad 2e-8, `18.weight` 4e-3 — ratio 5e-6",
         evidence={"first_layer": "0.weight", "last_layer": "18.weight", "rms_ratio": 5e-6, "weight_layers": 10})
def _g002_sigmoid_stack() -> Run:
    names = [f"{2 * i}.weight" for i in range(10)]
    run = Run(meta={"params": params_meta(*names)})
    st = np.arange(0, 500, 10)
    rms = np.geomspace(2e-8, 4e-3, 10)  # per weight, first layer to last
    for name, r in zip(names, rms):
        put(run, f"grad_norm/{name}", st, np.full(st.size, r * 64.0))  # norm = RMS · √4096
    put(run, "loss", np.arange(500), np.full(500, 2.30))
    return run


@fixture("G002", False, "`0.weight` RMS grad 4.8e-6 against 4e-3 at `18.weight`: ratio 1.2e-3, just above the 1e-3 bar")
def _g002_ratio_above_bar() -> Run:
    names = ["0.weight", "2.weight", "18.weight"]
    run = Run(meta={"params": params_meta(*names)})
    st = np.arange(0, 500, 10)
    for name, r in zip(names, (4.8e-6, 1e-4, 4e-3)):
        put(run, f"grad_norm/{name}", st, np.full(st.size, r * 64.0))
    return run


@fixture("G003", True, "``x.norm()`` of an all-zero row inside the model: loss finite, grad of `encoder.weight` NaN at "
         "step 120", evidence={"first_step": 120, "parameters": ["encoder.weight"], "seen_in": "gradient"}, step=120)
def _g003_nan_grad_finite_loss() -> Run:
    run = Run(meta={"params": params_meta("encoder.weight", "head.weight")})
    put(run, "loss", np.arange(200), loss_curve(200, 2.3, 1.0, noise=0.02, seed=3))
    st = np.arange(0, 200, 10)
    enc = np.full(st.size, 0.5)
    enc[12:] = np.nan  # step 120 on
    put(run, "grad_norm", st, np.where(np.isfinite(enc), 0.7, np.nan))
    put(run, "grad_norm/encoder.weight", st, enc)
    put(run, "grad_norm/head.weight", st, np.full(st.size, 0.5))
    event(run, 120, "nonfinite_grad", {"params": ["encoder.weight"], "count": 1})
    return run


@fixture("G003", False, "grad of `encoder.weight` NaN at step 120, the same step the loss went NaN: an echo of L001")
def _g003_nan_grad_with_loss() -> Run:
    run = Run(meta={"params": params_meta("encoder.weight")})
    loss = loss_curve(200, 2.3, 1.0)
    loss[120:] = np.nan
    put(run, "loss", np.arange(200), loss)
    st = np.arange(0, 200, 10)
    enc = np.full(st.size, 0.5)
    enc[12:] = np.nan
    put(run, "grad_norm/encoder.weight", st, enc)
    return run


@fixture("G004", True, "SGD lr=1.0 on a tanh MLP: update/weight ratio 0.4 at every sampled step",
         evidence={"median_ratio": 0.4, "lr": 1.0, "suggested_lr": 2.5e-3})
def _g004_ratio_04() -> Run:
    names = ["0.weight", "2.weight"]
    run = Run(meta={"lr": 1.0, "optimizer": {"class": "SGD", "lr": 1.0}, "params": params_meta(*names)})
    st = np.arange(0, 400, 20)
    for name in names:
        put(run, f"update_ratio/{name}", st, np.full(st.size, 0.4))
        put(run, f"weight_norm/{name}", st, np.full(st.size, 3.0))
    return run


@fixture("G004", True, "Two sampled steps (100 and 140) move the weights by 0.8 of their norm; the rest 1e-3",
         evidence={"steps": [100, 140], "max_ratio": 0.8}, step=100)
def _g004_two_catastrophic_steps() -> Run:
    run = Run(meta={"params": params_meta("0.weight", "2.weight")})
    st = np.arange(0, 400, 20)
    r = np.full(st.size, 1e-3)
    r[[5, 7]] = 0.8
    for name in ("0.weight", "2.weight"):
        put(run, f"update_ratio/{name}", st, r)
        put(run, f"weight_norm/{name}", st, np.full(st.size, 3.0))
    return run


@fixture("G004", False, "Adam early on small weights: update/weight ratio 0.025 at every step (under 3e-2 and 0.5)")
def _g004_ratio_0025() -> Run:
    run = Run(meta={"lr": 1e-3, "params": params_meta("0.weight", "2.weight")})
    st = np.arange(0, 400, 20)
    for name in ("0.weight", "2.weight"):
        put(run, f"update_ratio/{name}", st, np.full(st.size, 0.025))
        put(run, f"weight_norm/{name}", st, np.full(st.size, 3.0))
    return run


@fixture("G005", True, "SGD lr=1e-5 on digits: ratio 3e-6, loss 2.331 → 2.330 over 450 steps",
         evidence={"median_ratio": 3e-6, "lr": 1e-5, "suggested_lr": 1e-5 * 1e-3 / 3e-6})
def _g005_crawling() -> Run:
    run = Run(meta={"lr": 1e-5, "optimizer": {"class": "SGD", "lr": 1e-5}, "params": params_meta("0.weight", "2.weight")})
    rng = np.random.default_rng(5)
    put(run, "loss", np.arange(450), np.linspace(2.331, 2.330, 450) + rng.normal(0, 1e-4, 450))
    st = np.arange(0, 450, 10)
    for name, r in (("0.weight", 1e-6), ("2.weight", 3e-6)):
        put(run, f"update_ratio/{name}", st, np.full(st.size, r))
        put(run, f"weight_norm/{name}", st, np.full(st.size, 2.0))
    return run


@fixture("G005", False, "SGD on digits, loss 2.331 → 2.330, but the fastest layer moves 1.2e-5 per step (over 1e-5)")
def _g005_ratio_above_bar() -> Run:
    run = Run(meta={"lr": 1e-5, "params": params_meta("0.weight", "2.weight")})
    put(run, "loss", np.arange(450), np.linspace(2.331, 2.330, 450))
    st = np.arange(0, 450, 10)
    for name, r in (("0.weight", 1e-6), ("2.weight", 1.2e-5)):
        put(run, f"update_ratio/{name}", st, np.full(st.size, r))
        put(run, f"weight_norm/{name}", st, np.full(st.size, 2.0))
    return run


@fixture("G005", False, "Ratio 3e-6 at the end of a run whose loss fell 2.26 → 1.56 (31 %, over the 30 % bar): converged, not judged")
def _g005_converged() -> Run:
    run = Run(meta={"lr": 1e-5, "params": params_meta("0.weight")})
    put(run, "loss", np.arange(450), np.linspace(2.3, 1.52, 450))
    st = np.arange(0, 450, 10)
    put(run, "update_ratio/0.weight", st, np.full(st.size, 3e-6))
    put(run, "weight_norm/0.weight", st, np.full(st.size, 2.0))
    return run


def _grads(run: Run, st: np.ndarray, names: list[str], value: float = 0.3) -> None:
    put(run, "grad_norm", st, np.full(st.size, value * math.sqrt(len(names))))
    for n in names:
        put(run, f"grad_norm/{n}", st, np.full(st.size, value))


@fixture("G006", True, "``h = self.encoder(x).detach()``: all of `encoder.*` get no gradient",
         evidence={"no_gradient": ["encoder.weight", "encoder.bias"], "sampled_steps": 10}, step=0)
def _g006_detached_encoder() -> Run:
    run = Run(meta={"params": params_meta("encoder.weight", "head.weight")})
    st = np.arange(0, 100, 10)
    _grads(run, st, ["head.weight", "head.bias"])
    for s in st:
        event(run, int(s), "no_grad", {"params": ["encoder.weight", "encoder.bias"], "count": 2,
                                       "requires_grad_false": [], "of": 4})
    return run


@fixture("G006", True, "A ReLU net at lr=1 dies: the gradients of all 4 tensors are exactly 0 from step 50 on",
         evidence={"count": 4, "of": 4, "from_step": 50}, step=50)
def _g006_network_died() -> Run:
    run = Run()
    st = np.arange(0, 100, 10)
    v = np.where(st < 50, 0.3, 0.0)
    for n in ("0.weight", "0.bias", "2.weight", "2.bias"):
        put(run, f"grad_norm/{n}", st, v)
    return run


@fixture("G006", False, "`encoder.*` lacks a gradient on 9 of the 10 sampled steps (one branch skips it): not never")
def _g006_missing_on_9_of_10() -> Run:
    run = Run()
    st = np.arange(0, 100, 10)
    _grads(run, st, ["head.weight", "head.bias"])
    for s in st[1:]:
        event(run, int(s), "no_grad", {"params": ["encoder.weight", "encoder.bias"], "count": 2,
                                       "requires_grad_false": [], "of": 4})
    return run


@fixture("G007", True, "Gradient norm 2e-7 from step 300 on, loss flat at 1.9 of a 2.3 start",
         evidence={"grad_norm": 2e-7, "early_grad_norm": 0.5, "loss": 1.9})
def _g007_saddle() -> Run:
    run = Run(meta={"optimizer": {"class": "SGD", "lr": 0.01, "momentum": 0.0}})
    rng = np.random.default_rng(7)
    loss = np.concatenate([np.linspace(2.3, 1.9, 300), np.full(300, 1.9)]) + rng.normal(0, 0.002, 600)
    put(run, "loss", np.arange(600), loss)
    st = np.arange(0, 600, 10)
    put(run, "grad_norm", st, np.where(st < 300, 0.5, 2e-7))
    return run


@fixture("G007", False, "Gradient norm 2e-7 from step 300 on, loss flat at 1.05 of a 2.3 start (under half of it): "
         "converged")
def _g007_converged() -> Run:
    run = Run()
    rng = np.random.default_rng(7)
    loss = np.concatenate([np.linspace(2.3, 1.05, 300), np.full(300, 1.05)]) + rng.normal(0, 0.002, 600)
    put(run, "loss", np.arange(600), loss)
    st = np.arange(0, 600, 10)
    put(run, "grad_norm", st, np.where(st < 300, 0.5, 2e-7))
    return run


@fixture("G008", True, "``loss.backward(); optimizer.step()`` and no ``zero_grad``: at step 50, 6 of 6 parameters still "
         "hold the gradients of steps 0–49", evidence={"count": 6, "of": 6, "steps": [50, 100]}, step=50)
def _g008_no_zero_grad() -> Run:
    run = Run()
    put(run, "loss", np.arange(150), loss_curve(150, 2.3, 1.5))
    names = [f"{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")]
    for s in (50, 100):
        event(run, s, "stale_grad", {"count": 6, "of": 6, "params": names, "where": "train.py:23"})
    return run


@fixture("G008", False, "Gradient accumulation over 4 steps with ``zero_grad`` after each optimizer step: no stale "
         "gradient seen")
def _g008_accumulation_cleared() -> Run:
    run = Run()
    put(run, "loss", np.arange(150), loss_curve(150, 2.3, 1.5))
    put(run, "grad_norm", np.arange(0, 150, 10), np.full(15, 0.4))
    return run


# ======================================================================================== A: activations
@fixture("A001", True, "`relu1`: 71 % of units dead from step 150 on, after update ratios of 0.2",
         evidence={"module": "relu1", "dead_fraction": 0.71, "update_ratio_before": 0.2}, step=150)
def _a001_dead_after_big_steps() -> Run:
    run = Run()
    st = np.arange(0, 310, 10)
    put(run, "dead_frac/relu1", st, np.where(st < 150, 0.05, 0.71))
    put(run, "dead_frac/relu2", st, np.full(st.size, 0.1))
    put(run, "update_ratio/fc1.weight", st, np.where(st <= 150, 0.2, 1e-3))
    return run


@fixture("A001", True, "`relu1` 90 % dead at the first forward pass, before any update: the initialisation",
         evidence={"module": "relu1", "dead_from_start": True}, step=0)
def _a001_dead_from_start() -> Run:
    run = Run()
    st = np.arange(0, 310, 10)
    put(run, "dead_frac/relu1", st, np.full(st.size, 0.9))
    return run


@fixture("A001", False, "`relu1`: 48 % of units dead from step 150 on (under the 50 % bar)")
def _a001_48_percent() -> Run:
    run = Run()
    st = np.arange(0, 310, 10)
    put(run, "dead_frac/relu1", st, np.where(st < 150, 0.05, 0.48))
    return run


@fixture("A002", True, "`act3` (Tanh): 83 % of outputs beyond ±0.99 on raw 0–255 inputs",
         evidence={"module": "act3", "saturated_fraction": 0.83}, step=0)
def _a002_tanh_saturated() -> Run:
    run = Run(meta={"input_stats": {"mean": 33.3, "std": 78.6, "absmax": 255.0}})
    st = np.arange(0, 200, 10)
    put(run, "saturated_frac/act3", st, np.full(st.size, 0.83))
    put(run, "saturated_frac/act1", st, np.full(st.size, 0.2))
    return run


@fixture("A002", False, "`act3` (Tanh): 49 % of outputs beyond ±0.99 (under the 50 % bar)")
def _a002_49_percent() -> Run:
    run = Run()
    st = np.arange(0, 200, 10)
    put(run, "saturated_frac/act3", st, np.full(st.size, 0.49))
    return run


@fixture("A003", True, "Logits reach 4e+03 by step 200 with inputs in [0, 255] and init std 1",
         evidence={"series": "logits_absmax", "absmax": 4e3, "first": 2.5e3}, step=0)
def _a003_logits_4e3() -> Run:
    run = Run(meta={"input_stats": {"mean": 33.3, "std": 78.6, "absmax": 255.0}})
    st = np.arange(0, 310, 10)
    put(run, "logits_absmax", st, np.where(st < 200, np.linspace(2.5e3, 4e3, st.size), 4e3))
    return run


@fixture("A003", True, "Logits 3 at step 0 grow to 450 by step 150 (150×, above 100): the updates blew them up",
         evidence={"series": "logits_absmax", "first": 3.0, "peak": 450.0})
def _a003_logits_grew() -> Run:
    run = Run()
    st = np.arange(0, 310, 10)
    put(run, "logits_absmax", st, np.minimum(np.geomspace(3.0, 4500.0, st.size), 450.0))
    return run


@fixture("A003", False, "Logits steady at |x| = 900 from the first step (under 1e3, and not grown)")
def _a003_logits_900() -> Run:
    run = Run()
    st = np.arange(0, 310, 10)
    put(run, "logits_absmax", st, np.full(st.size, 900.0))
    put(run, "act_absmax/relu1", st, np.full(st.size, 50.0))
    return run


def _nonfinite_at(run: Run, step: int, n: int = 300) -> None:
    loss = loss_curve(n, 2.3, 0.8, noise=0.02, seed=step)
    loss[step:] = np.nan
    put(run, "loss", np.arange(n), loss)


@fixture("A004", True, "`head` (Linear) outputs Inf for samples 17 and 40 at step 212",
         evidence={"name": "head", "type": "Linear", "sample_ids": [17, 40]}, step=212)
def _a004_head_overflows() -> Run:
    run = Run()
    _nonfinite_at(run, 212)
    event(run, 212, "nonfinite_loss", {"value": math.inf, "batch_ids_known": True, "first_module": {
        "name": "head", "type": "Linear", "positions": [3, 9], "count": 2, "sample_ids": [17, 40]}})
    return run


@fixture("A004", False, "`head` outputs NaN at step 212, but the input batch already held NaN (D001's case)")
def _a004_inputs_were_nonfinite() -> Run:
    run = Run()
    _nonfinite_at(run, 212)
    event(run, 212, "nonfinite_loss", {
        "value": math.nan, "batch_ids_known": True,
        "input_nonfinite": {"positions": [3], "count": 1, "batch_size": 32, "sample_ids": [17]},
        "first_module": {"name": "head", "type": "Linear", "positions": [3], "count": 1, "sample_ids": [17]}})
    return run


# ============================================================================================== D: data
@fixture("D001", True, "Loss NaN at step 4; input rows 7 and 19 of that batch (dataset indices 200 and 1400) are NaN",
         evidence={"sample_ids": [200, 1400], "positions": [7, 19], "count": 2}, step=4)
def _d001_nan_rows_live() -> Run:
    run = Run()
    _nonfinite_at(run, 4, n=20)
    event(run, 4, "nonfinite_loss", {"value": math.nan, "batch_ids_known": True, "input_nonfinite": {
        "positions": [7, 19], "count": 2, "batch_size": 32, "sample_ids": [200, 1400]}})
    return run


@fixture("D001", True, "A checkup's scan: 3 of 1797 train samples hold NaN in their inputs (indices 5, 77, 1203)",
         evidence={"sample_ids": [5, 77, 1203]})
def _d001_nan_rows_scan() -> Run:
    run = Run()
    event(run, 0, "data_nonfinite", {"split": "train", "where": "inputs", "count": 3, "sample_ids": [5, 77, 1203],
                                     "ids": "indices", "samples_scanned": 1797})
    return run


@fixture("D001", False, "Loss NaN at step 4 with a finite input batch: `head` overflowed first (A004's case)")
def _d001_finite_inputs() -> Run:
    run = Run()
    _nonfinite_at(run, 4, n=20)
    event(run, 4, "nonfinite_loss", {"value": math.nan, "batch_ids_known": True, "first_module": {
        "name": "head", "type": "Linear", "positions": [7], "count": 1, "sample_ids": [200]}})
    return run


def _profile(split: str = "train", *, inputs: dict | None = None, targets: dict | None = None,
             classes: dict | None = None, order: dict | None = None, loss_kind: str | None = "cross_entropy",
             samples: int = 1797, first_batch: bool = False) -> dict[str, Any]:
    """A ``data_profile`` as ``checks/data.py``'s profile ``facts()`` writes it."""
    d: dict[str, Any] = {
        "split": split, "samples": samples, "batches": samples // 32 + 1, "batch_size": 32, "input_samples": samples,
        "ids": "indices", "loss_kind": loss_kind,
        "inputs": {"shape": [64], "dtype": "float32", "count": samples * 64, "min": -2.0, "max": 2.0, "mean": 0.0,
                   "std": 1.0, "rms": 1.0, "integer_valued": False, "feature_axis": "feature", "columns": 64,
                   "constant_columns": 0, "max_abs_mean": 0.1, "max_abs_mean_column": 3, "max_std": 1.2,
                   "max_std_column": 5, "min_std": 0.8, **(inputs or {})},
        "targets": {"shape": [], "dtype": "int64", "kind": "class_index", "count": samples, "min": 0.0, "max": 9.0,
                    "mean": 4.5, "std": 2.9, "rms": 5.3, "integer_valued": True, **(targets or {})},
    }
    if classes is not None:
        d["classes"] = {"counts": classes, "num_outputs": len(classes)}
    if order is not None:
        d["order"] = order
    if first_batch:
        d["first_batch"] = True
    return d


@fixture("D002", True, "MNIST read as uint8 and cast to float: integers in [0, 255], mean 33.3, std 78.6",
         evidence={"min": 0.0, "max": 255.0, "mean": 33.3, "std": 78.6, "integer_valued": True})
def _d002_raw_pixels() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(inputs={
        "shape": [1, 28, 28], "min": 0.0, "max": 255.0, "mean": 33.3, "std": 78.6, "rms": 85.4, "integer_valued": True,
        "feature_axis": "channel", "columns": 1, "max_abs_mean": 33.3, "max_abs_mean_column": 0, "max_std": 78.6,
        "max_std_column": 0, "min_std": 78.6}))
    return run


@fixture("D002", False, "Integer counts in [0, 20] (not above 20), RMS 4.9 (not above 5), every feature's mean and "
         "std under 10")
def _d002_small_counts() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(inputs={
        "min": 0.0, "max": 20.0, "mean": 3.0, "std": 3.87, "rms": 4.9, "integer_valued": True, "max_abs_mean": 9.5,
        "max_std": 9.5, "min_std": 0.5}))
    return run


@fixture("D002", False, "Raw [0, 255] pixels into a model whose forward divides by 255 before its first layer")
def _d002_scaled_in_forward() -> Run:
    run = _d002_raw_pixels()
    event(run, 0, "model_graph", {"losses": [], "input_ops": ["div", "linear"]})
    return run


@fixture("D003", True, "California housing prices in dollars: targets mean 2.07e5, std 1.15e5, first MSE 5.6e10",
         evidence={"mean": 2.07e5, "std": 1.15e5, "rms": 2.368e5, "loss_kind": "mse"})
def _d003_prices() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(loss_kind="mse", samples=16512, targets={
        "shape": [1], "dtype": "float32", "kind": "continuous", "count": 16512, "min": 14999.0, "max": 500001.0,
        "mean": 2.07e5, "std": 1.15e5, "rms": 2.368e5, "integer_valued": False}))
    return run


@fixture("D003", False, "Regression targets with RMS 9.9 (mean 9.0, std 4.1): under the bar of 10")
def _d003_rms_99() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(loss_kind="mse", targets={
        "shape": [1], "dtype": "float32", "kind": "continuous", "min": 0.5, "max": 20.0, "mean": 9.0, "std": 4.1,
        "rms": 9.9, "integer_valued": False}))
    return run


@fixture("D004", True, "``IndexError: Target 10 is out of bounds.`` at step 3 with a 10-output model: labels run 1…10",
         evidence={"exception": "IndexError", "detail": "class index 10 is outside the model's output classes"}, step=3)
def _d004_target_out_of_bounds() -> Run:
    run = Run()
    put(run, "loss", np.arange(3), [2.31, 2.29, 2.30])
    event(run, 3, "crash", {"type": "IndexError", "message": "Target 10 is out of bounds.", "where": "train.py:41",
                            "line": "loss = loss_fn(model(x), y)"})
    return run


@fixture("D004", True, "A checkup finds class index 10 in 179 train samples of a 10-output model, before any crash",
         evidence={"problem": "index_out_of_range", "count": 179})
def _d004_scan_index_out_of_range() -> Run:
    run = Run()
    event(run, 0, "label_domain", {"split": "train", "problem": "index_out_of_range", "loss_kind": "cross_entropy",
                                   "output_shape": [10], "target_dtype": "int64", "ids": "indices", "count": 179,
                                   "sample_ids": [4, 11, 20], "values": [10], "num_outputs": 10})
    return run


@fixture("D004", False, "A crash that is not about labels: ``mat1 and mat2 shapes cannot be multiplied (32x784 and "
         "64x10)`` at step 0 (M014's)")
def _d004_shape_crash() -> Run:
    run = Run()
    event(run, 0, "crash", {"type": "RuntimeError", "message": "mat1 and mat2 shapes cannot be multiplied (32x784 and "
                            "64x10)", "where": "train.py:30", "line": "out = model(x)"})
    return run


@fixture("D005", True, "Fraud detection: 9 850 negatives, 150 positives — ratio 65.7",
         evidence={"ratio": 9850 / 150, "most": "0", "least": "1", "samples": 10000})
def _d005_fraud() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(samples=10000, classes={"0": 9850, "1": 150}, loss_kind="cross_entropy"))
    return run


@fixture("D005", False, "990 negatives, 100 positives — ratio 9.9, under the 10× bar")
def _d005_ratio_99() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(samples=1090, classes={"0": 990, "1": 100}))
    return run


@fixture("D005", False, "A first batch of 32 with 31 of class 0 and 1 of class 1: one batch says little, not judged")
def _d005_first_batch_only() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(samples=64, classes={"0": 62, "1": 2}, first_batch=True))
    return run


@fixture("D006", True, "Two ``random_split`` calls with different seeds: 72 of 360 validation samples (20 %) are "
         "training samples", evidence={"duplicates": 72, "val_samples": 360, "fraction_of_val": 0.2})
def _d006_two_splits() -> Run:
    run = Run()
    event(run, 0, "data_leakage", {"train_samples": 1437, "val_samples": 360, "duplicates": 72, "fraction_of_val": 0.2,
                                   "train_internal_duplicates": 0, "val_ids": list(range(72)),
                                   "train_ids": list(range(100, 172))})
    return run


@fixture("D006", False, "21 of 360 validation samples (5.8 %) in training, where training itself repeats 2 % of its "
         "samples: no more overlap than 3× that rate explains")
def _d006_explained_by_internal_duplicates() -> Run:
    run = Run()
    event(run, 0, "data_leakage", {"train_samples": 1440, "val_samples": 360, "duplicates": 21,
                                   "fraction_of_val": 21 / 360, "train_internal_duplicates": 29,
                                   "val_ids": list(range(21)), "train_ids": list(range(100, 121))})
    return run


@fixture("D007", True, "Digits sorted by label, ``shuffle=False``, batch 32: 1.2 classes per batch where shuffled "
         "batches hold 9.7; runs of 178 samples of one class",
         evidence={"mean_classes_per_batch": 1.2, "expected_classes_per_batch": 9.7, "longest_run": 178})
def _d007_sorted_digits() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(classes={str(c): 180 for c in range(10)}, order={
        "batches": 56, "batch_size": 32, "mean_classes_per_batch": 1.2, "expected_classes_per_batch": 9.7,
        "single_class_batches": 45, "longest_run": 178, "labels_seen": 1792, "sampler": "SequentialSampler"}))
    return run


@fixture("D007", False, "Two classes, batch 32: 1.51 classes per batch where shuffled batches hold 2.0 (the extra "
         "class in more than half the batches it should be)")
def _d007_two_classes_half_mixed() -> Run:
    run = Run()
    event(run, 0, "data_profile", _profile(classes={"0": 900, "1": 897}, order={
        "batches": 56, "batch_size": 32, "mean_classes_per_batch": 1.51, "expected_classes_per_batch": 2.0,
        "single_class_batches": 27, "longest_run": 60, "labels_seen": 1792, "sampler": "RandomSampler"}))
    return run


def _outliers(count: int, samples: int = 1347) -> dict[str, Any]:
    rng = np.random.default_rng(8)
    cands = [{"id": 512, "label": 3, "predicted": 8, "loss": 9.3}] + [
        {"id": int(i), "label": int(i % 10), "predicted": int((i + 3) % 10), "loss": float(x)}
        for i, x in zip(rng.choice(np.arange(1000, 1347), count - 1, replace=False), np.linspace(9.0, 4.7, count - 1))]
    return {"samples": samples, "median_loss": 0.21, "mean_loss": 0.4, "threshold": 4.6, "above_threshold": count,
            "candidates": cands, "trained_steps": 300, "learned": True, "loss_kind": "cross_entropy"}


@fixture("D008", True, "2 % of digits relabelled at random: 27 samples with loss 4.7–9.3, e.g. id 512 labelled 3, "
         "predicted 8", evidence={"count": 27, "samples": 1347, "threshold": 4.6})
def _d008_relabelled() -> Run:
    run = Run()
    event(run, 0, "label_outliers", _outliers(27))
    return run


@fixture("D008", False, "Only 2 samples above the loss bar after the short training (3 needed)")
def _d008_two_outliers() -> Run:
    run = Run()
    event(run, 0, "label_outliers", _outliers(2))
    return run


# ================================================================================ V: training vs validation
_EVAL_STEPS = np.arange(100, 1300, 100)


@fixture("V001", True, "val_loss 0.41 at step 600 (best), 0.48 at 900, 0.57 at 1200, while train goes 0.30 → 0.05",
         evidence={"best_step": 600, "best_val_loss": 0.41, "last_val_loss": 0.57}, step=600)
def _v001_overfits() -> Run:
    train = np.concatenate([np.geomspace(2.0, 0.30, 601), np.geomspace(0.30, 0.05, 600)[1:], [0.05]])
    val = [1.5, 1.1, 0.8, 0.6, 0.48, 0.41, 0.43, 0.45, 0.48, 0.51, 0.54, 0.57]
    return with_train_val(train, _EVAL_STEPS, val)


@fixture("V001", False, "val_loss 0.41 at step 600 (best), 0.4264 at 1200 (1.04×, under the 5 % rise), while train "
         "goes 0.30 → 0.05")
def _v001_rise_4_percent() -> Run:
    train = np.concatenate([np.geomspace(2.0, 0.30, 601), np.geomspace(0.30, 0.05, 600)[1:], [0.05]])
    val = [1.5, 1.1, 0.8, 0.6, 0.48, 0.41, 0.412, 0.415, 0.418, 0.421, 0.424, 0.4264]
    return with_train_val(train, _EVAL_STEPS, val)


@fixture("V002", True, "weight_decay=1.0: train 1.95 → 1.93, val 1.96 → 1.95 over 20 epochs on digits",
         evidence={"train": 1.93, "val": 1.95, "evaluations": 20, "weight_decay": 1.0})
def _v002_weight_decay() -> Run:
    train = epochs(np.linspace(1.95, 1.93, 20), noise=0.005, seed=21)
    run = with_train_val(train, np.arange(49, 1000, 50), np.linspace(1.96, 1.95, 20), num_classes=10,
                         loss_kind="cross_entropy", optimizer={"class": "SGD", "lr": 0.1, "weight_decay": 1.0})
    return run


@fixture("V002", False, "Both flat over 20 epochs but low: train 1.12 → 1.11, just under half the chance loss "
         "(0.5·ln 10 = 1.151)")
def _v002_flat_but_low() -> Run:
    train = epochs(np.linspace(1.12, 1.11, 20), noise=0.005, seed=21)
    return with_train_val(train, np.arange(49, 1000, 50), np.linspace(1.13, 1.12, 20), num_classes=10,
                          loss_kind="cross_entropy")


@fixture("V003", True, "80 % of training labels shuffled: train 2.28 → 2.25, val 2.30 → 1.70",
         evidence={"val_first": 2.30, "val_last": 1.70}, step=49)
def _v003_shuffled_labels() -> Run:
    train = epochs(np.linspace(2.28, 2.25, 10), noise=0.01, seed=31)
    return with_train_val(train, np.arange(49, 500, 50), np.linspace(2.30, 1.70, 10))


@fixture("V003", False, "Train 2.28 → 2.25 while val 2.30 → 2.10: validation improves under the 10 % bar")
def _v003_val_falls_8_percent() -> Run:
    train = epochs(np.linspace(2.28, 2.25, 10), noise=0.01, seed=31)
    return with_train_val(train, np.arange(49, 500, 50), np.linspace(2.30, 2.10, 10))


@fixture("V004", True, "train 0.8 → 1.9 and val 0.9 → 2.2 over the last 10 epochs",
         evidence={"train_last": 1.9, "val_min": 0.9, "val_last": 2.2}, step=549)
def _v004_both_rise() -> Run:
    levels = np.concatenate([np.linspace(1.5, 0.8, 10), np.linspace(0.8, 1.9, 11)[1:]])
    val = np.concatenate([np.linspace(1.6, 0.9, 10), np.linspace(0.9, 2.2, 11)[1:]])
    return with_train_val(epochs(levels), np.arange(49, 1000, 50), val)


@fixture("V004", False, "train 0.8 → 0.92 and val 0.9 → 1.035 over the last 10 epochs: both rise, but 15 % (under 20 %)")
def _v004_both_rise_15_percent() -> Run:
    levels = np.concatenate([np.linspace(1.5, 0.8, 10), np.linspace(0.8, 0.92, 11)[1:]])
    val = np.concatenate([np.linspace(1.6, 0.9, 10), np.linspace(0.9, 1.035, 11)[1:]])
    return with_train_val(epochs(levels), np.arange(49, 1000, 50), val)


@fixture("V005", True, "Validation features shifted by +3 std: train 2.2 → 0.1, val 6.4 → 7.9",
         evidence={"val_first": 6.4, "val_last": 7.9}, step=49)
def _v005_shifted_validation() -> Run:
    train = loss_curve(500, 2.2, 0.1, noise=0.02, seed=51)
    return with_train_val(train, np.arange(49, 500, 50), np.linspace(6.4, 7.9, 10))


@fixture("V005", True, "Measured live: the validation features' means moved 3.0 training stds (noise 0.05); train "
         "2.2 → 0.1, val 1.1 → 0.9", evidence={"input_shift": lambda v: v["median_shift_sd"] == 3.0})
def _v005_input_shift_event() -> Run:
    train = loss_curve(500, 2.2, 0.1, noise=0.02, seed=52)
    run = with_train_val(train, np.arange(49, 500, 50), np.linspace(1.1, 0.9, 10))
    event(run, 49, "input_shift", {"live": True, "median_shift_sd": 3.0, "noise_sd": 0.05, "median_std_ratio": 1.0,
                                   "median_abs_log_std_ratio": 0.01, "noise_log_std": 0.05, "features": 64,
                                   "val_samples": 360, "most_shifted": [{"feature": 5, "shift_sd": 3.4}]})
    return run


@fixture("V005", False, "Train 2.2 → 0.1 while val 2.3 → 2.06: validation improved 10.4 % (over the 10 % bar), never "
         "3× training at the first evaluation")
def _v005_val_improves_10_percent() -> Run:
    train = loss_curve(500, 2.2, 0.1, noise=0.02, seed=51)
    return with_train_val(train, np.arange(49, 500, 50), np.linspace(2.3, 2.06, 10))


@fixture("V006", True, "10 classes, mean top probability 0.12 at step 400",
         evidence={"mean_top_probability": 0.12, "uniform": 0.1}, step=200)
def _v006_near_uniform() -> Run:
    rng = np.random.default_rng(61)
    run = Run(meta={"num_classes": 10, "loss_kind": "cross_entropy"})
    put(run, "loss", np.arange(401), 2.30 + rng.normal(0, 0.005, 401))
    st = np.arange(0, 410, 10)
    put(run, "pred_confidence", st, np.full(st.size, 0.12))
    return run


@fixture("V006", False, "10 classes, mean top probability 0.16 at step 400 (over 1/C + 0.05 = 0.15)")
def _v006_confident_enough() -> Run:
    rng = np.random.default_rng(61)
    run = Run(meta={"num_classes": 10, "loss_kind": "cross_entropy"})
    put(run, "loss", np.arange(401), 2.30 + rng.normal(0, 0.005, 401))
    st = np.arange(0, 410, 10)
    put(run, "pred_confidence", st, np.full(st.size, 0.16))
    return run


def _modes(train_mode: float, eval_mode: float, **meta: Any) -> Run:
    run = Run(meta=dict(meta))
    put(run, "loss", np.arange(300), loss_curve(300, 2.3, train_mode if train_mode > 0 else 0.2))
    st = np.arange(0, 300, 20)
    put(run, "train_mode_loss", st, np.full(st.size, train_mode))
    put(run, "eval_mode_loss", st, np.full(st.size, eval_mode))
    return run


@fixture("V007", True, "BatchNorm1d(momentum=0.0) on raw inputs: train-mode loss 0.2, eval-mode loss 9.8",
         evidence={"train_mode_loss": 0.2, "eval_mode_loss": 9.8, "ratio": 49.0})
def _v007_frozen_batchnorm() -> Run:
    return _modes(0.2, 9.8)


@fixture("V007", False, "The same batch: train-mode loss 0.2, eval-mode loss 0.38 (1.9×, under the 2× bar)")
def _v007_ratio_19() -> Run:
    return _modes(0.2, 0.38)


@fixture("V008", True, "``with torch.no_grad(): val_loss = loss_fn(model(X_val), y_val)`` with ``nn.Dropout(0.3)`` "
         "and ``nn.BatchNorm1d`` still training", evidence={"modules": ["2", "1"]}, step=99)
def _v008_no_eval_call() -> Run:
    run = Run()
    put(run, "loss", np.arange(100), loss_curve(100, 2.3, 0.5))
    put(run, "val_loss", [99], [0.6])
    event(run, 99, "eval_train_mode", {"modules": ["2", "1"], "types": ["Dropout", "BatchNorm1d"],
                                       "where": "train.py:57", "loss": "cross_entropy"})
    return run


@fixture("V008", False, "The same validation after ``model.eval()``: nothing in training mode, no record")
def _v008_eval_called() -> Run:
    run = Run()
    put(run, "loss", np.arange(100), loss_curve(100, 2.3, 0.5))
    put(run, "val_loss", [99], [0.6])
    return run


@fixture("V009", True, "``nn.Dropout(0.9)`` after a 32-unit layer on digits: the same batch scores 1.6 in train mode "
         "and 0.6 in eval mode", evidence={"train_mode_loss": 1.6, "eval_mode_loss": 0.6, "scale": math.log(10)})
def _v009_heavy_dropout() -> Run:
    return _modes(1.6, 0.6, num_classes=10, loss_kind="cross_entropy")


@fixture("V009", False, "``nn.Dropout(0.5)``: train mode 1.1, eval mode 0.4 — train-mode loss under 0.5·ln 10 = 1.151")
def _v009_moderate_dropout() -> Run:
    return _modes(1.1, 0.4, num_classes=10, loss_kind="cross_entropy")


# ========================================================================== M: model, loss and probes
def _graph(*losses: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A ``model_graph`` event's data as the first-step tracer (watch/trace.py) writes it."""
    return {"modules": more.pop("modules", []), "losses": list(losses), "handwritten": more.pop("handwritten", []),
            "stacked_linear": more.pop("stacked_linear", []), "input_ops": more.pop("input_ops", ["linear"]), **more}


def _loss(kind: str, function: str, module: str | None, head: dict[str, Any], target: dict[str, Any] | None = None,
          pred_shape: tuple[int, ...] = (32, 10)) -> dict[str, Any]:
    return {"function": function, "kind": kind, "where": "train.py:40", "code": "loss = loss_fn(out, y)",
            "pred_shape": list(pred_shape), "head": head, "target": target or {}, "loss_module": module,
            "reduction": "mean"}


def _head(op: str, module: str | None = None, module_type: str | None = None, **more: Any) -> dict[str, Any]:
    h = {"op": op, "function": op, "in_model": module is not None, **more}
    if module:
        h.update({"module": module, "module_type": module_type})
    return h


_CLASS_TARGET = {"dtype": "int64", "shape": [32], "min": 0.0, "max": 9.0, "integer_valued": True, "distinct": 10,
                 "values": [float(i) for i in range(10)], "nonfinite": 0, "kind": "class_index"}


@fixture("M001", True, "``nn.Sequential(nn.Linear(64, 10), nn.Softmax(dim=1))`` with ``nn.CrossEntropyLoss()``",
         evidence={"fault": "double_softmax", "module": "1"}, step=0)
def _m001_autograd_graph() -> Run:
    run = Run()
    event(run, 0, "config", {"fault": "double_softmax", "graph": ["SoftmaxBackward0", "LogSoftmaxBackward0",
                                                                  "NllLossBackward0"], "module": "1"})
    return run


@fixture("M001", True, "The same, seen by the traced first step under autocast (a cast between softmax and loss)",
         evidence={"module": "1", "seen_in": "first-step trace"}, step=0)
def _m001_traced() -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(_loss("cross_entropy", "cross_entropy", "CrossEntropyLoss",
                                              _head("softmax", "1", "Softmax", dim=1), _CLASS_TARGET)))
    return run


@fixture("M001", False, "``nn.Softmax`` into ``nn.NLLLoss`` (not cross-entropy): no log-softmax applied twice "
         "(M009's case)")
def _m001_softmax_into_nll() -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(_loss("nll", "nll_loss", "NLLLoss", _head("softmax", "1", "Softmax", dim=1),
                                              _CLASS_TARGET)))
    return run


_BINARY_TARGET = {"dtype": "float32", "shape": [32, 1], "min": 0.0, "max": 1.0, "integer_valued": True, "distinct": 2,
                  "values": [0.0, 1.0], "nonfinite": 0, "kind": "binary"}


@fixture("M002", True, "``torch.sigmoid(model(x))`` passed to ``nn.BCELoss()``",
         evidence={"fault": "sigmoid_bce"}, step=0)
def _m002_sigmoid_bce() -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(_loss("bce", "binary_cross_entropy", "BCELoss", _head("sigmoid"),
                                              _BINARY_TARGET, (32, 1))))
    return run


@fixture("M002", True, "The autograd graph shows BinaryCrossEntropyBackward0 ← SigmoidBackward0 (`out` Sigmoid)",
         evidence={"fault": "sigmoid_bce", "module": "out"}, step=0)
def _m002_autograd_graph() -> Run:
    run = Run()
    event(run, 0, "config", {"fault": "sigmoid_bce", "graph": ["SigmoidBackward0", "BinaryCrossEntropyBackward0"],
                             "module": "out"})
    return run


@fixture("M002", False, "The raw logits passed to ``nn.BCEWithLogitsLoss()``: the fused, stable form")
def _m002_bce_with_logits() -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(_loss("bce_logits", "binary_cross_entropy_with_logits", "BCEWithLogitsLoss",
                                              _head("logits", "fc", "Linear"), _BINARY_TARGET, (32, 1))))
    return run


def _layer(name: str, fan_in: int, fan_out: int, std: float, act: str = "relu", last: bool = False,
           output_std: float | None = None) -> dict[str, Any]:
    gain = {"relu": math.sqrt(2.0), "tanh": 5 / 3, "none": 1.0}[act]
    return {"name": name, "type": "Linear", "fan_in": fan_in, "fan_out": fan_out, "std": std, "mean": 0.0,
            "default_std": 1.0 / math.sqrt(3.0 * fan_in), "xavier_std": math.sqrt(2.0 / (fan_in + fan_out)),
            "kaiming_std": gain / math.sqrt(fan_in), "activation": act, "last": last, "output_std": output_std}


@fixture("M003", True, "``nn.init.normal_(w, std=1.0)`` on Linear(64, 64) + ReLU: std 1.0 against Kaiming's 0.177; "
         "the output scale grows 40× from the first to the last layer",
         evidence={"module": "fc1", "drift": 40.0})
def _m003_std_one() -> Run:
    run = Run()
    event(run, 0, "init_scale", {"measured": True, "layers": [
        _layer("fc1", 64, 64, 1.0, output_std=1.0), _layer("fc2", 64, 64, 0.072, output_std=6.3),
        _layer("fc3", 64, 10, 0.072, act="none", last=True, output_std=40.0)]})
    return run


@fixture("M003", False, "``normal_(w, std=0.5)`` on Linear(64, 64) + ReLU: 2.8× Kaiming's 0.177, under the 3× bar; "
         "output scale grows 20×")
def _m003_std_half() -> Run:
    run = Run()
    event(run, 0, "init_scale", {"measured": True, "layers": [
        _layer("fc1", 64, 64, 0.5, output_std=1.0), _layer("fc2", 64, 64, 0.072, output_std=4.5),
        _layer("fc3", 64, 10, 0.072, act="none", last=True, output_std=20.0)]})
    return run


def _fit(fitted: bool, best: float) -> dict[str, Any]:
    tries = [{"lr": lr, "steps": 300, "initial_loss": 2.30, "final_loss": best + 0.01, "eval_mode_loss": best + 0.01,
              "best_loss": best, "target": 0.069, "fitted": fitted and lr == 1e-2} for lr in (1e-3, 1e-2)]
    return {"variant": "tiny_batch", "samples": 10, "sample_ids": list(range(10)), "optimizer": "Adam", "floor": 0.0,
            "tolerance": 0.03, "fitted": fitted, "initial_loss": 2.30, "best_loss": best, "target": 0.069,
            "tries": tries, "params_trained": 650}


@fixture("M004", True, "``nn.Softmax`` before ``nn.CrossEntropyLoss``: 10 samples, loss 2.30 → 1.47 after 600 steps",
         evidence={"sample_ids": list(range(10)), "probes": lambda p: p[0]["best_loss"] == 1.47})
def _m004_double_softmax_cannot_fit() -> Run:
    run = Run()
    event(run, 0, "config", {"fault": "double_softmax", "graph": ["SoftmaxBackward0", "LogSoftmaxBackward0",
                                                                  "NllLossBackward0"], "module": "1"})
    event(run, 0, "fit_probe", _fit(False, 1.47))
    return run


@fixture("M004", False, "10 samples fitted: loss 2.30 → 0.06 after 600 steps, under the 0.069 target")
def _m004_fits() -> Run:
    run = Run()
    event(run, 0, "fit_probe", _fit(True, 0.06))
    return run


def _depth(deep: float, shallow: float) -> dict[str, Any]:
    return {"steps": 300, "optimizer": "SGD", "how": "2 of its 10 hidden layers",
            "deep": {"params": 42_000, "final_loss": deep, "initial_loss": 2.30},
            "shallow": {"params": 5_000, "final_loss": shallow, "initial_loss": 2.31}}


@fixture("M005", True, "10 sigmoid layers with plain SGD: 2.29 after 300 steps, against 0.41 for the 2-layer variant",
         evidence={"steps": 300, "deep": lambda d: d["final_loss"] == 2.29})
def _m005_deep_worse() -> Run:
    run = Run()
    event(run, 0, "depth_probe", _depth(2.29, 0.41))
    return run


@fixture("M005", False, "The deep model ends at 0.45 against 0.41 for the shallow one: under 1.1× and 5 % of the "
         "initial loss")
def _m005_deep_slightly_worse() -> Run:
    run = Run()
    event(run, 0, "depth_probe", _depth(0.45, 0.41))
    return run


@fixture("M006", True, "A hand-written Swish whose backward forgets the sigmoid's derivative term: directional error "
         "0.41", evidence={"function": "Swish", "module": "act1", "directional_rel_error": 0.41})
def _m006_wrong_backward() -> Run:
    run = Run()
    event(run, 0, "gradcheck", {"function": "Swish", "module": "act1", "input_shapes": [[32, 64]], "passed": False,
                                "message": "Jacobian mismatch for output 0 with respect to input 0",
                                "directional_rel_error": 0.41})
    return run


@fixture("M006", False, "A correct hand-written Swish: gradcheck passes, directional error 3e-10")
def _m006_correct_backward() -> Run:
    run = Run()
    event(run, 0, "gradcheck", {"function": "Swish", "module": "act1", "input_shapes": [[32, 64]], "passed": True,
                                "message": "", "directional_rel_error": 3e-10})
    return run


def _precision(absmax: float, *, dtype: str = "float16", nonfinite: list[str] | None = None) -> dict[str, Any]:
    return {"param_dtypes": {dtype: 52_000}, "declared": None,
            "absmax": [{"name": "fc1", "type": "Linear", "absmax": absmax, "dtype": dtype},
                       {"name": "fc2", "type": "Linear", "absmax": absmax / 30, "dtype": dtype}],
            "overall_absmax": absmax, "nonfinite_modules": nonfinite or [], "loss_reduction": "mean", "loss_value": 2.3}


@fixture("M007", True, "A half-precision model on raw [0, 255] inputs: `fc1` outputs 1.9e5 → Inf",
         evidence={"module": "fc1", "dtype": "float16"})
def _m007_fc1_overflows() -> Run:
    run = Run()
    event(run, 0, "precision", _precision(65504.0, nonfinite=["fc1"]))
    return run


@fixture("M007", True, "A half-precision model whose `fc1` outputs 2.0e4: 31 % of the float16 maximum (over a quarter)",
         evidence={"module": "fc1", "dtype": "float16", "overall_absmax": 2.0e4})
def _m007_fc1_within_4x() -> Run:
    run = Run()
    event(run, 0, "precision", _precision(2.0e4))
    return run


@fixture("M007", False, "A half-precision model whose `fc1` outputs 1.6e4: 24 % of the float16 maximum (under a quarter)")
def _m007_fc1_under_quarter() -> Run:
    run = Run()
    event(run, 0, "precision", _precision(1.6e4))
    return run


def _mse_on(target: dict[str, Any], pred_shape: tuple[int, ...]) -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(_loss("mse", "mse_loss", "MSELoss", _head("logits", "fc", "Linear"), target,
                                              pred_shape)))
    return run


@fixture("M008", True, "``nn.MSELoss()(model(x), y.float().unsqueeze(1))`` with a 10-output model and digit labels 0…9 "
         "(int64 cast to float)", evidence={"loss_kind": "mse", "pred_shape": [32, 10]}, step=0)
def _m008_mse_on_class_indices() -> Run:
    return _mse_on({**_CLASS_TARGET, "dtype": "float32", "shape": [32, 1], "cast_from": "int64"}, (32, 10))


@fixture("M008", False, "``nn.MSELoss()`` with one output on star ratings 0…9 stored as float (not cast from integers)")
def _m008_ordinal_float_scores() -> Run:
    return _mse_on({**_CLASS_TARGET, "dtype": "float32", "shape": [32, 1]}, (32, 1))


@fixture("M009", True, "``nn.Sequential(..., nn.Linear(64, 10), nn.ReLU())`` with ``nn.CrossEntropyLoss()``: 52 % of "
         "the logits are exactly 0 at step 0", evidence={"activation": "relu", "module": "net.5", "loss_kind":
                                                          "cross_entropy"}, step=0)
def _m009_relu_logits() -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(_loss("cross_entropy", "cross_entropy", "CrossEntropyLoss",
                                              _head("relu", "net.5", "ReLU", zero_fraction=0.52, min=0.0, max=3.1),
                                              _CLASS_TARGET)))
    return run


@fixture("M009", False, "``nn.ReLU()`` on a regression output into ``nn.MSELoss()`` with targets in [0.0, 5.0]: all "
         "reachable")
def _m009_relu_regression_nonnegative() -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(_loss("mse", "mse_loss", "MSELoss", _head("relu", "net.5", "ReLU"),
                                              {"dtype": "float32", "shape": [32, 1], "min": 0.0, "max": 5.0,
                                               "integer_valued": False, "distinct": 32, "values": [0.0, 0.1]},
                                              (32, 1))))
    return run


def _stacked(dims: list[int]) -> Run:
    run = Run()
    event(run, 0, "model_graph", _graph(stacked_linear=[{
        "first": {"module": "0", "module_type": "Linear", "op": "linear", "where": "model.py:5"},
        "second": {"module": "1", "module_type": "Linear", "op": "linear", "where": "model.py:6"},
        "between": [], "dims": dims, "first_groups": 1}]))
    return run


@fixture("M010", True, "``nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 10))``: 64→128→10 collapses to 64→10",
         evidence={"module": "1", "after": "0"}, step=0)
def _m010_two_linears() -> Run:
    return _stacked([64, 128, 10])


@fixture("M010", False, "A low-rank bottleneck ``Linear(64, 8)`` → ``Linear(8, 64)``: narrower than both ends, on purpose")
def _m010_bottleneck() -> Run:
    return _stacked([64, 8, 64])


def _baseline(real: float, zero: float) -> dict[str, Any]:
    return {"steps": 300, "real_input_loss": real, "zero_input_loss": zero, "zero_input_initial_loss": 2.31,
            "evaluated_on": "held-out samples", "evaluated_samples": 64}


@fixture("M011", True, "``forward`` returns ``self.head(torch.zeros_like(x))`` after a refactor: 2.30 with the real "
         "inputs, 2.30 with zeros", evidence={"real_input_loss": 2.30, "zero_input_loss": 2.30})
def _m011_input_ignored() -> Run:
    run = Run()
    event(run, 0, "input_baseline", _baseline(2.30, 2.30))
    return run


@fixture("M011", False, "Real inputs 2.18, zeroed inputs 2.30: the real inputs help, just beyond the 95 % bar")
def _m011_inputs_help() -> Run:
    run = Run()
    event(run, 0, "input_baseline", _baseline(2.18, 2.30))
    return run


def _sweep(user_lr: float) -> dict[str, Any]:
    return {"optimizer": "SGD", "suggested_lr": 0.033, "rule": "steepest", "min_loss_lr": 0.1, "diverged_at_lr": 0.42,
            "user_lr": user_lr, "start_lr": 1e-7, "end_lr": 10.0, "num_iter": 100, "points": 100, "smooth_f": 0.05,
            "diverge_th": 5.0, "first_loss": 2.3, "min_loss": 0.9}


@fixture("M012", True, "SGD with lr=10 on the digits MLP: the sweep's loss diverged at 0.42; suggested 0.033",
         evidence={"user_lr": 10.0, "diverged_at_lr": 0.42, "suggested_lr": 0.033})
def _m012_lr_too_high() -> Run:
    run = Run()
    event(run, 0, "lr_range_test", _sweep(10.0))
    return run


@fixture("M012", True, "SGD with lr=1e-5 on the digits MLP: 3300× below the suggested 0.033", evidence={"user_lr": 1e-5})
def _m012_lr_too_low() -> Run:
    run = Run()
    event(run, 0, "lr_range_test", _sweep(1e-5))
    return run


@fixture("M012", False, "SGD with lr=0.4: below the 0.42 where the sweep diverged, within 10× of the lowest-loss LR 0.1")
def _m012_lr_04() -> Run:
    run = Run()
    event(run, 0, "lr_range_test", _sweep(0.4))
    return run


@fixture("M013", True, "``backbone.load_state_dict(state, strict=False)`` loaded 0 of 6 tensors (6 unexpected keys such "
         "as ``module.0.weight``); the backbone is frozen",
         evidence={"module": "backbone", "loaded": 0, "keys": 6, "frozen": ["backbone.0.weight", "backbone.2.weight"]})
def _m013_prefix_mismatch() -> Run:
    run = Run()
    keys = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    event(run, 0, "state_dict_load", {"module": "backbone", "strict": False, "keys": 6, "loaded": 0, "missing": keys,
                                      "unexpected": [f"module.{k}" for k in keys], "where": "train.py:12",
                                      "before_training": True})
    event(run, 0, "frozen_init", {"params": ["backbone.0.weight", "backbone.2.weight"], "layers": [], "count": 2,
                                  "numel": 8192})
    return run


@fixture("M013", False, "``load_state_dict(strict=False)`` loaded 2 of 10 tensors (a new head, 8 keys kept): over 10 %, "
         "nothing frozen")
def _m013_partial_load() -> Run:
    run = Run()
    event(run, 0, "state_dict_load", {"module": "model", "strict": False, "keys": 10, "loaded": 2,
                                      "missing": [f"{i}.weight" for i in range(8)], "unexpected": [],
                                      "where": "train.py:12", "before_training": True})
    return run


@fixture("M014", True, "``ValueError: Expected more than 1 value per channel when training, got input size "
         "torch.Size([1, 64])`` at step 0 with batch_size=1",
         evidence={"exception": "ValueError", "detail": lambda d: "BatchNorm" in d}, step=0)
def _m014_batchnorm_single_sample() -> Run:
    run = Run(meta={"batch_size": 1})
    event(run, 0, "crash", {"type": "ValueError", "message": "Expected more than 1 value per channel when training, "
                            "got input size torch.Size([1, 64])", "where": "train.py:30", "line": "out = model(x)"})
    return run


@fixture("M014", False, "``IndexError: Target 10 is out of bounds.`` at step 3: a label crash, D004's")
def _m014_label_crash() -> Run:
    return _d004_target_out_of_bounds()
