"""Distributed runs: ``traindoctor run -- LAUNCHER …`` and ``TRAINDOCTOR=1`` ranks, each watched, merged.

Two halves, in two kinds of process:

* **the parent** (:func:`watch_launcher`, ``traindoctor run -- torchrun --nproc-per-node 2 train.py``):
  runs the launcher command as a subprocess, unchanged, with ``TRAINDOCTOR=1``, the run directory in
  ``TRAINDOCTOR_DIR`` and the boot directory (``boot/sitecustomize.py``) first on ``PYTHONPATH``; when
  the launcher exits it reads every rank's run store from the run directory and writes one diagnosis
  of all ranks (:func:`traindoctor.ranks.merge`). It never imports torch.
* **a rank** (:func:`start_rank`, called by the boot hook when the rank's script imports torch): the
  watch ``traindoctor run`` puts on a script (``AutoWatch`` and a ``Monitor``), writing
  ``<run dir>/rank<R>.db`` with ``meta["distributed"]`` (rank, local rank, world size, host, and
  whether DDP averages all of the optimizer's gradients, with the ranks of its group); plus a clock
  (:class:`RankClock`) for the time each step waited for its batches in the DataLoader, and the step
  time. Live, a critical finding is said with the rank (``traindoctor: rank 1: L001 …``). At exit the
  store is closed; rank 0 of a run started without the parent (``TRAINDOCTOR=1 torchrun …``) then
  waits for the other ranks' stores in the same directory to close and writes the merged diagnosis
  itself.

Ranks find their directory in ``TRAINDOCTOR_DIR``; without it (the bare ``TRAINDOCTOR=1`` form) they
agree on ``.traindoctor/runs/<script>-<run id>`` from what the launcher gives every rank alike: the
rendezvous id (``TORCHELASTIC_RUN_ID``, ``--rdzv-id``) when there is one, else the launcher's process
and its start time (one machine).
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import LogError, TrainDoctorError
from ..report.safe import safe

BOOT_DIR = Path(__file__).resolve().parent / "boot"
STORE_NAME = re.compile(r"^rank(\d+)(?:-restart(\d+))?\.db$")
WINDOW = 10  # steps per step_time / data_time point
MERGE_WAIT_S = 60.0  # rank 0 of a bare run waits this long at most for the other ranks' stores to close


def boot_path() -> str:
    """The directory to put first on PYTHONPATH for ``TRAINDOCTOR=1`` ranks (``traindoctor boot-path``)."""
    return str(BOOT_DIR)


def store_name(rank: int, restart: int = 0) -> str:
    return f"rank{rank}.db" if not restart else f"rank{rank}-restart{restart}.db"


def run_name(cmd: list[str]) -> str:
    """A short name for the run directory: the training script's stem, the module after ``-m``, or
    the launcher's name."""
    for i, tok in enumerate(cmd):
        if tok.endswith(".py") and i > 0:
            return Path(tok).stem
    for i, tok in enumerate(cmd[:-1]):
        if tok in ("-m", "--module", "--module_name") and not cmd[i + 1].startswith("-"):
            for later in cmd[i + 1:]:
                if not later.startswith("-") and re.fullmatch(r"[\w.]+", later):
                    return later.rsplit(".", 1)[-1]
    return Path(cmd[0]).name if cmd else "run"


def _clean_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)[:60] or "run"


def _proc_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def default_run_dir(role: dict[str, Any], environ: dict[str, str] | None = None) -> Path:
    """Where the ranks of a bare ``TRAINDOCTOR=1`` run write, the same for every rank of one launch."""
    env = os.environ if environ is None else environ
    main = str(role.get("main") or "run")
    stem = Path(main).stem if role.get("kind") == "script" else main.rsplit(".", 1)[-1]
    rid = env.get("TORCHELASTIC_RUN_ID", "")
    if rid and rid != "none":
        key = rid
    else:
        ppid = os.getppid()
        key = f"p{ppid}-{_proc_start(ppid)}".rstrip("-")
    return Path(".traindoctor") / "runs" / f"{_clean_name(stem)}-{_clean_name(key)}"


# --------------------------------------------------------------------------------------- the parent
def resolve_command(cmd0: str) -> str:
    """The launcher's executable, or a one-line error naming what is wrong."""
    if os.sep in cmd0 or (os.altsep and os.altsep in cmd0):
        p = Path(cmd0)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        why = "no such file" if not p.exists() else "not an executable file"
        raise TrainDoctorError(f"{cmd0}: unknown launcher: {why}")
    found = shutil.which(cmd0)
    if found is None:
        raise TrainDoctorError(f"{cmd0}: unknown launcher: no such command on PATH (after --, give a launcher "
                               "command: torchrun, accelerate launch, deepspeed, python -m torch.distributed.run …)")
    return found


def launcher_env(run_dir: Path, cadence: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment: the user's, plus what makes each rank watch itself into ``run_dir``."""
    env = dict(os.environ if base is None else base)
    env.pop("TRAINDOCTOR_WATCHING", None)
    env["TRAINDOCTOR"] = "1"
    env["TRAINDOCTOR_DIR"] = str(run_dir.resolve())
    env["TRAINDOCTOR_PARENT"] = str(os.getpid())  # ranks leave the merge to this process
    if cadence is not None:
        env["TRAINDOCTOR_CADENCE"] = str(int(cadence))
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = boot_path() + (os.pathsep + old if old else "")
    return env


def claim_run_dir(path: Path, overwrite: bool) -> None:
    """``--store DIR`` of a launcher run: a directory that may hold the ranks' stores; one already
    holding rank stores is refused, or with ``overwrite`` those stores are removed."""
    from ..store import claim_store_path

    if path.exists() and not path.is_dir():
        raise TrainDoctorError(f"{path}: with a launcher, --store names a directory for the ranks' run stores, "
                               "and this is a file")
    if not path.is_dir():
        return
    old = sorted(p for p in path.iterdir() if STORE_NAME.match(p.name))
    if old and not overwrite:
        raise TrainDoctorError(f"{path}: already holds the run stores of ranks ({', '.join(p.name for p in old[:4])}); "
                               "pass --overwrite to replace them, or choose another --store directory")
    for p in old:
        claim_store_path(p, overwrite=True)


def _store_done(path: Path) -> bool:
    """The rank's store is closed, or its writer (on this machine) is gone. Read as an immutable file,
    which creates no -wal/-shm beside it: a clean close checkpoints its closing mark into the file."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True, timeout=1.0)
        try:
            rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('store:closed', 'store:writer')"))
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return False
    if "store:closed" in rows:
        return True
    try:
        writer = json.loads(rows.get("store:writer") or "{}")
        if writer.get("host") != socket.gethostname():
            return False
        os.kill(int(writer["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, OSError):
        return False
    return False


def _rank_files(run_dir: Path) -> list[Path]:
    """``rank*.db`` in ``run_dir`` and in the directories just below it (one per machine)."""
    if not run_dir.is_dir():
        return []
    return sorted([*run_dir.glob("rank*.db"), *run_dir.glob("*/rank*.db")])


def load_rank_runs(run_dir: Path) -> tuple[dict[int, Any], list[str]]:
    """``{rank: Run}`` from the ranks' stores in ``run_dir`` and the directories just below it (one per
    machine, copied together), a restarted rank by its last attempt; and a note per store that could
    not be read, per restart, per rank found twice."""
    from ..store import load_store

    found: dict[int, tuple[int, Path]] = {}
    twice: list[str] = []
    for p in _rank_files(run_dir):
        m = STORE_NAME.match(p.name)
        if not m or not p.is_file():
            continue
        r, n = int(m.group(1)), int(m.group(2) or 0)
        if r in found and found[r][0] == n:
            twice.append(f"rank {r} has two run stores, {found[r][1]} and {p}: the first is diagnosed")
            continue
        if r not in found or n > found[r][0]:
            found[r] = (n, p)
    runs: dict[int, Any] = {}
    notes: list[str] = list(twice)
    for r, (n, p) in sorted(found.items()):
        try:
            runs[r] = load_store(p)
        except LogError as exc:
            notes.append(f"rank {r}: its run store could not be read: {exc}")
            continue
        if n:
            notes.append(f"rank {r} was restarted {n} time{'s' if n > 1 else ''} by the launcher: its last attempt "
                         f"({p.name}) is diagnosed")
    return runs, notes


def merge_dir(run_dir: Path, *, exit_code: int | None = None, launcher: str | None = None) -> Any:
    """One diagnosis of the ranks whose stores are in ``run_dir`` (None when there is none)."""
    from ..ranks import merge, world_size_of

    runs, notes = load_rank_runs(run_dir)
    if not runs:
        return None
    world = world_size_of(runs)
    listed = ", ".join(f"rank {r} ({runs[r].num_steps} steps)" for r in runs)
    head = [f"watched {len(runs)} of {world} rank{'s' if world != 1 else ''}: {listed}"]
    missing = [r for r in range(world) if r not in runs]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" …" if len(missing) > 8 else "")
        head.append(f"rank{'s' if len(missing) > 1 else ''} {shown} left no run store in {run_dir}: a rank on "
                    "another machine writes to its own disk unless TRAINDOCTOR_DIR is a shared directory; a rank "
                    "that ended before importing torch is not watched")
    ended = None
    if exit_code:
        ended = f"the launcher{f' ({launcher})' if launcher else ''} exited with code {exit_code}"
        head.append(ended)
    source = {"source": str(run_dir), "format": "ranks",
              "ranks": [{"rank": r, "steps": run.num_steps, "store": run.meta.get("source"),
                         "host": (run.meta.get("distributed") or {}).get("host")} for r, run in runs.items()]}
    return merge(runs, notes=head + notes, source=source, ended=ended)


class NothingWatched(TrainDoctorError):
    """The launcher ran, but no process of it was watched; ``code`` is the exit code to return."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class LaunchResult:
    exit_code: int
    diagnosis: Any
    run_dir: str | None  # None when the stores were temporary (--no-store)
    ranks: list[int] = field(default_factory=list)


def _run_child(cmd: list[str], env: dict[str, str]) -> int:
    """The launcher, in the foreground. Ctrl-C reaches it from the terminal (same process group): this
    process waits for it to end and then reports; a SIGTERM sent to this process is passed on."""
    try:
        proc = subprocess.Popen(cmd, env=env)
    except OSError as exc:  # not an executable format, permission denied
        raise TrainDoctorError(f"{cmd[0]}: cannot start the launcher: {exc.strerror or exc}") from exc
    handlers: dict[int, Any] = {}

    def forward(signum: int, frame: object) -> None:
        try:
            proc.send_signal(signum)
        except OSError:
            pass

    try:
        handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: leave signals as they are
        pass
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return 128 - rc if rc < 0 else rc


def watch_launcher(cmd: list[str], *, store: str | os.PathLike[str] | None = None, overwrite: bool = False,
                   cadence: int | None = None, err: IO[str] | None = None) -> LaunchResult:
    """Run the launcher command ``cmd`` with every rank watched; one diagnosis of all ranks at the end.

    ``store``: the directory for the ranks' stores (None: ``.traindoctor/runs/<name>-<time>-<pid>/``;
    ``""``: a temporary one, removed after the merge)."""
    err = err or sys.stderr
    if not cmd:
        raise TrainDoctorError("nothing after --: give a launcher command, e.g. traindoctor run -- torchrun "
                               "--nproc-per-node 2 train.py")
    resolve_command(cmd[0])
    temporary = store == ""
    if temporary:
        run_dir = Path(tempfile.mkdtemp(prefix="traindoctor-ranks-"))
    elif store is not None:
        run_dir = Path(store)
        claim_run_dir(run_dir, overwrite)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(".traindoctor") / "runs" / f"{_clean_name(run_name(cmd))}-{stamp}-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainDoctorError(f"{run_dir}: cannot create the directory for the ranks' run stores "
                               f"({exc.strerror or exc})") from exc
    print(safe(f"traindoctor: watching every rank of `{shlex.join(cmd)}`; run stores in {run_dir}", newlines=False),
          file=err, flush=True)
    try:
        code = _run_child(cmd, launcher_env(run_dir, cadence))
        try:
            diag = merge_dir(run_dir, exit_code=code, launcher=Path(cmd[0]).name)
        except Exception as exc:  # noqa: BLE001 - the doctor's failure, said once; the run's exit code is kept
            kept = "" if temporary else f"; the ranks' run stores are in {run_dir}"
            raise NothingWatched(f"the diagnosis of the ranks failed ({type(exc).__name__}: {exc}){kept}", code) from exc
        if diag is None:
            what = (f"`{shlex.join(cmd)}` exited with code {code} and no rank was watched" if code else
                    f"no rank of `{shlex.join(cmd)}` was watched")
            raise NothingWatched(
                f"{what}: no Python process it started had RANK or LOCAL_RANK set and imported torch (torchrun, "
                "accelerate launch, deepspeed and python -m torch.distributed.run set them; a process started with "
                "python -I or -E ignores PYTHONPATH and cannot be watched); to watch one process, run traindoctor "
                "run SCRIPT.py", code or 2)
        runs = [int(m.group(1)) for p in _rank_files(run_dir) if (m := STORE_NAME.match(p.name))]
    finally:
        if temporary:
            shutil.rmtree(run_dir, ignore_errors=True)
    return LaunchResult(code, diag, None if temporary else str(run_dir), sorted(set(runs)))


# ------------------------------------------------------------------------------------------- a rank
class RankClock:
    """Per rank: the step time, and the time the training loop waited inside the DataLoader for its
    batches since the previous optimizer step (``step_time`` and ``data_time`` points, the mean of each
    window of ``WINDOW`` steps; fetches with gradients off, an evaluation's, are not counted). Time on
    the host says little about an accelerator's work, which runs asynchronously; a wait for data it
    does say. Also, at the first step, whether DistributedDataParallel averages all of the optimizer's
    gradients; and while the monitor runs the model itself (a replay of a non-finite step, the
    eval-mode gap), DDP's forward is kept from broadcasting buffers, a collective the other ranks
    would not join."""

    def __init__(self, monitor: Any) -> None:
        import torch.optim.optimizer as om
        from torch.utils.data import dataloader as dl

        self.monitor = monitor
        self._opt: Any = None
        self._t_end: float | None = None
        self._fetch = 0.0  # loader time since the last step
        self._period: list[float] = []
        self._wait: list[float] = []
        self._handles: list[Any] = [om.register_optimizer_step_post_hook(monitor.contained("rank-clock", self._post))]
        self._base = dl._BaseDataLoaderIter
        self._inner_next = self._base.__next__
        clock = self

        def __next__(it: Any) -> Any:  # the loader's own (as wrapped by AutoWatch), timed
            t0 = time.perf_counter()
            try:
                return clock._inner_next(it)
            finally:
                clock._fetched(time.perf_counter() - t0)

        self._next = __next__
        self._base.__next__ = __next__  # type: ignore[method-assign]

    def _fetched(self, seconds: float) -> None:
        try:
            import torch

            if torch.is_grad_enabled() and not self.monitor.quiet:
                self._fetch += seconds
        except Exception:  # noqa: BLE001 - never break the loader
            pass

    def _post(self, opt: Any, args: Any, kwargs: Any) -> None:
        if self.monitor.quiet:
            return
        if self._opt is None:
            self._opt = weakref.ref(opt)
            self.monitor.contained("rank-ddp", self._first)(opt)
        elif self._opt() is not opt:
            return
        now = time.perf_counter()
        if self._t_end is not None:
            self._period.append(now - self._t_end)
            self._wait.append(self._fetch)
        self._t_end = now
        self._fetch = 0.0
        if len(self._period) >= WINDOW:
            self._emit()

    def _emit(self) -> None:
        step = max(0, self.monitor.step - 1)
        if self._period:
            self.monitor.record("step_time", sum(self._period) / len(self._period), step)
            self.monitor.record("data_time", sum(self._wait) / len(self._wait), step)
        self._period, self._wait = [], []

    def _first(self, opt: Any) -> None:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP

        models = list(self.monitor.models)
        info = self.monitor.meta.setdefault("distributed", {})
        ddps = [m for m in models if isinstance(m, DDP)]
        info["ddp"] = bool(ddps)
        synced = False
        if ddps and len(ddps) == len(models) and dist.is_available() and dist.is_initialized():
            opt_ids = {id(p) for g in opt.param_groups for p in g["params"] if p.requires_grad}
            ddp_ids = {id(p) for m in ddps for p in m.parameters() if p.requires_grad}
            groups = {tuple(dist.get_process_group_ranks(m.process_group)) for m in ddps}
            if opt_ids and opt_ids == ddp_ids and len(groups) == 1:
                synced = True
                info["ddp_group"] = list(next(iter(groups)))
        info["grads_synced"] = synced

    def close(self) -> None:
        if self._base.__next__ is self._next:
            self._base.__next__ = self._inner_next  # type: ignore[method-assign]
        if self._period:
            self.monitor.contained("rank-clock", self._emit)()
        for h in self._handles:
            h.remove()
        self._handles = []


class _RankWatch:
    def __init__(self, role: dict[str, Any]) -> None:
        self.role = role
        self.rank = int(role["rank"])
        self._done = False
        self.parent = False
        self.monitor: Any = None
        self.watch: Any = None
        self.clock: Any = None
        self._stdout: Any = None
        self._prev_hook: Any = None

    def say(self, text: str) -> None:
        print(safe(f"traindoctor: rank {self.rank}: {text}", newlines=False), file=sys.stderr, flush=True)

    def critical(self, msg: str) -> None:
        self.say(msg.removeprefix("traindoctor: "))

    def start(self) -> None:
        from ..store import RunStore
        from .autohooks import AutoWatch
        from .launcher import PrintedMetrics
        from .monitor import DEFAULT_CADENCE, Monitor

        env = os.environ
        role = self.role
        self.parent = bool(env.get("TRAINDOCTOR_PARENT"))
        self.run_dir = Path(env["TRAINDOCTOR_DIR"]) if env.get("TRAINDOCTOR_DIR") else default_run_dir(role)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.say(f"not watched: cannot create {self.run_dir} ({exc.strerror or exc})")
            return
        self.path = self.run_dir / store_name(self.rank, int(role.get("restart") or 0))
        if self.path.exists():
            self.say(f"not watched: {self.path} already exists (an earlier run?): give TRAINDOCTOR_DIR a new directory")
            return
        try:
            cadence = max(1, int(env.get("TRAINDOCTOR_CADENCE") or DEFAULT_CADENCE))
        except ValueError:
            cadence = DEFAULT_CADENCE
        info = {"rank": self.rank, "local_rank": role.get("local_rank"), "world_size": role.get("world_size"),
                "host": socket.gethostname(), "pid": os.getpid(), "restart": role.get("restart", 0)}
        main = str(role.get("main"))
        source = main if role.get("kind") == "script" else f"-m {main}"
        meta = {"source": source, "script": source, "args": sys.argv[1:], "mode": "run", "distributed": info}
        store = RunStore(self.path, meta=meta, stop_on_error=True)
        monitor = Monitor(cadence=cadence, store=store, on_critical=self.critical)
        monitor.meta.update({"source": source, "mode": "run", "store": str(self.path), "distributed": info})
        self.monitor = monitor
        atexit.register(self.finish)  # from here on, whatever fails below, the store is closed at exit
        self.watch = AutoWatch(monitor)
        self.clock = RankClock(monitor)
        self._prev_hook = sys.excepthook
        sys.excepthook = self._excepthook
        self._real_stdout = sys.stdout
        self._stdout = PrintedMetrics(sys.stdout, monitor)
        sys.stdout = self._stdout

    def _excepthook(self, tp: type[BaseException], value: BaseException, tb: Any) -> None:
        try:
            if issubclass(tp, KeyboardInterrupt):
                self.monitor.event("interrupted", {"type": tp.__name__})
            else:
                from ..inspect.crash import crash_event_data

                # the time tells which rank crashed first when the others then fail in a collective
                self.monitor.event("crash", {**crash_event_data(value), "time": time.time()})
        except Exception:  # noqa: BLE001 - the traceback is printed whatever happens here
            pass
        self._prev_hook(tp, value, tb)

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            if sys.stdout is self._stdout:
                try:
                    sys.stdout.flush()
                except Exception:  # noqa: BLE001
                    pass
                sys.stdout = self._real_stdout
            if sys.excepthook == self._excepthook:
                sys.excepthook = self._prev_hook
            for part in (self.clock, self.watch, self.monitor):
                if part is not None:
                    part.close()
        except Exception as exc:  # noqa: BLE001 - at exit: said once, the process ends as it would
            self.say(f"closing the watch failed: {type(exc).__name__}: {exc}")
            return
        if self.rank == 0 and not self.parent:
            try:
                self._merge_here()
            except Exception as exc:  # noqa: BLE001
                self.say(f"the merged diagnosis failed: {type(exc).__name__}: {exc}")

    def _merge_here(self) -> None:
        """A bare ``TRAINDOCTOR=1`` run: rank 0 waits (bounded) for the other ranks' stores in its run
        directory to close, then writes the diagnosis of all ranks to stderr (and to
        ``TRAINDOCTOR_JSON`` when set)."""
        from ..report import render, write_json

        try:
            wait = float(os.environ.get("TRAINDOCTOR_MERGE_WAIT", MERGE_WAIT_S))
        except ValueError:
            wait = MERGE_WAIT_S
        deadline = time.monotonic() + wait
        others = [p for p in _rank_files(self.run_dir) if p != self.path]
        while time.monotonic() < deadline and [p for p in others if not _store_done(p)]:
            time.sleep(0.2)
        # a closed store's writer deletes its -wal as its connection closes, a moment later: reading it
        # before that would leave the -wal and -shm beside the store
        tidy = min(deadline, time.monotonic() + 2.0)
        while time.monotonic() < tidy and any(Path(f"{p}-wal").exists() for p in others):
            time.sleep(0.05)
        diag = merge_dir(self.run_dir)
        if diag is None:
            return
        render(diag, file=sys.stderr, title="traindoctor — all ranks")
        print(safe(f"run stores of the ranks in {self.run_dir}", newlines=False), file=sys.stderr, flush=True)
        dest = os.environ.get("TRAINDOCTOR_JSON")
        if dest:
            write_json(diag, dest)


def start_rank(role: dict[str, Any]) -> None:
    """Watch this process as rank ``role["rank"]`` (from the boot hook, when torch has just been
    imported). A failure is said in one line and the process goes on unwatched."""
    w = _RankWatch(role)
    try:
        w.start()
    except Exception as exc:  # noqa: BLE001 - never stop the rank
        w.say(f"not watched: {type(exc).__name__}: {exc}")
