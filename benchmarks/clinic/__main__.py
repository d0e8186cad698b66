"""The clinic's command line.

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.clinic run              # run what is not cached (2 workers)
    python -m benchmarks.clinic score                                    # tables: held-out and dev, traindoctor run
    python -m benchmarks.clinic score --sources run,log,losslint,trainspotter,runmedic --markdown out.md
    python -m benchmarks.clinic misses --split dev                       # every wrong answer on the dev half
    python -m benchmarks.clinic show ID                                  # one run: spec, script, diagnosis
    python -m benchmarks.clinic list                                     # the population, one line a run
    python -m benchmarks.clinic calibrate                                # fit calibration.json on the dev half
    python -m benchmarks.clinic repair --seed 4 --per-op 20              # heal vs baselines on repairable faults

Run from the repository root (the clinic imports ``traindoctor`` from the installed package).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .population import draw, split
from .repair import MODES
from .runner import DEFAULT_CACHE, run_all
from .spec import Spec


def _select(specs: list[Spec], args: argparse.Namespace) -> list[Spec]:
    out = specs
    if getattr(args, "split", None) and args.split != "both":
        out = [s for s in out if split(s) == args.split]
    if getattr(args, "tasks", None):
        keep = set(args.tasks.split(","))
        out = [s for s in out if s.task in keep]
    if getattr(args, "ops", None):
        keep = set(args.ops.split(","))
        # a faulty run needs its twin to be judged
        ids = {s.base for s in out if s.fault in keep}
        out = [s for s in out if s.fault in keep or (s.healthy and (s.id in ids or "healthy" in keep))]
    if getattr(args, "limit", None):
        out = out[: args.limit]
    return out


def _population_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="population seed (0: the development population)")
    p.add_argument("--healthy", type=int, default=11, help="healthy runs per task")
    p.add_argument("--per-op", type=int, default=11, help="faulty runs per fault operator")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.clinic", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "score", "misses", "list", "calibrate"):
        p = sub.add_parser(name)
        p.add_argument("--split", choices=("dev", "held-out", "both"), default="both")
        p.add_argument("--tasks", help="comma-separated task names")
        p.add_argument("--ops", help="comma-separated operator names ('healthy' for the healthy runs)")
        p.add_argument("--limit", type=int)
        p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
        p.add_argument("--workers", type=int, default=2)
        _population_args(p)
        if name == "run":
            p.add_argument("--force", action="store_true", help="rerun even what is cached")
        if name in ("score", "misses", "calibrate"):
            p.add_argument("--sources", default="run", help="run,log,losslint,trainspotter,runmedic")
        if name == "score":
            p.add_argument("--markdown", type=Path, help="write every table here")
            p.add_argument("--json", type=Path, help="write every case here")
    p = sub.add_parser("repair", help="heal the repairable faulty runs; compare with the baselines")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--repair-cache", type=Path, default=None, help="default: benchmarks/clinic/.runs/repair")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="rerun the heal and baseline runs even if cached")
    p.add_argument("--no-twin-heal", action="store_true", help="skip --heal on the healthy twins")
    p.add_argument("--modes", default=",".join(MODES), help="the ways each faulty run is run (default: all)")
    p.add_argument("--ops", help="comma-separated operator names (default: every repairable one)")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    p.add_argument("--json", type=Path, help="write every run's row here")
    _population_args(p)
    p = sub.add_parser("show")
    p.add_argument("id")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    _population_args(p)
    args = ap.parse_args(argv)

    specs = draw(n_healthy_per_task=args.healthy, n_per_operator=args.per_op, seed=args.seed)
    if args.cmd == "show":
        d = args.cache / args.id
        spec = next((s for s in specs if s.id == args.id), None)
        print(json.dumps(spec.to_json() if spec else {}, indent=1))
        if (d / "script.py").exists():
            print((d / "script.py").read_text())
        if (d / "run.db").exists():
            from .score import rediagnose

            print(json.dumps(rediagnose(d), indent=1, default=str)[:20000])
        return 0
    if args.cmd == "repair":
        return _repair(_select(specs, args), args)
    specs = _select(specs, args)
    if args.cmd == "list":
        for s in specs:
            print(s.id, split(s), s.task, s.fault or "healthy", s.severity, json.dumps(s.knobs), ",".join(s.tags))
        return 0
    if args.cmd == "run":
        res = run_all(specs, cache=args.cache, workers=args.workers, force=args.force)
        bad = [r for r in res.values() if r.get("runner_error")]
        print(f"{len(res)} runs, {len(bad)} runner errors", file=sys.stderr)
        return 0
    results = {}
    for s in specs:
        f = args.cache / s.id / "result.json"
        if f.exists():
            results[s.id] = json.loads(f.read_text())
    from .score import by_group, ineffective_table, judge, misses, population_table, reliability, summary

    sources = tuple(args.sources.split(","))
    cases = judge(specs, results, args.cache, sources, workers=args.workers)
    if args.cmd == "misses":
        for line in misses(cases, sources[0], None if args.split == "both" else args.split):
            print(line)
        return 0
    if args.cmd == "calibrate":
        from .calibrate import OUT, calibrate

        cmd = "python -m benchmarks.clinic calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
        model = calibrate(cases, command=cmd.replace("calibrate calibrate", "calibrate"))
        print(json.dumps(model, indent=1))
        print(f"wrote {OUT}", file=sys.stderr)
        return 0
    parts = ["## Population\n", population_table(cases), "\n## Scores\n", summary(cases, sources),
             "\n" + ineffective_table(cases, sources[0]),
             f"\n## By operator (held-out, {sources[0]})\n", by_group(cases, sources[0], "operator"),
             f"\n## By task (held-out, {sources[0]})\n", by_group(cases, sources[0], "task"),
             f"\n## Reliability of the cause confidence (held-out, {sources[0]})\n", reliability(cases, sources[0])]
    text = "\n".join(parts)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps([{"id": c.id, "split": c.split, "status": c.status, "why": c.why,
                                          "task": c.spec.task, "fault": c.spec.fault,
                                          "verdicts": {k: v.__dict__ for k, v in c.verdicts.items()}}
                                         for c in cases], indent=1))
    return 0


def _repair(specs: list[Spec], args: argparse.Namespace) -> int:
    import time

    from .repair import REPAIR_CACHE, oddities, repair, rows_json, tables

    t0 = time.time()
    rows, twin_heal = repair(specs, cache=args.cache, repair_cache=args.repair_cache or REPAIR_CACHE,
                             workers=args.workers, force=args.force, twin_heal=not args.no_twin_heal,
                             modes=tuple(args.modes.split(",")))
    text = tables(rows, twin_heal)
    odd = oddities(rows)
    print(text)
    print(f"\n{len(odd)} heal runs worth a look (worse, crashed, gave up, errors in stderr):", file=sys.stderr)
    for line in odd:
        print("  " + line, file=sys.stderr)
    print(f"repair: {time.time() - t0:.0f} s", file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows_json(rows), "oddities": odd}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
