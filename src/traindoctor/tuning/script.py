"""``traindoctor tune SCRIPT.py --param lr=log:1e-5:1 ...``: tune a script that takes its hyperparameters
as arguments, with no change to it.

Each trial runs ``traindoctor run --store TRIAL.db SCRIPT.py ARGS --lr 0.003 …`` in a subprocess of its
own (a fresh process: nothing leaks from one trial to the next), so the doctor watches it as ``run``
does. While it trains, the tuner reads its run store (which the trial writes as it goes) every
``check_s`` seconds: the doctor's pruning rules on the run so far, and the latest value of the metric
(``--metric``, default ``val_loss``: logged, captured from the loss functions, or printed by the
script) reported to Optuna's pruner. A sick or hopeless trial is stopped (SIGINT, then SIGKILL) and
pruned with the reason; a finished trial's objective is its metric's last value (``--objective best``:
its best).

The trial stores and logs stay in ``.traindoctor/tune/<study>/`` (``trial-<n>.db``, ``trial-<n>.log``):
``traindoctor dashboard .traindoctor/tune/<study>`` watches them, ``traindoctor report`` draws one.

In the coarse stage the script gets ``--coarse-arg`` arguments added (``--coarse-arg=--epochs=2``), and
every trial sees ``TRAINDOCTOR_TUNE_STAGE``, ``TRAINDOCTOR_TUNE_FRACTION`` (the share of data a coarse
trial should use) and ``TRAINDOCTOR_TUNE_SEED`` in its environment, for a script that wants them;
``--seed-arg NAME`` passes each trial's seed as ``--NAME SEED`` (the final re-runs vary it).
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LogError, TrainDoctorError
from .study import TrialDoctor, _state, fingerprint, mark_fit

_GRACE_S = 10.0


@dataclass
class ScriptTrials:
    """How each trial of a script is run (see the module docstring)."""

    script: str
    args: list[str]
    workdir: Path
    metric: str = "val_loss"
    objective: str = "last"  # or "best"
    direction: str = "minimize"
    coarse_args: list[str] = field(default_factory=list)
    seed_arg: str | None = None
    check_s: float = 1.0
    trial_timeout: float | None = None
    crashed: list[str] = field(default_factory=list)

    def command(self, doctor: TrialDoctor, store: Path) -> list[str]:
        args = list(self.args)
        for k, v in doctor.params.items():
            args += [f"--{k}", _arg(v)]
        if doctor.stage == "coarse":
            args += self.coarse_args
        if self.seed_arg:
            args += [f"--{self.seed_arg}", str(doctor.seed)]
        return [sys.executable, "-m", "traindoctor", "run", "--no-status", "--store", str(store), "--overwrite",
                self.script, *args]

    def __call__(self, train_fn: Any, trial: Any, doctor: TrialDoctor) -> float:
        """One trial: run the script, watch its store, prune or return its objective."""
        import optuna

        store = self.workdir / f"trial-{trial.number}.db"
        log = self.workdir / f"trial-{trial.number}.log"
        cmd = self.command(doctor, store)
        trial.set_user_attr("command", cmd[4:])
        env = {**os.environ, "TRAINDOCTOR_TUNE_STAGE": doctor.stage, "TRAINDOCTOR_TUNE_FRACTION": str(doctor.fraction),
               "TRAINDOCTOR_TUNE_SEED": str(doctor.seed), "TRAINDOCTOR_STATUS": "0"}
        if doctor.sweep is not None:
            return self._probe(cmd, env, store, log, trial, doctor)
        reason: str | None = None
        steps = 0
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            started = time.monotonic()
            reported: set[int] = set()
            try:
                while proc.poll() is None:
                    time.sleep(min(self.check_s, 0.25))
                    if time.monotonic() - doctor._last_check < self.check_s:
                        continue
                    run = _read(store)
                    doctor._last_check = time.monotonic()
                    if run is None:
                        continue
                    steps = run.num_steps
                    verdict = doctor._sick.check(run)
                    if verdict is not None:
                        doctor.verdict, doctor.pruned_by = verdict, "doctor"
                        reason = "traindoctor: " + verdict.reason()
                        break
                    reason = self._report(run, trial, doctor, reported)
                    if reason is not None:
                        break
                    if self.trial_timeout is not None and time.monotonic() - started > self.trial_timeout:
                        reason = f"the trial ran past --trial-timeout {self.trial_timeout:g} s"
                        doctor.pruned_by = "timeout"
                        break
            except BaseException:
                _stop(proc)
                raise
            if reason is not None:
                _stop(proc)
            code = proc.wait()
        run = _read(store)
        if run is not None:
            steps = run.num_steps
            trial.set_user_attr("fingerprint", fingerprint(run))
            mark_fit(trial, run)
        trial.set_user_attr("steps", steps)
        trial.set_user_attr("store", str(store))
        if reason is not None:
            trial.set_user_attr("pruned_by", doctor.pruned_by or "doctor")
            trial.set_user_attr("reason", reason)
            if doctor.verdict is not None:
                trial.set_user_attr("diagnosis", doctor.verdict.to_json())
            raise optuna.TrialPruned(reason)
        if code == 130:
            raise KeyboardInterrupt
        verdict = doctor._sick.check(run, finished=True) if run is not None and code == 0 else None
        if verdict is not None:  # it ended before the checks caught it: its finite metric is not a result
            reason = "traindoctor: " + verdict.reason()
            trial.set_user_attr("pruned_by", "doctor")
            trial.set_user_attr("reason", reason)
            trial.set_user_attr("diagnosis", verdict.to_json())
            raise optuna.TrialPruned(reason)
        value = self._value(run)
        if code != 0 or value is None:
            why = _tail(log) if code != 0 else f"the run logged no {self.metric}"
            self.crashed.append(f"trial {trial.number}: exit code {code}: {why}")
            verdict = doctor._sick.check(run) if run is not None else None
            detail = verdict.reason() if verdict is not None else why
            trial.set_user_attr("pruned_by", "doctor")
            trial.set_user_attr("reason", f"the script {'exited with code ' + str(code) if code else 'ended'}: {detail}")
            if len(self.crashed) >= 3 and not any(_state(t) == "COMPLETE" for t in trial.study.get_trials(deepcopy=False)):
                raise TrainDoctorError(f"the first {len(self.crashed)} trials all failed; the last: {self.crashed[-1]} "
                                       f"(its output: {log})")
            raise optuna.TrialPruned(trial.user_attrs["reason"])
        if not math.isfinite(value):  # the doctor found nothing more (above): the objective itself is the reason
            reason = f"{self.metric} ended {value}"
            trial.set_user_attr("pruned_by", "objective")
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        return value

    def _probe(self, cmd: list[str], env: dict[str, str], store: Path, log: Path, trial: Any,
               doctor: TrialDoctor) -> float:
        """The probe: the script runs with its learning rate swept (``TRAINDOCTOR_LR_SWEEP``, applied by
        ``traindoctor run`` inside it); its store's losses feed the sweep, and the script is stopped when the
        sweep is over (the loss blew up, or the sweep reached its end) or the script ends."""
        from ..lrsweep import ENV

        sweep = doctor.sweep
        env[ENV] = f"{sweep.start!r}:{sweep.end!r}:{sweep.num_iter}:{float(doctor.params.get(doctor.sweep_param or '', 0.0))!r}"
        fed = 0

        def feed() -> None:
            nonlocal fed
            run = _read(store)
            loss = run.get("loss") if run is not None else None
            if loss is None:
                return
            doctor.steps = max(doctor.steps, run.num_steps)
            for step, v in zip(loss.steps[fed:].tolist(), loss.values[fed:].tolist(), strict=True):
                fed += 1
                if sweep.add(float(v), int(step)):  # the hook in the script counts from step 0 as the store does
                    break

        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                while proc.poll() is None and not sweep.done:
                    time.sleep(0.1)
                    feed()
            finally:
                _stop(proc)
        feed()
        trial.set_user_attr("store", str(store))
        return math.nan

    def _report(self, run: Any, trial: Any, doctor: TrialDoctor, reported: set[int]) -> str | None:
        """Report the metric's new points to Optuna's pruner; the reason when it prunes."""
        s = run.get(self.metric)
        if s is None:
            return None
        for i in range(len(s)):
            if i in reported:
                continue
            reported.add(i)
            doctor.values.append((i, float(s.values[i])))
            from .study import STAGE_OFFSET

            trial.report(float(s.values[i]), STAGE_OFFSET.get(doctor.stage, 0) + i)
            if doctor._median and doctor.stage != "final" and trial.should_prune():
                doctor.pruned_by = "optuna"
                return (f"Optuna's pruner: {self.metric} {s.values[i]:.4g} at evaluation {i} is worse than the other "
                        "trials' at the same point")
        return None

    def _value(self, run: Any) -> float | None:
        if run is None:
            return None
        s = run.get(self.metric)
        if s is None:
            return None
        if self.objective == "best":
            fin = s.values[[math.isfinite(v) for v in s.values]]
            if not len(fin):
                return float(s.values[-1])
            return float(fin.max() if self.direction == "maximize" else fin.min())
        return float(s.values[-1])


def _arg(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _read(store: Path) -> Any:
    """The trial's run so far, or None when its store is not there (yet) or cannot be read."""
    if not store.exists():
        return None
    from ..store import load_store

    try:
        run = load_store(store)
    except (LogError, OSError):
        return None
    return run.resolve_captured()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the trial's process group (its store closes cleanly), then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    except ProcessLookupError:
        pass


def _tail(log: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    return " | ".join(lines[-n:])[-400:] or "(no output)"


def check_script(script: str) -> None:
    p = Path(script)
    if not p.exists():
        raise TrainDoctorError(f"{script}: no such script")
    if p.is_dir():
        raise TrainDoctorError(f"{script}: is a directory, not a training script")
