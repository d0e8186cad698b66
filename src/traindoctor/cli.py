"""The command line, thin: it parses, calls, renders."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import TrainDoctorError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="traindoctor", description="Why is my network not training? Diagnosis with evidence, and fixes.")
    p.add_argument("--version", action="version", version=f"traindoctor {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run an unmodified PyTorch training script and diagnose it")
    r.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON ('-' for stdout)")
    r.add_argument("--store", metavar="PATH", help="run store to write (default .traindoctor/runs/<script>-<time>.db)")
    r.add_argument("--no-store", action="store_true", help="keep the run in memory only")
    r.add_argument("--cadence", type=int, default=25, metavar="K", help="sample per-layer statistics every K steps (default 25)")
    r.add_argument("script", help="the training script")
    r.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")

    d = sub.add_parser("diagnose", help="diagnose a run store or a CSV log")
    d.add_argument("path")
    d.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON ('-' for stdout only)")
    d.add_argument("--metric", action="append", default=[], metavar="ROLE=NAME",
                   help="use column NAME for ROLE (loss, val_loss, accuracy, val_accuracy, lr, grad_norm)")

    e = sub.add_parser("explain", help="document a symptom code (L001) or a cause id (lr-too-high)")
    e.add_argument("key", nargs="?")
    e.add_argument("--list", action="store_true", help="list every code and cause id")

    m = sub.add_parser("demo", help="train a small network on scikit-learn's digits with a fault injected, and diagnose it")
    m.add_argument("--fault", default="lr-too-high", help="which built-in fault (default lr-too-high; see --list)")
    m.add_argument("--list", action="store_true", help="list the built-in faults")
    m.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON")
    return p


def _overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise TrainDoctorError(f"--metric {it!r}: expected ROLE=NAME, e.g. --metric loss=train/loss")
        role, name = it.split("=", 1)
        out[role.strip()] = name.strip()
    return out


def _cmd_run(a: argparse.Namespace) -> int:
    from .report import render, write_json
    from .watch.launcher import watch_script

    if a.cadence < 1:
        raise TrainDoctorError(f"--cadence must be a positive number of steps, got {a.cadence}")
    args = a.args[1:] if a.args and a.args[0] == "--" else a.args
    res = watch_script(a.script, args, store="" if a.no_store else a.store, cadence=a.cadence)
    render(res.diagnosis, file=sys.stderr, title="traindoctor run")
    if res.store_path:
        print(f"run stored in {res.store_path} (traindoctor diagnose {res.store_path})", file=sys.stderr)
    if a.json:
        write_json(res.diagnosis, a.json)
    return res.exit_code


def _cmd_diagnose(a: argparse.Namespace) -> int:
    from .diagnosis import diagnose
    from .logs import load
    from .report import render, write_json

    run = load(a.path, overrides=_overrides(a.metric) or None)
    diag = diagnose(run)
    if a.json != "-":
        render(diag, title="traindoctor diagnose")
    if a.json:
        write_json(diag, a.json)
    return 0


def _cmd_explain(a: argparse.Namespace) -> int:
    from .explain import explain, listing

    if a.list or not a.key:
        print(listing())
        return 0
    print(explain(a.key))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from .examples import EXAMPLES, script_path
    from .report import render, write_json
    from .watch.launcher import watch_script

    if a.list:
        width = max(len(k) for k in EXAMPLES)
        for name, ex in EXAMPLES.items():
            print(f"{name:<{width}}  {ex.summary}")
        return 0
    if a.fault not in EXAMPLES:
        raise TrainDoctorError(f"unknown fault {a.fault!r}; choose one of: {', '.join(EXAMPLES)}")
    script = script_path(a.fault)
    print(f"traindoctor demo: {a.fault} — {EXAMPLES[a.fault].summary}", file=sys.stderr)
    print(f"(watching {script} as `traindoctor run` would, with no change to the script)\n", file=sys.stderr)
    res = watch_script(script, [], store="")
    render(res.diagnosis, title=f"traindoctor demo --fault {a.fault}")
    if a.json:
        write_json(res.diagnosis, a.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        return {"run": _cmd_run, "diagnose": _cmd_diagnose, "explain": _cmd_explain, "demo": _cmd_demo}[a.cmd](a)
    except TrainDoctorError as exc:
        print(f"traindoctor: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
