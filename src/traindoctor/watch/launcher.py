"""``traindoctor run SCRIPT.py [ARGS...]`` and ``traindoctor run -m MODULE [ARGS...]``: watch an unmodified
training script or module.

The script runs in this process as ``__main__`` (its absolute ``__file__``), with ``sys.argv`` and
``sys.path[0]`` as ``python SCRIPT.py ARGS`` would set them; a module as ``python -m MODULE ARGS`` runs
it (``runpy.run_module``: ``__main__`` with its ``__spec__``, ``sys.argv[0]`` its file, ``sys.path[0]``
the working directory); so its output, exit code and numbers are unchanged. A launcher and its ranks
(``traindoctor run -- torchrun …``) are watched from another process: ``distributed.py``. Our own words
go to stderr: critical findings the moment they happen, the diagnosis at the end.
"""
from __future__ import annotations

import io
import os
import re
import runpy
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..diagnosis import Diagnosis, diagnose
from ..errors import TrainDoctorError
from ..heal import HealPolicy
from ..inspect import script as _script
from ..inspect.crash import crash_event_data
from ..inspect.script import check_script, run_as_main
from ..report.safe import safe
from ..run import Run
from .autohooks import AutoWatch, StopTraining
from .monitor import DEFAULT_CADENCE, Monitor

_PRINTED = re.compile(
    r"\b(?:val|valid|validation|eval|dev)[\s_/-]*(loss|acc|accuracy)\b\s*[:=]?\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(\s*%)?",
    re.IGNORECASE,
)


class PrintedMetrics(io.TextIOBase):
    """stdout as the script wrote it, byte for byte, with validation metrics read off its lines.

    Scripts print "epoch 3 val_loss 0.41 val_acc 92.5%" more often than they log it anywhere:
    those numbers become ``val_loss``/``val_accuracy`` when no loss-function call gave them.
    """

    def __init__(self, inner: IO[str], monitor: Monitor) -> None:
        self._inner, self._monitor, self._buf = inner, monitor, ""

    def write(self, text: str) -> int:
        n = self._inner.write(text)
        try:
            self._buf += text
            if "\n" in self._buf:
                lines, self._buf = self._buf.rsplit("\n", 1)
                for line in lines.splitlines():
                    self._scan(line)
            if len(self._buf) > 10_000:
                self._buf = self._buf[-1000:]
        except Exception:  # noqa: BLE001 - never break the script's output
            pass
        return n

    def _scan(self, line: str) -> None:
        for what, num, pct in _PRINTED.findall(line):
            v = float(num) / (100.0 if pct else 1.0)
            name = "val_loss" if what.lower() == "loss" else "val_accuracy"
            self._monitor.record(f"{name}@printed", v, max(0, self._monitor.step - 1))

    def flush(self) -> None:
        self._inner.flush()

    # io.TextIOBase defines these itself (isatty() False, encoding None …), so __getattr__ never sees them:
    # the script must see its real stream's answers (tqdm and rich ask whether stdout is a terminal)
    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._inner.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._inner, "errors", None)

    @property
    def newlines(self) -> Any:
        return getattr(self._inner, "newlines", None)

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str):  # buffer, reconfigure, line_buffering ... as the real stream
        return getattr(self._inner, name)


@dataclass
class WatchResult:
    exit_code: int
    run: Run
    diagnosis: Diagnosis
    store_path: str | None
    # the run store stopped mid-run (a full disk): (last step it holds, SQLite's reason); the run is in memory
    store_stopped: tuple[int | None, str] | None = None


def default_store_path(script: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(".traindoctor") / "runs" / f"{script.stem}-{stamp}-{os.getpid()}.db"


def _default_store(path: Path, meta: dict[str, Any], err: IO[str]) -> tuple[Any, str | None]:
    """The default run store, or none (and one line on ``err``) where the working directory cannot
    hold one: a read-only directory never stops the training, the run is kept in memory."""
    from ..store import RunStore

    sp = default_store_path(path)
    try:
        try:
            sp.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _NoStore(str(sp.parent), exc.strerror or str(exc)) from exc
        try:
            return RunStore(sp, meta=meta, stop_on_error=True), str(sp)
        except (OSError, TrainDoctorError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            why = getattr(cause, "strerror", None) or str(cause)
            raise _NoStore(str(sp), why) from exc
    except _NoStore as ns:
        print(safe(f"traindoctor: cannot create {ns.what} in {os.getcwd()} ({ns.why}): keeping this run in memory; "
                   "--no-store silences this"), file=err, flush=True)
        return None, None


class _NoStore(Exception):
    def __init__(self, what: str, why: str) -> None:
        super().__init__(what, why)
        self.what, self.why = what, " ".join(str(why).split())


_OURS = (__file__, _script.__file__, "<frozen runpy>", runpy.__file__)


def print_script_exception(exc: BaseException, file: IO[str] | None = None) -> None:
    """The exception as Python prints it for the script: none of our frames on top (a SyntaxError in
    the script has no frame of the script at all, so none is shown)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OURS:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=file or sys.stderr)


def watch_script(
    script: str | os.PathLike[str],
    args: list[str],
    *,
    store: str | os.PathLike[str] | None = None,
    cadence: int = DEFAULT_CADENCE,
    err: IO[str] | None = None,
    heal: bool = False,
    verify: bool = False,
    heal_policy: HealPolicy | None = None,
    on_monitor: Callable[[Monitor], None] | None = None,
) -> WatchResult:
    """Run ``script`` with ``args`` as ``python`` would, watched; with ``heal``, treated as it trains
    (``traindoctor run --heal``): the Healer acts through the model, optimizer, schedulers and
    GradScaler the script created, and stops the script (as Ctrl-C would) when healing says stop. With
    ``verify`` (``--verify``) each treatment is first tried on a replay of the window since the last
    snapshot, against the candidates for its cause, and the one that measurably helped is applied."""
    path = check_script(script)
    return _watch(lambda: run_as_main(script), [os.fspath(script), *args], str(path.resolve().parent), path,
                  {"source": str(path), "script": str(path), "args": list(args), "mode": "run"},
                  store=store, cadence=cadence, err=err, heal=heal, verify=verify, heal_policy=heal_policy,
                  on_monitor=on_monitor)


def find_module(name: str) -> str:
    """The file ``python -m NAME`` would run (``sys.path[0]`` already the working directory), or a
    one-line error naming what is wrong: no such module, a package without ``__main__``."""
    import importlib.util

    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise TrainDoctorError(f"-m {name!r}: not a module name (expected e.g. -m package.train)")
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:  # a package: its __main__ runs
            main = importlib.util.find_spec(f"{name}.__main__")
            if main is None:
                raise TrainDoctorError(f"-m {name}: {name} is a package without a __main__ module; it cannot be run "
                                       "with -m")
            spec = main
    except TrainDoctorError:
        raise
    except Exception as exc:  # noqa: BLE001 - a parent package that fails to import: said in one line
        if isinstance(exc, ModuleNotFoundError) and exc.name and name.startswith(exc.name):
            raise TrainDoctorError(f"-m {name}: no module named {exc.name!r} (looked in the working directory and "
                                   "sys.path)") from exc
        raise TrainDoctorError(f"-m {name}: importing its package failed: {type(exc).__name__}: {exc}") from exc
    if spec is None:
        raise TrainDoctorError(f"-m {name}: no module named {name!r} (looked in the working directory and sys.path)")
    if not spec.origin or not spec.has_location:
        raise TrainDoctorError(f"-m {name}: {name} has no source file to run")
    return spec.origin


def module_file(module: str) -> str:
    """:func:`find_module` with ``sys.path[0]`` the working directory, as ``python -m`` looks."""
    old_path0 = sys.path[0] if sys.path else None
    if sys.path:
        sys.path[0] = os.getcwd()
    else:
        sys.path.insert(0, os.getcwd())
    try:
        return find_module(module)
    finally:
        if old_path0 is not None:
            sys.path[0] = old_path0


def watch_module(
    module: str,
    args: list[str],
    *,
    store: str | os.PathLike[str] | None = None,
    cadence: int = DEFAULT_CADENCE,
    err: IO[str] | None = None,
    heal: bool = False,
    verify: bool = False,
    heal_policy: HealPolicy | None = None,
    on_monitor: Callable[[Monitor], None] | None = None,
) -> WatchResult:
    """Run module ``module`` with ``args`` as ``python -m MODULE ARGS`` would, watched: ``sys.path[0]``
    the working directory, ``sys.argv[0]`` the module's file, the code run as ``__main__`` with its
    ``__spec__`` (``runpy.run_module``, as Python's ``-m`` does). A module that cannot be found is a
    one-line error before anything runs."""
    cwd = os.getcwd()
    origin = module_file(module)
    stem = Path(module.rsplit(".", 1)[-1])
    source = f"-m {module}"
    return _watch(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), [origin, *args], cwd, stem,
                  {"source": source, "script": origin, "module": module, "args": list(args), "mode": "run"},
                  store=store, cadence=cadence, err=err, heal=heal, verify=verify, heal_policy=heal_policy,
                  on_monitor=on_monitor)


def _watch(
    run_main: Any,
    argv: list[str],
    path0: str,
    name: Path,
    meta: dict[str, Any],
    *,
    store: str | os.PathLike[str] | None,
    cadence: int,
    err: IO[str] | None,
    heal: bool,
    verify: bool,
    heal_policy: HealPolicy | None,
    on_monitor: Callable[[Monitor], None] | None = None,
) -> WatchResult:
    """Run ``run_main()`` watched, with ``sys.argv`` = ``argv`` and ``sys.path[0]`` = ``path0`` as
    python sets them; ``name`` names the default run store. ``on_monitor(monitor)`` is called once the
    monitor is built, before the script runs (the live status line reads it: ``report/live.py``)."""
    err = err or sys.stderr
    store_obj = None
    store_path = None
    if store is None:
        store_obj, store_path = _default_store(name, meta, err)
    elif store != "":
        from ..store import RunStore

        sp = Path(store)
        store_obj = RunStore(sp, meta=meta, stop_on_error=True)  # a full disk must not stop the training
        store_path = str(sp)
    monitor = Monitor(cadence=cadence, store=store_obj, on_critical=lambda m: print(safe(m), file=err, flush=True))
    monitor.meta.update({"source": meta["source"], "mode": "run"})
    if store_path:
        monitor.meta["store"] = store_path
    if heal or verify:
        monitor.meta["heal"] = {}
    watch = AutoWatch(monitor, heal=heal, verify=verify, heal_policy=heal_policy)
    from ..lrsweep import ENV as SWEEP_ENV
    from ..lrsweep import from_env, install

    asked = from_env(os.environ.get(SWEEP_ENV))  # `traindoctor tune`'s probe: an LR range test in this run
    sweep_hook = install(*asked) if asked is not None else None
    if sweep_hook is not None:
        monitor.meta["lr_sweep"] = os.environ.get(SWEEP_ENV)
    if on_monitor is not None:
        on_monitor(monitor)
    old_argv, old_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = list(argv)  # argv[0] as python leaves it: the script as typed, a module's file
    if sys.path:
        sys.path[0] = path0
    else:
        sys.path.insert(0, path0)
    code = 0
    real_stdout = sys.stdout
    sys.stdout = PrintedMetrics(real_stdout, monitor)
    try:
        run_main()
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
        if code != 0:
            monitor.event("exit", {"code": code})
    except StopTraining as exc:  # healing gave up on a fault: the run stops here, said once, and failed
        print(safe(f"traindoctor: stopped the script: {exc}"), file=err, flush=True)
        code = 1
    except KeyboardInterrupt as exc:  # Ctrl-C: shown as python shows it, and the run reported as interrupted
        print_script_exception(exc)
        monitor.event("interrupted", {"type": type(exc).__name__})
        code = 130
    except BaseException as exc:  # noqa: BLE001 - the script's crash becomes a finding
        print_script_exception(exc)
        data = crash_event_data(exc)
        if isinstance(exc, SyntaxError) and exc.filename:  # raised by compiling it: no frame of the script
            data.update(where=f"{exc.filename}:{exc.lineno}", line=(exc.text or "").strip())
        monitor.event("crash", data)
        code = 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        sys.stdout = real_stdout
        if sweep_hook is not None:
            sweep_hook.remove()
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
        watch.close()
    run = monitor.close()
    if store_obj is not None and monitor.store is None:
        store_path = None  # the store failed during the run (said once): the run lives in memory only
    stopped = getattr(store_obj, "stopped", None)
    return WatchResult(code, run, diagnose(run), store_path, store_stopped=stopped)
