"""One diagnosis of every rank of a distributed run: each rank's run judged on its own, then side by side.

A distributed run is watched rank by rank (``traindoctor run -- torchrun …``): each rank writes its own
run store, with its rank, the world size and, when DistributedDataParallel averages all of its
optimizer's gradients, the ranks of that group in ``meta["distributed"]``. This module takes those
runs (already read; it knows nothing of stores or processes) and gives one :class:`Diagnosis`:

* every rank's own findings, each said with its rank (``rank 1: loss is nan from step 37 …``); a code
  found on several ranks is one row, the earliest rank's, naming the others and their steps;
* the findings of the rank rules (family R, :mod:`traindoctor.rules.ranks`) on the ranks side by side
  (:func:`combine`): a rank going non-finite first, a loss orders of magnitude apart, gradients DDP
  should have made identical, a straggler;
* the causes ranked on each rank with that rank's own facts (ranks differ in their data: one rank's
  data scan must not rule out the NaN samples of another), the most confident of each cause kept. A
  rank that went non-finite only after another rank's NaN reached it through the all-reduce (R001's
  followers) does not add its echo (L001, G003, A004) to the causes.
"""
from __future__ import annotations

import traceback
from dataclasses import replace
from typing import Any

import numpy as np

from .diagnosis import CauseScore, Diagnosis, RuledOut, check_rules, diagnose, rank_causes
from .findings import Finding, severity_rank
from .run import Run

# what a non-finite value that came through the all-reduce shows on the ranks it reached
ECHO = ("L001", "G003", "A004")
METRICS = ("loss", "grad_norm", "step_time", "data_time")


def rank_of(run: Run) -> int | None:
    d = run.meta.get("distributed")
    r = d.get("rank") if isinstance(d, dict) else None
    return r if isinstance(r, int) and not isinstance(r, bool) and r >= 0 else None


def world_size_of(runs: dict[int, Run]) -> int:
    sizes = [run.meta["distributed"].get("world_size") for run in runs.values()
             if isinstance(run.meta.get("distributed"), dict)]
    sizes = [s for s in sizes if isinstance(s, int) and s > 0]
    return max([*sizes, max(runs, default=-1) + 1, len(runs)])


def combine(runs: dict[int, Run]) -> Run:
    """The ranks side by side, as the R rules read them: ``rank<r>/<metric>`` series and
    ``meta["ranks"]`` (world size, ranks watched, and ``synced``: rank → the ranks of its DDP group,
    for the ranks whose every optimized parameter is all-reduced)."""
    synced: dict[str, list[int]] = {}
    out = Run(meta={})
    for r, run in sorted(runs.items()):
        for metric in METRICS:
            s = run.get(metric)
            if s is not None:
                out.series[f"rank{r}/{metric}"] = s
        d = run.meta.get("distributed")
        if isinstance(d, dict) and d.get("grads_synced") and isinstance(d.get("ddp_group"), list):
            synced[str(r)] = [int(g) for g in d["ddp_group"] if isinstance(g, int)]
    out.meta["ranks"] = {"world_size": world_size_of(runs), "watched": sorted(runs), "synced": synced}
    return out


def crash_time(run: Run) -> float:
    """When the rank's script crashed (the ``time`` a watched rank records with its crash), else +inf:
    when one rank's exception makes the others fail in their next collective, all crash at one step,
    and the first in time is the one that started it."""
    times = [e.data.get("time") for e in run.events if e.kind == "crash"]
    times = [t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return float(min(times)) if times else float("inf")


def _on_rank(f: Finding, r: int) -> Finding:
    return replace(f, message=f"rank {r}: {f.message}", evidence={**f.evidence, "rank": r}, causes=list(f.causes))


def _rank_rules(run: Run) -> tuple[list[Finding], list[str]]:
    """The R rules on the combined run; a rule that fails is contained and said, as in ``evaluate``."""
    return check_rules(run, lambda code: code.startswith("R"))


def _who(ranks: list[int], watched: list[int]) -> str:
    if len(ranks) == len(watched) and len(watched) > 1:
        return "every rank"
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def merge(runs: dict[int, Run], *, notes: list[str] | None = None, source: dict[str, Any] | None = None,
          ended: str | None = None) -> Diagnosis:
    """One diagnosis of the ranks' runs (``{rank: run}``). ``notes`` are added first (what the
    launcher did, ranks not found), ``ended`` says how the launcher ended when no rank says more."""
    from .causes.facts import Facts
    from .rules._signals import per_element

    runs = dict(sorted(runs.items()))
    watched = list(runs)
    diags = {r: diagnose(run) for r, run in runs.items()}
    rfind, internal = _rank_rules(combine(runs))
    followers = {int(x) for f in rfind if f.code == "R001" for x in f.evidence.get("followers", [])}
    per_rank = {r: [_on_rank(f, r) for f in d.findings] for r, d in diags.items()}

    # one row per code: the earliest rank's finding, naming the other ranks and their steps
    groups: dict[str, list[tuple[int, Finding]]] = {}
    for r, fs in per_rank.items():
        for f in fs:
            groups.setdefault(f.code, []).append((r, f))
    findings: list[Finding] = []
    crashed = {r: crash_time(run) for r, run in runs.items()}
    for code, lst in groups.items():
        if code == "M014":  # the crash that came first, not a rank that failed in a collective after it
            lst.sort(key=lambda t: (crashed[t[0]], t[1].step if t[1].step is not None else 1 << 62, t[0]))
        else:
            lst.sort(key=lambda t: (t[1].step if t[1].step is not None else 1 << 62, t[0]))
        r0, f0 = lst[0]
        f = replace(f0, evidence={**f0.evidence, "ranks": [r for r, _ in lst]},
                    severity=max((g.severity for _, g in lst), key=severity_rank))
        if len(lst) > 1:
            also = ", ".join(f"rank {r}" + (f" at step {g.step}" if g.step is not None else "") for r, g in lst[1:6])
            f.message += f" (also {also}{' …' if len(lst) > 6 else ''})"
        findings.append(f)
    findings += rfind
    findings.sort(key=lambda f: (-severity_rank(f.severity), f.step if f.step is not None else 1 << 62, f.code))

    # causes: ranked on each rank with its own facts; the most confident of each kept
    best: dict[str, CauseScore] = {}
    ruled: dict[str, RuledOut] = {}
    for r, run in runs.items():
        mine = [f for f in per_rank[r] if not (r in followers and f.code in ECHO)]
        mine += [f for f in rfind if f.evidence.get("rank") == r]
        if not mine:
            continue
        judged = per_element(run)
        try:
            with np.errstate(all="ignore"):
                causes, ruled_r = rank_causes(mine, judged, Facts(judged, mine))
        except Exception as exc:  # noqa: BLE001 - a broken cause must not hide the findings
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            internal.append(f"ranking causes of rank {r} failed ({type(exc).__name__}: {exc} at {tb.filename}:{tb.lineno})")
            continue
        for c in causes:
            if c.id not in best or c.confidence > best[c.id].confidence:
                best[c.id] = c
        for ro in ruled_r:
            ruled.setdefault(ro.id, RuledOut(ro.id, ro.title, [f"rank {r}: {x}" for x in ro.reasons], ro.evidence))
    causes = sorted(best.values(), key=lambda c: (-c.confidence, c.id))
    ruled_out = [ro for cid, ro in sorted(ruled.items()) if cid not in best]

    not_judged = []
    seen_nj: set[tuple[str, str]] = set()
    for d in diags.values():
        for n in d.not_judged:
            if (n.scope, str(n)) not in seen_nj:
                seen_nj.add((n.scope, str(n)))
                not_judged.append(n)

    by_note: dict[str, list[int]] = {}
    for r, d in diags.items():
        for n in d.notes:
            by_note.setdefault(n, []).append(r)
    merged_notes = list(notes or [])
    for n, rs in by_note.items():
        merged_notes.append(n if len(rs) == len(watched) and len(watched) > 1 else f"{_who(rs, watched)}: {n}")
    merged_notes += [f"internal error contained: {m}" for m in internal]

    ends = sorted(((r, d.ended) for r, d in diags.items() if d.ended), key=lambda t: (crashed[t[0]], t[0]))
    end = f"rank {ends[0][0]}: {ends[0][1]}" if ends else ended
    return Diagnosis(findings, causes, not_judged, merged_notes, dict(source or {}), ruled_out, end)
