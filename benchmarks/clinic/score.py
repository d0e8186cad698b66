"""Score the clinic: who named the symptom and the cause, and who cried wolf on healthy runs.

Every run is judged from what it left behind, the way a user would judge it:

* ``run``: the run store ``traindoctor run`` wrote, diagnosed again with the current rules (the
  same diagnosis as the live report: a test keeps them equal);
* ``log``: ``traindoctor diagnose`` on the plain CSV log the script wrote;
* each third-party log tool (``tools.py``) on the same CSV.

A healthy run counts only if it trained (see :func:`healthy_status`); otherwise it is listed as
discarded, not scored. A faulty run of an
``outcome`` operator counts only if the fault measurably hurt it against its healthy twin
(crash, non-finite loss, 3 points of accuracy, or a validation loss 1.5× + 0.1 above the twin's
where there is an accuracy, 1.2× + 0.02 where there is none); the others are
"ineffective mutants", reported separately (a hazard that did not hurt may be said as info).

Measures, per source: symptom recall (a finding with one of the operator's codes), top-1 and
top-3 cause (the truth first / among the first three ranked causes), false alarms (any finding
on a healthy run; also shown for warnings and errors only).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .faults import OPERATORS
from .population import split
from .spec import Spec
from .tasks import TASKS

SEVERE = ("warning", "error")


@dataclass
class Verdict:
    """What one source said about one run."""

    codes: list[str] = field(default_factory=list)
    severities: dict[str, str] = field(default_factory=dict)
    causes: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    ruled_out: dict[str, list[str]] = field(default_factory=dict)
    supports: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def any_finding(self) -> bool:
        return bool(self.codes)

    @property
    def severe_finding(self) -> bool:
        return any(s in SEVERE for s in self.severities.values())


@dataclass
class Case:
    id: str
    spec: Spec
    split: str
    status: str  # healthy | discarded | effective | ineffective | no-twin | error
    why: str = ""
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    @property
    def op(self):
        return OPERATORS.get(self.spec.fault) if self.spec.fault else None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _metric(rec: dict[str, Any]) -> tuple[float | None, float | None]:
    o = rec.get("outcome") or {}
    vl, va = o.get("val_loss"), o.get("val_acc")
    return (float(vl) if _finite(vl) else None), (float(va) if _finite(va) else None)


def val_series(run_dir: Path) -> list[float]:
    """The validation losses the script logged, in order (finite only)."""
    import csv

    out: list[float] = []
    try:
        with open(run_dir / "log.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                v = row.get("val_loss")
                if v not in (None, ""):
                    x = float(v)
                    if math.isfinite(x):
                        out.append(x)
    except (OSError, ValueError):
        pass
    return out


def _overfits(vs: list[float]) -> bool:
    """Ended well above its best validation loss: medians of three, so one noisy evaluation is not it."""
    if len(vs) < 3:
        return False
    med = [float(np.median(vs[i:i + 3])) for i in range(len(vs) - 2)]
    return med[-1] > 1.1 * min(med) + 0.01


def healthy_status(specs: list[Spec], results: dict[str, dict], cache: Path | None = None
                   ) -> dict[str, tuple[str, str]]:
    """healthy | discarded, with the reason, for every healthy spec.

    A drawn run is healthy only if it trained: its validation metric is within reach of the task's
    good runs (accuracy within 8 points of the task's 75th percentile, and for single-label
    classification at least halfway from chance to perfect; or a validation loss at most 1.5× the
    task's 25th percentile + 0.05), it did not end well above its own best validation loss
    (something to fix after all: early stopping), and it finished.
    """
    by_task: dict[str, list[Spec]] = defaultdict(list)
    for s in specs:
        if s.healthy:
            by_task[s.task].append(s)
    out: dict[str, tuple[str, str]] = {}
    for task, ss in by_task.items():
        t = TASKS[task]
        accs = [a for s in ss if (a := _metric(results.get(s.id, {}))[1]) is not None]
        losses = [v for s in ss if (v := _metric(results.get(s.id, {}))[0]) is not None]
        ref_acc = float(np.percentile(accs, 75)) if accs else None
        ref_loss = float(np.percentile(losses, 25)) if losses else None
        classes = 2 if t.kind == "binary" else t.n_classes if t.kind in ("multiclass", "multitask") else None
        floor = (1 / classes + 0.5 * (1 - 1 / classes)) if classes else None
        for s in ss:
            rec = results.get(s.id)
            if rec is None or rec.get("exit_code") != 0:
                out[s.id] = ("discarded", f"exit code {rec.get('exit_code') if rec else 'missing'}")
                continue
            vl, va = _metric(rec)
            o = rec.get("outcome") or {}
            if vl is None or not _finite(o.get("train_loss")):
                out[s.id] = ("discarded", "non-finite outcome")
            elif ref_acc is not None and va is not None and va < ref_acc - 0.08:
                out[s.id] = ("discarded", f"val_acc {va:.3f} far below the task's good runs ({ref_acc:.3f})")
            elif floor is not None and va is not None and va < floor:
                out[s.id] = ("discarded", f"val_acc {va:.3f}: not halfway from chance to perfect ({floor:.3f})")
            elif va is None and ref_loss is not None and vl > 1.5 * ref_loss + 0.05:
                out[s.id] = ("discarded", f"val_loss {vl:.3g} far above the task's good runs ({ref_loss:.3g})")
            elif cache is not None and (vs := val_series(cache / s.id)) and _overfits(vs):
                out[s.id] = ("discarded", f"overfits: val_loss ended at {vs[-1]:.3g}, its best was {min(vs):.3g}")
            else:
                out[s.id] = ("healthy", "")
    return out


def fault_status(spec: Spec, rec: dict[str, Any] | None, twin: dict[str, Any] | None,
                 twin_status: str | None) -> tuple[str, str]:
    op = OPERATORS[spec.fault]
    if rec is None:
        return "error", "not run"
    if rec.get("exit_code") == -1 or rec.get("runner_error"):
        return "error", rec.get("runner_error", "runner error")
    if twin_status != "healthy" or twin is None:
        return "no-twin", "its healthy twin did not train"
    if op.judge == "always":
        return "effective", "a defect whatever the outcome"
    if rec.get("exit_code") != 0:
        return "effective", f"crashed (exit code {rec.get('exit_code')})"
    o = rec.get("outcome") or {}
    vl, va = _metric(rec)
    if vl is None or not _finite(o.get("train_loss")):
        return "effective", "non-finite loss"
    tvl, tva = _metric(twin)
    if va is not None and tva is not None and tva - va >= 0.03:
        return "effective", f"val_acc {va:.3f} vs twin {tva:.3f}"
    # with an accuracy, a loss difference must be large to count as harm (0.016 → 0.055 at the
    # same accuracy is not a sick run); without one, the loss is all there is
    if tvl is not None and (vl > 1.5 * tvl + 0.1 if va is not None else vl > 1.2 * tvl + 0.02):
        return "effective", f"val_loss {vl:.3g} vs twin {tvl:.3g}"
    return "ineffective", f"val_loss {vl:.3g} vs twin {tvl}, val_acc {va} vs twin {tva}"


def verdict_of_diagnosis(d: dict[str, Any]) -> Verdict:
    v = Verdict()
    for f in d.get("findings", []):
        if f["code"] not in v.severities:
            v.codes.append(f["code"])
            v.severities[f["code"]] = f["severity"]
    for c in d.get("causes", []):
        v.causes.append(c["id"])
        v.confidences.append(float(c["confidence"]))
        v.supports.append({k: float(x) for k, x in (c.get("support") or {}).items()})
    for r in d.get("ruled_out", []):
        v.ruled_out[r["id"]] = r["reasons"]
    return v


def rediagnose(run_dir: Path) -> dict[str, Any]:
    from traindoctor.diagnosis import diagnose
    from traindoctor.store import load_store

    return diagnose(load_store(run_dir / "run.db")).to_json()


def diagnose_log(run_dir: Path) -> dict[str, Any]:
    from traindoctor.diagnosis import diagnose
    from traindoctor.logs import load

    return diagnose(load(run_dir / "log.csv")).to_json()


def _judge_one(args: tuple[str, str, tuple[str, ...]]) -> tuple[str, dict[str, Any]]:
    """Worker: every source's verdict on one run directory (as plain dicts)."""
    sid, run_dir, sources = args
    d = Path(run_dir)
    out: dict[str, Any] = {}
    for src in sources:
        try:
            if src == "run":
                if not (d / "run.db").exists():
                    raise FileNotFoundError("no run store")
                out[src] = {"diagnosis": rediagnose(d)}
            elif src == "log":
                if not (d / "log.csv").exists():
                    raise FileNotFoundError("no log.csv")
                out[src] = {"diagnosis": diagnose_log(d)}
            else:
                from .tools import run_tool

                cache = d / f"tool-{src}.json"
                if cache.exists():
                    r = json.loads(cache.read_text())
                else:
                    if not (d / "log.csv").exists():
                        raise FileNotFoundError("no log.csv")
                    res = run_tool(src, d / "log.csv")
                    r = {"codes": res.codes, "causes": res.causes, "n_findings": res.n_findings,
                         "error": res.error, "raw": res.raw}
                    cache.write_text(json.dumps(r, default=str))
                out[src] = {"tool": r}
        except Exception as exc:  # noqa: BLE001 - one unreadable run is a row, not the end
            out[src] = {"error": f"{type(exc).__name__}: {exc}"}
    return sid, out


def judge(specs: list[Spec], results: dict[str, dict], cache: Path, sources: tuple[str, ...] = ("run",),
          workers: int = 2) -> list[Case]:
    hs = healthy_status(specs, results, cache)
    cases: list[Case] = []
    for s in specs:
        rec = results.get(s.id)
        if s.healthy:
            status, why = hs.get(s.id, ("discarded", "not run"))
        else:
            twin = results.get(s.base) if s.base else None
            status, why = fault_status(s, rec, twin, hs.get(s.base, ("", ""))[0] if s.base else None)
        cases.append(Case(s.id, s, split(s), status, why))
    todo = [(c.id, str(cache / c.id), sources) for c in cases if c.status in ("healthy", "effective", "ineffective")]
    judged: dict[str, dict[str, Any]] = {}
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as ex:
            for sid, out in ex.map(_judge_one, todo, chunksize=8):
                judged[sid] = out
    else:
        for t in todo:
            sid, out = _judge_one(t)
            judged[sid] = out
    for c in cases:
        for src, out in judged.get(c.id, {}).items():
            if "error" in out:
                c.verdicts[src] = Verdict(error=out["error"])
            elif "diagnosis" in out:
                c.verdicts[src] = verdict_of_diagnosis(out["diagnosis"])
            else:
                t = out["tool"]
                v = Verdict(codes=list(t.get("codes") or []), causes=list(t.get("causes") or []), error=t.get("error"))
                # a tool's unmapped findings still count as findings on a healthy run
                n = int(t.get("n_findings") or 0)
                v.severities = {f"{i}": r.get("severity", "warning") for i, r in enumerate(t.get("raw") or [])}
                if n and not v.codes:
                    v.codes = ["(unmapped)"]
                c.verdicts[src] = v
    return cases


# ---------------------------------------------------------------------------------------- tables
@dataclass
class Score:
    healthy: int = 0
    false_alarms: int = 0
    false_alarms_severe: int = 0
    faulty: int = 0
    symptom: int = 0
    top1: int = 0
    top3: int = 0
    errors: int = 0

    def add(self, c: Case, src: str) -> None:
        v = c.verdicts.get(src)
        if v is None:
            return
        if v.error and not v.codes:
            self.errors += 1
        if c.status == "healthy":
            self.healthy += 1
            self.false_alarms += v.any_finding
            self.false_alarms_severe += v.severe_finding
        elif c.status == "effective":
            op = c.op
            self.faulty += 1
            self.symptom += any(code in op.codes for code in v.codes)
            self.top1 += bool(v.causes[:1] == [op.cause])
            self.top3 += op.cause in v.causes[:3]

    @staticmethod
    def pct(a: int, b: int) -> str:
        return f"{100 * a / b:.0f} %" if b else "–"

    def row(self) -> list[str]:
        return [self.pct(self.symptom, self.faulty), self.pct(self.top1, self.faulty), self.pct(self.top3, self.faulty),
                f"{self.pct(self.false_alarms, self.healthy)} ({self.false_alarms}/{self.healthy})",
                self.pct(self.false_alarms_severe, self.healthy), str(self.faulty)]


HEAD = ["symptom recall", "top-1 cause", "top-3 cause", "false alarms (any finding)", "false alarms (warning+)",
        "faulty runs"]


def _md(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def summary(cases: list[Case], sources: tuple[str, ...]) -> str:
    rows = []
    for sp in ("held-out", "dev"):
        for src in sources:
            sc = Score()
            for c in cases:
                if c.split == sp:
                    sc.add(c, src)
            rows.append([sp, src] + sc.row())
    return _md(["half", "source"] + HEAD, rows)


def by_group(cases: list[Case], src: str, key: str, split_name: str | None = "held-out") -> str:
    groups: dict[str, Score] = defaultdict(Score)
    for c in cases:
        if split_name and c.split != split_name:
            continue
        if key == "operator":
            if c.status != "effective":
                continue
            g = c.spec.fault or "healthy"
        else:
            g = c.spec.task
        groups[g].add(c, src)
    rows = []
    for g in sorted(groups):
        sc = groups[g]
        if key == "operator":
            op = OPERATORS[g]
            rows.append([g, op.cause, sc.pct(sc.symptom, sc.faulty), sc.pct(sc.top1, sc.faulty), sc.pct(sc.top3, sc.faulty),
                         str(sc.faulty)])
        else:
            rows.append([g] + sc.row())
    if key == "operator":
        return _md(["operator", "truth", "symptom", "top-1", "top-3", "runs"], rows)
    return _md(["task"] + HEAD, rows)


def population_table(cases: list[Case]) -> str:
    cnt: dict[tuple[str, str], int] = defaultdict(int)
    for c in cases:
        cnt[(c.split, c.status)] += 1
    statuses = ["healthy", "discarded", "effective", "ineffective", "no-twin", "error"]
    rows = [[sp] + [str(cnt[(sp, st)]) for st in statuses] + [str(sum(cnt[(sp, st)] for st in statuses))]
            for sp in ("dev", "held-out")]
    return _md(["half"] + statuses + ["total"], rows)


def ineffective_table(cases: list[Case], src: str = "run") -> str:
    n = sev = anyf = 0
    for c in cases:
        if c.status == "ineffective" and src in c.verdicts:
            n += 1
            v = c.verdicts[src]
            anyf += v.any_finding
            sev += v.severe_finding
    return f"{n} ineffective mutants: {anyf} got some finding, {sev} a warning or error"


def reliability(cases: list[Case], src: str = "run", split_name: str = "held-out") -> str:
    """Is a cause reported at confidence p right p of the time? Every ranked cause of every effective
    faulty run (and of healthy runs, where every offered cause is wrong)."""
    bins = [(0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 0.95), (0.95, 1.01)]
    stats = {b: [0, 0, 0.0] for b in bins}
    for c in cases:
        if c.split != split_name or c.status not in ("effective", "healthy"):
            continue
        v = c.verdicts.get(src)
        if v is None:
            continue
        truth = c.op.cause if c.status == "effective" else None
        for cid, p in zip(v.causes, v.confidences):
            for b in bins:
                if b[0] <= p < b[1]:
                    stats[b][0] += 1
                    stats[b][1] += cid == truth
                    stats[b][2] += p
    rows = []
    for b in bins:
        n, right, psum = stats[b]
        rows.append([f"{b[0]:.2f}–{min(b[1], 1.0):.2f}", str(n), f"{psum / n:.2f}" if n else "–",
                     f"{right / n:.2f}" if n else "–"])
    return _md(["confidence", "causes offered", "mean confidence", "fraction right"], rows)


def misses(cases: list[Case], src: str = "run", split_name: str | None = None, limit: int = 400) -> list[str]:
    """One line per wrong answer: for reading, on the development half."""
    out = []
    for c in cases:
        if split_name and c.split != split_name:
            continue
        v = c.verdicts.get(src)
        if v is None:
            continue
        if c.status == "healthy" and v.any_finding:
            out.append(f"FA   {c.id} {c.spec.task:18s} {','.join(f'{k}:{v.severities[k][0]}' for k in v.codes)} "
                       f"tags={','.join(c.spec.tags)}")
        elif c.status == "effective":
            op = c.op
            sym = any(code in op.codes for code in v.codes)
            if not sym or v.causes[:1] != [op.cause]:
                ruled = f" RULED-OUT-TRUTH({v.ruled_out[op.cause][0][:80]})" if op.cause in v.ruled_out else ""
                out.append(f"{'MISS' if not sym else 'CAUSE'} {c.id} {c.spec.task:18s} {c.spec.fault:20s} "
                           f"sev={c.spec.severity} truth={op.cause} got={v.causes[:3]} codes={v.codes}{ruled}")
    return out[:limit]
