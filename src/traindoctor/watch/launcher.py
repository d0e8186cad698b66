"""``traindoctor run SCRIPT.py [ARGS...]``: watch an unmodified training script.

The script runs in this process as ``__main__`` (``runpy``), with ``sys.argv`` and
``sys.path[0]`` as ``python SCRIPT.py ARGS`` would set them, so its output, exit code and
numbers are unchanged. Our own words go to stderr: critical findings the moment they happen,
the diagnosis at the end.
"""
from __future__ import annotations

import io
import os
import re
import runpy
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..diagnosis import Diagnosis, diagnose
from ..errors import TrainDoctorError
from ..run import Run
from .autohooks import AutoWatch
from .doctor import crash_event_data
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

    def __getattr__(self, name: str):  # fileno, isatty, encoding, buffer ... as the real stream
        return getattr(self._inner, name)


@dataclass
class WatchResult:
    exit_code: int
    run: Run
    diagnosis: Diagnosis
    store_path: str | None


def check_script(script: str | os.PathLike[str]) -> Path:
    """The script as a path, or a one-line error saying why it cannot be a training script."""
    path = Path(script)
    if not path.exists():
        raise TrainDoctorError(f"{script}: no such script")
    if path.is_dir():
        raise TrainDoctorError(f"{script}: is a directory, expected a Python training script")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise TrainDoctorError(f"{script}: cannot read ({exc.strerror})") from exc
    if b"\0" in head:
        raise TrainDoctorError(f"{script}: is a binary file, expected a Python training script")
    return path


def default_store_path(script: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(".traindoctor") / "runs" / f"{script.stem}-{stamp}-{os.getpid()}.db"


def watch_script(
    script: str | os.PathLike[str],
    args: list[str],
    *,
    store: str | os.PathLike[str] | None = None,
    cadence: int = DEFAULT_CADENCE,
    err: IO[str] | None = None,
) -> WatchResult:
    path = check_script(script)
    err = err or sys.stderr
    store_obj = None
    store_path = None
    if store != "":
        from ..store import RunStore

        sp = Path(store) if store is not None else default_store_path(path)
        store_obj = RunStore(sp, meta={"source": str(path), "script": str(path), "args": list(args), "mode": "run"})
        store_path = str(sp)
    monitor = Monitor(cadence=cadence, store=store_obj, on_critical=lambda m: print(m, file=err, flush=True))
    monitor.meta.update({"source": str(path), "mode": "run"})
    if store_path:
        monitor.meta["store"] = store_path
    watch = AutoWatch(monitor)
    old_argv, old_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [str(path), *args]
    script_dir = str(path.resolve().parent)
    if sys.path:
        sys.path[0] = script_dir
    else:
        sys.path.insert(0, script_dir)
    code = 0
    real_stdout = sys.stdout
    sys.stdout = PrintedMetrics(real_stdout, monitor)
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException as exc:  # noqa: BLE001 - the script's crash becomes a finding
        # print it as Python would, without our frames on top
        tb = exc.__traceback__
        ours = (__file__, "<frozen runpy>", runpy.__file__)
        while tb is not None and tb.tb_frame.f_code.co_filename in ours and tb.tb_next is not None:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
        monitor.event("crash", crash_event_data(exc))
        code = 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        sys.stdout = real_stdout
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
        watch.close()
    run = monitor.close()
    return WatchResult(code, run, diagnose(run), store_path)
