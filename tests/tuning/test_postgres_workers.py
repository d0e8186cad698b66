"""``traindoctor.tune`` workers sharing one study on a real PostgreSQL server (``postgres_url``, conftest.py).

Each worker is a separate Python process running the same ``tune(...)`` call (same study name, same URL),
as on separate machines: a small MLP on scikit-learn's digits, three epochs, a few ms per step. The workers
start at the same moment (a barrier after their imports), against a database that has no tables yet.
What must hold afterwards, read back with plain Optuna:

* the trial numbers are 0..N-1, each once; nothing is left RUNNING or WAITING;
* the probe (an LR range test, stored as a failed trial) ran once, before every other trial, and the coarse
  trials lie in the range it kept;
* exactly ``n_trials`` coarse and fine trials finished (COMPLETE or PRUNED), the first ``n_coarse`` of
  them coarse; each final re-run (``top_k`` sets × ``seeds``) finished exactly once; and no other trial
  trained (a worker that finds the places taken may record a trial, but it must not train);
* every worker trained some of the trials;
* the fine ranges (study attr ``fine_space``) lie inside the original ranges, and every fine trial inside them
  until ``FOLLOW_AFTER`` fine trials completed (then inside the probe's range);
* the final sets (study attr ``final_sets``) are the ``top_k`` best completed fine trials (then coarse ones).
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

N_TRIALS, TOP_K, SEEDS = 10, 2, 2
N_COARSE = round(N_TRIALS * 0.5)  # tune's default coarse=0.5
SPACE = {"lr": "log:1e-3:1"}
LOW, HIGH = 1e-3, 1.0

WORKER = textwrap.dedent('''
    """One tuning worker: python worker.py CONFIG_JSON."""
    import json
    import os
    import sys
    import time

    import torch

    torch.set_num_threads(1)
    from sklearn.datasets import load_digits

    import traindoctor

    cfg = json.loads(sys.argv[1])
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    train_idx, val_idx = perm[:1400], perm[1400:]
    calls = 0


    def log(**what):
        with open(cfg["log"], "a") as f:  # one short append per line: whole lines from every worker
            f.write(json.dumps({"study": cfg["study"], "worker": cfg["worker"], **what}) + "\\n")


    def train(params, doctor):
        global calls
        calls += 1
        doctor.trial.set_user_attr("worker", cfg["worker"])
        log(trial=doctor.trial.number, stage=doctor.stage)
        idx = train_idx[: max(64, round(len(train_idx) * doctor.fraction))]
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        opt = torch.optim.SGD(model.parameters(), lr=params["lr"])
        doctor.watch(model, opt)
        loss_fn = torch.nn.CrossEntropyLoss()
        val = None
        for _ in range(doctor.epochs(3)):
            for b in idx.split(64):
                opt.zero_grad()
                loss = loss_fn(model(X[b]), y[b])
                loss.backward()
                opt.step()
                doctor.step(loss)
                if calls == cfg.get("hold_at"):  # the test interrupts this worker here
                    open(cfg["holding"], "w").write(str(doctor.trial.number))
                    while True:
                        time.sleep(0.05)
            with torch.no_grad():
                val = float(loss_fn(model(X[val_idx]), y[val_idx]))
            doctor.report(val)
        return val


    if cfg.get("barrier"):  # all workers call tune at the same moment
        open(os.path.join(cfg["barrier"], cfg["worker"]), "w").close()
        t0 = time.monotonic()
        while len(os.listdir(cfg["barrier"])) < cfg["workers"]:
            if time.monotonic() - t0 > 120:
                sys.exit("barrier: the other workers never came")
            time.sleep(0.005)
    r = traindoctor.tune(train, cfg["space"], cfg["n_trials"], storage=cfg["url"], study_name=cfg["study"],
                         top_k=cfg["top_k"], seeds=cfg["seeds"])
    print(json.dumps({"worker": cfg["worker"], "best": r.best_params, "trials": len(r.trials)}))
''')


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}


def _worker(tmp_path: Path, url: str, study: str, worker: str, **cfg: object) -> subprocess.Popen[str]:
    script = tmp_path / "worker.py"
    if not script.exists():
        script.write_text(WORKER)
    conf = {"url": url, "study": study, "worker": worker, "space": SPACE, "n_trials": N_TRIALS, "top_k": TOP_K,
            "seeds": SEEDS, "log": str(tmp_path / "calls.jsonl"), **cfg}
    # output to a file, not a pipe: a worker must never block on a pipe nobody reads while another waits on it
    with open(tmp_path / f"{study}-{worker}.out", "a") as out:
        return subprocess.Popen([sys.executable, str(script), json.dumps(conf)], cwd=tmp_path, env=_env(),
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    """The worker's exit code and the end of its output."""
    late = False
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        late = True
        p.kill()
        p.wait()
    cfg = json.loads(p.args[-1])
    out = (Path(cfg["log"]).parent / f"{cfg['study']}-{cfg['worker']}.out").read_text(errors="replace")[-4000:]
    if late:
        pytest.fail(f"a worker ran past {timeout} s:\n{out}")
    return p.returncode, out


def _calls(tmp_path: Path, study: str) -> list[dict]:
    """The trials the workers trained (the worker logs each call of its train_fn)."""
    f = tmp_path / "calls.jsonl"
    lines = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
    return [c for c in lines if c["study"] == study]


def _load(url: str, study: str):
    """The study as plain Optuna reads it (SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3: name the
    driver installed with the [tune] extra)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=url.replace("postgresql://", "postgresql+psycopg2://", 1))


def _table(trials) -> str:
    return "\n".join(f"  #{t.number} {t.state.name} {t.user_attrs.get('stage')} worker={t.user_attrs.get('worker')} "
                     f"group={t.user_attrs.get('group')} seed={t.user_attrs.get('seed')} params={t.params} "
                     f"value={t.value}" for t in trials)


def _top_k_sets(trials, k: int) -> list[dict]:
    """What the final stage must re-run: the k best completed fine trials' parameters (minimize), then the best
    coarse ones when there are too few (a coarse value, from a subsample, does not rank against a fine one's)."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("stage") in ("coarse", "fine")
            and t.value is not None and math.isfinite(t.value)]
    ranked = sorted(done, key=lambda t: (t.user_attrs["stage"] != "fine", t.value))
    out: list[dict] = []
    for t in ranked:
        if t.params not in out:
            out.append(dict(t.params))
    return out[:k]


def check_complete(url: str, study_name: str, calls: list[dict]) -> list:
    """The study is complete and consistent (see the module docstring); returns its trials."""
    from traindoctor.tuning.space import parse_param
    from traindoctor.tuning.study import FOLLOW_AFTER

    study = _load(url, study_name)
    trials = study.get_trials()
    table = _table(trials)
    assert [t.number for t in trials] == list(range(len(trials))), f"trial numbers not 0..N-1 once each:\n{table}"
    left = [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert not left, f"trials left RUNNING or WAITING: {left}\n{table}"

    main = [t for t in trials
            if t.user_attrs.get("stage") in ("coarse", "fine") and t.state.name in ("COMPLETE", "PRUNED")]
    assert len(main) == N_TRIALS, f"{len(main)} coarse+fine trials finished, not n_trials={N_TRIALS}:\n{table}"
    coarse = [t for t in main if t.user_attrs["stage"] == "coarse"]
    assert len(coarse) == N_COARSE, f"{len(coarse)} coarse trials, not {N_COARSE}:\n{table}"

    final = [t for t in trials if t.user_attrs.get("stage") == "final" and t.state.name in ("COMPLETE", "PRUNED")]
    keys = [(t.user_attrs.get("group"), t.user_attrs.get("seed")) for t in final]
    assert len(keys) == TOP_K * SEEDS and len(set(keys)) == len(keys), \
        f"final re-runs: {sorted(keys)}, not {TOP_K} sets x {SEEDS} seeds once each:\n{table}"
    assert {g for g, _ in keys} == set(range(TOP_K)), f"final groups {sorted(keys)}:\n{table}"

    # training ran for these trials and no others: a trial beyond the places (if any) did no work
    finished = {t.number for t in main + final}
    trained = [c["trial"] for c in calls]
    extra = sorted(set(trained) - finished - {t.number for t in trials if t.state.name == "FAIL"})
    assert not extra, f"trials {extra} trained but are not among the coarse, fine and final ones:\n{table}"
    assert len(trained) == len(set(trained)), f"a trial trained twice: {sorted(trained)}"

    # the probe: run once, first, its result on the study, the coarse trials inside the range it kept
    probes = [t for t in trials if t.user_attrs.get("stage") == "probe"]
    assert len(probes) == 1 and probes[0].number == 0, f"probes {[t.number for t in probes]}:\n{table}"
    info = study.user_attrs.get("probe")
    assert isinstance(info, dict) and info["trial"] == 0, f"study attr probe: {info!r}"
    if info["range"] is not None:
        lo, hi = info["range"]
        assert all(lo <= t.params["lr"] <= hi for t in coarse), f"coarse trials outside the probe's {lo}..{hi}:\n{table}"
    assert sum(c["trial"] == 0 for c in calls) == 1, f"the probe trained more than once: {calls}"

    # the fine ranges: decided once, inside the original range, and the fine trials inside them until
    # FOLLOW_AFTER fine trials completed (then the ranges follow the best of them, inside the probe's range)
    spec = study.user_attrs.get("fine_space")
    assert isinstance(spec, list) and len(spec) == 1, f"study attr fine_space: {spec!r}\n{table}"
    fine = parse_param(spec[0])
    assert fine.name == "lr" and fine.kind == "log", spec
    assert LOW * (1 - 1e-9) <= fine.low < fine.high <= HIGH * (1 + 1e-9), f"fine range {spec} outside [{LOW}, {HIGH}]"
    lo, hi = info["range"] if info["range"] is not None else (LOW, HIGH)
    for t in main:
        if t.user_attrs["stage"] == "fine":
            lr = t.params["lr"]
            # the stored bounds are written with 6 significant digits
            if fine.low * (1 - 1e-5) <= lr <= fine.high * (1 + 1e-5):
                continue
            followed = t.user_attrs.get("followed", 0)
            assert followed >= FOLLOW_AFTER and lo * (1 - 1e-9) <= lr <= hi * (1 + 1e-9), \
                f"fine trial #{t.number} lr={lr} outside the fine range {spec} (followed {followed}):\n{table}"

    # the final sets: the top-k fine trials (then coarse), and each final trial runs its set
    sets = study.user_attrs.get("final_sets")
    assert sets == _top_k_sets(trials, TOP_K), \
        f"final_sets {sets} are not the {TOP_K} best coarse/fine trials {_top_k_sets(trials, TOP_K)}:\n{table}"
    for t in final:
        assert t.params == sets[t.user_attrs["group"]], f"final trial #{t.number} runs {t.params}:\n{table}"
    return trials


def test_two_workers_share_one_study(postgres_url, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    study = "two-workers"
    workers = [_worker(tmp_path, postgres_url, study, w, barrier=str(barrier), workers=2) for w in ("A", "B")]
    results = [_finish(p) for p in workers]
    for w, (rc, out) in zip("AB", results, strict=True):
        assert rc == 0, f"worker {w} exited {rc}:\n{out}"
    calls = _calls(tmp_path, study)
    trials = check_complete(postgres_url, study, calls)
    by_worker = {w: [t.number for t in trials if t.user_attrs.get("worker") == w] for w in "AB"}
    assert all(by_worker.values()), f"a worker trained none of the trials: {by_worker}\n{_table(trials)}"
    assert not [t for t in trials if t.state.name == "FAIL" and t.user_attrs.get("stage") != "probe"], _table(trials)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


@pytest.mark.parametrize("what", ["closed port", "wrong password"])
def test_an_unreachable_database_is_one_line_naming_it_with_the_password_hidden(what, request):
    import traindoctor
    from traindoctor.errors import TrainDoctorError

    if what == "closed port":
        url, secret = f"postgresql://td:s3cr3t-pw@127.0.0.1:{_closed_port()}/td", "s3cr3t-pw"
        shown = url.replace(secret, "***")
    else:  # the real server, another password: refused by scram-sha-256
        good = request.getfixturevalue("postgres_url")
        user_pw, host = good.split("://", 1)[1].split("@", 1)
        secret = "not-" + user_pw.split(":", 1)[1]
        url = f"postgresql://{user_pw.split(':', 1)[0]}:{secret}@{host}"
        shown = url.replace(secret, "***")

    def train(params, doctor):  # never reached
        raise AssertionError("trained without a database")

    t0 = time.monotonic()
    with pytest.raises(TrainDoctorError) as e:
        traindoctor.tune(train, SPACE, n_trials=2, storage=url, study_name="unreachable")
    took = time.monotonic() - t0
    msg = str(e.value)
    assert "\n" not in msg and shown in msg and secret not in msg, msg
    assert ("refused" if what == "closed port" else "password authentication failed") in msg, msg
    assert took < 10, f"{took:.1f} s to say it"


def test_an_interrupted_worker_leaves_the_study_consistent_and_the_same_call_completes_it(postgres_url, tmp_path):
    study = "resume"
    holding = tmp_path / "holding"
    # the 8th call of train_fn: the probe, five coarse trials, one fine one, then the second fine one
    p = _worker(tmp_path, postgres_url, study, "A", hold_at=8, holding=str(holding))
    t0 = time.monotonic()
    while not holding.exists():
        if p.poll() is not None or time.monotonic() - t0 > 90:
            pytest.fail(f"the worker never reached its 8th call:\n{_finish(p, 5)[1]}")
        time.sleep(0.05)
    held = int(holding.read_text())
    p.send_signal(signal.SIGINT)  # Ctrl-C
    rc, out = _finish(p, 30)
    assert rc != 0 and "KeyboardInterrupt" in out, f"exit {rc}:\n{out}"

    trials = _load(postgres_url, study).get_trials()
    table = _table(trials)
    left = [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert not left, f"after Ctrl-C, trials {left} are left RUNNING or WAITING:\n{table}"
    failed = [t.number for t in trials if t.state.name == "FAIL" and t.user_attrs.get("stage") != "probe"]
    assert failed == [held], f"after Ctrl-C the failed trials are {failed}, not the interrupted #{held}:\n{table}"
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 6, table

    rc, out = _finish(_worker(tmp_path, postgres_url, study, "B"))  # the same call again
    assert rc == 0, f"the second run exited {rc}:\n{out}"
    calls = _calls(tmp_path, study)
    trials = check_complete(postgres_url, study, calls)
    assert [t.number for t in trials if t.state.name == "FAIL" and t.user_attrs.get("stage") != "probe"] == [held], \
        _table(trials)
    # B continues: no second probe, the interrupted place and the rest, then the final re-runs
    assert [c["worker"] for c in calls] == ["A"] * 8 + ["B"] * (N_TRIALS - 6 + TOP_K * SEEDS), calls
