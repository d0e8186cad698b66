"""Family R: the ranks of a distributed run (R001–R004), judged side by side.

These rules read the run that :func:`traindoctor.ranks.combine` builds from every rank's own run:
``rank<r>/loss`` (every step), ``rank<r>/grad_norm`` (sampled steps), ``rank<r>/step_time`` and
``rank<r>/data_time`` (the step time and the wait for batches in the DataLoader, means over windows of
ten steps, in seconds), and ``meta["ranks"]`` (world size, the
ranks watched, and for each rank the ranks of the DistributedDataParallel group whose all-reduce
averages all of its optimizer's gradients, when that holds). A single process's run has none of
these, so the rules say nothing on it.

Ranks of one data-parallel run share their weights and differ only in their data: their losses
scatter as mini-batches of one dataset do, their gradient norms after DDP's all-reduce are the same
number, and their waits for data are alike. Each rule fires only on a gap no shard of one dataset
makes: a rank alone going non-finite, a loss orders of magnitude apart for a sustained stretch,
gradients that DDP should have made identical and did not, a rank whose data comes so late that the
others wait for it a large share of every step.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np

from ..findings import Finding
from ..numfmt import fmt
from ..run import Run, Series
from . import Rule, rule

_NAME = re.compile(r"^rank(\d+)/(.+)$")

# R002: a rank's loss this many times the others' (or below), over most of the run's second half
APART = 10.0
# R003: relative difference of gradient norms that the all-reduce rules out (it gives identical numbers)
GRAD_TOL = 1e-3
GRAD_CLEAR = 1e-2
# R004: a rank's wait for data this many times the others', costing this share of each step
SLOW_RATIO = 3.0
SLOW_SHARE = 0.2


def rank_series(run: Run, metric: str) -> dict[int, Series]:
    """``{rank: series}`` of ``rank<r>/<metric>``, non-empty ones, by rank."""
    out: dict[int, Series] = {}
    for name, s in run.series.items():
        m = _NAME.match(name)
        if m and m.group(2) == metric and len(s):
            out[int(m.group(1))] = s
    return dict(sorted(out.items()))


def synced_groups(run: Run) -> list[list[int]]:
    """Groups of ranks (two or more watched) whose gradients DDP's all-reduce makes identical."""
    info = run.meta.get("ranks")
    synced = info.get("synced") if isinstance(info, dict) else None
    if not isinstance(synced, dict):
        return []
    groups: dict[tuple[int, ...], list[int]] = {}
    for rk, grp in synced.items():
        try:
            r = int(rk)
            key = tuple(sorted(int(g) for g in grp))
        except (TypeError, ValueError):
            continue
        if r in key:
            groups.setdefault(key, []).append(r)
    return [sorted(members) for key, members in groups.items() if len(members) >= 2]


def _aligned(series: dict[int, Series]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The steps every rank logged, and a ranks × steps matrix of their values there (the last
    value of a step logged twice)."""
    ranks = list(series)
    common: np.ndarray | None = None
    for s in series.values():
        common = s.steps if common is None else np.intersect1d(common, s.steps)
    if common is None or common.size == 0:
        return ranks, np.zeros(0, dtype=np.int64), np.zeros((len(ranks), 0))
    common = np.unique(common)
    mat = np.empty((len(ranks), common.size))
    for i, r in enumerate(ranks):
        s = series[r]
        idx = np.searchsorted(s.steps, common, side="right") - 1
        mat[i] = s.values[idx]
    return ranks, common, mat


def _first_nonfinite(s: Series) -> tuple[int, float] | None:
    bad = ~np.isfinite(s.values)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return int(s.steps[i]), float(s.values[i])


def _value_at(s: Series, step: int) -> float | None:
    hit = np.nonzero(s.steps == step)[0]
    return float(s.values[hit[-1]]) if hit.size else None


def _blowing_up(s: Series, until: int) -> bool:
    """The loss had grown ≥ 10× its early level in the ten steps before ``until``: a divergence shared
    by the weights (L002's), not one rank's batch."""
    early = s.values[np.isfinite(s.values)][: max(5, len(s) // 10)]
    recent = s.values[(s.steps >= until - 10) & (s.steps < until)]
    recent = recent[np.isfinite(recent)]
    if early.size == 0 or recent.size == 0:
        return False
    e = float(np.median(early))
    return e > 0 and float(np.median(recent)) >= 10 * e


def _ranks_text(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(str(r) for r in ranks)


@rule("R001", "error", causes=("nonfinite-data", "code-bug"))
def rank_nonfinite(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds the first step at which a rank's training loss or gradient norm is NaN or ±Inf while
        another rank's loss at that same step is finite, and names that rank.

    Why is this bad?
        Under DistributedDataParallel the ranks hold the same weights, so a NaN on one rank alone
        comes from what that rank alone saw: a batch of its data shard, or code that runs only on
        it. The all-reduce then averages its NaN gradients into every rank's, and the whole job is
        lost a step later: every rank's own report shows a NaN, and only the order tells where it
        started.

    Evidence:
        Per rank, the first non-finite step of the loss (every step) and of the sampled gradient
        norm; the earliest rank(s), the ranks still finite then, and when each other rank followed.
        Not reported when every rank goes non-finite at the same step, or when the loss had grown
        ≥ 10× its early level just before (a divergence of the shared weights: L001/L002 say it).

    Example:
        rank 1: the loss is nan at step 37 while rank 0's is 0.41; rank 0 followed at step 38
        (through the all-reduce).

    Use instead:
        Look at the batch rank 1 drew at that step (its L001/D001 finding names the samples):
        repair or drop them; check code that runs on some ranks only (``if rank == …``).

    Known false positives:
        A loss that is merely close to overflowing everywhere may overflow on one rank's batch a
        step before the others'; the rule stays silent when the loss was growing fast before.
    """
    losses = rank_series(run, "loss")
    grads = rank_series(run, "grad_norm")
    ranks = sorted(set(losses) | set(grads))
    if len(ranks) < 2:
        return []
    first: dict[int, tuple[int, str, float]] = {}
    for metric, series in (("loss", losses), ("gradient norm", grads)):
        for rk, s in series.items():
            hit = _first_nonfinite(s)
            if hit is not None and (rk not in first or hit[0] < first[rk][0]):
                first[rk] = (hit[0], metric, hit[1])
    if not first:
        return []
    step = min(v[0] for v in first.values())
    culprits = sorted(rk for rk, v in first.items() if v[0] == step)
    finite_then: dict[int, float] = {}
    for rk, s in losses.items():
        if rk in culprits:
            continue
        v = _value_at(s, step)
        if v is not None and math.isfinite(v):
            finite_then[rk] = v
    if not finite_then:
        return []
    if any(_blowing_up(losses[rk], step) for rk in [*culprits, *finite_then] if rk in losses):
        return []
    rk0 = culprits[0]
    _, metric, value = first[rk0]
    others = sorted(finite_then)
    shown = ", ".join(f"rank {o}'s is {fmt(finite_then[o])}" for o in others[:3])
    msg = f"{_ranks_text(culprits)}: the {metric} is {value} at step {step} while {shown}"
    followers = {o: first[o][0] for o in others if o in first}
    synced = any(rk0 in g and set(followers) & set(g) for g in synced_groups(run))
    if followers:
        later = ", ".join(f"rank {o} at step {st}" for o, st in sorted(followers.items())[:4])
        msg += f"; the others followed: {later}"
        if synced:
            msg += " (DDP's all-reduce averages every rank's gradients, so one rank's NaN reaches all)"
    else:
        msg += "; the other ranks stayed finite"
    ev: dict[str, Any] = {
        "rank": rk0, "ranks": culprits, "step": step, "metric": "loss" if metric == "loss" else "grad_norm",
        "value": value, "finite_ranks": others, "first_nonfinite": {str(k): v[0] for k, v in sorted(first.items())},
        "followers": sorted(followers),
    }
    causes = [("nonfinite-data", 0.6), ("code-bug", 0.3)]
    return [r.finding(step=step, step_end=step, message=msg, evidence=ev, causes=causes)]


@rule("R002", "warning", causes=("code-bug", "label-noise"))
def rank_loss_apart(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares each rank's training loss with the other ranks' at the same steps, over the second
        half of the run, and finds a rank whose loss stays orders of magnitude above or below.

    Why is this bad?
        Ranks of a data-parallel run train one model on shards of one dataset: their losses at a
        step scatter like mini-batches do, within a few times of each other. A rank whose loss
        stays ten times apart trains on different data: a shard that is not the dataset (labels
        shifted, another file, a transform applied on that rank only), and its gradients pull the
        shared weights somewhere the other ranks do not go.

    Evidence:
        Over the second half of the steps every rank logged with a positive, finite loss (at least
        20): the median of log(loss of the rank) − log(median loss of the other ranks) is beyond
        ±log 10, at least 80 % of the steps are half that far apart on the same side, the
        absolute gap is at least a tenth of the ranks' first losses (two near-zero losses are not
        apart), and, with three ranks or more, the other ranks agree among themselves.

    Example:
        rank 1's loss stays 2.3 while rank 0's falls to 0.09 (25× apart over steps 100–199).

    Use instead:
        Check what rank 1 loads: its shard of the sampler, the files it reads, transforms or label
        maps that depend on the rank; compare one batch of each rank.

    Known false positives:
        Deliberately different data per rank (federated or multi-task set-ups) is reported; a
        loss that can be zero or negative is not judged.
    """
    losses = rank_series(run, "loss")
    if len(losses) < 2:
        return []
    ranks, steps, mat = _aligned(losses)
    with np.errstate(all="ignore"):
        ok = np.isfinite(mat).all(axis=0) & (mat > 0).all(axis=0)
    steps, mat = steps[ok], mat[:, ok]
    if steps.size < 40:
        return []
    start_level = float(np.median(mat[:, :10]))
    half = steps.size // 2
    steps, mat = steps[half:], mat[:, half:]
    logs = np.log(mat)
    best: tuple[float, int, np.ndarray] | None = None
    for i in range(len(ranks)):
        others = np.delete(logs, i, axis=0)
        d = logs[i] - np.median(others, axis=0)
        m = float(np.median(d))
        if best is None or abs(m) > abs(best[0]):
            best = (m, i, d)
    assert best is not None
    m, i, d = best
    if abs(m) < math.log(APART):
        return []
    sign = 1.0 if m > 0 else -1.0
    if float(np.mean(sign * d >= 0.5 * math.log(APART))) < 0.8:  # sustained, not a few wild steps
        return []
    mine = float(np.median(mat[i]))
    theirs = float(np.median(np.median(np.delete(mat, i, axis=0), axis=0)))
    if not (start_level > 0) or abs(mine - theirs) < 0.1 * start_level:
        return []
    if len(ranks) >= 3:
        others = np.delete(logs, i, axis=0)
        spread = float(np.max(np.median(others, axis=1)) - np.min(np.median(others, axis=1)))
        if spread >= abs(m) / 2:
            return []
    if len(ranks) == 2 and m < 0:  # two ranks: name the one with the higher loss, the usual broken one
        i, m = 1 - i, -m
        mine, theirs = theirs, mine
    rk = ranks[i]
    others_txt = f"rank {ranks[1 - i]}'s" if len(ranks) == 2 else "the other ranks'"
    factor = math.exp(abs(m))
    side = "above" if m > 0 else "below"
    msg = (f"rank {rk}'s loss stays {fmt(factor)}× {side} {others_txt} over steps {int(steps[0])}–{int(steps[-1])} "
           f"(median {fmt(mine)} against {fmt(theirs)}): ranks of one run should see shards of one dataset")
    ev = {"rank": rk, "ranks": ranks, "factor": factor, "median_loss": mine, "others_median_loss": theirs,
          "from_step": int(steps[0]), "to_step": int(steps[-1]), "start_level": start_level}
    return [r.finding(step=int(steps[0]), step_end=int(steps[-1]), message=msg, evidence=ev,
                      causes=[("code-bug", 0.5), ("label-noise", 0.3)])]


@rule("R003", "error", causes=("code-bug",))
def rank_gradients_differ(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        For ranks whose optimizer updates only parameters of one DistributedDataParallel model (and
        the same process group), compares their gradient norms at the same sampled steps.

    Why is this bad?
        DDP's all-reduce leaves every rank with the same averaged gradient: the norms are the same
        number on every rank, whatever each rank's data. Different norms mean the gradients were
        not all-reduced (``no_sync()`` around every backward, not only the accumulation steps) or
        were changed on some ranks after it (clipping, scaling or zeroing under ``if rank == 0``):
        the replicas then take different steps and drift apart, and the checkpoint of rank 0 is
        not the model the other ranks trained.

    Evidence:
        At the sampled steps all the group's ranks logged with finite norms: (max − min) / max of
        their norms; reported when it exceeds 1 % at one step, or 0.1 % at two. The all-reduce
        gives identical numbers, so no threshold for data noise is needed.

    Example:
        rank 0's gradient norm 0.41, rank 1's 0.38 at step 10 (7 % apart), at 9 of 10 sampled steps.

    Use instead:
        Leave ``model.no_sync()`` on the last micro-batch of an accumulation; do every change to
        the gradients on every rank; use the DDP module for training, never ``model.module``.

    Known false positives:
        None known: a model whose parameters are partly outside DDP, or an optimizer holding a
        shard of them (ZeroRedundancyOptimizer, FSDP), is not judged.
    """
    grads = rank_series(run, "grad_norm")
    out: list[Finding] = []
    for group in synced_groups(run):
        sub = {rk: grads[rk] for rk in group if rk in grads}
        if len(sub) < 2:
            continue
        ranks, steps, mat = _aligned(sub)
        with np.errstate(all="ignore"):
            ok = np.isfinite(mat).all(axis=0) & (np.abs(mat) > 0).any(axis=0)
        steps, mat = steps[ok], mat[:, ok]
        if steps.size == 0:
            continue
        with np.errstate(all="ignore"):
            rel = (mat.max(axis=0) - mat.min(axis=0)) / np.abs(mat).max(axis=0)
        apart = rel > GRAD_TOL
        if not ((rel > GRAD_CLEAR).any() or apart.sum() >= 2):
            continue
        j = int(np.argmax(apart))
        norms = {ranks[k]: float(mat[k, j]) for k in range(len(ranks))}
        far = max(range(len(ranks)), key=lambda k: abs(mat[k, j] - np.median(mat[:, j])))
        shown = ", ".join(f"rank {rk}'s {fmt(v)}" for rk, v in list(norms.items())[:4])
        msg = (f"gradient norms differ between {_ranks_text(ranks)} at {int(apart.sum())} of {steps.size} sampled steps "
               f"({shown} at step {int(steps[j])}, {fmt(100 * float(rel[j]))} % apart) although DDP's all-reduce makes "
               "them the same: the gradients were not all-reduced (no_sync()) or were changed on some ranks after it, "
               "so the replicas drift apart")
        ev = {"rank": ranks[far], "ranks": ranks, "steps_apart": int(apart.sum()), "of_steps": int(steps.size),
              "first_step": int(steps[j]), "relative_difference": float(rel[j]),
              "max_relative_difference": float(np.nanmax(rel)), "norms": {str(k): v for k, v in norms.items()}}
        out.append(r.finding(step=int(steps[j]), step_end=int(steps[-1]), message=msg, evidence=ev,
                             causes=[("code-bug", 0.7)]))
    return out


@rule("R004", "warning", causes=("code-bug",))
def straggler_rank(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares, window by window, the time each rank's training loop waits inside the DataLoader
        for its batches between two optimizer steps with the other ranks' wait.

    Why is this bad?
        The ranks meet at every all-reduce: a rank whose batches come late makes every other rank
        wait for it, every step, so the whole job runs at the pace of its slowest loader. The wait
        shows on the slow rank only; the others spend it blocked in the all-reduce.

    Evidence:
        Per window of ten steps, the rank's mean wait for data (fetches with gradients on; an
        evaluation's are not counted) against the median of the other ranks' and against the step
        time of the slowest rank: reported when the wait is ≥ 3× the others' and the difference is
        ≥ 20 % of a step, in at least three windows and half of those all ranks logged. A matter of
        speed: it adds to no cause of the diagnosis.

    Example:
        rank 1 waits 21 ms per step for its batches, the others 0.4 ms, in a step of 24 ms (86 %).

    Use instead:
        More DataLoader workers (``num_workers``, ``persistent_workers=True``, ``pin_memory``) or
        faster storage for that rank; a per-sample transform that costs more on that rank's shard
        (larger images, remote files) moved to preprocessing.

    Known false positives:
        None known from the data wait itself (time on the host says little about an accelerator's
        asynchronous work, so that is not read). Not found: a rank slow in its forward or backward
        computation (a slower GPU), or a rank doing extra work outside the loader (logging,
        evaluation, checkpoints on rank 0), and loops that do not use a DataLoader.
    """
    waits = rank_series(run, "data_time")
    periods = rank_series(run, "step_time")
    if len(waits) < 2:
        return []
    ranks, steps, mat = _aligned(waits)
    if steps.size < 3:
        return []
    per = None
    if periods:
        _, psteps, pmat = _aligned(periods)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # the slowest rank's step: the pace of the job when the ranks synchronise
            pmax = np.nanmax(np.where(np.isfinite(pmat), pmat, np.nan), axis=0) if pmat.size else pmat
        per = {int(s): float(v) for s, v in zip(psteps, pmax)}
    out: list[Finding] = []
    for i, rk in enumerate(ranks):
        others = np.median(np.delete(mat, i, axis=0), axis=0)
        step_len = np.array([per.get(int(s), np.nan) if per else np.nan for s in steps])
        with np.errstate(all="ignore"):
            ratio = mat[i] / np.maximum(others, 1e-6)
            share = (mat[i] - others) / step_len
        slow = np.isfinite(mat[i]) & (ratio >= SLOW_RATIO) & (share >= SLOW_SHARE)
        if slow.sum() < 3 or slow.mean() < 0.5:
            continue
        mine, theirs = float(np.median(mat[i][slow])), float(np.median(others[slow]))
        sh = float(np.median(share[slow]))
        msg = (f"rank {rk} waits {fmt(1000 * mine)} ms per step for its batches from the DataLoader, the other "
               f"ranks {fmt(1000 * theirs)} ms, in {int(slow.sum())} of {steps.size} windows (steps "
               f"{int(steps[slow][0])}–{int(steps[slow][-1])}): {fmt(100 * sh)} % of each step, which the other ranks "
               "spend waiting for it at the all-reduce")
        ev = {"rank": rk, "ranks": ranks, "wait_s": mine, "others_wait_s": theirs, "share_of_step": sh,
              "windows_slow": int(slow.sum()), "of_windows": int(steps.size)}
        # a matter of speed, not of why the model does not train: it points at no cause of the differential
        out.append(r.finding(step=int(steps[slow][0]), step_end=int(steps[slow][-1]), message=msg, evidence=ev))
    return out
