"""Detection latency per symptom, and false alarms on the healthy suite.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/detection.py

Each faulty script is watched once with `traindoctor run`'s machinery (default cadence, 50 steps). The
rules are then evaluated on the run as it stood at every step t (every series and event cut at
t), as they would be evaluated live, to find the first step at which the symptom is reported.
Latency = that step − the step the fault begins (0 for faults present from the start; the first
bad batch for data faults). Healthy runs count every finding as a false alarm.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

from traindoctor.diagnosis import diagnose
from traindoctor.examples import EXAMPLES, script_path
from traindoctor.run import Run, Series
from traindoctor.watch.launcher import watch_script

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "tests" / "faults" / "scripts"

# (code, script, fault onset step or None = first non-finite loss)
SCENARIOS = [
    ("L001", "ex:lr-too-high", None), ("L002", "ex:lr-too-high", 0), ("L003", "dirty_batches", 89),
    ("L004", "ex:lr-oscillation", 0), ("L005", "ex:lr-too-low", 0), ("L006", "dying_relu", 0),
    ("L007", "zero_init_saddle", 0), ("L008", "ex:bce-saturation", 0), ("L009", "init_std10", 0),
    ("L010", "biased_head", 0), ("L011", "unbalanced_terms", 0),
    ("G002", "deep_sigmoid", 0), ("G003", "sqrt_at_zero", 0), ("G004", "ex:lr-oscillation", 0),
    ("G005", "ex:lr-too-low", 0), ("G006", "frozen_and_detached", 0), ("G007", "zero_init_saddle", 0),
    ("A001", "dying_relu", 0), ("A002", "ex:lr-oscillation", 0), ("A003", "init_std10", 0),
    ("A004", "exp_overflow", 0), ("D001", "ex:nonfinite-data", None), ("D004", "ex:label-out-of-range", 0),
    ("M001", "ex:double-softmax", 0), ("M002", "ex:bce-saturation", 0),
    # configuration faults from the traced first step and the first batches (tests/faults/test_config.py)
    ("M002", "config_keras_ce", 0), ("M003", "init_std10", 0), ("M008", "config_mse_classes", 0),
    ("M009", "config_relu_ce", 0), ("M009", "config_keras_ce", 0), ("M010", "config_stacked_linear", 0),
    ("D001", "config_missing_values", 0), ("D002", "config_raw_pixels", 0), ("D003", "config_house_prices", 0),
    ("D004", "config_mask_255", 0), ("D005", "config_imbalanced", 0), ("D007", "config_sorted", 0),
    ("V001", "tiny_train_big_model", 0), ("V002", "heavy_weight_decay", 0), ("V003", "shuffled_labels", 0),
    ("V004", "rising_lr", 0), ("V005", "shifted_validation", 0), ("V006", "ex:lr-too-low", 0),
    ("V007", "batchnorm_frozen", 0),
]
HEALTHY = [f"ex:{n}" for n, e in EXAMPLES.items() if e.healthy] + [
    "healthy_cnn", "healthy_rnn", "healthy_warmup", "healthy_fullbatch", "healthy_early_stop", "healthy_bn_dropout",
    "healthy_transformer", "healthy_residual", "healthy_nll", "healthy_regression"]


def path_of(name: str) -> Path:
    return script_path(name[3:]) if name.startswith("ex:") else FAULTS / f"{name}.py"


def cut(run: Run, t: int) -> Run:
    out = Run(events=[e for e in run.events if e.step <= t], meta=run.meta)
    for n, s in run.series.items():
        k = s.steps <= t
        if k.any():
            out.series[n] = Series(s.steps[k], s.values[k])
    return out


def first_detection(run: Run, code: str, last: int, every: int = 5) -> int | None:
    for t in range(0, last + 1, every):
        if any(f.code == code for f in diagnose(cut(run, t)).findings):
            # refine to the exact step inside the last interval
            for u in range(max(0, t - every + 1), t + 1):
                if any(f.code == code for f in diagnose(cut(run, u)).findings):
                    return u
            return t
    return None


def main() -> None:
    runs: dict[str, Run] = {}
    t0 = time.time()
    for name in sorted({s for _, s, _ in SCENARIOS} | set(HEALTHY)):
        runs[name] = watch_script(path_of(name), [], store="", err=io.StringIO()).run
    print(f"watched {len(runs)} runs in {time.time() - t0:.0f} s\n")
    print("| code | scenario | fault onset (step) | detected at (step) | latency (steps) | steps in run |")
    print("|---|---|---|---|---|---|")
    for code, name, onset in SCENARIOS:
        run = runs[name]
        last = max([int(s.steps[-1]) for s in run.series.values() if len(s)] + [e.step for e in run.events] + [0])
        if onset is None:
            loss = run.get("loss")
            bad = ~np.isfinite(loss.values)
            onset = int(loss.steps[int(np.argmax(bad))]) if bad.any() else 0
        det = first_detection(run, code, last)
        lat = "not detected" if det is None else str(det - onset)
        print(f"| {code} | {name} | {onset} | {det if det is not None else '—'} | {lat} | {last + 1} |")
    print("\n| healthy run | steps | findings (false alarms) |")
    print("|---|---|---|")
    total = 0
    for name in HEALTHY:
        d = diagnose(runs[name])
        total += len(d.findings)
        steps = runs[name].num_steps
        print(f"| {name} | {steps} | {len(d.findings)}{' ' + ','.join(f.code for f in d.findings) if d.findings else ''} |")
    print(f"\nfalse alarms on {len(HEALTHY)} healthy runs: {total}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
