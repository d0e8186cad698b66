"""traindoctor's start-up hook for the ranks of a distributed run (standard library only, until it watches).

Python imports a module named ``sitecustomize`` at start-up. With this file's directory first on
``PYTHONPATH`` every Python process started under a launcher runs it, and:

* does nothing unless ``TRAINDOCTOR=1`` is in its environment;
* watches only a process that runs a training script or module (not ``python -c``, which is how
  multiprocessing starts DataLoader workers, nor a launcher: torchrun, accelerate, deepspeed) and is
  a rank: ``RANK`` or ``LOCAL_RANK`` set (torchrun, ``python -m torch.distributed.run``, accelerate's
  multi-process launch, deepspeed), ``OMPI_COMM_WORLD_RANK``/``PMI_RANK`` (mpirun), or the single
  process of ``accelerate launch`` (``ACCELERATE_MIXED_PRECISION`` set);
* watches one process per rank: it sets ``TRAINDOCTOR_WATCHING`` for its own children, which then
  stay unwatched;
* starts watching when the script first imports torch, not before, so what the script sets before
  that (``OMP_NUM_THREADS``, ``CUDA_VISIBLE_DEVICES``) is read as it would be without the doctor;
* then runs the ``sitecustomize`` this file shadows, if there is one further along ``sys.path``.

Its own failures are said in one line on stderr and never stop the process.
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
ON = ("1", "true", "yes", "on")
# processes that start ranks rather than train: never watched themselves
LAUNCHERS = frozenset({
    "torchrun", "accelerate", "accelerate-launch", "deepspeed", "traindoctor",
    "torch.distributed.run", "torch.distributed.launch", "accelerate.commands.launch",
    "accelerate.commands.accelerate_cli", "deepspeed.launcher.runner", "deepspeed.launcher.launch",
    "traindoctor.cli", "traindoctor.__main__",
})


def _int(value: object) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


def _first(env: dict, *names: str) -> int | None:
    for n in names:
        v = _int(env.get(n))
        if v is not None:
            return v
    return None


def _main_of(argv: list[str], orig_argv: list[str]) -> tuple[str, str] | None:
    """What the process runs: ("script", path) or ("module", name); None for ``-c``, stdin, a REPL."""
    if not argv or argv[0] in ("", "-c", "-"):
        return None
    if argv[0] != "-m":
        return "script", argv[0]
    for i, tok in enumerate(orig_argv[1:], 1):
        if tok == "-m" and i + 1 < len(orig_argv):
            return "module", orig_argv[i + 1]
        if tok.startswith("-m") and not tok.startswith("--") and len(tok) > 2:
            return "module", tok[2:]
    return None


def role(environ: dict | None = None, argv: list[str] | None = None,
         orig_argv: list[str] | None = None) -> dict | None:
    """Whether this process is a rank to watch, and which: ``{"rank", "local_rank", "world_size",
    "kind", "main", "restart"}``, or None."""
    env = os.environ if environ is None else environ
    if str(env.get("TRAINDOCTOR", "")).strip().lower() not in ON or env.get("TRAINDOCTOR_WATCHING"):
        return None
    main = _main_of(sys.argv if argv is None else argv,
                    list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv))
    if main is None:
        return None
    kind, what = main
    name = os.path.basename(what) if kind == "script" else what
    if name in LAUNCHERS or (name.endswith(".py") and name[:-3] in LAUNCHERS):
        return None
    rank = _first(env, "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
    local = _first(env, "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
    if rank is None and local is None:
        if "ACCELERATE_MIXED_PRECISION" not in env:  # accelerate's single-process launch sets no rank
            return None
        rank = 0
    if rank is None:
        rank = local
    assert rank is not None
    world = _first(env, "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE") or 1
    return {"rank": rank, "local_rank": rank if local is None else local, "world_size": max(world, rank + 1),
            "kind": kind, "main": what, "restart": _first(env, "TORCHELASTIC_RESTART_COUNT") or 0}


def _say(text: str) -> None:
    try:
        print(f"traindoctor: {text}", file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - no stderr: nothing to say it on
        pass


def _start(r: dict) -> None:
    try:
        from traindoctor.watch.distributed import start_rank
    except Exception as exc:  # noqa: BLE001 - another interpreter, traindoctor not installed there
        _say(f"rank {r['rank']}: not watched: cannot import traindoctor ({type(exc).__name__}: {exc})")
        return
    start_rank(r)


class _AtTorch:
    """A meta-path finder that waits for ``import torch`` and starts the watch once torch is loaded."""

    def __init__(self, r: dict) -> None:
        self.role = r
        self.done = False

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "torch" or self.done:
            return None
        self.done = True
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        import importlib.util

        spec = importlib.util.find_spec("torch")  # the finders after this one, as without it
        loader = getattr(spec, "loader", None)
        orig = getattr(loader, "exec_module", None)
        if orig is None:
            return spec
        r = self.role

        def exec_module(module: object) -> None:
            orig(module)  # torch imports as it would; a failure of its own propagates unchanged
            try:
                _start(r)
            except Exception as exc:  # noqa: BLE001 - never break the script's import of torch
                _say(f"rank {r['rank']}: not watched: {type(exc).__name__}: {exc}")

        loader.exec_module = exec_module  # type: ignore[union-attr]
        return spec

    def invalidate_caches(self) -> None:
        pass


def _boot() -> None:
    try:
        r = role()
        if r is None:
            return
        os.environ["TRAINDOCTOR_WATCHING"] = str(os.getpid())  # this process's children stay unwatched
        if "torch" in sys.modules:
            _start(r)
        else:
            sys.meta_path.insert(0, _AtTorch(r))
    except Exception as exc:  # noqa: BLE001 - the process starts whatever happens here
        _say(f"not watching this process: {type(exc).__name__}: {exc}")


def _chain() -> None:
    """Run the ``sitecustomize`` this one shadows (the interpreter's or the environment's), as Python
    would have; its errors are reported by Python's site module as they would be without us."""
    import importlib.machinery
    import importlib.util

    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = globals()
    for k, v in vars(mod).items():  # what it defines stays reachable as sitecustomize.<name>
        if not k.startswith("__"):
            g.setdefault(k, v)


if __name__ == "sitecustomize":
    _boot()
    _chain()
