"""Where the lead trials' first guess came from (``tune.Search.next_lead``), on the family's development half.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/tune_leads_dev.py            # 11 tasks × 3 repeats, ~12 min

For each development task of ``tune_family.py`` and each repeat, the search as it was before the leads
(``td-noleads``: probe, coarse, fine) is run, and then candidate first guesses are trained fully with three
seeds (16, 17, 18: the seeds of the first fine trials): the coarse stage's three best sets, and the rate
1/3, 1/10, 1/30 or 1/100 of the one the probe's loss blew up at, with the weight decay and dropout of the
coarse stage's best trial (``+coarse``) or turned down (``+off``: weight decay 1e-5, dropout 0.05). The table
counts, per task, the trainings (of 3 repeats × 3 seeds) that reach the task's target. The shipped rule's
first lead is the column that reached it most often (1/30, off); its second follows the doctor's reading.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tune_compare as tc  # noqa: E402
import tune_family as tf  # noqa: E402

SEEDS = (16, 17, 18)
DIVS = (3, 10, 30, 100)


def candidates(trials: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The candidate first guesses from one search's trials (its probe and coarse stage)."""
    probe = next(t for t in trials if t["stage"] == "probe")
    m = re.search(r"blew up at lr ([0-9.e+-]+)", probe["reason"] or "")
    coarse = sorted((t for t in trials if t["stage"] == "coarse" and t["state"] == "COMPLETE"
                     and t["value"] is not None), key=lambda t: t["value"])
    out = {f"coarse #{i + 1}": dict(t["params"]) for i, t in enumerate(coarse[:3])}
    if m and coarse:
        blow, best = float(m.group(1)), coarse[0]["params"]
        for d in DIVS:
            out[f"1/{d} +coarse"] = {"lr": blow / d, "weight_decay": best["weight_decay"], "dropout": best["dropout"]}
            out[f"1/{d} +off"] = {"lr": blow / d, "weight_decay": 1e-5, "dropout": 0.05}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", default="0-23", help="task numbers (only the even ones, the development half, run)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    targets = json.loads(tf.TARGETS.read_text())["targets"]
    want = [k for k in tf.ks(a.tasks) if k % 2 == 0 and str(k) in targets and targets[str(k)]["target"] > 1e-3]
    names = ["coarse #1", "coarse #2", "coarse #3"] + [f"1/{d} {r}" for d in DIVS for r in ("+coarse", "+off")]
    print(f"development half: {len(want)} tasks × {a.repeats} repeats × {len(SEEDS)} seeds; torch {torch.__version__}")
    print()
    print("| task | target | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    total = dict.fromkeys(names, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for k in want:
            task = tf.register(k, float(targets[str(k)]["target"]))
            hits = dict.fromkeys(names, 0)
            for r in range(a.repeats):
                run = tc.one_run(task, "td-noleads", r, 30, Path(tmp))
                for name, p in candidates(run["trials"]).items():
                    vals = [tc.retrain(task, p, s) for s in SEEDS]
                    hits[name] += sum(math.isfinite(v) and v <= task.target for v in vals)
            for n in names:
                total[n] += hits[n]
            print(f"| fam{k} | {task.target} | " + " | ".join(str(hits[n]) for n in names) + " |", flush=True)
    print("| all | | " + " | ".join(f"**{total[n]}**" for n in names) + " |")


if __name__ == "__main__":
    main()
