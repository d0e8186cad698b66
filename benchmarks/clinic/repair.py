"""The repair benchmark: does ``traindoctor run --heal`` bring a faulty clinic run back to its twin?

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.clinic repair --seed 4 --per-op 20

The population is the clinic's own draw (``population.draw``, the same seed and options as
``run``), kept to the faulty runs whose operator's true cause has a treatment in healing
(``TREATED``: lr-too-high, exploding-gradient, nonfinite-data, overfitting). Each is run four ways,
besides its healthy twin:

* ``observed``: the faulty script under ``traindoctor run`` (the clinic's normal runner and cache);
* ``heal``: the same script under ``traindoctor run --heal`` (``watch_script(..., heal=True)``);
* ``verify``: the same under ``traindoctor run --verify`` (each fix replayed before it is applied);
* ``nan_plateau``: the script with Keras' TerminateOnNaN as a PyTorch user writes it (stop at the
  first non-finite loss) and ``ReduceLROnPlateau(factor=0.1, patience=2)`` on the validation loss;
* ``clip``: the script with Lightning's ``gradient_clip_val=1.0`` idiom (``clip_grad_norm_`` of all
  parameters at 1.0 before every optimizer step).

The baselines are render knobs (``render.py``) and run under ``traindoctor run`` without healing,
so every time ratio carries the same watching overhead as the twin's.

A run is *repaired* when its validation metric (the script's ``outcome.json``) is within 95 % of
its twin's: accuracy ≥ 0.95 × the twin's where the task has one; otherwise validation loss ≤ the
twin's / 0.95. A script without ``outcome.json`` whose healing kept best-validation weights has as its
metric the logged evaluation of those weights (the ``log.csv`` row whose validation loss is the
treatment's ``best_val_loss``); in a zero-code run healing no longer stops a script on overfitting
(it keeps the best weights and drops later updates), so the script writes its own. Only
runs the fault measurably hurt count (the clinic's ``fault_status``: "effective" against a healthy
twin); the others are listed apart.

Results are cached under ``.runs/repair/<spec id>-<mode>/`` keyed by the script's hash, the measuring
code's hash (``watch/`` and ``checks/``; for ``heal`` also ``heal/``) and the mode.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traindoctor.heal import HealPolicy

from .faults import OPERATORS
from .render import render
from .runner import (
    DEFAULT_CACHE,
    TASK_NEEDS_ASSETS,
    _init_worker,
    _src,
    load_record,
    make_assets,
    measure_version,
    run_all,
    run_one,
    script_sha,
)
from .spec import Spec

HERE = Path(__file__).resolve().parent
REPAIR_CACHE = HERE / ".runs" / "repair"  # inside the ignored clinic cache, apart from its runs
TREATED = ("lr-too-high", "exploding-gradient", "nonfinite-data", "overfitting")
# causes whose treatment changes the model: their runs are healed with --heal=arch
TREATED_ARCH = ("dying-relu", "vanishing-gradient")
MODES = ("heal", "verify", "nan_plateau", "clip")
LABELS = {"observed": "observed (no fix)", "heal": "traindoctor run --heal", "verify": "traindoctor run --verify",
          "nan_plateau": "TerminateOnNaN + ReduceLROnPlateau", "clip": "gradient clip 1.0 (Lightning)",
          "twin_heal": "--heal on the healthy twins"}
SHARE = 0.95


def repair_ops() -> list[str]:
    return [name for name, op in OPERATORS.items() if op.cause in TREATED + TREATED_ARCH]


def variant(spec: Spec, mode: str) -> Spec:
    """The spec whose script runs in ``mode`` (heal, verify: the faulty script itself)."""
    if mode in ("heal", "verify"):
        return spec
    extra = {"nan_plateau": {"baseline_nan_plateau": True}, "clip": {"baseline_clip": 1.0}}[mode]
    return Spec(spec.task, spec.seed, spec.hp, spec.fault, spec.severity, {**spec.knobs, **extra}, spec.base,
                spec.tags)


def mode_version(mode: str) -> str:
    v = measure_version()
    if mode not in ("heal", "verify"):
        return v
    h = hashlib.sha256(v.encode())
    for f in sorted((_src() / "heal").glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_one_mode(spec_json: dict[str, Any], mode: str, run_dir: str, version: str) -> dict[str, Any]:
    """``runner.run_one`` with healing on (``heal``, ``verify``) or a baseline's script (observe mode),
    and the run's logged evaluations (for the best-weights metric)."""
    spec = Spec.from_json(spec_json)
    arch = spec.fault is not None and OPERATORS[spec.fault].cause in TREATED_ARCH
    record = run_one(spec_json, run_dir, version, heal=mode == "heal", verify=mode == "verify",
                     heal_policy=HealPolicy(arch=True) if arch and mode in ("heal", "verify") else None)
    record["mode"] = mode
    record["log_val"] = logged_val(Path(run_dir))
    (Path(run_dir) / "result.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def _job(job: tuple[dict[str, Any], str, str, str]) -> dict[str, Any]:
    try:
        return run_one_mode(*job)
    except BaseException as exc:  # noqa: BLE001
        return {"id": Spec.from_json(job[0]).id, "mode": job[1], "exit_code": -2, "runner_error": repr(exc)}


def logged_val(d: Path) -> list[list[float | None]]:
    """Every evaluation the script logged: [step, val_loss, val_acc]."""
    rows: list[list[float | None]] = []
    try:
        with open(d / "log.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                if r.get("val_loss") not in (None, ""):
                    va = r.get("val_acc")
                    rows.append([float(r["step"]), float(r["val_loss"]), float(va) if va not in (None, "") else None])
    except (OSError, ValueError):
        pass
    return rows


def _key(spec: Spec, mode: str) -> str:
    return f"{spec.id}-{mode}"


def cached(spec: Spec, mode: str, cache: Path, version: str) -> dict[str, Any] | None:
    rec = load_record(cache / _key(spec, mode) / "result.json", script_sha(render(variant(spec, mode))), version)
    return rec if rec is not None and rec.get("mode") == mode else None


def run_modes(pairs: list[tuple[Spec, str]], cache: Path = REPAIR_CACHE, workers: int = 2,
              force: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """Run every (spec, mode) not cached; (spec id, mode) → record."""
    cache.mkdir(parents=True, exist_ok=True)
    versions = {m: mode_version(m) for m in MODES}
    if any(TASK_NEEDS_ASSETS(s) for s, _ in pairs):
        make_assets()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    todo = []
    for s, m in pairs:
        rec = None if force else cached(s, m, cache, versions[m])
        if rec is not None:
            out[(s.id, m)] = rec
        else:
            todo.append((s, m))
    print(f"repair: {len(pairs)} runs, {len(out)} cached, {len(todo)} to run on {workers} workers",
          file=sys.stderr, flush=True)
    if not todo:
        return out
    todo.sort(key=lambda sm: (sm[0].task not in ("char_transformer", "seq_gru", "seq_lstm", "rnn_sum"), sm[0].id, sm[1]))
    jobs = [(variant(s, m).to_json(), m, str(cache / _key(s, m)), versions[m]) for s, m in todo]
    ids = {(variant(s, m).id, m): s.id for s, m in todo}
    t0 = time.time()
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, maxtasksperchild=20) as pool:
        for i, rec in enumerate(pool.imap_unordered(_job, jobs), 1):
            out[(ids[(rec["id"], rec["mode"])], rec["mode"])] = rec
            if i % 10 == 0 or i == len(todo):
                el = time.time() - t0
                print(f"repair: {i}/{len(todo)} done, {el:.0f} s, ~{el / i * (len(todo) - i):.0f} s left",
                      file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------- scoring
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def metric(rec: dict[str, Any] | None) -> tuple[float | None, float | None, str]:
    """(val_loss, val_acc, where from) of a run as the user is left with it."""
    if rec is None:
        return None, None, "missing"
    o = rec.get("outcome")
    if o:
        vl, va = o.get("val_loss"), o.get("val_acc")
        return (float(vl) if _finite(vl) else None), (float(va) if _finite(va) else None), "outcome.json"
    live = rec.get("live") or {}
    best = [t for t in live.get("treatments", []) if t.get("cause") == "overfitting" and _finite(t.get("best_val_loss"))]
    rows = [r for r in rec.get("log_val") or [] if _finite(r[1])]
    if best and rows and not live.get("heal_stopped"):
        target = float(best[0]["best_val_loss"])
        r = min(rows, key=lambda r: abs(r[1] - target) / max(abs(target), 1e-12))
        return r[1], (r[2] if _finite(r[2]) else None), "best validation (stopped on overfitting)"
    return None, None, "no outcome"


def within(rec: dict[str, Any] | None, twin: dict[str, Any] | None) -> bool:
    vl, va, _ = metric(rec)
    tvl, tva, _ = metric(twin)
    if tva is not None:
        return va is not None and va >= SHARE * tva
    if tvl is not None:
        return vl is not None and vl <= tvl / SHARE
    return False


def better(rec: dict[str, Any] | None, ref: dict[str, Any] | None) -> bool:
    """``rec`` clearly better than ``ref`` (the clinic's margins for harm, the other way round)."""
    vl, va, _ = metric(rec)
    rvl, rva, _ = metric(ref)
    if vl is None and va is None:
        return False
    if rvl is None and rva is None:
        return True
    if va is not None and rva is not None:
        return va - rva >= 0.03
    return vl is not None and rvl is not None and 1.2 * vl + 0.02 < rvl


@dataclass
class Row:
    spec: Spec
    status: str
    why: str
    twin: dict[str, Any]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode → record (observed too)

    def ok(self, mode: str) -> bool:
        return within(self.runs.get(mode), self.twin)

    def ratio(self, mode: str) -> float | None:
        r, t = self.runs.get(mode), self.twin
        if not r or not _finite(r.get("seconds")) or not _finite(t.get("seconds")) or t["seconds"] <= 0:
            return None
        return r["seconds"] / t["seconds"]


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f} % ({k}/{n})" if n else "–"


def _times(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "– / –"
    return f"{statistics.median(xs):.2f}× / {statistics.mean(xs):.2f}×"


def tables(rows: list[Row], twin_heal: dict[str, dict[str, Any]] | None = None) -> str:
    sick = [r for r in rows if r.status == "effective"]
    modes = ("observed", "heal", "verify", "nan_plateau", "clip")
    out = [f"Sick runs (the fault measurably hurt, healthy twin): {len(sick)}; ineffective mutants left out: "
           f"{sum(r.status == 'ineffective' for r in rows)}; no healthy twin: {sum(r.status == 'no-twin' for r in rows)}; "
           f"errors: {sum(r.status == 'error' for r in rows)}.\n",
           "| run | n | within 95 % of the twin | time vs twin (median / mean) | clearly better than observed | "
           "clearly worse than observed |", "|---|---|---|---|---|---|"]
    for m in modes:
        k = sum(r.ok(m) for r in sick)
        b = "–" if m == "observed" else _pct(sum(better(r.runs.get(m), r.runs.get("observed")) for r in sick), len(sick))
        w = "–" if m == "observed" else _pct(sum(better(r.runs.get("observed"), r.runs.get(m)) for r in sick), len(sick))
        out.append(f"| {LABELS[m]} | {len(sick)} | {_pct(k, len(sick))} | {_times([r.ratio(m) for r in sick])} | {b} | {w} |")
    if twin_heal:
        tw = {r.spec.base: r.twin for r in sick}
        k = sum(within(twin_heal.get(b), t) for b, t in tw.items())
        ratios = [twin_heal[b]["seconds"] / t["seconds"] for b, t in tw.items()
                  if b in twin_heal and _finite(twin_heal[b].get("seconds")) and t.get("seconds")]
        treated = sum(bool((twin_heal.get(b, {}).get("live") or {}).get("treatments")) for b in tw)
        out.append(f"| {LABELS['twin_heal']} (false treatment check) | {len(tw)} | {_pct(k, len(tw))} | {_times(ratios)} "
                   f"| treated: {treated}/{len(tw)} | {_pct(sum(better(t, twin_heal.get(b)) for b, t in tw.items()), len(tw))} |")
    out += ["", "Per operator (sick runs; repaired share, then median time ratio):", "",
            "| operator | cause | n | observed | heal | verify | TerminateOnNaN + ReduceLROnPlateau | clip 1.0 | heal time | "
            "ineffective |", "|---|---|---|---|---|---|---|---|---|---|"]
    for op in sorted({r.spec.fault for r in rows}, key=list(OPERATORS).index):
        ss = [r for r in sick if r.spec.fault == op]
        ineff = sum(r.status == "ineffective" for r in rows if r.spec.fault == op)
        cells = [_pct(sum(r.ok(m) for r in ss), len(ss)) for m in modes]
        hr = [x for r in ss if (x := r.ratio("heal")) is not None]
        ht = f"{statistics.median(hr):.2f}×" if hr else "–"
        out.append(f"| {op} | {OPERATORS[op].cause} | {len(ss)} | " + " | ".join(cells) + f" | {ht} | {ineff} |")
    out += ["", agreement(sick)]
    return "\n".join(out)


def agreement(sick: list[Row]) -> str:
    """--verify's prescriptions against what the twin shows: a fix verified on a replay should be one
    that brings the run to its twin, and one that did not help should be one that does not."""
    n_ver = n_ver_ok = n_fail = n_fail_bad = n_nr = 0
    for r in sick:
        rec = r.runs.get("verify")
        if rec is None:
            continue
        reached = within(rec, r.twin)
        for t in (rec.get("live") or {}).get("treatments", []):
            v = t.get("verified")
            if not v:
                continue
            if v.get("result") == "verified":
                n_ver += 1
                n_ver_ok += reached
            elif v.get("result") == "did not help":
                n_fail += 1
                n_fail_bad += not reached
            else:
                n_nr += 1
    return (f"--verify: {n_ver} prescriptions verified on a replay, {_pct(n_ver_ok, n_ver)} of them in runs that "
            f"then reached 95 % of the twin; {n_fail} where every fix tried did not help, {_pct(n_fail_bad, n_fail)} "
            f"of them in runs that indeed did not; {n_nr} replays that did not reproduce the symptom.")


def oddities(rows: list[Row]) -> list[str]:
    """Runs where healing made things worse, crashed, gave up or left errors in its stderr."""
    lines = []
    for r in rows:
        h, o = r.runs.get("heal"), r.runs.get("observed")
        if h is None:
            continue
        hv, ov = metric(h), metric(o)
        tags = []
        if h.get("runner_error"):
            tags.append(f"runner error: {h['runner_error'][:200]}")
        if h.get("exit_code") not in (0, None):
            tags.append(f"exit code {h.get('exit_code')}")
        live = h.get("live") or {}
        if live.get("heal_stopped"):
            tags.append(f"gave up: {str(live['heal_stopped'].get('message'))[:160]}")
        err = h.get("stderr") or ""
        if "Traceback" in err or "doctor_error" in err or "internal error" in err.lower():
            tags.append("stderr: " + " | ".join(x for x in err.splitlines() if x.strip())[-300:])
        if within(o, r.twin) and not within(h, r.twin):
            tags.append("WORSE: observed was within 95 % of the twin, healed is not")
        elif ov[1] is not None and hv[1] is not None and hv[1] < ov[1] - 0.03:
            tags.append(f"worse accuracy than observed ({hv[1]:.3f} < {ov[1]:.3f})")
        elif ov[1] is None and ov[0] is not None and hv[0] is not None and hv[0] > 1.2 * ov[0] + 0.02:
            tags.append(f"worse loss than observed ({hv[0]:.3g} > {ov[0]:.3g})")
        if tags:
            tr = ", ".join(f"{t.get('code')}/{t.get('cause')}: {t.get('action')}" for t in live.get("treatments", []))
            lines.append(f"{r.spec.id} {r.spec.fault} {r.spec.task} sev={r.spec.severity} [{r.status}] twin={_m(r.twin)} "
                         f"observed={_m(o)} heal={_m(h)} — " + "; ".join(tags) + (f" — treatments: {tr}" if tr else ""))
    return lines


def _m(rec: dict[str, Any] | None) -> str:
    vl, va, _ = metric(rec)
    if va is not None:
        return f"acc {va:.3f}"
    return f"loss {vl:.3g}" if vl is not None else "none"


def repair(specs: list[Spec], cache: Path = DEFAULT_CACHE, repair_cache: Path = REPAIR_CACHE, workers: int = 2,
           force: bool = False, twin_heal: bool = True,
           modes: tuple[str, ...] = MODES) -> tuple[list[Row], dict[str, dict[str, Any]]]:
    """Run the population's repairable faulty runs every way (or the ``modes`` asked for); the rows and
    the healed twins."""
    from .score import fault_status, healthy_status

    ops = set(repair_ops())
    keep = [s for s in specs if s.healthy or s.fault in ops]
    results = run_all(keep, cache=cache, workers=workers)
    hs = healthy_status(keep, results, cache)
    rows = []
    for s in keep:
        if s.healthy:
            continue
        twin = results.get(s.base) or {}
        status, why = fault_status(s, results.get(s.id), twin or None, hs.get(s.base, ("", ""))[0])
        rows.append(Row(s, status, why, twin, {"observed": results.get(s.id) or {}}))
    pairs = [(r.spec, m) for r in rows if r.status in ("effective", "ineffective") for m in modes]
    twins = {r.spec.base: r.spec for r in rows if r.status == "effective"}
    by_id = {s.id: s for s in keep}
    if twin_heal:
        pairs += [(by_id[b], "heal") for b in sorted(twins)]
    recs = run_modes(pairs, repair_cache, workers, force)
    for r in rows:
        for m in MODES:
            if (r.spec.id, m) in recs:
                r.runs[m] = recs[(r.spec.id, m)]
    th = {b: recs[(b, "heal")] for b in twins if (b, "heal") in recs}
    return rows, th


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d: dict[str, Any] = {"id": r.spec.id, "fault": r.spec.fault, "task": r.spec.task, "severity": r.spec.severity,
                             "status": r.status, "why": r.why, "twin": r.spec.base, "twin_metric": metric(r.twin)[:2],
                             "twin_seconds": r.twin.get("seconds")}
        for m, rec in r.runs.items():
            d[m] = {"metric": metric(rec), "within": within(rec, r.twin), "ratio": r.ratio(m),
                    "exit_code": rec.get("exit_code"), "seconds": rec.get("seconds"),
                    "treatments": [{k: t.get(k) for k in ("step", "code", "cause", "action", "changes", "rolled_back_to")}
                                   for t in (rec.get("live") or {}).get("treatments", [])],
                    "heal_stopped": (rec.get("live") or {}).get("heal_stopped"),
                    "runner_error": rec.get("runner_error")}
        out.append(d)
    return out
