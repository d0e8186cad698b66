"""Distributed runs on this CPU: two gloo ranks under torchrun, each watched, one diagnosis of both.

Real tiny DDP runs (a regression MLP, a DistributedSampler shard per rank): a healthy run gets no
warning and is trained exactly as without the doctor; a NaN batch on rank 1 alone is reported with the
rank, and as R001; ranks that disagree (rank 1's targets ×100, gradients never all-reduced, rank 1's
batches late) give R002, R003 and R004; the bare ``TRAINDOCTOR=1`` form with ``-m`` has
rank 0 write the merged diagnosis. Then the rank rules and the merge on hand-built runs (torch-free).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from traindoctor.ranks import combine, merge
from traindoctor.rules import all_rules
from traindoctor.run import Run, Series

STEPS = 96
TRAIN = textwrap.dedent("""
    import os, sys, time
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader, TensorDataset, default_collate
    from torch.utils.data.distributed import DistributedSampler

    FAULT = os.environ.get("FAULT", "")
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    w = torch.randn(8, 1)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1536, 8, generator=g)
    Y = X @ w + 0.05 * torch.randn(1536, 1, generator=g)
    if FAULT == "apart" and rank == 1:
        Y = Y * 100  # rank 1 reads targets on another scale
    ds = TensorDataset(X, Y)
    sampler = DistributedSampler(ds, shuffle=True, seed=0)  # a different shard per rank
    def slow_collate(batch):
        time.sleep(0.02)  # rank 1's batches come late
        return default_collate(batch)

    dl = DataLoader(ds, batch_size=32, sampler=sampler, collate_fn=slow_collate if FAULT == "apart" and rank == 1 else None)
    model = DDP(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1)))
    if FAULT == "apart":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = 0
    for epoch in range(4):
        sampler.set_epoch(epoch)
        for x, y in dl:
            if FAULT == "nan" and rank == 1 and step == 37:
                x = x.clone()
                x[3] = float("nan")  # one poisoned sample, on rank 1 only
            if FAULT == "apart":
                with model.no_sync():  # the gradients are never all-reduced
                    loss = nn.functional.mse_loss(model(x), y)
                    opt.zero_grad()
                    loss.backward()
            else:
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
            opt.step()
            step += 1
    print(f"rank {rank} steps {step} final loss {loss.item()!r} weight {model.module[0].weight.sum().item()!r}")
    dist.barrier()  # rank 0 holds the rendezvous store: it must not leave before the others are done
    dist.destroy_process_group()
""")
assert STEPS == 1536 // 2 // 32 * 4


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINDOCTOR")}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo",
               PYTHONUNBUFFERED="1", **extra)
    return env


# torch's gloo can abort a rank at interpreter exit, after training and destroy_process_group (seen here once
# under load on a launch without the doctor: "terminate called without an active exception", SIGABRT; see
# pytorch/pytorch#179291). A launch that ends so, after every rank printed its last line, is run once more.
GLOO_EXIT_ABORT = "terminate called without an active exception"


def _launch(tmp_path: Path, *cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    for attempt in range(2):
        out = subprocess.run(list(cmd), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        finished = len(re.findall(r"rank \d steps \d+ final loss", out.stdout)) == 2
        if out.returncode == 0 or GLOO_EXIT_ABORT not in out.stderr or not finished or attempt:
            return out
    return out


def _ranks_cmd(*script: str) -> list[str]:
    return [*_torchrun(), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()), *script]


def _watched(tmp_path: Path, fault: str = "") -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "train.py").write_text(TRAIN)
    out = _launch(tmp_path, sys.executable, "-m", "traindoctor", "run", "--cadence", "10", "--store", "ranks",
                  "--json", "diag.json", "--", *_ranks_cmd("train.py"), env=_env(FAULT=fault))
    assert out.returncode == 0, out.stderr[-3000:]
    return out, json.loads((tmp_path / "diag.json").read_text())


def _codes(diag: dict, at_least: str = "info") -> list[str]:
    order = ["info", "warning", "error"]
    return [f["code"] for f in diag["findings"] if order.index(f["severity"]) >= order.index(at_least)]


def test_healthy_two_ranks_are_merged_and_trained_as_without_the_doctor(tmp_path):
    out, diag = _watched(tmp_path)
    assert not _codes(diag, "warning"), [f["message"] for f in diag["findings"]]
    assert not [c for c in _codes(diag) if c.startswith("R")]
    ranks = {r["rank"]: r["steps"] for r in diag["source"]["ranks"]}
    assert ranks == {0: STEPS, 1: STEPS}
    assert any("watched 2 of 2 ranks" in n for n in diag["notes"])
    from traindoctor.store import load_store

    for r in (0, 1):
        run = load_store(tmp_path / "ranks" / f"rank{r}.db")
        d = run.meta["distributed"]
        assert (d["rank"], d["world_size"], d["grads_synced"], d["ddp_group"]) == (r, 2, True, [0, 1])
        assert len(run.get("loss")) == STEPS and run.get("data_time") is not None and run.get("step_time") is not None
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir() if p.suffix == ".db") == ["rank0.db", "rank1.db"]
    # the same launch without the doctor trains to the same bits
    plain = _launch(tmp_path, *_ranks_cmd("train.py"), env=_env())
    assert plain.returncode == 0, plain.stderr[-2000:]
    # (the two ranks share the pipe: a line's text and its newline may be apart)
    done = re.compile(r"rank \d steps \d+ final loss [-\d.e]+ weight [-\d.e]+")
    lines = sorted(done.findall(out.stdout))
    assert len(lines) == 2 and lines == sorted(done.findall(plain.stdout))


def test_a_nan_on_one_rank_is_reported_with_its_rank(tmp_path):
    out, diag = _watched(tmp_path, "nan")
    by = {f["code"]: f for f in diag["findings"]}
    r1 = by["R001"]
    assert (r1["evidence"]["rank"], r1["step"], r1["evidence"]["finite_ranks"]) == (1, 37, [0])
    assert r1["message"].startswith("rank 1: the loss is nan at step 37")
    assert r1["evidence"]["followers"] == [0]  # rank 0 got the NaN through the all-reduce, a step later
    assert by["L001"]["message"].startswith("rank 1: loss is nan from step 37") and by["L001"]["step"] == 37
    assert by["L001"]["evidence"]["ranks"] == [1, 0]
    assert diag["causes"][0]["id"] == "nonfinite-data"
    assert "traindoctor: rank 1: L001" in out.stderr  # said live, with the rank


def test_ranks_that_disagree_are_findings(tmp_path):
    _, diag = _watched(tmp_path, "apart")
    by = {f["code"]: f for f in diag["findings"]}
    assert {"R002", "R003", "R004"} <= set(by), [f["message"] for f in diag["findings"]]
    assert by["R002"]["evidence"]["rank"] == 1 and by["R002"]["evidence"]["factor"] > 100
    assert by["R003"]["evidence"]["steps_apart"] == by["R003"]["evidence"]["of_steps"] >= 5
    assert by["R004"]["evidence"]["rank"] == 1 and by["R004"]["evidence"]["wait_s"] >= 0.015


def test_bare_env_switch_with_a_module_has_rank_0_merge(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(TRAIN)
    boot = subprocess.run([sys.executable, "-m", "traindoctor", "boot-path"], capture_output=True, text=True,
                          check=True).stdout.strip()
    env = _env(TRAINDOCTOR="1", TRAINDOCTOR_DIR=str(tmp_path / "run"), TRAINDOCTOR_CADENCE="10",
               TRAINDOCTOR_JSON=str(tmp_path / "merged.json"), PYTHONPATH=boot)
    out = _launch(tmp_path, *_ranks_cmd("-m", "pkg.train"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").glob("*.db")) == ["rank0.db", "rank1.db"]  # not the launcher
    diag = json.loads((tmp_path / "merged.json").read_text())
    assert not _codes(diag, "warning"), [f["message"] for f in diag["findings"]]
    assert {r["rank"]: r["steps"] for r in diag["source"]["ranks"]} == {0: STEPS, 1: STEPS}
    assert "traindoctor — all ranks" in out.stderr
    from traindoctor.store import load_store

    assert load_store(tmp_path / "run" / "rank1.db").meta["source"].endswith("rank1.db")
    assert load_store(tmp_path / "run" / "rank0.db").meta["args"] == []


# ------------------------------------------------------------------------------ rules and merge, by hand
RULES = all_rules()


def _ranks_run(losses: dict[int, np.ndarray], *, grads: dict[int, np.ndarray] | None = None,
               waits: dict[int, np.ndarray] | None = None, synced: bool = True) -> Run:
    runs = {}
    for r, v in losses.items():
        run = Run(meta={"distributed": {"rank": r, "world_size": len(losses), "grads_synced": synced,
                                        "ddp_group": sorted(losses)}})
        run.series["loss"] = Series(np.arange(len(v)), v)
        if grads:
            run.series["grad_norm"] = Series(np.arange(0, 10 * len(grads[r]), 10), grads[r])
        if waits:
            st = np.arange(9, 10 * len(waits[r]), 10)
            run.series["data_time"] = Series(st, waits[r])
            run.series["step_time"] = Series(st, np.full(len(st), 0.025))
        runs[r] = run
    return combine(runs)


def _fired(code: str, run: Run) -> list:
    return RULES[code].check(run)


def _curve(n: int = 200, seed: int = 0, level: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level * np.geomspace(2.0, 0.05, n) * np.exp(rng.normal(0, 0.4, n))


def test_r001_one_rank_first_and_not_a_shared_blow_up():
    a, b = _curve(seed=1), _curve(seed=2)
    b[37:] = np.nan
    a[38:] = np.nan
    (f,) = _fired("R001", _ranks_run({0: a, 1: b}))
    assert (f.evidence["rank"], f.step, f.evidence["followers"]) == (1, 37, [0])
    a, b = _curve(seed=1), _curve(seed=2)
    a[37:], b[37:] = np.nan, np.nan  # every rank at the same step: L001's, not R001's
    assert not _fired("R001", _ranks_run({0: a, 1: b}))
    a, b = _curve(seed=1), _curve(seed=2)
    a[25:37] = b[25:37] = np.geomspace(1, 1e4, 12)  # the shared weights were blowing up
    b[37:], a[38:] = np.nan, np.nan
    assert not _fired("R001", _ranks_run({0: a, 1: b}))


def test_r002_orders_of_magnitude_apart_but_not_the_spread_of_shards():
    a, b = _curve(seed=1), _curve(seed=2)
    assert not _fired("R002", _ranks_run({0: a, 1: b}))
    assert not _fired("R002", _ranks_run({0: a, 1: 4 * b}))  # 4× apart: within what shards can do
    stuck = np.full(200, 2.3) * np.exp(np.random.default_rng(3).normal(0, 0.1, 200))
    (f,) = _fired("R002", _ranks_run({0: a, 1: stuck, 2: _curve(seed=4)}))
    assert f.evidence["rank"] == 1 and f.evidence["factor"] > 10
    tiny = _curve(seed=2) * 1e-3  # two near-zero losses are not "apart", however large the ratio
    tiny[:10] = a[:10]
    assert not _fired("R002", _ranks_run({0: a * 1e-2, 1: tiny}))


def test_r003_needs_identical_gradients_only_under_ddp():
    g = np.linspace(5, 1, 10)
    assert not _fired("R003", _ranks_run({0: _curve(), 1: _curve(seed=1)}, grads={0: g, 1: g.copy()}))
    off = g.copy()
    off[4:] *= 1.05
    (f,) = _fired("R003", _ranks_run({0: _curve(), 1: _curve(seed=1)}, grads={0: g, 1: off}))
    assert f.evidence["steps_apart"] == 6 and f.step == 40
    # not all-reduced by DDP (FSDP, ZeRO shards, no DDP): not judged
    assert not _fired("R003", _ranks_run({0: _curve(), 1: _curve(seed=1)}, grads={0: g, 1: off}, synced=False))


def test_r004_a_sustained_straggler_not_a_rare_pause():
    n = 12
    quick = np.full(n, 0.0004)
    slow = np.full(n, 0.021)
    (f,) = _fired("R004", _ranks_run({0: _curve(), 1: _curve(seed=1)}, waits={0: quick, 1: slow}))
    assert f.evidence["rank"] == 1 and f.evidence["windows_slow"] == n and not f.causes
    pause = quick.copy()
    pause[[3, 9]] = 0.5  # a checkpoint now and then on rank 0
    assert not _fired("R004", _ranks_run({0: pause, 1: quick}, waits={0: pause, 1: quick}))
    assert not _fired("R004", _ranks_run({0: _curve(), 1: _curve(seed=1)}, waits={0: quick, 1: quick * 2.5}))


def test_merge_says_each_finding_with_its_rank_and_keeps_one_row_per_code():
    a, b = _curve(seed=1), _curve(seed=2)
    b[37:] = np.nan
    a[38:] = np.nan
    runs = {}
    for r, v in ((0, a), (1, b)):
        run = Run(meta={"distributed": {"rank": r, "world_size": 3}})
        run.series["loss"] = Series(np.arange(len(v)), v)
        runs[r] = run
    d = merge(runs, notes=["launched"])
    l001 = [f for f in d.findings if f.code == "L001"]
    assert len(l001) == 1 and l001[0].message.startswith("rank 1: ") and "also rank 0 at step 38" in l001[0].message
    assert l001[0].evidence["ranks"] == [1, 0]
    assert any(f.code == "R001" for f in d.findings)
    assert d.notes[0] == "launched" and not d.healthy
    healthy = {r: Run(meta={"distributed": {"rank": r, "world_size": 2}},
                      series={"loss": Series(np.arange(200), _curve(seed=r))}) for r in (0, 1)}
    assert not merge(healthy).findings


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rank_rules_survive_nonfinite_and_empty_series(bad):
    run = _ranks_run({0: np.full(50, bad), 1: np.full(50, bad)}, grads={0: np.full(5, bad), 1: np.full(5, bad)},
                     waits={0: np.full(5, bad), 1: np.full(5, bad)})
    run.series["rank2/loss"] = Series(np.zeros(0), np.zeros(0))
    for code in ("R001", "R002", "R003", "R004"):
        RULES[code].check(run)
