"""The command line, thin: it parses, calls, renders."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .errors import TrainDoctorError

if TYPE_CHECKING:
    from .diagnosis import Diagnosis

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="traindoctor", description="Why is my network not training? Diagnosis with evidence, and fixes.")
    p.add_argument("--version", action="version", version=f"traindoctor {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run an unmodified PyTorch training script and diagnose it")
    r.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON ('-' for stdout)")
    r.add_argument("--store", metavar="PATH", help="run store to write (default .traindoctor/runs/<script>-<time>.db)")
    r.add_argument("--no-store", action="store_true", help="keep the run in memory only")
    r.add_argument("--cadence", type=int, default=None, metavar="K",
                   help="sample per-layer statistics every K steps (default 50)")
    r.add_argument("script", help="the training script")
    r.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")

    d = sub.add_parser(
        "diagnose",
        help="diagnose a training log, or every run in a directory",
        description="Diagnose a log: a run store, CSV/TSV (Lightning's metrics.csv too), JSON Lines, a "
        "TensorBoard event file or run directory, a Hugging Face trainer_state.json, an MLflow run "
        "directory. A directory holding several runs gets one summary table. Exit codes: 0 done, 1 findings "
        "reached --fail-on, 2 bad usage or a log that could not be read.",
    )
    d.add_argument("path", help="a log file, a run directory, or a directory tree of runs")
    d.add_argument("--json", metavar="FILE",
                   help="also write the diagnosis as JSON ('-' for stdout only); for a directory, all runs")
    d.add_argument("--metric", action="append", default=[], metavar="ROLE=NAME",
                   help="use the metric (column, key, tag) NAME for ROLE (loss, val_loss, accuracy, "
                        "val_accuracy, lr, grad_norm, step, epoch); repeatable")
    d.add_argument("--fail-on", choices=("not-judged", "warning", "error"), default=None,
                   help="exit 1 when a finding (in any run) is at least this severe: a CI gate; 'not-judged' "
                        "also fails a run too thin to judge (strictest)")

    e = sub.add_parser("explain", help="document a symptom code (L001) or a cause id (lr-too-high)")
    e.add_argument("key", nargs="?")
    e.add_argument("--list", action="store_true", help="list every code and cause id")

    m = sub.add_parser("demo", help="train a small network on scikit-learn's digits with a fault injected, and diagnose it")
    m.add_argument("--fault", default="lr-too-high", help="which built-in fault (default lr-too-high; see --list)")
    m.add_argument("--list", action="store_true", help="list the built-in faults")
    m.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON")

    c = sub.add_parser(
        "checkup", help="check a training script's data, model and loss before a long run (the training never runs)",
        description="Run SCRIPT until its first training loss, then check what it built instead of training: the "
        "data (non-finite values, scales, labels against the loss, balance, order, train/val overlap), the model and "
        "loss (formula, init scale, float16 headroom, custom autograd functions) and short probes (LR range test, "
        "overfit 10 samples, fit one sample, suspect labels, input-independent baseline, train/eval gap). "
        "Exit codes: 0 no error-level finding, 1 an error-level finding, 2 bad usage or a script the checkup "
        "could not read.")
    c.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' for stdout)")
    c.add_argument("--shallow", action="store_true", help="also compare with a shallower variant of the model (M005)")
    c.add_argument("--nonfinite-step", type=int, metavar="K",
                   help="replay the batch of training step K and name the samples that make the loss non-finite")
    c.add_argument("--amp", choices=("float16", "bfloat16"), help="the training will run in this reduced precision")
    c.add_argument("--steps", type=int, default=300, metavar="N", help="steps of each short training probe (default 300)")
    c.add_argument("--max-samples", type=int, default=20000, metavar="N",
                   help="samples read per split for the data checks (default 20000)")
    c.add_argument("--skip", action="append", default=[], metavar="PROBE",
                   help="skip a probe: lr_range, overfit, repeat, short_training, gradcheck (repeatable)")
    c.add_argument("script", help="the training script")
    c.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
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

    if a.cadence is None:
        from .watch.monitor import DEFAULT_CADENCE

        a.cadence = DEFAULT_CADENCE
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


def _fails(diags: list[Diagnosis], fail_on: str | None) -> bool:
    """Whether a diagnosis reaches ``--fail-on``: a finding at least that severe, or for
    ``not-judged`` also a run too thin to judge."""
    from .findings import severity_rank

    if fail_on is None:
        return False
    for d in diags:
        sev = d.worst_severity
        if fail_on == "not-judged":
            if sev in ("warning", "error") or not d.judged:
                return True
        elif sev is not None and severity_rank(sev) >= severity_rank(fail_on):
            return True
    return False


def _cmd_diagnose(a: argparse.Namespace) -> int:
    from pathlib import Path

    from .diagnosis import diagnose
    from .logs import detect_format, load
    from .report import render, write_json

    overrides = _overrides(a.metric) or None
    path = Path(a.path)
    if path.is_dir() and detect_format(path) is None:
        return _diagnose_tree(path, overrides, a)
    run = load(a.path, overrides=overrides)
    diag = diagnose(run)
    if a.json != "-":
        render(diag, title="traindoctor diagnose")
    if a.json:
        write_json(diag, a.json)
    return 1 if _fails([diag], a.fail_on) else 0


def _diagnose_tree(root: object, overrides: dict[str, str] | None, a: argparse.Namespace) -> int:
    """Every run under ``root``: one table (a single run: its full report), exit 2 if one was unreadable."""
    from pathlib import Path

    from .diagnosis import diagnose
    from .errors import LogError
    from .logs import NoTrainingLoss, find_runs, load
    from .report import render
    from .report.summary import RunResult, Summary, display_path, render_summary, write_summary_json

    base = Path(str(root))
    found = find_runs(base)
    summary = Summary(root=str(root))
    summary.skipped = [(display_path(p, base), why) for p, why in found.passed_over]
    for ref in found.runs:
        shown = display_path(ref.path, base)
        try:
            run = load(ref.path, overrides=overrides)
        except NoTrainingLoss:
            summary.skipped.append((shown, "not a training log: no training-loss metric"))
            continue
        except LogError as exc:
            summary.results.append(RunResult(shown, ref.format, error=str(exc)))
            continue
        summary.results.append(RunResult(shown, run.meta.get("format", ref.format), diagnosis=diagnose(run)))
    if not summary.results:
        passed = f"; passed over: {', '.join(p for p, _ in summary.skipped[:5])}" if summary.skipped else ""
        raise LogError(
            "holds no training log (looked for run stores, CSV/TSV, JSON Lines, TensorBoard event files, "
            f"trainer_state.json and MLflow runs){passed}",
            path=base,
        )
    if a.json != "-":
        only = summary.results[0] if len(summary.results) == 1 else None
        if only is not None and only.diagnosis is not None:
            render(only.diagnosis, title=f"traindoctor diagnose {only.path}")
        render_summary(summary)
    if a.json:
        write_summary_json(summary, a.json)
    if summary.errors:
        return EXIT_USAGE
    return 1 if _fails([r.diagnosis for r in summary.results if r.diagnosis is not None], a.fail_on) else 0


def _cmd_explain(a: argparse.Namespace) -> int:
    from .explain import explain, listing

    if a.list or not a.key:
        print(listing())
        return 0
    print(explain(a.key))
    return 0


def _cmd_checkup(a: argparse.Namespace) -> int:
    import json

    from .checks.checkup import DEFAULT_PROBES, checkup_script

    if a.steps < 1 or a.max_samples < 1:
        raise TrainDoctorError(f"--steps and --max-samples must be positive, got {a.steps} and {a.max_samples}")
    unknown = [s for s in a.skip if s not in DEFAULT_PROBES]
    if unknown:
        raise TrainDoctorError(f"--skip {unknown[0]!r}: not a probe; choose from {', '.join(DEFAULT_PROBES)}")
    args = a.args[1:] if a.args and a.args[0] == "--" else a.args
    report = checkup_script(a.script, args, probes=[p for p in DEFAULT_PROBES if p not in a.skip], shallow=a.shallow,
                            nonfinite_step=a.nonfinite_step, amp_dtype=a.amp, max_samples=a.max_samples, steps=a.steps)
    report.render(file=sys.stderr, title="traindoctor checkup")
    if a.json:
        text = json.dumps(report.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        if a.json == "-":
            sys.stdout.write(text)
        else:
            from pathlib import Path

            Path(a.json).write_text(text, encoding="utf-8")
    return 1 if report.diagnosis.worst_severity == "error" else 0


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
        return {"run": _cmd_run, "diagnose": _cmd_diagnose, "explain": _cmd_explain, "demo": _cmd_demo,
                "checkup": _cmd_checkup}[a.cmd](a)
    except TrainDoctorError as exc:
        print(f"traindoctor: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `traindoctor explain --list | head`: the reader left; say nothing more, as other tools do
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
