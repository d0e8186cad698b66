"""Run clinic specs under ``traindoctor run``'s machinery, in parallel, cached.

Each run gets a directory ``<cache>/<spec id>/`` holding the rendered ``script.py``, what the
script wrote (``log.csv``, ``outcome.json``, ``stdout.txt``), the run store ``run.db`` and
``result.json`` (exit code, wall time, the live diagnosis, and the two hashes that make the
cache honest: the script's text and the measuring half of traindoctor — ``watch/`` and ``checks/``). A run is redone when either hash changed; the rules and the diagnosis are
not part of it, because scoring re-diagnoses the stored run (and a test keeps stored and live
diagnoses equal).

Workers are processes with one torch thread each (``OMP_WAIT_POLICY=PASSIVE``), recycled every
20 runs so hooks and caches of one run cannot leak into many.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .render import render
from .spec import Spec

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".runs"
ASSETS = HERE / ".assets"
def _src() -> Path:
    """The traindoctor package the runs import (a snapshot on PYTHONPATH wins over the checkout)."""
    import traindoctor

    return Path(traindoctor.__file__).resolve().parent
RUN_TIMEOUT = 240


def measure_version() -> str:
    """Hash of the code that decides what a live run records (not the rules that judge it)."""
    h = hashlib.sha256()
    src = _src()
    files = sorted((src / "watch").glob("*.py")) + sorted((src / "checks").glob("*.py"))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def script_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_assets() -> None:
    """The "pretrained" digits backbone the fine-tuning task loads (trained once, deterministic)."""
    path = ASSETS / "backbone.pt"
    if path.exists():
        return
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    ASSETS.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(12345)
    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    idx = np.random.default_rng(12345).permutation(len(X))[:1200]
    X, y = torch.tensor(X[idx], dtype=torch.float32), torch.tensor(y[idx])
    backbone = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU())
    model = nn.Sequential(backbone, nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(30):
        for i in range(0, len(X), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    torch.save(backbone.state_dict(), path)


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout(f"run exceeded {RUN_TIMEOUT} s")


def _init_worker() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)


def run_one(spec_json: dict[str, Any], run_dir: str, version: str, *, heal: bool = False,
            verify: bool = False, heal_policy: Any = None) -> dict[str, Any]:
    """Execute one spec in this process (a pool worker); returns its result record. ``heal``/``verify``:
    under ``traindoctor run --heal``/``--verify`` (the repair benchmark)."""
    from traindoctor.watch.launcher import watch_script

    spec = Spec.from_json(spec_json)
    d = Path(run_dir)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    text = render(spec)
    (d / "script.py").write_text(text)
    for asset in ("backbone.pt",):
        if (ASSETS / asset).exists():
            shutil.copy(ASSETS / asset, d / asset)
    old_cwd = os.getcwd()
    err = io.StringIO()
    out_path = d / "stdout.txt"
    t0 = time.perf_counter()
    record: dict[str, Any] = {"id": spec.id, "spec": spec.to_json(), "script_sha": script_sha(text),
                              "measure_version": version}
    try:
        os.chdir(d)
        with open(out_path, "w") as out, contextlib.redirect_stdout(out):
            signal.alarm(RUN_TIMEOUT)
            try:
                res = watch_script(d / "script.py", [], store=d / "run.db", err=err, heal=heal, verify=verify,
                                   heal_policy=heal_policy)
            finally:
                signal.alarm(0)
        record["exit_code"] = res.exit_code
        record["live"] = res.diagnosis.to_json()
    except BaseException as exc:  # noqa: BLE001 - a broken run is a result, not the end of the clinic
        record["exit_code"] = -1
        record["runner_error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        record["runner_traceback"] = traceback.format_exc()[-4000:]
    finally:
        os.chdir(old_cwd)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    record["stderr"] = err.getvalue()[-20000:]
    outcome = d / "outcome.json"
    if outcome.exists():
        try:
            record["outcome"] = json.loads(outcome.read_text())
        except ValueError:
            record["outcome"] = None
    (d / "result.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def _run_job(job: tuple[dict[str, Any], str, str]) -> dict[str, Any]:
    try:
        return run_one(*job)
    except BaseException as exc:  # noqa: BLE001 - recorded, the pool goes on
        spec = Spec.from_json(job[0])
        return {"id": spec.id, "spec": job[0], "exit_code": -2, "runner_error": repr(exc)}


def load_record(f: Path, sha: str, version: str) -> dict[str, Any] | None:
    """A cached ``result.json`` when it is for this script and this measuring code, else None."""
    if not f.exists():
        return None
    try:
        rec = json.loads(f.read_text())
    except ValueError:
        return None
    if rec.get("script_sha") != sha or rec.get("measure_version") != version:
        return None
    return rec


def cached(spec: Spec, cache: Path, version: str) -> dict[str, Any] | None:
    return load_record(cache / spec.id / "result.json", script_sha(render(spec)), version)


def run_all(specs: list[Spec], cache: Path = DEFAULT_CACHE, workers: int = 2, force: bool = False,
            progress: bool = True) -> dict[str, dict[str, Any]]:
    """Run every spec not already cached; returns id → result record for all of them."""
    version = measure_version()
    cache.mkdir(parents=True, exist_ok=True)
    if any(TASK_NEEDS_ASSETS(s) for s in specs):
        make_assets()
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for s in specs:
        rec = None if force else cached(s, cache, version)
        if rec is not None:
            results[s.id] = rec
        else:
            todo.append(s)
    if progress:
        print(f"clinic: {len(specs)} runs, {len(results)} cached, {len(todo)} to run on {workers} workers",
              file=sys.stderr, flush=True)
    if not todo:
        return results
    t0 = time.time()
    # longest first, roughly: transformers and RNNs, then the rest
    todo.sort(key=lambda s: (s.task not in ("char_transformer", "seq_gru", "seq_lstm", "rnn_sum"), s.id))
    # multiprocessing.Pool, not ProcessPoolExecutor: the latter's max_tasks_per_child hangs on 3.11
    ctx = mp.get_context("spawn")
    jobs = [(s.to_json(), str(cache / s.id), version) for s in todo]
    with ctx.Pool(workers, initializer=_init_worker, maxtasksperchild=20) as pool:
        for i, rec in enumerate(pool.imap_unordered(_run_job, jobs), 1):
            results[rec["id"]] = rec
            if progress and (i % 10 == 0 or i == len(todo)):
                el = time.time() - t0
                print(f"clinic: {i}/{len(todo)} done, {el:.0f} s, ~{el / i * (len(todo) - i):.0f} s left",
                      file=sys.stderr, flush=True)
    return results


def TASK_NEEDS_ASSETS(spec: Spec) -> bool:  # noqa: N802
    from .tasks import TASKS

    return bool(TASKS[spec.task].assets)
