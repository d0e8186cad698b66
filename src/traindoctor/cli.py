"""The command line, thin: it parses, calls, renders."""
from __future__ import annotations

import argparse
import codecs
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
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

    r = sub.add_parser(
        "run", help="run an unmodified PyTorch training script (or module, or distributed launcher) and diagnose it",
        usage="traindoctor run [OPTIONS] SCRIPT.py [ARGS...]\n       traindoctor run [OPTIONS] -m MODULE [ARGS...]\n"
              "       traindoctor run [OPTIONS] -- LAUNCHER [LAUNCHER ARGS...]",
        description="Run a training script as python would, watched, and diagnose it. -m MODULE runs a module as "
        "python -m does. After --, a launcher command (torchrun, accelerate launch, deepspeed, python -m "
        "torch.distributed.run) runs as a subprocess with every rank watched, each writing its own run store "
        "(rank0.db, rank1.db … in a run directory: --store DIR), and one diagnosis of all ranks at the end; the "
        "exit code is the launcher's. Healing (--heal, --verify) is for one process.")
    r.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON ('-' for stdout)")
    r.add_argument("--html", metavar="FILE", help="also write the report as one self-contained HTML page with charts")
    r.add_argument("--store", metavar="PATH", help="run store to write (default .traindoctor/runs/<script>-<time>.db); "
                   "a store already at PATH is refused, before the script runs, unless --overwrite; with a launcher "
                   "(--), the directory of the ranks' stores")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the run store already at --store PATH (never a file that is not a run store)")
    r.add_argument("--no-store", action="store_true", help="keep the run in memory only")
    r.add_argument("--cadence", type=int, default=None, metavar="K",
                   help="sample per-layer statistics every K steps (default 50)")
    r.add_argument("--heal", action="store_true",
                   help="treat the run while it trains: on a NaN or a blow-up roll back to the last good state and "
                   "lower the LR, clip or skip the poisoned batch; halve a stalled LR; stop an overfitting run at its "
                   "best weights. Every treatment is in the report")
    r.add_argument("--heal-arch", action="store_true", dest="heal_arch",
                   help="heal, and also repair the model where a fault is in it: a ReLU module whose units died is "
                   "replaced by a LeakyReLU, vanishing gradients through sigmoid/tanh get ReLUs and a fresh start, an output "
                   "sigmoid pinned at 0/1 under BCELoss gets BCEWithLogitsLoss's gradient, in place (also spelled --heal=arch)")
    r.add_argument("--verify", action="store_true",
                   help="heal, and prove each fix first: replay the steps since the last snapshot with each candidate "
                   "fix for the leading cause (on the script's own model, restored bitwise after), apply the one that "
                   "measurably helped, and report what each did")
    r.add_argument("--verify-budget", type=float, default=None, metavar="FRACTION",
                   help="time the replays may take, as a fraction of the run's time so far (default 0.1)")
    r.add_argument("--no-status", action="store_true", dest="no_status",
                   help="no live status line (step, loss, steps/s, alerts) on stderr while the script runs; it shows "
                   "only when stderr is a terminal (TRAINDOCTOR_STATUS=0 also turns it off)")
    r.add_argument("--merge", metavar="DIR",
                   help="run nothing: give the diagnosis of all ranks from the ranks' run stores in DIR and the "
                   "directories just below it (rank0.db, rank1.db …, e.g. copied from several machines)")
    r.add_argument("-m", dest="module", metavar="MODULE",
                   help="run library module MODULE as a script, as python -m MODULE does (what follows is its arguments)")
    r.add_argument("script", nargs="?", help="the training script; after --, a launcher command")
    r.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script (or the launcher)")

    sub.add_parser(
        "boot-path", help="print the directory that makes TRAINDOCTOR=1 ranks watch themselves",
        description="Print the directory to put first on PYTHONPATH so that every rank of a launcher started with "
        "TRAINDOCTOR=1 watches itself: TRAINDOCTOR=1 PYTHONPATH=$(traindoctor boot-path)${PYTHONPATH:+:$PYTHONPATH} "
        "torchrun --nproc-per-node 2 train.py. Each rank writes .traindoctor/runs/<script>-<run id>/rank<R>.db "
        "(TRAINDOCTOR_DIR=DIR chooses the directory) and rank 0 prints the diagnosis of all ranks at its exit.")

    d = sub.add_parser(
        "diagnose",
        help="diagnose a training log, or every run in a directory",
        description="Diagnose a log: a run store, CSV/TSV (Lightning's metrics.csv too), JSON Lines, a "
        "TensorBoard event file or run directory, a Hugging Face trainer_state.json, an MLflow run "
        "directory. A directory holding several runs gets one summary table. Exit codes: 0 done, 1 findings "
        "reached --fail-on, 2 bad usage or a log that could not be read.",
    )
    d.add_argument("path", help="a log file, a run directory, or a directory tree of runs; '-' reads a log piped on "
                   "standard input (CSV/TSV, JSON Lines, trainer_state.json, an event file or a run store)")
    d.add_argument("--json", metavar="FILE",
                   help="also write the diagnosis as JSON ('-' for stdout only); for a directory, all runs")
    d.add_argument("--html", metavar="FILE",
                   help="also write the report as one self-contained HTML page with charts (one run; see report)")
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
    c.add_argument("--html", metavar="FILE", help="also write the report as one HTML page with charts (the LR range "
                   "test, the probes' curves)")
    c.add_argument("--shallow", action="store_true", help="also compare with a shallower variant of the model (M005)")
    c.add_argument("--nonfinite-step", type=int, metavar="K",
                   help="replay the batch of training step K and name the samples that make the loss non-finite")
    c.add_argument("--amp", choices=("float16", "bfloat16"), help="the training will run in this reduced precision")
    c.add_argument("--steps", type=int, default=300, metavar="N", help="steps of each short training probe (default 300)")
    c.add_argument("--max-samples", type=int, default=20000, metavar="N",
                   help="samples read per split for the data checks (default 20000)")
    c.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                   help="time for the whole checkup (default 60): one training step is timed and the probes are "
                        "shortened or skipped to fit; the report says which")
    from .checks.probes import skip_help  # the registry, without torch: the choices and help are its names

    c.add_argument("--skip", action="append", default=[], metavar="PROBE", help=skip_help())
    c.add_argument("--no-status", action="store_true", dest="no_status",
                   help="no live status line (the probe running, probes done, time against the budget) on stderr; "
                   "it shows only when stderr is a terminal (TRAINDOCTOR_STATUS=0 also turns it off)")
    c.add_argument("script", help="the training script")
    c.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")

    rp = sub.add_parser(
        "report", help="write a run's report as one self-contained HTML page with interactive charts",
        description="Diagnose a run (a run store or any log diagnose reads) and write one HTML file that opens "
        "without a network: loss and validation loss with each finding and the best epoch marked, accuracy, the "
        "learning rate with treatments, per-layer gradient norms, update/weight ratios, dead and saturated units, "
        "the LR range test, and the diagnosis as text. Exit codes as diagnose.")
    rp.add_argument("path", help="a run store or log file, or a directory holding one run")
    rp.add_argument("--html", metavar="FILE", help="the page to write ('-' for stdout; default: the run's name "
                    "with .html, in the current directory, never over an existing file)")
    rp.add_argument("--json", metavar="FILE", help="also write the diagnosis as JSON ('-' for stdout)")
    rp.add_argument("--metric", action="append", default=[], metavar="ROLE=NAME",
                    help="use the metric NAME for ROLE, as diagnose does; repeatable")
    rp.add_argument("--fail-on", choices=("not-judged", "warning", "error"), default=None,
                    help="exit 1 when a finding is at least this severe, as diagnose does")
    rp.add_argument("--quiet", action="store_true", help="do not print the diagnosis in the terminal")

    t = sub.add_parser(
        "tune", help="tune a script's hyperparameters on Optuna, the doctor pruning sick trials",
        usage="traindoctor tune [OPTIONS] --param NAME=SPEC [--param ...] SCRIPT.py [ARGS...]",
        description="Run SCRIPT once per trial with --NAME VALUE for each --param (zero code change: each trial is "
        "watched as traindoctor run watches), after a probe (one LR range test inside the script, which drops the learning rates that blow "
        "it up) in three stages: coarse (half the trials, wide ranges, with "
        "--coarse-arg added), fine (the range of the best coarse trials), final (the top-k re-run over seeds, "
        "mean ± std). The doctor prunes a trial that goes non-finite, diverges, oscillates, makes no progress or "
        "kills its units at once; Optuna's MedianPruner the merely mediocre ones. The study is stored (SQLite by "
        "default, --storage postgresql://… for workers on many machines); the same command again continues it. "
        "SPEC: log:LO:HI, LO:HI, int:LO:HI, intlog:LO:HI, choice:A,B. See docs/tuning.md.")
    t.add_argument("--param", action="append", default=[], metavar="NAME=SPEC", required=True,
                   help="a hyperparameter the script takes as --NAME: lr=log:1e-5:1, dropout=0.1:0.7, layers=int:1:4, "
                   "opt=choice:adam,sgd; repeatable")
    t.add_argument("--trials", type=int, default=40, help="trials of the coarse and fine stages (default 40)")
    t.add_argument("--storage", metavar="FILE|URL", help="the study's database: an SQLite file (default "
                   ".traindoctor/tune/<study>.db) or postgresql://USER:PASSWORD@HOST:PORT/DB")
    t.add_argument("--study", metavar="NAME", help="the study's name (default: from the script, its arguments and the "
                   "parameters, so the same command continues the same study)")
    t.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="Optuna's sampler (default tpe)")
    t.add_argument("--sampler-seed", type=int, metavar="N", help="seed the sampler (reproducible trials; give each "
                   "worker of one study its own, or none)")
    t.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                   help="Optuna's pruner for mediocre trials, next to the doctor: median (default) or halving "
                   "(successive halving: more trials stopped sooner)")
    t.add_argument("--no-doctor", action="store_true", help="the doctor does not prune (plain Optuna, for comparison)")
    t.add_argument("--metric", default="val_loss", help="the metric to optimise, as the run records it (default "
                   "val_loss: logged, computed by the loss functions, or printed by the script)")
    t.add_argument("--direction", choices=("minimize", "maximize"), default=None,
                   help="default: maximize for a metric named like accuracy, else minimize")
    t.add_argument("--objective", choices=("last", "best"), default="last",
                   help="a trial's value: the metric's last value (default) or its best")
    t.add_argument("--coarse", type=float, default=0.5, metavar="SHARE",
                   help="share of the trials in the coarse stage (default 0.5; 0: no coarse stage)")
    t.add_argument("--coarse-arg", action="append", default=[], metavar="ARG",
                   help="an argument added to the script in the coarse stage, e.g. --coarse-arg=--epochs=2; repeatable")
    t.add_argument("--probe", default="auto", metavar="NAME|auto|off",
                   help="the learning rate the first run sweeps (an LR range test inside the script: the rates above "
                   "where its loss blows up, and those over 4 decades below, are not searched); default auto: a "
                   "log-scale parameter named lr, learning_rate, *_lr or lr_*; off: none")
    t.add_argument("--probe-steps", type=int, default=100, metavar="N", help="the LR range test's length in steps "
                   "(default 100)")
    t.add_argument("--no-leads", action="store_true", help="no lead trials after the probe (by default the first two "
                   "full trainings are at 1/30 of the rate the probe blew up at with the regularisation off, then one "
                   "the doctor's reading of it chooses)")
    t.add_argument("--top-k", type=int, default=3, help="parameter sets re-run in the final stage (default 3; 0: none)")
    t.add_argument("--seeds", type=int, default=3, help="seeds each final set is re-run with (default 3)")
    t.add_argument("--seed-arg", metavar="NAME", help="pass each trial's seed to the script as --NAME SEED")
    t.add_argument("--trial-timeout", type=float, metavar="SECONDS", help="prune a trial that runs longer than this")
    t.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
    t.add_argument("--html", metavar="FILE", help="also write the results as an HTML page with Optuna's plots")
    t.add_argument("--no-status", action="store_true", help="no live status line on the terminal")
    t.add_argument("script", help="the training script")
    t.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script, given to every trial")

    db = sub.add_parser(
        "dashboard", help="a live page on 127.0.0.1: the runs in a directory, their charts and findings as they train",
        description="Serve a page that lists the run stores in DIR (default .traindoctor/runs), updates while "
        "other processes write them, shows each run's charts and diagnosis, and compares runs side by side. "
        "Binds to 127.0.0.1 unless --host says otherwise; see docs/dashboard.md.")
    from .report.dashboard import add_arguments  # stdlib only at import: the parser stays light

    add_arguments(db)
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

    if getattr(a, "launcher", False) or a.merge is not None:
        return _cmd_run_launcher(a)
    if a.cadence is None:
        from .watch.monitor import DEFAULT_CADENCE

        a.cadence = DEFAULT_CADENCE
    if a.cadence < 1:
        raise TrainDoctorError(f"--cadence must be a positive number of steps, got {a.cadence}")
    args = a.args  # exactly what followed the script on the command line
    if a.overwrite and (a.no_store or not a.store):
        raise TrainDoctorError("--overwrite replaces the run store at --store PATH; give --store PATH")
    if a.module is None:
        _not_a_launcher(a.script)
    if a.store and not a.no_store:
        # before the script runs: two runs in one store would mix their findings
        from .inspect.script import check_script
        from .store import claim_store_path

        if a.module is not None:
            from .watch.launcher import module_file

            module_file(a.module)  # a mistyped module must not cost the old store
        else:
            check_script(a.script)  # a mistyped script must not cost the old store
        claim_store_path(a.store, overwrite=a.overwrite)
    policy = None
    if a.verify_budget is not None:
        if not (0 < a.verify_budget <= 10) or a.verify_budget != a.verify_budget:
            raise TrainDoctorError(f"--verify-budget must be a fraction of the run's time in (0, 10], got {a.verify_budget}")
        if not a.verify:
            raise TrainDoctorError("--verify-budget sets the time of --verify's replays; give --verify too")
        from .heal import HealPolicy

        policy = HealPolicy(verify_budget=a.verify_budget)
    if a.heal_arch:
        from .heal import HealPolicy

        policy = dataclasses.replace(policy or HealPolicy(), arch=True)
    from .report.live import StatusLine, monitor_hook
    from .watch.launcher import watch_module, watch_script

    how = dict(store="" if a.no_store else a.store, cadence=a.cadence, heal=a.heal or a.heal_arch, verify=a.verify,
               heal_policy=policy)
    shown = f"-m {a.module}" if a.module is not None else Path(a.script).name
    with StatusLine(f"traindoctor run {shown}", enabled=not a.no_status) as status:  # erased before the report
        how["on_monitor"] = monitor_hook(status)
        if a.module is not None:
            res = watch_module(a.module, args, **how)
        else:
            res = watch_script(a.script, args, **how)
    render(res.diagnosis, file=sys.stderr, title="traindoctor run")
    if res.store_stopped is not None:
        step, why = res.store_stopped
        where = f"at step {step}" if step is not None else "before its first step"
        loss = res.run.series.get("loss")
        steps = f"all {len(loss)} steps" if loss is not None and len(loss) else "all steps"
        name = res.store_path or a.store
        from .report.safe import safe

        print(safe(f"traindoctor: the run store{f' {name}' if name else ''} stopped {where}: {why}; "
                   f"the diagnosis above is from memory, {steps}", newlines=False), file=sys.stderr)
    elif res.store_path:
        from .report.safe import safe

        print(safe(f"run stored in {res.store_path} (traindoctor diagnose {shlex.quote(str(res.store_path))})",
                   newlines=False), file=sys.stderr)
    if a.json:
        _write_json_out(lambda dest: write_json(res.diagnosis, dest), a)  # a failed write keeps the script's code
    if a.html:
        from .report.html import write_html

        _write_html_out(lambda dest: write_html(res.run, res.diagnosis, dest, title="traindoctor run"), a)
    return res.exit_code


def _not_a_launcher(script: str) -> None:
    """``traindoctor run torchrun …`` (no ``--``): say how a launcher is watched rather than "no such script"."""
    import shutil

    if not Path(script).exists() and not script.endswith(".py") and shutil.which(script):
        raise TrainDoctorError(f"{script}: no such script; {script} is a command: to watch a launcher and its ranks, "
                               f"put it after --: traindoctor run -- {script} ...")


def _cmd_run_launcher(a: argparse.Namespace) -> int:
    """``traindoctor run [OPTIONS] -- LAUNCHER ...``: every rank watched, one diagnosis of all ranks
    (``--merge DIR``: that diagnosis from stores already written)."""
    from .report import render, write_json
    from .report.safe import safe
    from .watch.distributed import NothingWatched, merge_dir, watch_launcher

    if a.merge is not None:
        if not Path(a.merge).is_dir():
            raise TrainDoctorError(f"--merge {a.merge}: not a directory (give the directory of the ranks' run stores)")
        diag = merge_dir(Path(a.merge))
        if diag is None:
            raise TrainDoctorError(f"--merge {a.merge}: holds no run store of a rank (rank0.db, rank1.db …)")
        if a.json != "-":
            render(diag, file=sys.stderr, title="traindoctor run --merge")
        if a.json and not _write_json_out(lambda dest: write_json(diag, dest), a):
            return EXIT_USAGE
        return 0

    healing = [o for o, on in (("--heal", a.heal), ("--heal-arch", a.heal_arch), ("--verify", a.verify),
                               ("--verify-budget", a.verify_budget is not None)) if on]
    if a.html:
        raise TrainDoctorError("--html: a report is of one run; under a launcher each rank writes its own store: "
                               "traindoctor report DIR/rank0.db --html report.html, or traindoctor dashboard DIR")
    if healing:
        raise TrainDoctorError(f"{', '.join(healing)}: healing treats one process; under a launcher each rank trains "
                               "in its own process, and treating one rank alone would put it out of step with the "
                               "others: run without it")
    if a.cadence is not None and a.cadence < 1:
        raise TrainDoctorError(f"--cadence must be a positive number of steps, got {a.cadence}")
    if a.overwrite and (a.no_store or not a.store):
        raise TrainDoctorError("--overwrite replaces the ranks' run stores in --store DIR; give --store DIR")
    try:
        res = watch_launcher([a.script, *a.args], store="" if a.no_store else a.store, overwrite=a.overwrite,
                             cadence=a.cadence)
    except NothingWatched as exc:
        print(safe(f"traindoctor: error: {exc}", newlines=False), file=sys.stderr)
        return exc.code
    render(res.diagnosis, file=sys.stderr, title="traindoctor run")
    if res.run_dir:
        names = ", ".join(f"rank{r}.db" for r in res.ranks[:4]) + (" …" if len(res.ranks) > 4 else "")
        print(safe(f"run stores of the ranks in {res.run_dir} ({names})", newlines=False), file=sys.stderr)
    if a.json:
        _write_json_out(lambda dest: write_json(res.diagnosis, dest), a)  # a failed write keeps the launcher's code
    return res.exit_code


def _cmd_boot_path(a: argparse.Namespace) -> int:
    from .watch.distributed import boot_path

    print(boot_path())
    return 0


def _write_out(write: Callable[[str], None], a: argparse.Namespace, option: str = "json") -> bool:
    """``write(a.<option>)`` (``--json``, ``--html``); when that fails at the end (disk full, the directory
    gone), one line on stderr and False."""
    dest = getattr(a, option)
    try:
        write(dest)
    except BrokenPipeError:
        raise
    except OSError as exc:
        from .report.safe import safe

        why = exc.strerror or str(exc)
        print(safe(f"traindoctor: error: --{option} {getattr(a, option + '_given', dest)}: could not write: {why}",
                   newlines=False), file=sys.stderr)
        return False
    return True


def _write_json_out(write: Callable[[str], None], a: argparse.Namespace) -> bool:
    return _write_out(write, a, "json")


def _write_html_out(write: Callable[[str], None], a: argparse.Namespace) -> bool:
    return _write_out(write, a, "html")


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
    from .diagnosis import diagnose
    from .logs import detect_format, load
    from .report import render, write_json

    overrides = _overrides(a.metric) or None
    path = Path(a.path)
    if a.path != "-" and path.is_dir():
        from .logs import find_runs

        found = find_runs(path)  # a log at the top of a tree must not hide the runs below it
        if detect_format(path) is None or len(found.runs) != 1 or found.unreadable:
            return _diagnose_tree(path, overrides, a, found)
    run = load(a.path, overrides=overrides)
    diag = diagnose(run)
    if a.json != "-" and a.html != "-":
        render(diag, title="traindoctor diagnose")
    if a.json and not _write_json_out(lambda dest: write_json(diag, dest), a):
        return EXIT_USAGE
    if a.html:
        from .report.html import write_html

        if not _write_html_out(lambda dest: write_html(run, diag, dest), a):
            return EXIT_USAGE
    return 1 if _fails([diag], a.fail_on) else 0


def _diagnose_tree(root: object, overrides: dict[str, str] | None, a: argparse.Namespace, found: object = None) -> int:
    """Every run under ``root`` (``found``: its :func:`find_runs`, when already scanned): one table (a
    single run: its full report), exit 2 if one was unreadable (a link loop, a dangling link, a file or
    directory this user may not read: rows of their own)."""
    from .diagnosis import diagnose
    from .errors import LogError
    from .logs import NoTrainingLoss, find_runs, load
    from .report import render
    from .report.summary import RunResult, Summary, display_path, render_summary, write_summary_json

    base = Path(str(root))
    found = find_runs(base) if found is None else found
    if getattr(a, "html", None):
        raise TrainDoctorError(f"--html: {root} holds several runs and a report is of one run; give one of them, or "
                               f"watch them all with traindoctor dashboard {root}")
    summary = Summary(root=str(root))
    summary.skipped = [(display_path(p, base), why) for p, why in found.passed_over]
    rows = sorted([(ref.path.as_posix(), ref, None) for ref in found.runs]
                  + [(p.as_posix(), None, (p, fmt, why)) for p, fmt, why in found.unreadable], key=lambda t: t[0])
    for _, ref, bad in rows:
        if ref is None:
            summary.results.append(RunResult(display_path(bad[0], base), bad[1], error=str(LogError(bad[2], path=bad[0]))))
            continue
        shown = display_path(ref.path, base)
        try:
            run = load(ref.path, overrides=overrides)
        except NoTrainingLoss:
            summary.skipped.append((shown, "not a training log: no training-loss metric"))
            continue
        except LogError as exc:
            summary.results.append(RunResult(shown, ref.format, error=str(exc), note=ref.note))
            continue
        summary.results.append(RunResult(shown, run.meta.get("format", ref.format), diagnosis=diagnose(run), note=ref.note))
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
    if a.json and not _write_json_out(lambda dest: write_summary_json(summary, dest), a):
        return EXIT_USAGE
    if summary.errors:
        return EXIT_USAGE
    return 1 if _fails([r.diagnosis for r in summary.results if r.diagnosis is not None], a.fail_on) else 0


def _default_html(path: Path) -> str:
    """``<run name>.html`` in the current directory; an existing file there is never replaced unasked."""
    from .report.output import json_destination

    name = (path.name if path.is_dir() else path.stem) or "run"
    if path.is_dir() and path.name in ("", ".", ".."):
        name = path.resolve().name or "run"
    target = Path.cwd() / f"{name}.html"
    if target.exists() or target.is_symlink():
        raise TrainDoctorError(f"{target.name} already exists here; pass --html FILE to choose where the report goes")
    return json_destination(str(target), "--html")


def _cmd_report(a: argparse.Namespace) -> int:
    from .diagnosis import diagnose
    from .logs import detect_format, find_runs, load
    from .report import render, write_json
    from .report.html import write_html
    from .report.safe import safe

    overrides = _overrides(a.metric) or None
    path = Path(a.path)
    target = a.path
    if a.path != "-" and path.is_dir() and detect_format(path) is None:
        found = find_runs(path)
        if len(found.runs) != 1:
            listed = ", ".join(str(r.path) for r in found.runs[:5]) + (" …" if len(found.runs) > 5 else "")
            raise TrainDoctorError(f"{a.path}: holds {len(found.runs)} runs" + (f" ({listed})" if listed else "")
                                   + "; give one of them (traindoctor dashboard DIR shows them all)")
        target = str(found.runs[0].path)
    run = load(target, overrides=overrides)
    diag = diagnose(run)
    if a.html is None:
        a.html = a.html_given = _default_html(Path(target) if target != "-" else Path("stdin"))
    if not a.quiet and a.json != "-" and a.html != "-":
        render(diag, title="traindoctor report")
    if not _write_html_out(lambda dest: write_html(run, diag, dest), a):
        return EXIT_USAGE
    if a.html != "-":
        print(safe(f"report written to {a.html_given}", newlines=False), file=sys.stderr)
    if a.json and not _write_json_out(lambda dest: write_json(diag, dest), a):
        return EXIT_USAGE
    return 1 if _fails([diag], a.fail_on) else 0


def _cmd_tune(a: argparse.Namespace) -> int:
    from .report.live import StatusLine
    from .report.safe import safe
    from .report.tune import render_tune, write_tune_html, write_tune_json
    from .tuning import parse_param, tune
    from .tuning.script import ScriptTrials, check_script
    from .tuning.study import default_study_name

    params = [parse_param(x) for x in a.param]
    check_script(a.script)
    if a.trials < 1:
        raise TrainDoctorError(f"--trials must be at least 1, got {a.trials}")
    if a.top_k < 0 or a.seeds < 0:
        raise TrainDoctorError("--top-k and --seeds must not be negative")
    if not 0 <= a.coarse < 1:
        raise TrainDoctorError(f"--coarse is the share of trials in the coarse stage, in [0, 1), got {a.coarse}")
    if a.trial_timeout is not None and not a.trial_timeout > 0:
        raise TrainDoctorError(f"--trial-timeout must be a positive number of seconds, got {a.trial_timeout}")
    taken = {p.name for p in params}
    clash = [x for x in a.args if x.startswith("--") and x[2:].split("=", 1)[0] in taken]
    if clash:
        raise TrainDoctorError(f"{clash[0]}: given to the script and searched by --param; leave it out of the "
                               "script's arguments")
    direction = a.direction or ("maximize" if "acc" in a.metric.lower() else "minimize")
    name = a.study or default_study_name(str(Path(a.script).resolve()), params, [*a.args, *a.coarse_arg])
    workdir = Path(".traindoctor") / "tune" / name
    workdir.mkdir(parents=True, exist_ok=True)
    trials = ScriptTrials(str(Path(a.script).resolve()), list(a.args), workdir, metric=a.metric,
                          objective=a.objective, direction=direction, coarse_args=list(a.coarse_arg),
                          seed_arg=a.seed_arg,
                          trial_timeout=a.trial_timeout)
    counts = {"done": 0, "pruned": 0, "best": None}

    with StatusLine(f"traindoctor tune {Path(a.script).name}", enabled=not a.no_status) as status:
        def on_trial(row: object) -> None:
            if getattr(row, "stage", "") == "probe":  # not a trial of the search: said, not counted
                print(safe(f"traindoctor tune: {row.reason}", newlines=False), file=sys.stderr)  # type: ignore[attr-defined]
                return
            counts["done"] += 1
            if getattr(row, "state", "") == "PRUNED":
                counts["pruned"] += 1
                print(safe(f"traindoctor tune: trial {row.number} pruned: {row.reason}", newlines=False),  # type: ignore[attr-defined]
                      file=sys.stderr)
            v = getattr(row, "value", None)
            if getattr(row, "state", "") == "COMPLETE" and isinstance(v, float):
                b = counts["best"]
                better = b is None or (v < b if direction == "minimize" else v > b)  # type: ignore[operator]
                counts["best"] = v if better else b
            status.update(trials=counts["done"], pruned=counts["pruned"], best=counts["best"])

        status.update(trials=0, of=a.trials + a.top_k * a.seeds)
        result = tune(lambda p, d: None, params, a.trials, storage=a.storage, study_name=name, direction=direction,
                      metric=a.metric, sampler=a.sampler, pruner=None if a.pruner == "none" else a.pruner, seed=a.sampler_seed,
                      coarse=a.coarse, top_k=a.top_k, seeds=a.seeds, doctor_prunes=not a.no_doctor,
                      probe=None if a.probe == "off" else a.probe, probe_steps=a.probe_steps, leads=not a.no_leads,
                      on_trial=on_trial, run_trial=trials)
    if trials.crashed:
        result.notes.append(f"{len(trials.crashed)} trial(s) ended with an error; their output is in {workdir}")
    if not trials.seed_arg and result.final:
        result.notes.append("the final re-runs passed no seed to the script (--seed-arg NAME): they differ only by "
                            "what the script leaves unseeded")
    if a.json != "-":
        render_tune(result, file=sys.stderr)
        where = result.storage.removeprefix("sqlite:///") if result.storage.startswith("sqlite:///") else "its database"
        print(safe(f"study {name} in {where}; the trials' runs in {workdir} (traindoctor dashboard {workdir}); "
                   "the same command again continues the study", newlines=False), file=sys.stderr)
    if a.json and not _write_json_out(lambda dest: write_tune_json(result, dest), a):
        return EXIT_USAGE
    if a.html and not _write_html_out(lambda dest: write_tune_html(result, dest), a):
        return EXIT_USAGE
    return 0 if result.best_params is not None else 1


def _cmd_dashboard(a: argparse.Namespace) -> int:
    from .report.dashboard import main_dashboard

    return main_dashboard(a)


def _cmd_explain(a: argparse.Namespace) -> int:
    from .explain import explain, listing

    if a.list or not a.key:
        print(listing())
        return 0
    print(explain(a.key))
    return 0


def _cmd_checkup(a: argparse.Namespace) -> int:
    from .checks.checkup import checkup_script
    from .checks.probes import DEFAULT_PROBES, REGISTRY

    if a.steps < 1 or a.max_samples < 1:
        raise TrainDoctorError(f"--steps and --max-samples must be positive, got {a.steps} and {a.max_samples}")
    if not a.budget > 0 or a.budget == float("inf"):
        raise TrainDoctorError(f"--budget must be a positive number of seconds, got {a.budget}")
    for s in a.skip:
        if s in REGISTRY and s not in DEFAULT_PROBES:  # every accepted name must skip something
            raise TrainDoctorError(f"--skip {s!r}: {s} does not run unless asked for ({REGISTRY[s].help}); "
                                   f"nothing to skip")
        if s not in DEFAULT_PROBES:
            raise TrainDoctorError(f"--skip {s!r}: not a probe; choose from {', '.join(DEFAULT_PROBES)}")
    args = a.args  # exactly what followed the script on the command line
    from .report.live import CheckupProgress, StatusLine

    progress = CheckupProgress(a.budget)
    with StatusLine(f"traindoctor checkup {Path(a.script).name}", poll=progress, enabled=not a.no_status) as status:
        report = checkup_script(a.script, args, probes=[p for p in DEFAULT_PROBES if p not in a.skip],
                                shallow=a.shallow, nonfinite_step=a.nonfinite_step, amp_dtype=a.amp,
                                max_samples=a.max_samples, steps=a.steps, budget_s=a.budget,
                                status=progress.fields if status.active else None)
    report.render(file=sys.stderr, title="traindoctor checkup")
    if a.json:
        from .report.output import write_document

        if not _write_json_out(lambda dest: write_document(report.to_json(), dest), a):
            return EXIT_USAGE
    if a.html:
        from .report.html import write_html

        if not _write_html_out(lambda dest: write_html(report.run, report.diagnosis, dest, title="traindoctor checkup"),
                               a):
            return EXIT_USAGE
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
    if a.json and not _write_json_out(lambda dest: write_json(res.diagnosis, dest), a):
        return EXIT_USAGE
    return 0


def _script_args(p: argparse.ArgumentParser, args: list[str]) -> tuple[list[str], list[str] | None, str | None]:
    """``run``/``checkup``: split off the tokens after the script's name, which are the script's exactly
    as typed (``--`` included, as ``python SCRIPT -- --x`` passes it; argparse alone drops the first
    ``--``). None when the command line is not that shape: argparse then says what is wrong. The third
    value says how the script was given: ``"--"`` (after ``--``: a launcher command unless a ``.py``
    file), ``"-m"`` (``run -m MODULE``: what follows the module is its arguments), ``"--empty"``
    (nothing after ``--``), or None."""
    if not args or args[0] not in ("run", "checkup", "tune"):
        return args, None, None
    sub = next((act.choices.get(args[0]) for act in p._actions if isinstance(act, argparse._SubParsersAction)), None)
    if sub is None:
        return args, None, None
    opts = sub._option_string_actions
    i = 1
    how = None
    while i < len(args):
        tok = args[i]
        if tok == "--":  # ours: the next token is the script, or the launcher
            i += 1
            how = "--"
            break
        if args[0] == "run" and tok.startswith("-m") and not tok.startswith("--"):
            if tok == "-m":
                if i + 1 >= len(args):
                    return args, None, None  # argparse: -m expects one argument
                return args[: i + 2], args[i + 2:], "-m"
            return args[:i] + ["-m", tok[2:]], args[i + 1:], "-m"
        if not tok.startswith("-") or tok == "-":
            break
        name = tok.split("=", 1)[0]
        hits = [name] if name in opts else [o for o in opts if o.startswith("--") and o.startswith(name)]
        if len(hits) != 1 or len({id(opts[h]) for h in hits}) != 1:
            return args, None, None  # unknown or ambiguous: argparse reports it
        i += 2 if opts[hits[0]].nargs != 0 and "=" not in tok else 1
    if i >= len(args):
        return args, None, ("--empty" if how == "--" else None)
    return args[: i + 1], args[i + 1:], how


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an argument no parser knows is reported with the usage of the command it was given to
    (``traindoctor diagnose x --bogus`` shows ``usage: traindoctor diagnose ...``), not the top level's."""
    p = _parser()
    args = list(sys.argv[1:] if argv is None else argv)
    args, script_args, how = _script_args(p, args)
    if args and args[0] == "run":  # ``--heal=arch``, as the issue of healing spells it: the same as --heal-arch
        args = [("--heal-arch" if t == "--heal=arch" else t) for t in args[:-1]] + args[-1:] if script_args is not None \
            else [("--heal-arch" if t == "--heal=arch" else t) for t in args]
    a, extra = p.parse_known_args(args)
    if script_args is not None:
        a.args = script_args
    if a.cmd == "run":
        sub = next(act.choices["run"] for act in p._actions if isinstance(act, argparse._SubParsersAction))
        if how == "--empty":
            sub.error("nothing after --: give a launcher command (traindoctor run -- torchrun --nproc-per-node 2 "
                      "train.py) or a script")
        if a.merge is not None and (a.script is not None or a.module is not None):
            sub.error("--merge DIR reads the ranks' run stores and runs nothing: give no script, module or launcher")
        if a.script is None and a.module is None and a.merge is None:
            sub.error("give a training script, -m MODULE, or -- followed by a launcher command")
        a.launcher = how == "--" and a.script is not None and not a.script.lower().endswith((".py", ".pyw"))
    if extra:
        sub = next((act.choices.get(a.cmd) for act in p._actions if isinstance(act, argparse._SubParsersAction)), None)
        before_cmd = a.cmd in args and extra[0] in args and args.index(extra[0]) < args.index(a.cmd)
        (p if sub is None or before_cmd else sub).error(f"unrecognized arguments: {' '.join(extra)}")
    return a


_PLAIN = {"—": "-", "–": "-", "→": "->", "←": "<-", "…": "...", "─": "-", "≈": "~", "≥": ">=", "≤": "<=", "×": "x",
          "‘": "'", "’": "'", "“": '"', "”": '"', "·": "."}


def _plain_or_escaped(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: the report's typography in ASCII (``—`` as ``-``), anything else as ``\\uXXXX``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start:exc.end]
    return "".join(_PLAIN.get(c) or c.encode("ascii", "backslashreplace").decode("ascii") for c in bad), exc.end


def _streams_that_can_print() -> None:
    """A stdout or stderr whose encoding cannot carry the report's dashes and arrows (``PYTHONIOENCODING=
    ascii``, a C locale) prints them in ASCII instead of failing with UnicodeEncodeError."""
    codecs.register_error("traindoctor-plain", _plain_or_escaped)
    for stream in (sys.stdout, sys.stderr):
        try:
            "—→…─".encode(getattr(stream, "encoding", None) or "ascii")
        except (UnicodeEncodeError, LookupError):
            try:
                stream.reconfigure(errors="traindoctor-plain")  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                pass


def main(argv: Sequence[str] | None = None) -> int:
    from .report.safe import safe

    _streams_that_can_print()
    a = _parse(argv)
    try:
        if getattr(a, "json", None) is not None:
            # before any work, and where the command was started: a watched script may chdir
            from .report.output import json_destination

            a.json_given = a.json
            a.json = json_destination(a.json)
        if getattr(a, "html", None) is not None:
            from .report.output import json_destination

            a.html_given = a.html
            a.html = json_destination(a.html, "--html")
        return {"run": _cmd_run, "diagnose": _cmd_diagnose, "explain": _cmd_explain, "demo": _cmd_demo,
                "checkup": _cmd_checkup, "boot-path": _cmd_boot_path, "report": _cmd_report,
                "dashboard": _cmd_dashboard, "tune": _cmd_tune}[a.cmd](a)
    except TrainDoctorError as exc:
        print(safe(f"traindoctor: error: {exc}", newlines=False), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `traindoctor explain --list | head`: the reader left; say nothing more, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
