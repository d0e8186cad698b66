"""``traindoctor run SCRIPT.py [ARGS...]``: watch an unmodified training script.

The script runs in this process as ``__main__`` (``runpy``), with ``sys.argv`` and
``sys.path[0]`` as ``python SCRIPT.py ARGS`` would set them, so its output, exit code and
numbers are unchanged. Our own words go to stderr: critical findings the moment they happen,
the diagnosis at the end.
"""
from __future__ import annotations

import os
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
from .monitor import Monitor


@dataclass
class WatchResult:
    exit_code: int
    run: Run
    diagnosis: Diagnosis
    store_path: str | None


def default_store_path(script: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(".traindoctor") / "runs" / f"{script.stem}-{stamp}-{os.getpid()}.db"


def watch_script(
    script: str | os.PathLike[str],
    args: list[str],
    *,
    store: str | os.PathLike[str] | None = None,
    cadence: int = 25,
    err: IO[str] | None = None,
) -> WatchResult:
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
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
        watch.close()
    run = monitor.close()
    return WatchResult(code, run, diagnose(run), store_path)
