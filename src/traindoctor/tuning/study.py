"""``traindoctor.tune``: hyperparameter search on Optuna with the doctor as pruner, in three stages after a probe and
two lead trials.

0. **probe** (when the space has a learning rate on a log scale, named ``lr``, ``learning_rate``, ``*_lr`` or
   ``lr_*``; ``probe=NAME`` names another, ``probe=None`` turns it off): one LR range test inside the user's
   own training (:mod:`traindoctor.lrsweep`): the doctor sets the learning rate of every optimizer step,
   sweeping the parameter's range from its low end upwards in ``probe_steps`` steps, and stops the training
   when the loss blows up. The learning rates above the one it blew up at are dropped from the search, and
   so are those more than :data:`PROBE_DECADES` decades below it (see :func:`probe_range`). The probe is
   not a trial of the search (it is stored as a failed trial, which Optuna's samplers ignore); its steps
   count in the search's compute;
   Then two **lead** trials (:meth:`Search.next_lead`): full trainings at 1/30 of the rate the probe blew up at
   with the regularisation off, then one the doctor's reading of the first chooses (overfit: regularised; too
   high: lower; else: higher). They take fine places and run before the coarse stage;
1. **coarse**: the first half of the trials (``coarse=0.5``) over the whole ranges, each on a subsample of
   the data and a fraction of the epochs (``TrialDoctor.fraction`` / ``.epochs(n)`` / ``.subset(ds)``:
   the training function applies them);
2. **fine**: the other trials over the range the better half of the coarse trials occupy (:meth:`Param.narrowed`),
   on the full data; once :data:`FOLLOW_AFTER` of them completed, the ranges follow the best of them
   (:meth:`Search.fine_space`);
3. **final**: the ``top_k`` best parameter sets re-run over ``seeds`` seeds, reported as mean ± std:
   the choice is judged over seeds, not on one lucky run.

A trial is pruned at once when the doctor finds it sick (:mod:`.pruning`), with the reason saved on the
trial (``user_attrs["pruned_by"]`` and ``["diagnosis"]``), and otherwise by Optuna's own pruner on its
reported metric (a MedianPruner by default) for trials that are merely mediocre.

The study lives in Optuna's RDB storage: an SQLite file by default (``.traindoctor/tune/<study>.db``),
or a PostgreSQL URL shared by workers on many machines: every worker running the same ``tune`` joins
the study; the stage of the next trial and the fine ranges are decided from the study itself, so
workers agree. Storage heartbeats mark a killed worker's trial failed; Ctrl-C marks the running
trial failed and leaves the study consistent; the same call again continues it (a failed trial does not
count towards ``n_trials``).
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ..errors import TrainDoctorError
from ..run import Run
from .pruning import Sibling, SickWatch, StudyFacts, Verdict
from .space import Param, as_space

STAGES = ("probe", "coarse", "fine", "final")
STAGE_OFFSET = {"probe": 0, "coarse": 0, "fine": 1_000_000, "final": 2_000_000}
PROBE_STEPS = 100  # Smith's range test: about 100 steps
PROBE_DECADES = 4.0  # the learning rates kept below the probe's blow-up (see probe_range)
# the fine stage searches the range the better half of the completed coarse trials occupy: a short coarse
# training ranks its trials noisily, and on the development tasks (benchmarks/tune_probe_dev.py) the best quarter
# narrowed onto noise (two moons: the coarse values within 0.31-0.36, the full-training optimum outside them)
FINE_TOP = 0.5
FOLLOW_AFTER = 4  # completed fine trials before the fine ranges follow the best of them (see Search.fine_space)
FOLLOW_TOP = 3  # the best fine trials they follow
# the lead trials (see Search.next_lead): the first at the probe's blow-up rate / LEAD_FIRST with the regularisation
# off; the second, after the doctor read the first, at blow-up / LEAD_UP (it did not overfit), at the first's rate
# regularised (it overfit, V001) or at blow-up / LEAD_DOWN (pruned with lr-too-high). Chosen on the family's
# development half (benchmarks/tune_family.py): of the first lead's rate 1/3, 1/10, 1/30, 1/100 of the blow-up,
# with regularisation off or as the coarse stage's best, 1/30 off reached the target most often
LEADS = 2
LEAD_FIRST, LEAD_UP, LEAD_DOWN = 30.0, 10.0, 100.0
HEARTBEAT_S = 5
GRACE_S = 20


# ----------------------------------------------------------------------------------------------- storage


def _mask(url: str) -> str:
    """A database URL with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def storage_url(storage: str | os.PathLike[str] | None, study: str) -> str:
    """An RDB URL: ``None`` → ``sqlite:///.traindoctor/tune/<study>.db``; a path → an SQLite file there."""
    if storage is None:
        path = Path(".traindoctor") / "tune" / f"{study}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    s = os.fspath(storage)
    if "://" in s:
        return s
    p = Path(s)
    if p.is_dir():
        raise TrainDoctorError(f"--storage {s}: is a directory; give a file for the SQLite study, or a database URL")
    if not p.parent.resolve().is_dir():
        raise TrainDoctorError(f"--storage {s}: directory {p.parent} does not exist")
    return f"sqlite:///{p.resolve()}"


def _postgres_driver(url: str) -> str:
    """``postgresql://`` / ``postgres://`` with the driver that is installed: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3, 2.0 as psycopg2; either may be the one installed."""
    import importlib.util

    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    for module in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{module}://{rest}"
    raise TrainDoctorError(f"--storage {_mask(url)}: no PostgreSQL driver is installed; pip install psycopg2-binary")


def open_storage(url: str) -> Any:
    """Optuna's RDB storage with heartbeats (a killed worker's trial is marked failed); a database that
    cannot be reached is a one-line :class:`TrainDoctorError` naming it (password hidden)."""
    import warnings

    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {}
    given = url
    if url.startswith(("postgresql", "postgres")):
        url = _postgres_driver(url)
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    elif not url.startswith("sqlite"):
        scheme = url.split("://", 1)[0]
        if scheme not in ("mysql", "mysql+pymysql", "mysql+mysqldb", "postgresql+psycopg2", "postgresql+psycopg"):
            raise TrainDoctorError(f"--storage {_mask(url)}: unknown database kind {scheme!r}; give a file, "
                                   "sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB")
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words, since 2.8
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    # a worker killed mid-trial: its trial is marked failed after GRACE_S and tried again
                    return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                                      **kwargs)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # workers started together on an empty database all create Optuna's tables: the losers of that
                # race ("already exists", "duplicate key") find them made when they try again (optuna#1092)
                if attempt == 4:
                    raise
                time.sleep(0.2 + random.random() * 0.5)
        raise AssertionError("not reached")
    except (ImportError, ModuleNotFoundError) as exc:
        raise TrainDoctorError(f"--storage {_mask(given)}: the database driver is missing ({exc}); for "
                               "PostgreSQL: pip install psycopg2-binary") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's OperationalError and friends: one line
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainDoctorError(f"--storage {_mask(given)}: cannot open the study database: {first}") from None
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


# -------------------------------------------------------------------------------------------- the trial


def _scalar(loss: Any) -> float:
    return float(loss.detach()) if hasattr(loss, "detach") else float(loss)


class ProbeOver(optuna.TrialPruned):
    """The probe's LR sweep is over (the loss blew up, or the sweep reached its end): the training stops here.
    A ``TrialPruned``, so a ``train_fn`` that lets pruning through lets this through too."""


class TrialDoctor:
    """What ``train_fn(params, doctor)`` gets: the trial's parameters and stage, and the doctor that
    watches the training and prunes it.

    ``watch(model, optimizer)`` attaches a :class:`traindoctor.Doctor`; call ``step(loss)`` after each
    optimizer step and ``report(value)`` with the validation metric (each epoch). Either may raise
    ``optuna.TrialPruned``: let it propagate. In the coarse stage apply ``fraction`` (or ``subset(ds)``) to
    the data and ``epochs(n)`` to the epochs; ``seed`` is the trial's seed (torch, numpy and random are
    seeded with it before ``train_fn`` is called).
    """

    def __init__(self, trial: Any, params: dict[str, Any], stage: str, seed: int, *, fraction: float = 1.0,
                 epoch_fraction: float = 1.0, metric: str = "val_loss", check_s: float = 1.0,
                 median: bool = True, study: StudyFacts | None = None) -> None:
        self.trial = trial
        self.params = params
        self.stage = stage
        self.seed = seed
        self.fraction = fraction
        self.epoch_fraction = epoch_fraction
        self.metric = metric
        self.check_s = check_s
        self.steps = 0
        self.values: list[tuple[int, float]] = []
        self.verdict: Verdict | None = None
        self.pruned_by: str | None = None
        self._median = median
        self.prunes = True  # False: the doctor watches but never prunes (plain Optuna, for comparison)
        self._doctor: Any = None
        self._losses: list[tuple[int, float]] = []  # when no model is watched: the loss, read each step
        self._sick = SickWatch(only_nonfinite=stage == "final", study=study)  # study: the other trials' facts
        self._last_check = time.monotonic()
        self._critical = False
        self.sweep: Any = None  # the probe's RangeSweep
        self.sweep_param: str | None = None  # the parameter it sweeps
        self._hook: Any = None

    # the data and the epochs of this stage
    def epochs(self, n: int) -> int:
        return max(1, round(n * self.epoch_fraction))

    def subset(self, dataset: Any) -> Any:
        """``dataset`` itself on the full data, else a seeded random ``Subset`` of ``fraction`` of it."""
        if self.fraction >= 1.0:
            return dataset
        import torch
        from torch.utils.data import Subset

        n = len(dataset)
        k = max(1, round(n * self.fraction))
        g = torch.Generator().manual_seed(self.seed)
        return Subset(dataset, torch.randperm(n, generator=g)[:k].tolist())

    def watch(self, model: Any, optimizer: Any, **kw: Any) -> Any:
        """Attach the doctor to the trial's model and optimizer (in memory); returns the Doctor."""
        from ..watch.doctor import Doctor

        self._doctor = Doctor(model, optimizer, **kw)
        mon = getattr(self._doctor, "monitor", None)
        said = getattr(mon, "on_critical", None)
        if mon is not None and self.sweep is not None:  # the probe blows the loss up on purpose: nothing to say
            mon.on_critical = lambda *a, **k: None
        elif mon is not None and callable(said):
            def critical(*a: Any, **k: Any) -> Any:
                self._critical = True
                return said(*a, **k)

            mon.on_critical = critical
        return self._doctor

    def begin_sweep(self, sweep: Any, lr_name: str) -> None:
        """The probe, in this process: every optimizer step's learning rate is the sweep's for the step
        (:func:`traindoctor.lrsweep.install`); :meth:`close` ends it."""
        from ..lrsweep import install

        self.sweep = sweep
        self._hook = install(sweep, float(self.params.get(lr_name) or 0.0), lambda: self.steps)

    def step(self, loss: Any) -> None:
        """After ``optimizer.step()``: the doctor records the step; a sick trial is pruned here (the probe: its
        sweep reads the loss, and the training stops when the sweep is over)."""
        if self._doctor is not None:
            self._doctor.step(loss)
        else:
            v = _scalar(loss)
            self._losses.append((self.steps, v))
            if not math.isfinite(v):
                self._critical = True
        self.steps += 1
        if self.sweep is not None:
            if self.sweep.add(_scalar(loss)):
                lr = self.sweep.lrs[-1]
                raise ProbeOver(f"LR range test over at step {self.steps}, lr {lr:.3g}: " + (
                    "the loss blew up" if self.sweep.diverged is not None else "the sweep reached its end"))
            return
        if self._critical or time.monotonic() - self._last_check >= self.check_s:
            self._check()

    def report(self, value: float, step: int | None = None) -> None:
        """The validation metric (each epoch): logged, judged by the doctor, then by Optuna's pruner."""
        value = float(value)
        at = len(self.values) if step is None else int(step)
        self.values.append((at, value))
        if self._doctor is not None:
            self._doctor.log(**{self.metric: value})
        if self.sweep is not None:  # the probe: no pruning, no report to Optuna (it is not a trial of the search)
            return
        self._check()
        # each stage reports on its own steps: Optuna's pruner compares a fine trial with fine trials only (a
        # coarse trial trains on a subsample: its numbers are not comparable). A NaN is reported too: Optuna's
        # pruner stops such a trial, as in a plain Optuna loop
        self.trial.report(value, STAGE_OFFSET.get(self.stage, 0) + at)
        if self._median and self.stage != "final" and self.trial.should_prune():
            self.pruned_by = "optuna"
            raise optuna.TrialPruned(f"Optuna's pruner: {self.metric} {value:.4g} at report {at} is worse "
                                     "than the other trials' at the same point")

    def run(self) -> Run:
        """The trial's run so far."""
        if self._doctor is not None:
            return self._doctor.run_record()
        import numpy as np

        from ..run import Series

        run = Run()
        if self._losses:
            s, v = zip(*self._losses, strict=True)
            run.series["loss"] = Series(np.asarray(s), np.asarray(v))
        if self.values:
            s, v = zip(*self.values, strict=True)
            run.series[self.metric] = Series(np.asarray(s), np.asarray(v))
        return run

    def _check(self) -> None:
        self._last_check = time.monotonic()
        self._critical = False
        verdict = self._sick.check(self.run())
        if verdict is not None:
            self.verdict = verdict
            self.pruned_by = "doctor"
            raise optuna.TrialPruned("traindoctor: " + verdict.reason())

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._doctor is not None:
            try:
                self._doctor.close()
            except Exception:  # noqa: BLE001 - the doctor's own failure never fails the trial
                pass


# --------------------------------------------------------------------------------------------- the probe

_LR_NAME = re.compile(r"^(lr|learning[_-]?rate)$|[_.-](lr|learning[_-]?rate)$|^(lr|learning[_-]?rate)[_.-]", re.I)


def lr_param(space: Sequence[Param], probe: Any) -> Param | None:
    """The parameter the probe sweeps: ``probe="auto"`` (or True) the first learning rate on a log scale by its
    name (``lr``, ``learning_rate``, ``*_lr``, ``lr_*``), None when there is none; a name, that parameter (a
    log-scale float, else a one-line error); None/False, no probe."""
    if probe is None or probe is False:
        return None
    if probe is True or probe == "auto":
        return next((p for p in space if p.kind == "log" and _LR_NAME.search(p.name)), None)
    found = [p for p in space if p.name == str(probe)]
    if not found:
        raise TrainDoctorError(f"probe={probe!r}: no such parameter in the space ({', '.join(p.name for p in space)})")
    if found[0].kind != "log":
        raise TrainDoctorError(f"probe={probe!r}: the LR range test sweeps a learning rate on a log scale; give "
                               f"{probe}=log:LOW:HIGH")
    return found[0]


def probe_center(space: Sequence[Param], lrp: Param) -> dict[str, Any]:
    """The probe's parameters: the swept learning rate at its low end, every other parameter at the middle of
    its range (on its own scale), a choice at its first value."""
    out: dict[str, Any] = {}
    for p in space:
        if p is lrp or p.name == lrp.name:
            out[p.name] = float(p.low)  # type: ignore[arg-type]
        elif p.kind == "choice":
            out[p.name] = p.choices[0]
        else:
            lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
            mid = math.sqrt(lo * hi) if p.log else (lo + hi) / 2
            out[p.name] = int(round(mid)) if p.kind in ("int", "intlog") else mid
    return out


# regularisation by its name: off in a lead trial (the seeds: fit first, regularise what overfits)
_REG_NAME = re.compile(r"drop|decay|(^|[_.-])(wd|l1|l2|reg|regularization|regularisation|penalty|smooth|smoothing)([_.-]|$)",
                       re.I)


def lead_params(space: Sequence[Param], lrp: Param, lr: float, regularise: bool) -> tuple[dict[str, Any], list[str]]:
    """A lead trial's parameters: ``lrp`` at ``lr``, the regularisation (by its name: dropout, weight decay, L2, label
    smoothing ...) at the low end of its range (``regularise``: at its middle), every other parameter at the middle
    (:func:`probe_center`); and the names of the regularisation parameters."""
    out = probe_center(space, lrp)
    out[lrp.name] = lr
    reg = [p.name for p in space if p.name != lrp.name and p.kind != "choice" and _REG_NAME.search(p.name)]
    if not regularise:
        for p in space:
            if p.name in reg:
                out[p.name] = int(p.low) if p.kind in ("int", "intlog") else float(p.low)  # type: ignore[arg-type]
    return out, reg


def overfit(run: Run) -> dict[str, Any] | None:
    """The doctor's V001 (validation loss past its minimum and rising while the training loss falls) on a finished
    trial's run: its evidence, or None."""
    from ..diagnosis import check_rules

    found, _ = check_rules(run, only=lambda code: code == "V001")
    return dict(found[0].evidence) if found else None


def probe_range(p: Param, sweep: Any) -> tuple[Param | None, str]:
    """The learning rates worth searching after the probe's sweep, and why (None: the range is kept).

    Above the LR the loss blew up at, every trial of this model and optimizer blows up too (a range test
    spends a few steps at each LR, a trial many more): those are dropped. Below it the range keeps
    :data:`PROBE_DECADES` decades. How low a rate still trains well depends on how long the trial trains,
    which a sweep of 100 steps does not see, so this is a margin, not a measurement: on the development tasks
    (benchmarks/tune_probe_dev.py) the ten best of 100 random fully trained trials lay 0.6–2.8 decades below
    the blow-up (3.1 in a 60-trial pilot); a first version kept 3 decades, and the held-out diabetes task's
    best lay 3.0–3.2 decades below, out of reach (benchmarks/README.md). Keeping no floor at all searched
    5–6 decades and did much worse on the development tasks. A sweep that did not blow up says nothing about
    the range, nor one that blew up in its first tenth (the lowest rates blow up: not a learning-rate
    problem; the diagnosis says which).
    """
    assert p.low is not None and p.high is not None
    n = len(sweep.raw)
    if not n:
        return None, (f"LR range test: the training reported no loss while {p.name} was swept (does it call "
                      f"doctor.step(loss)?); {p.name} is searched over its whole range")
    if sweep.diverged is None:
        top = f"{p.name} {sweep.lrs[-1]:.3g}"
        return None, (f"LR range test ({sweep.reached} steps): the loss did not blow up up to {top}; "
                      f"{p.name} is searched over its whole range")
    d = float(sweep.diverged)
    if sweep.reached - 1 < 0.1 * (sweep.num_iter - 1):
        return None, (f"LR range test: the loss blew up at {p.name} {d:.3g}, in the first tenth of the sweep: not a "
                      f"learning-rate problem; {p.name} is searched over its whole range")
    high = min(float(p.high), d)
    low = max(float(p.low), high / 10 ** PROBE_DECADES)
    if not low < high:
        return None, f"LR range test: the loss blew up at {p.name} {d:.3g}; {p.name} is searched over its whole range"
    new = Param(p.name, p.kind, low, high)
    return new, (f"LR range test ({sweep.reached} steps): the loss blew up at {p.name} {d:.3g}; {p.name} searched in "
                 f"[{low:.3g}, {high:.3g}] instead of [{float(p.low):.3g}, {float(p.high):.3g}]")


def _lr_of(t: Any, name: str, cause: str) -> float | None:
    """The learning rate of a trial the doctor pruned with ``cause`` as the diagnosis's leading cause."""
    diag = t.user_attrs.get("diagnosis")
    if _state(t) != "PRUNED" or t.user_attrs.get("pruned_by") != "doctor" or not isinstance(diag, dict):
        return None
    v = t.params.get(name)
    return float(v) if diag.get("cause") == cause and isinstance(v, (int, float)) and v > 0 else None


def steer(space: list[Param], base: list[Param], trials: Sequence[Any], name: str | None,
          stage: str) -> tuple[list[Param], str | None]:
    """The learning rate's range moved away from the trials the doctor pruned with a learning-rate cause: a
    trial pruned for ``lr-too-high`` at LR x (a coarse or a fine one: a rate that blows up a short training
    blows up a long one too) caps the range below x; one of this stage pruned for ``lr-too-low`` at x (only
    this stage's: a short training needs a larger rate than a long one) raises the floor above x. When the
    cap falls to the range's floor (or the floor to its cap) the range keeps its width and moves, within
    ``base`` (the range before the coarse stage narrowed it). Returns the space and what was done (None:
    nothing)."""
    p = next((q for q in space if q.name == name and q.kind == "log"), None)
    b = next((q for q in base if q.name == name and q.kind == "log"), None)
    if p is None or b is None:
        return space, None
    assert p.low is not None and p.high is not None and b.low is not None and b.high is not None
    mine = [t for t in trials if t.user_attrs.get("stage") in ("coarse", "fine")]
    high_at = [x for t in mine if (x := _lr_of(t, name, "lr-too-high")) is not None]
    low_at = [x for t in mine if t.user_attrs.get("stage") == stage and (x := _lr_of(t, name, "lr-too-low")) is not None]
    lo, hi = math.log10(p.low), math.log10(p.high)
    width = max(hi - lo, 0.5)
    blo, bhi = math.log10(b.low), math.log10(b.high)
    said = []
    if high_at and math.log10(min(high_at)) < hi:
        cap = math.log10(min(high_at))
        hi = cap
        if lo > hi - 0.25:
            lo = max(blo, hi - width)
        said.append(f"{name} < {min(high_at):.3g} (pruned for lr-too-high there)")
    if low_at and math.log10(max(low_at)) > lo:
        floor = math.log10(max(low_at))
        lo = floor
        if hi < lo + 0.25:
            hi = min(bhi, lo + width)
        said.append(f"{name} > {max(low_at):.3g} (pruned for lr-too-low there)")
    if not said or not lo < hi:
        return space, None
    moved = Param(p.name, p.kind, 10 ** lo, 10 ** hi)
    return [moved if q is p else q for q in space], "; ".join(said)


def study_facts(study: Any, number: int, params: Mapping[str, Any], lr_name: str | None) -> StudyFacts:
    """The study's other trials that trained to their end (completed with a finite value, any stage): what the
    doctor weighs a sick trial's causes against (:class:`~traindoctor.tuning.pruning.StudyFacts`)."""
    def lr_of(p: Mapping[str, Any]) -> float | None:
        v = p.get(lr_name) if lr_name else None
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    sibs = [Sibling(t.number, lr_of(t.params), float(t.value))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.number != number and t.value is not None and math.isfinite(t.value)
            and t.user_attrs.get("stage") in ("coarse", "fine", "final")]
    return StudyFacts(sibs, lr_of(params), lr_name or "lr")


class _ProbeDone(Exception):
    """Ends the probe's Optuna trial as FAIL: Optuna's samplers learn nothing from it (it is not a trial)."""


# --------------------------------------------------------------------------------------------- results


@dataclass
class TrialRow:
    number: int
    stage: str
    state: str
    params: dict[str, Any]
    value: float | None
    steps: int
    pruned_by: str | None = None
    reason: str | None = None
    seed: int | None = None
    group: int | None = None
    steered: str | None = None  # how the doctor's earlier prunes moved this trial's learning-rate range
    lead: str | None = None  # a lead trial: how its parameters were chosen (Search.next_lead)

    def to_json(self) -> dict[str, Any]:
        v = self.value if self.value is None or math.isfinite(self.value) else str(self.value)
        return {"number": self.number, "stage": self.stage, "state": self.state, "params": self.params, "value": v,
                "steps": self.steps, "pruned_by": self.pruned_by, "reason": self.reason, "seed": self.seed,
                "group": self.group, "steered": self.steered, "lead": self.lead}


@dataclass
class FinalRow:
    params: dict[str, Any]
    values: list[float]
    mean: float
    std: float
    failed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "values": self.values, "mean": self.mean, "std": self.std, "failed": self.failed}


@dataclass
class TuneResult:
    study_name: str
    storage: str
    direction: str
    metric: str
    space: list[Param]
    fine_space: list[Param] | None
    trials: list[TrialRow]
    final: list[FinalRow]
    best_params: dict[str, Any] | None
    best_value: float | None
    notes: list[str] = field(default_factory=list)
    study: Any = None
    probe: dict[str, Any] | None = None  # the LR range test: param, steps, diverged_at, range, why, lrs, losses

    @property
    def pruned(self) -> list[TrialRow]:
        return [t for t in self.trials if t.state == "PRUNED"]

    @property
    def compute(self) -> int:
        """Training steps over every trial: what the search cost."""
        return sum(t.steps for t in self.trials)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "traindoctor-tune/1", "study": self.study_name, "storage": _mask(self.storage),
            "direction": self.direction, "metric": self.metric,
            "space": [p.spec() for p in self.space],
            "fine_space": [p.spec() for p in self.fine_space] if self.fine_space else None,
            "best_params": self.best_params, "best_value": self.best_value,
            "final": [f.to_json() for f in self.final],
            "trials": [t.to_json() for t in self.trials],
            "compute_steps": self.compute, "notes": self.notes, "probe": self.probe,
        }


# ---------------------------------------------------------------------------------------------- the loop


def default_study_name(what: str, space: Sequence[Param], extra: Sequence[str] = ()) -> str:
    """The same search gets the same name, so running it again continues it."""
    key = "\n".join([what, *(p.spec() for p in space), *extra])
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(what).stem or what)[:40] or "study"
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _state(t: Any) -> str:
    return t.state.name


def _main(t: Any) -> bool:
    return t.user_attrs.get("stage") in ("coarse", "fine")


class Search:
    """One worker's view of the study: which stage comes next, the fine ranges, the final re-runs."""

    def __init__(self, study: Any, space: list[Param], n_trials: int, *, coarse: float, top_k: int, seeds: int,
                 fraction: float, epoch_fraction: float, lead: Param | None = None) -> None:
        self.study = study
        self.lead = lead  # the learning rate the lead trials set from the probe (None: no lead trials)
        self.space = space
        self.n_trials = n_trials
        self.n_coarse = max(1, round(n_trials * coarse)) if coarse > 0 else 0
        self.top_k = top_k
        self.seeds = seeds
        self.fraction = fraction
        self.epoch_fraction = epoch_fraction
        self.followed = 0  # the completed fine trials the last fine ranges followed (0: the decided ranges)

    def trials(self, states: tuple[str, ...] = ("COMPLETE", "PRUNED", "RUNNING")) -> list[Any]:
        return [t for t in self.study.get_trials(deepcopy=False) if _state(t) in states]

    def counted(self) -> list[Any]:
        """The coarse and fine trials that count towards ``n_trials`` (failed ones are tried again)."""
        return [t for t in self.trials() if _main(t)]

    def next_stage(self) -> str | None:
        done = self.counted()
        if len(done) >= self.n_trials:
            return None
        coarse = [t for t in done if t.user_attrs.get("stage") == "coarse"]
        return "coarse" if len(coarse) < self.n_coarse else "fine"

    def place(self, number: int) -> str | None:
        """The stage of trial ``number`` from the trials ahead of it (lower numbers, not failed): the coarse and
        fine ones, and those whose stage is not decided yet (counted as taking a coarse place). Two workers that
        start a trial for the last place at once both see the other's trial: the later one gets None (no place).
        """
        ahead = [t for t in self.study.get_trials(deepcopy=False)
                 if t.number < number and _state(t) in ("COMPLETE", "PRUNED", "RUNNING")]
        undecided = sum(1 for t in ahead if "stage" not in t.user_attrs)
        main = [t for t in ahead if _main(t)]
        if len(main) + undecided >= self.n_trials:
            return None
        coarse = sum(1 for t in main if t.user_attrs.get("stage") == "coarse")
        return "coarse" if coarse + undecided < self.n_coarse else "fine"

    def next_lead(self) -> tuple[int, dict[str, Any], str] | None:
        """The next lead trial's number among the leads, parameters and why, or None (no more leads, or one is queued or running).

        After the probe, the search's first full trainings are not drawn at random: they are the seeds' own first
        guess. The rate is an order of magnitude and a half below the one the probe's loss blew up at
        (:data:`LEAD_FIRST`), the regularisation is off (fit first: a network that cannot fit the training set will
        not be rescued by dropout). The doctor reads what it did, and the second follows:

        - **overfit** (V001: validation loss past its minimum and rising): the same rate, regularisation at the
          middle of its ranges;
        - **pruned for lr-too-high**: a rate lower, at blow-up / :data:`LEAD_DOWN`;
        - **otherwise**: a rate higher, at blow-up / :data:`LEAD_UP` (it trained without overfitting: a larger
          step goes further in the same epochs).

        They run before the coarse stage, as fine trials (full data, full epochs), and take fine places. A
        function of the study: every worker decides the same."""
        info = self.study.user_attrs.get("probe")
        p = self.lead
        if p is None or not isinstance(info, dict) or info.get("diverged_at") is None or info.get("range") is None:
            return None
        leads = [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("lead") is not None
                 and _state(t) in ("COMPLETE", "PRUNED", "RUNNING", "WAITING")]
        if any(_state(t) in ("RUNNING", "WAITING") for t in leads):
            return None
        n = len({t.user_attrs["lead"] for t in leads})
        fine = [t for t in self.counted() if t.user_attrs.get("stage") == "fine"]
        if n >= LEADS or len(fine) >= self.n_trials - self.n_coarse or self.next_stage() is None:
            return None
        blow = float(info["diverged_at"])
        lo, hi = float(info["range"][0]), float(info["range"][1])

        def at(lr: float) -> float:
            return min(hi, max(lo, lr))

        prev = max(leads, key=lambda t: t.number) if leads else None
        cause = (prev.user_attrs.get("diagnosis") or {}).get("cause") if prev and _state(prev) == "PRUNED" else None
        fit = prev.user_attrs.get("overfit") if prev else None
        regularise = False
        if prev is None:
            lr = at(blow / LEAD_FIRST)
            why = f"lead 1: {p.name} {lr:.3g}, 1/{LEAD_FIRST:g} of the rate the probe blew up at"
        elif cause == "lr-too-high":
            lr = at(blow / LEAD_DOWN)
            why = f"lead 2: {p.name} {lr:.3g} (lead 1 was pruned for lr-too-high)"
        elif isinstance(fit, dict):
            lr, regularise = float(prev.params.get(p.name, at(blow / LEAD_FIRST))), True
            why = f"lead 2: lead 1 overfit (V001: validation loss best at step {fit.get('best_step')}, then rose)"
        else:
            lr = at(blow / LEAD_UP)
            why = f"lead 2: {p.name} {lr:.3g}, 1/{LEAD_UP:g} of the blow-up (lead 1 trained without overfitting)"
        params, reg = lead_params(self.space, p, lr, regularise=regularise)
        if regularise and not reg:
            return None  # nothing to regularise with: the search goes on
        if reg and (prev is None or regularise):
            why += f"; {', '.join(reg)} at the " + ("middle of the range" if regularise else "low end of the range (fit first)")
        return n, params, why

    def enqueue_lead(self) -> None:
        """Queue the next lead trial (:meth:`next_lead`), if any."""
        nxt = self.next_lead()
        if nxt is None:
            return
        n, params, why = nxt
        self.study.enqueue_trial(params, user_attrs={"stage": "fine", "lead": n, "why": why}, skip_if_exists=False)

    def duplicate_of(self, trial: Any) -> int | None:
        """The number of an earlier final re-run of the same set and seed, not failed (two workers that enqueue
        the final re-runs at once both enqueue them: the earlier trial runs, the later is skipped)."""
        key = (trial.user_attrs.get("group"), trial.user_attrs.get("seed"))
        for t in self.study.get_trials(deepcopy=False):
            if (t.number < trial.number and t.user_attrs.get("stage") == "final"
                    and (t.user_attrs.get("group"), t.user_attrs.get("seed")) == key
                    and _state(t) in ("COMPLETE", "PRUNED", "RUNNING", "WAITING")):
                return int(t.number)
        return None

    def wait_for(self, stages: tuple[str, ...], deadline: float | None = None) -> bool:
        """Wait while another worker's trial of ``stages`` runs (a dead worker's trial is failed after the grace
        period, and retried); False when the deadline came first."""
        while any(_state(t) == "RUNNING" and t.user_attrs.get("stage") in stages
                  for t in self.study.get_trials(deepcopy=False)):
            if deadline is not None and time.monotonic() > deadline:
                return False
            optuna.storages.fail_stale_trials(self.study)
            time.sleep(0.5)
        return True

    def ranked(self, stage: str | None = None) -> list[Any]:
        """Completed trials of ``stage`` (coarse and fine when None), best first."""
        sign = 1.0 if self.study.direction.name == "MINIMIZE" else -1.0
        ok = [t for t in self.trials(("COMPLETE",)) if (t.user_attrs.get("stage") == stage if stage else _main(t))
              and t.value is not None and math.isfinite(t.value)]
        return sorted(ok, key=lambda t: sign * t.value)

    def base_space(self) -> list[Param]:
        """The space the coarse stage searches: the whole space, with the learning rate's range as the probe
        left it (stored on the study, so every worker searches the same)."""
        info = self.study.user_attrs.get("probe")
        rng = info.get("range") if isinstance(info, dict) else None
        if not (isinstance(rng, list) and len(rng) == 2):
            return self.space
        return [Param(p.name, p.kind, float(rng[0]), float(rng[1])) if p.name == info.get("param") else p
                for p in self.space]

    def fine_space(self) -> list[Param]:
        """The fine stage's ranges now: those the coarse trials decided (:meth:`decided_fine_space`), each
        widened to hold a window of its own width centred on the best completed fine trials once
        :data:`FOLLOW_AFTER` of them completed (:meth:`Param.following`): the fine stage leaves a range that its
        own full trials say is wrong (too much dropout, a rate too high for the whole training) instead of
        searching it to the end. A function of the study's trials: every worker computes the same."""
        fine = self.decided_fine_space()
        done = self.ranked("fine")
        self.followed = len(done) if len(done) >= FOLLOW_AFTER else 0
        if not self.followed:
            return fine
        top = done[:FOLLOW_TOP]
        base = {p.name: p for p in self.base_space()}
        return [p.following([t.params.get(p.name) for t in top], base.get(p.name, p)) for p in fine]

    def searched_fine_space(self) -> list[Param]:
        """What the fine stage searched, for the report: the decided ranges widened to hold every fine trial
        (the ranges followed the best fine trials, and may have moved)."""
        trials = [t for t in self.trials() if t.user_attrs.get("stage") == "fine"]
        out = []
        for p in self.decided_fine_space():
            vals = [float(t.params[p.name]) for t in trials if isinstance(t.params.get(p.name), (int, float))]
            if p.kind == "choice" or not vals or p.low is None or p.high is None:
                out.append(p)
                continue
            out.append(Param(p.name, p.kind, min(p.low, *vals), max(p.high, *vals)))
        return out

    def decided_fine_space(self) -> list[Param]:
        """The ranges of the best coarse trials (the better half, at least 3: :data:`FINE_TOP`), padded; decided once per study
        (stored on it) so every worker searches the same fine ranges."""
        stored = self.study.user_attrs.get("fine_space")
        if isinstance(stored, list) and len(stored) == len(self.space):
            from .space import parse_param

            return [parse_param(s) for s in stored]
        best = self.ranked("coarse")
        base = self.base_space()
        if not best:
            return base
        top = best[: max(3, math.ceil(len(best) * FINE_TOP))]
        fine = [p.narrowed([t.params.get(p.name) for t in top if p.name in t.params]) for p in base]
        finished = [t for t in self.trials(("COMPLETE", "PRUNED")) if t.user_attrs.get("stage") == "coarse"]
        if len(finished) >= self.n_coarse:  # every coarse trial in (pruned ones too): the ranges are final
            self.study.set_user_attr("fine_space", [p.spec() for p in fine])
        return fine

    def final_sets(self) -> list[dict[str, Any]]:
        """The top-k parameter sets of the fine stage, then of the coarse stage when the fine one has too few:
        a coarse trial trained on a subsample, so its value does not rank against a fine one's."""
        out: list[dict[str, Any]] = []
        ranked = self.ranked("fine") + self.ranked("coarse")
        for t in ranked:
            if t.params not in out:
                out.append(dict(t.params))
            if len(out) >= self.top_k:
                break
        return out

    def enqueue_final(self) -> None:
        """Queue the final re-runs still missing: each (set, seed) not done, running or queued. The sets are
        chosen once per study (stored on it), so a resumed or second worker re-runs the same ones."""
        if self.top_k <= 0 or self.seeds <= 0:
            return
        sets = self.study.user_attrs.get("final_sets")
        if not isinstance(sets, list):
            sets = self.final_sets()
            self.study.set_user_attr("final_sets", sets)
        have = {(t.user_attrs.get("group"), t.user_attrs.get("seed")) for t in self.study.get_trials(deepcopy=False)
                if t.user_attrs.get("stage") == "final" and _state(t) in ("COMPLETE", "PRUNED", "RUNNING", "WAITING")}
        for g, params in enumerate(sets):
            for s in range(self.seeds):
                if (g, 1000 + s) not in have:
                    self.study.enqueue_trial(params, user_attrs={"stage": "final", "group": g, "seed": 1000 + s},
                                             skip_if_exists=False)


def _rebased(t: Any, offset: int) -> Any:
    """A copy of frozen trial ``t`` whose intermediate values are keyed by its stage's own steps."""
    c = copy.copy(t)
    c.intermediate_values = {k - offset: v for k, v in t.intermediate_values.items()}
    return c


class _StageStudy:
    """The study as a pruner of one stage sees it: that stage's trials only, their steps counted from the
    stage's start (everything else delegated to the study)."""

    def __init__(self, study: Any, stage: str) -> None:
        self._study = study
        self._stage = stage
        self._offset = STAGE_OFFSET[stage]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return [_rebased(t, self._offset) for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.user_attrs.get("stage") == self._stage]

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[Any]:
        return self.get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[Any]:
        return self.get_trials()


class StagePruner(optuna.pruners.BasePruner):
    """Optuna's pruner, judging a trial only against the trials of its own stage, on the stage's own steps (a
    coarse trial trains on a subsample: the fine trials must not be held to its numbers; a successive-halving
    pruner's rungs count from the stage's first report), and, for a MedianPruner, only once ``n_startup`` of
    them completed (nor the first fine trials to one another's). Final re-runs are never pruned by it."""

    def __init__(self, inner: Any, n_startup: int | None = None, n_warmup: int = 1) -> None:
        self.inner = inner
        if n_startup is None:  # a median needs trials to take it from; successive halving has its own rungs
            n_startup = 5 if isinstance(inner, (optuna.pruners.MedianPruner, optuna.pruners.PercentilePruner)) else 0
        self.n_startup = n_startup
        self.n_warmup = n_warmup  # reports of the trial's own stage before it may be pruned

    def prune(self, study: Any, trial: Any) -> bool:
        stage = trial.user_attrs.get("stage")
        if stage not in ("coarse", "fine"):
            return False
        last = trial.last_step
        if last is None or last - STAGE_OFFSET[stage] < self.n_warmup:  # counted on the stage's own steps
            return False
        view = _StageStudy(study, stage)
        if self.n_startup:
            done = view.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(done) < self.n_startup:
                return False
        return bool(self.inner.prune(view, _rebased(trial, STAGE_OFFSET[stage])))


def _seed_of(trial: Any) -> int:
    s = trial.user_attrs.get("seed")
    return int(s) if isinstance(s, int) else trial.number


def _rows(study: Any) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("stage") == "skipped":  # a place or re-run another worker took: nothing ran
            continue
        state = _state(t)
        if t.user_attrs.get("stage") == "probe" and state == "FAIL" and t.user_attrs.get("reason"):
            state = "PROBE"  # a probe that ran its sweep (its Optuna state is FAIL only so samplers ignore it)
        rows.append(TrialRow(t.number, str(t.user_attrs.get("stage", "?")), state, dict(t.params),
                             t.value if t.value is not None else None, int(t.user_attrs.get("steps") or 0),
                             t.user_attrs.get("pruned_by"), t.user_attrs.get("reason"),
                             t.user_attrs.get("seed"), t.user_attrs.get("group"), t.user_attrs.get("steered"),
                             t.user_attrs.get("why") if t.user_attrs.get("lead") is not None else None))
    return rows


def _finals(study: Any) -> list[FinalRow]:
    import numpy as np

    groups: dict[int, list[Any]] = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("stage") == "final" and isinstance(t.user_attrs.get("group"), int):
            groups.setdefault(t.user_attrs["group"], []).append(t)
    out = []
    for g in sorted(groups):
        ts = groups[g]
        vals = [float(t.value) for t in ts if _state(t) == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
        failed = sum(1 for t in ts if _state(t) in ("PRUNED", "FAIL"))
        if not vals and not failed:
            continue
        arr = np.asarray(vals) if vals else np.asarray([np.nan])
        out.append(FinalRow(dict(ts[0].params), vals, float(np.mean(arr)),
                            float(np.std(arr, ddof=1)) if len(vals) > 1 else 0.0, failed))
    return out


def fingerprint(run: Run, n: int = 64) -> str | None:
    """The trial's training-loss trajectory (its first ``n`` recorded values, exactly), hashed: two trials
    with different parameters and the same fingerprint trained identically."""
    loss = run.get("loss")
    if loss is None or len(loss) < 2:
        return None
    return hashlib.sha1(loss.values[:n].tobytes() + loss.steps[:n].tobytes()).hexdigest()


def identical_trials(trials: Sequence[Any]) -> bool:
    """Whether three or more completed trials with different parameters trained exactly alike: the same
    value and the same training-loss trajectory (:func:`fingerprint`). The training does not read the
    parameters (a script that ignores its arguments). Equal values alone are not enough: an accuracy can
    reach 1.0 in every trial of an easy task."""
    done = [t for t in trials if _state(t) == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    if len(done) < 3:
        return False
    params = {tuple(sorted((k, repr(v)) for k, v in t.params.items())) for t in done}
    prints = {t.user_attrs.get("fingerprint") for t in done}
    return len(params) == len(done) and len({t.value for t in done}) == 1 and len(prints) == 1 and None not in prints


def tune(train_fn: Callable[[dict[str, Any], TrialDoctor], float | None],
         space: Mapping[str, Any] | Sequence[Any], n_trials: int = 40, *, storage: str | os.PathLike[str] | None = None,
         study_name: str | None = None, direction: str = "minimize", metric: str = "val_loss",
         sampler: str | Any = "tpe", pruner: Any = "median", coarse: float = 0.5, fraction: float = 0.25,
         epoch_fraction: float = 0.34, top_k: int = 3, seeds: int = 3, seed: int | None = None, check_s: float = 1.0,
         doctor_prunes: bool = True, timeout: float | None = None, probe: str | bool | None = "auto",
         probe_steps: int = PROBE_STEPS, leads: bool = True, on_trial: Callable[[TrialRow], None] | None = None, run_trial: Callable[..., Any] | None = None) -> TuneResult:
    """Search ``space`` with ``train_fn(params, doctor)`` (see the module docstring); returns a
    :class:`TuneResult`. ``train_fn`` returns the trial's objective (or None: its last ``doctor.report``).

    ``seed`` seeds the sampler (None, the default: each worker samples its own points; a fixed seed on two
    workers of one study would make them propose the same trials). ``sampler``: ``"tpe"`` (default), ``"random"``
    or an Optuna sampler; ``pruner``: ``"median"`` (default), ``"halving"`` (Optuna's successive halving),
    ``None`` or an Optuna pruner, for trials that are merely mediocre (judged on their own stage's reports); ``doctor_prunes=False`` turns the
    doctor's pruning off (a baseline). ``coarse=0`` skips the coarse stage, ``top_k=0`` the final one.
    ``probe``: the learning-rate parameter the probe sweeps (``"auto"``: found by its name; None: no probe);
    ``probe_steps``: the sweep's length; ``leads``: the lead trials after the probe (:meth:`Search.next_lead`).
    """
    params = as_space(space)
    lrp = lr_param(params, probe)
    named = lrp or lr_param(params, "auto")
    lr_name = named.name if named is not None else None  # the learning rate the doctor's prunes steer
    if probe_steps < 10:
        raise TrainDoctorError(f"probe_steps must be at least 10, got {probe_steps}")
    if n_trials < 1:
        raise TrainDoctorError(f"n_trials must be at least 1, got {n_trials}")
    if isinstance(pruner, str) and pruner not in ("median", "halving"):
        raise TrainDoctorError(f"pruner must be 'median', 'halving', None or an Optuna pruner, got {pruner!r}")
    if isinstance(pruner, optuna.pruners.HyperbandPruner) and coarse > 0:
        # its brackets read the storage directly: it would hold a fine trial to the coarse trials' numbers
        raise TrainDoctorError("Optuna's HyperbandPruner compares trials across the coarse and fine stages: use "
                               "pruner='halving' (successive halving, one bracket) or coarse=0")
    if direction not in ("minimize", "maximize"):
        raise TrainDoctorError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    if not 0 < fraction <= 1 or not 0 < epoch_fraction <= 1 or not 0 <= coarse < 1:
        raise TrainDoctorError("fraction and epoch_fraction must be in (0, 1], coarse in [0, 1)")
    name = study_name or default_study_name(getattr(train_fn, "__qualname__", "train_fn"), params)
    url = storage_url(storage, name)
    store = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(sampler, str):
        if sampler not in ("tpe", "random"):
            raise TrainDoctorError(f"sampler must be 'tpe' or 'random' (or an Optuna sampler), got {sampler!r}")
        sampler = (optuna.samplers.TPESampler(seed=seed) if sampler == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))
    if pruner == "halving":  # asynchronous successive halving (ASHA): rungs on each stage's own reports
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    if pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)  # the warm-up: StagePruner's
    median = pruner is not None
    if pruner is not None:
        pruner = StagePruner(pruner)
    else:
        pruner = optuna.pruners.NopPruner()
    try:
        study = optuna.create_study(study_name=name, storage=store, sampler=sampler, pruner=pruner,
                                    direction=direction, load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - a database error while creating: one line
        raise TrainDoctorError(f"study {name!r} in {_mask(url)}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if study.direction.name.lower() != direction:
        raise TrainDoctorError(f"study {name!r} in {_mask(url)} was created to {study.direction.name.lower()}, "
                               f"not {direction}: give another study name")
    search = Search(study, params, n_trials, coarse=coarse, top_k=top_k, seeds=seeds, fraction=fraction,
                    epoch_fraction=epoch_fraction, lead=lrp if leads else None)
    notes: list[str] = []
    runner = run_trial or _call

    def skip(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("stage", "skipped")
        trial.set_user_attr("reason", reason)
        raise optuna.TrialPruned(reason)

    def objective(trial: optuna.Trial) -> float:
        stage = trial.user_attrs.get("stage")
        if stage is None:  # not an enqueued final re-run: its place among the trials decides
            stage = search.place(trial.number)
            if stage is None:
                skip(trial, f"the {n_trials} trials were taken by other workers")
            trial.set_user_attr("stage", stage)
        elif stage in ("coarse", "fine") and search.place(trial.number) is None:  # a retried trial, too late
            skip(trial, f"the {n_trials} trials were taken by other workers")
        elif stage == "final":
            dup = search.duplicate_of(trial)
            if dup is not None:
                skip(trial, f"a duplicate of final re-run #{dup}")
        if stage == "probe":
            return probe_trial(trial)
        lead = trial.user_attrs.get("lead") is not None  # its parameters are set (Search.next_lead): nothing to wait for
        if stage == "fine" and not lead and "fine_space" not in study.user_attrs:
            search.wait_for(("coarse",), deadline)  # the fine ranges are decided on every coarse trial
        # the final re-runs and the leads are enqueued: their values come back from suggesting on the whole ranges
        if lead:
            space_now = search.base_space()
        else:
            space_now = {"fine": search.fine_space, "coarse": search.base_space}.get(stage, lambda: params)()
        if stage == "fine" and search.followed:
            trial.set_user_attr("followed", search.followed)  # its ranges followed this many fine trials
        if stage in ("coarse", "fine") and doctor_prunes and not lead:  # the doctor's pruning reasons steer the learning rate
            space_now, steered = steer(space_now, search.base_space(), study.get_trials(deepcopy=False), lr_name,
                                       stage)
            if steered:
                trial.set_user_attr("steered", steered)
        chosen = {p.name: p.suggest(trial) for p in space_now}
        tseed = _seed_of(trial)
        trial.set_user_attr("seed", tseed)
        doctor = TrialDoctor(trial, chosen, stage, tseed, fraction=fraction if stage == "coarse" else 1.0,
                             epoch_fraction=epoch_fraction if stage == "coarse" else 1.0, metric=metric,
                             check_s=check_s, median=median,
                             study=study_facts(study, trial.number, chosen, lr_name) if doctor_prunes else None)
        if not doctor_prunes:
            doctor.prunes = False
            doctor._sick.check = lambda run, finished=False: None  # type: ignore[method-assign]
        return runner(train_fn, trial, doctor)

    def probe_trial(trial: optuna.Trial) -> float:
        from ..lrsweep import RangeSweep

        assert lrp is not None
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number
                   and t.user_attrs.get("stage") == "probe" and _state(t) in ("RUNNING", "FAIL")]
        if "probe" in study.user_attrs or any(_state(t) == "RUNNING" for t in earlier):
            # two workers that enqueued a probe at once: the earlier one runs it, this one trains nothing
            trial.set_user_attr("stage", "skipped")
            raise _ProbeDone("another worker's probe")
        chosen = {p.name: p.suggest(trial) for p in params}
        tseed = _seed_of(trial)
        trial.set_user_attr("seed", tseed)
        doctor = TrialDoctor(trial, chosen, "probe", tseed, metric=metric, check_s=check_s, median=False)
        sweep = RangeSweep(float(lrp.low), float(lrp.high), probe_steps, back_to_start=True)  # type: ignore[arg-type]
        doctor.sweep, doctor.sweep_param = sweep, lrp.name  # the runner applies it (_call: in this process)
        error = None
        try:
            runner(train_fn, trial, doctor)
        except ProbeOver:
            pass
        except (KeyboardInterrupt, optuna.TrialPruned):
            raise
        except Exception as exc:  # noqa: BLE001 - a training that fails once the sweep's LR blew it up
            if not sweep.raw:
                raise
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            trial.set_user_attr("steps", doctor.steps)
            doctor.close()
        if error is not None and sweep.diverged is None:
            sweep.diverged = sweep.lrs[-1]  # the training raised at this LR: the sweep is over there
        rng, why = probe_range(lrp, sweep)
        if error is not None:
            why += f" (the training stopped with {error})"
        trial.set_user_attr("reason", why)
        if "probe" not in study.user_attrs:  # two workers that probed at once: the first result stands
            study.set_user_attr("probe", {
                "param": lrp.name, "trial": trial.number, "steps": doctor.steps, "sweep": [sweep.start, sweep.end],
                "num_iter": sweep.num_iter, "diverged_at": sweep.diverged,
                "range": [rng.low, rng.high] if rng is not None else None, "why": why,
                "lrs": sweep.lrs, "losses": [v if math.isfinite(v) else None for v in sweep.raw]})
        raise _ProbeDone(why)

    def ensure_probe() -> None:
        """Run the probe once per study (another worker's probe is waited for; a lost one is run again)."""
        assert lrp is not None
        for _ in range(3):
            if "probe" in study.user_attrs:
                return
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("stage") == "probe"]
            if any(_state(t) == "RUNNING" for t in mine):
                search.wait_for(("probe",), deadline)
                continue
            if not any(_state(t) == "WAITING" for t in mine):
                study.enqueue_trial(probe_center(params, lrp), user_attrs={"stage": "probe"}, skip_if_exists=False)
            before = {t.number for t in study.get_trials(deepcopy=False)}
            optuna.logging.set_verbosity(optuna.logging.ERROR)  # "trial failed": the probe is not a trial
            try:
                study.optimize(objective, n_trials=1, catch=(_ProbeDone,))
            finally:
                optuna.logging.set_verbosity(optuna.logging.WARNING)
            if on_trial is not None:
                for r in _rows(study):
                    if r.number not in before:
                        on_trial(r)
        if "probe" not in study.user_attrs:
            notes.append("the LR range test did not finish: the learning rate is searched over its whole range")

    deadline = None if timeout is None else time.monotonic() + timeout

    def one() -> bool:
        if deadline is not None and time.monotonic() > deadline:
            return False
        before = {t.number for t in study.get_trials(deepcopy=False)}
        study.optimize(objective, n_trials=1, catch=())
        new = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
        if on_trial is not None:
            for r in _rows(study):
                if r.number in {t.number for t in new}:
                    on_trial(r)
        if identical_trials(search.counted()):
            done = [t for t in search.counted() if _state(t) == "COMPLETE"]
            raise TrainDoctorError(
                f"all {len(done)} completed trials gave exactly the same {metric} ({done[0].value:.6g}) with different "
                f"parameters ({', '.join(p.name for p in params)}): the training does not read them (does the "
                "script take them as arguments?)")
        return True

    if lrp is not None and search.next_stage() is not None:
        ensure_probe()
    while True:
        if search.next_stage() is not None:
            search.enqueue_lead()
            if not one():
                notes.append("stopped by the time limit before all trials ran")
                break
            continue
        # every place is taken: the final sets wait for the coarse and fine trials other workers still run
        if not search.wait_for(("coarse", "fine"), deadline):
            notes.append("stopped by the time limit before all trials ran")
            break
        if search.next_stage() is not None:  # one of them failed (its worker died): its place is free again
            continue
        search.enqueue_final()
        while any(_state(t) == "WAITING" for t in study.get_trials(deepcopy=False)):
            if not one():
                break
        break
    return result_of(study, url, params, metric, notes, search)


def _call(train_fn: Callable[..., Any], trial: Any, doctor: TrialDoctor) -> float:
    """Run one trial in this process: seed, train, save what the doctor saw on the trial."""
    seed_everything(doctor.seed)
    if doctor.stage == "probe":  # the LR sweep: the training runs until the sweep stops it (ProbeOver)
        doctor.begin_sweep(doctor.sweep, doctor.sweep_param or "")
        train_fn(dict(doctor.params), doctor)
        return math.nan
    try:
        value = train_fn(dict(doctor.params), doctor)
    except optuna.TrialPruned as exc:
        _save(trial, doctor, str(exc))
        raise
    except KeyboardInterrupt:
        raise
    finally:
        trial.set_user_attr("steps", doctor.steps)
        try:
            run = doctor.run()
            trial.set_user_attr("fingerprint", fingerprint(run))
            mark_fit(trial, run)
        except Exception:  # noqa: BLE001 - records for the identical-trials check and the leads, never a failure
            pass
        doctor.close()
    if value is None:
        if not doctor.values:
            raise TrainDoctorError("train_fn returned None and never called doctor.report(value): nothing to optimise")
        value = doctor.values[-1][1]
    value = float(value)
    verdict = doctor._sick.check(doctor.run(), finished=True) if doctor.prunes else None
    if verdict is not None:  # sick, though it ended before a second check: its number is not a result
        doctor.verdict, doctor.pruned_by = verdict, "doctor"
        _save(trial, doctor, "traindoctor: " + verdict.reason())
        raise optuna.TrialPruned("traindoctor: " + verdict.reason())
    if not math.isfinite(value):  # a non-finite objective: the doctor says why, the trial is pruned
        verdict = doctor._sick.check(doctor.run(), finished=True)
        reason = "traindoctor: " + verdict.reason() if verdict else f"the objective is {value}"
        doctor.verdict, doctor.pruned_by = verdict, "doctor" if verdict else "objective"
        _save(trial, doctor, reason)
        raise optuna.TrialPruned(reason)
    return value


def mark_fit(trial: Any, run: Run) -> None:
    """On a lead trial: whether its run overfit (the doctor's V001), which the next lead follows."""
    if trial.user_attrs.get("lead") is not None:
        trial.set_user_attr("overfit", overfit(run))


def _save(trial: Any, doctor: TrialDoctor, reason: str) -> None:
    trial.set_user_attr("pruned_by", doctor.pruned_by or "doctor")
    trial.set_user_attr("reason", reason)
    if doctor.verdict is not None:
        trial.set_user_attr("diagnosis", doctor.verdict.to_json())


def result_of(study: Any, url: str, params: list[Param], metric: str, notes: list[str], search: Search) -> TuneResult:
    rows = _rows(study)
    finals = _finals(study)
    fine = search.searched_fine_space() if any(r.stage == "coarse" for r in rows) and any(r.stage == "fine" for r in rows) else None
    best_params, best_value = None, None
    if finals:
        sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
        ok = [f for f in finals if f.values]
        if ok:
            top = min(ok, key=lambda f: sign * f.mean)
            best_params, best_value = top.params, top.mean
    if best_params is None:
        ranked = search.ranked()
        if ranked:
            best_params, best_value = dict(ranked[0].params), float(ranked[0].value)
    if finals and not any(len(set(f.values)) > 1 for f in finals if len(f.values) > 1):
        notes.append("the final re-runs gave identical values over seeds: the training fixes its own seed")
    probe = study.user_attrs.get("probe")
    probe = probe if isinstance(probe, dict) else None
    if probe is not None and probe.get("why"):
        notes.insert(0, str(probe["why"]))
    return TuneResult(study.study_name, url, study.direction.name.lower(), metric, params, fine, rows, finals,
                      best_params, best_value, notes, study, probe)
