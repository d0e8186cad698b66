"""``traindoctor.checkup``: test a training pipeline before spending days on it.

    report = traindoctor.checkup(model, train_loader, loss_fn, val_loader, optimizer)

reads the data (non-finite values with sample ids, scales, labels against the loss's domain —
before the loss crashes on them —, class balance, ordering, train/validation overlap), reads
the model (loss formula from the autograd graph, per-layer init scale, float16 headroom, custom
autograd functions) and runs short experiments (LR range test, overfit a tiny batch, fit one
repeated sample, short training for suspect labels, the input-independent baseline and the
train/eval gap, gradient check, shallow against deep when asked, bad-batch bisection). Every
measurement goes into a :class:`~traindoctor.run.Run` as events, series and metadata; the same
rules that judge a live run judge it, and the diagnosis ranks causes.

The checkup is a pipeline of phases — read the data → inspect the model → first loss →
probes — each handing its facts to the next (:func:`_checks`). The probes are the registered
objects of ``checks/probes/`` (one module each; the registry also gives the CLI its ``--skip``
names). The checkup keeps to a time budget (``budget_s``, default 60 s): one training step is
timed before the probes, each probe gets a share of the time left and is shortened or skipped
to fit, and the report has a ``budget:`` line for each probe cut and why.

The model, optimizer, RNGs and loaders' generators are left bitwise as they were: every probe
starts from the user's weights and is rolled back (``inspect/state.py``), and a final comparison
proves it (``report.restored``).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import torch
from torch import nn

from ..diagnosis import Diagnosis, NotJudged, diagnose
from ..errors import TrainDoctorError
from ..inspect.batches import Batch, BatchFn, Scan, _is_map_loader, read_batches, unpack
from ..inspect.crash import crash_event_data
from ..inspect.data import CLASS_LOSSES, DataProfile, Leakage
from ..inspect.losses import describe_loss
from ..inspect.lossgraph import read_loss_graph
from ..inspect.model import (
    init_scale,
    precision_facts,
)
from ..inspect.state import Snapshot, rolled_back
from ..inspect.trace import StepTrace
from ..losskinds import chance_loss
from ..numfmt import fmt
from ..run import Event, Run, Series
from .probes import (
    DEFAULT_PROBES,
    PROBES,
    REGISTRY,
    Budget,
    Pipeline,
    ProbeContext,
    bisect_nonfinite,
    initial_loss,
    progress,
    run_probe,
    shuffled_batches,
)
from .probes._base import one_line as _one_line

__all__ = ["DEFAULT_PROBES", "PROBES", "CheckupReport", "Options", "checkup", "checkup_script", "run_checkup"]

BUDGET_S = 60.0  # a checkup should cost a minute, not an epoch: the probes are scaled to fit


@dataclass
class Options:
    max_samples: int = 20000
    probe_samples: int = 2048
    steps: int = 300
    lr_start: float = 1e-7
    lr_end: float = 10.0
    lr_iters: int = 100
    probes: tuple[str, ...] = DEFAULT_PROBES
    shallow: nn.Module | str | None = None
    nonfinite_step: int | None = None
    amp_dtype: str | None = None
    seed: int = 0
    batch_fn: BatchFn | None = None
    val_optional: bool = False  # a validation loader that cannot be read is skipped, not an error
    budget_s: float | None = BUDGET_S  # seconds for the whole checkup; None: every probe at full length
    status: dict[str, Any] | None = None  # progress written here (phase, probe, done, total, t0): report/live.py


@dataclass
class ProbeLine:
    probe: str
    outcome: str
    ok: bool | None = None  # True passed, False found something, None information / not run


@dataclass
class CheckupReport:
    """The checkup's Run (every measurement), its Diagnosis and a line per check and probe."""

    run: Run
    diagnosis: Diagnosis
    lines: list[ProbeLine] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    restored: bool = True

    @property
    def findings(self) -> list[Any]:
        return self.diagnosis.findings

    @property
    def causes(self) -> list[Any]:
        return self.diagnosis.causes

    @property
    def healthy(self) -> bool:
        return self.diagnosis.healthy

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.diagnosis.findings]

    def finding(self, code: str) -> Any:
        return next((f for f in self.diagnosis.findings if f.code == code), None)

    @property
    def suggested_lr(self) -> float | None:
        e = self.run.events_of("lr_range_test")
        return e[0].data.get("suggested_lr") if e else None

    def to_json(self) -> dict[str, Any]:
        from ..findings import clean

        out = self.diagnosis.to_json()
        out["checkup"] = clean({
            "probes": [{"probe": p.probe, "ok": p.ok, "outcome": p.outcome} for p in self.lines],
            "not_checked": self.not_checked,
            "elapsed_s": round(self.elapsed_s, 2),
            "restored": self.restored,
            "lr_range": {k: v for k, v in (self.run.events_of("lr_range_test")[0].data.items()
                                           if self.run.events_of("lr_range_test") else [])},
        })
        return out

    def render(self, file: IO[str] | None = None, *, title: str = "traindoctor checkup", width: int | None = None) -> None:
        from .report import render_checkup

        render_checkup(self, file=file, title=title, width=width)

    def __repr__(self) -> str:
        return (f"CheckupReport(findings={self.codes}, causes={[c.id for c in self.causes[:3]]}, "
                f"suggested_lr={self.suggested_lr}, elapsed_s={self.elapsed_s:.1f})")


def _call(pipe: Pipeline, x: torch.Tensor, what: str = "model(inputs)") -> Any:
    """The model's output on ``x``, or a one-line error naming what the model raised and where."""
    try:
        with torch.no_grad():
            return pipe.forward(x)
    except TrainDoctorError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model failed: one line, not a traceback
        d = crash_event_data(exc)
        where = f" at {d['where']}" if d.get("where") else ""
        shape = f"tensor{list(x.shape)} of {str(x.dtype).replace('torch.', '')}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TrainDoctorError(
            f"{what} raised {d['type']}: {_one_line(d['message'])}{where} — the checkup calls the model on each "
            f"batch's inputs ({shape}) as the training loop would"
        ) from None


def checkup(
    model: nn.Module,
    train_loader: Iterable[Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    val_loader: Iterable[Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    batch_fn: BatchFn | None = None,
    probes: Iterable[str] | None = None,
    shallow: nn.Module | str | None = None,
    nonfinite_step: int | None = None,
    amp_dtype: str | torch.dtype | None = None,
    max_samples: int = 20000,
    probe_samples: int = 2048,
    steps: int = 300,
    budget_s: float | None = BUDGET_S,
    show: bool = True,
    file: IO[str] | None = None,
) -> CheckupReport:
    """Check a training pipeline before a long run; returns a :class:`CheckupReport`.

    ``train_loader`` (and ``val_loader``) yield ``(inputs, targets)`` batches (``batch_fn``
    adapts other layouts: ``batch_fn=lambda b: (b["image"], b["label"])``). ``optimizer`` is
    read, never stepped: the LR range test and the shallow/deep comparison use a fresh one of
    its class and settings (Adam when none is given). ``shallow="auto"`` (or a shallower
    ``nn.Module``) adds the shallow-against-deep comparison; ``nonfinite_step=K`` replays batch
    K of ``train_loader`` and names the samples that make the loss non-finite; ``amp_dtype``
    (``"float16"``/``"bfloat16"``) says the training will run in reduced precision.
    ``max_samples`` bounds the data read per split, ``probe_samples`` the samples kept for the
    experiments, ``steps`` the length of each short training. ``budget_s`` (default 60) is the
    time the whole checkup may take: one training step is timed first and the probes are
    shortened, or skipped, to fit; the report says which and why (``None``: no budget). Progress
    goes to stderr, one line per probe.

        >>> report = traindoctor.checkup(model, train_loader, nn.CrossEntropyLoss(), val_loader, optimizer)
        >>> report.codes, report.suggested_lr
    """
    if not isinstance(model, nn.Module):
        raise TrainDoctorError(f"checkup(model, ...) needs a torch.nn.Module, got {type(model).__name__}")
    if loss_fn is None or not callable(loss_fn):
        raise TrainDoctorError(
            f"checkup(..., loss_fn) needs a callable loss (an nn.Module like nn.CrossEntropyLoss() or a function "
            f"loss_fn(outputs, targets)), got {type(loss_fn).__name__}"
        )
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TrainDoctorError(f"checkup(..., optimizer) needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
    chosen = tuple(probes) if probes is not None else DEFAULT_PROBES
    unknown = [p for p in chosen if p not in PROBES]
    if unknown:
        raise TrainDoctorError(f"unknown probe(s) {unknown}; choose from {', '.join(PROBES)}")
    if shallow is not None and "depth" not in chosen:
        chosen = (*chosen, "depth")
    if isinstance(amp_dtype, torch.dtype):
        amp_dtype = str(amp_dtype).replace("torch.", "")
    if amp_dtype is not None and amp_dtype not in ("float16", "bfloat16"):
        raise TrainDoctorError(f"amp_dtype must be 'float16' or 'bfloat16', got {amp_dtype!r}")
    for name, v in (("max_samples", max_samples), ("probe_samples", probe_samples), ("steps", steps)):
        if not isinstance(v, int) or v < 1:
            raise TrainDoctorError(f"{name} must be a positive integer, got {v!r}")
    _check_budget(budget_s)
    pipe = Pipeline(model, loss_fn, optimizer, describe_loss(loss_fn))
    opts = Options(max_samples=max_samples, probe_samples=probe_samples, steps=steps, probes=chosen, shallow=shallow,
                   nonfinite_step=nonfinite_step, amp_dtype=amp_dtype, batch_fn=batch_fn, budget_s=budget_s)
    report = run_checkup(pipe, train_loader, val_loader, opts)
    if show:
        report.render(file=file or sys.stderr)
    return report


def _check_budget(budget_s: float | None) -> None:
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float))
                                 or not budget_s > 0 or not math.isfinite(budget_s)):
        raise TrainDoctorError(f"budget_s must be a positive number of seconds (or None for no budget), got {budget_s!r}")


class _Recorder:
    """Collects what the checks measure into a Run, and one line per check for the report."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.series: dict[str, Series] = {}
        self.meta: dict[str, Any] = {"mode": "checkup"}
        self.lines: list[ProbeLine] = []
        self.not_checked: list[str] = []
        self.notes: list[str] = []

    def event(self, kind: str, data: dict[str, Any], step: int = 0) -> None:
        self.events.append(Event(step, kind, data))

    def line(self, probe: str, outcome: str, ok: bool | None = None) -> None:
        self.lines.append(ProbeLine(probe, outcome, ok))

    def curve(self, name: str, values: list[float], steps: list[int] | None = None) -> None:
        if values:
            self.series[name] = Series(steps if steps is not None else list(range(len(values))), values)

    def run(self) -> Run:
        meta = dict(self.meta)
        if self.notes:
            meta["notes"] = list(self.notes)
        return Run(series=dict(self.series), events=list(self.events), meta=meta)


def run_checkup(pipe: Pipeline, train_loader: Iterable[Any], val_loader: Iterable[Any] | None, opts: Options,
                source: str | None = None, intro: list[ProbeLine] | None = None,
                missing: list[str] | None = None) -> CheckupReport:
    """The checkup proper, on a prepared :class:`Pipeline` (the API and the CLI both end here)."""
    t0 = time.perf_counter()
    _status(opts, t0=t0)
    rec = _Recorder()
    if source:
        rec.meta["source"] = source
    rec.lines += intro or []
    rec.not_checked += missing or []
    rec.notes += pipe.notes
    snapshot = Snapshot.take(pipe.model, pipe.optimizer, [train_loader, val_loader])
    try:
        with torch.random.fork_rng(devices=[]):
            _checks(pipe, train_loader, val_loader, opts, rec, snapshot, t0)
    finally:
        snapshot.restore()
    restored = snapshot.identical()
    if not restored:
        rec.notes.append("internal error: the model, optimizer or RNG state could not be restored bitwise")
    rec.notes += [n for n in pipe.notes if n not in rec.notes]
    run = rec.run()
    diag = diagnose(run)
    diag.not_judged = [NotJudged("checkup", n) for n in rec.not_checked]
    diag.source = {"source": source} if source else {}
    return CheckupReport(run, diag, rec.lines, rec.not_checked, time.perf_counter() - t0, restored)


def _data_summary(profile: DataProfile) -> str:
    """The few numbers worth a glance: input scale, class balance, classes per batch."""
    f = profile.facts()
    x, t = f.get("inputs") or {}, f.get("targets") or {}
    parts = []
    if "mean" in x and not str(x.get("dtype", "")).startswith(("int", "uint", "bool")):
        parts.append(f"inputs mean {fmt(x['mean'])}, std {fmt(x['std'])}")
    counts = (f.get("classes") or {}).get("counts") or {}
    live = [v for v in counts.values() if v > 0]
    if len(live) >= 2:
        parts.append(f"{len(live)} classes, most/least frequent {fmt(max(live) / min(live))}")
    elif t.get("kind") == "continuous" and "mean" in t:
        parts.append(f"targets mean {fmt(t['mean'])}, std {fmt(t['std'])}")
    o = f.get("order")
    if o:
        parts.append(f"{o['mean_classes_per_batch']:.2g} classes per batch (shuffled ≈ {o['expected_classes_per_batch']:.2g})")
    return "; " + "; ".join(parts) if parts else ""


def _domain_blocks_loss(rec: _Recorder) -> list[str]:
    """Label problems of the training split: the probes would crash on them or learn garbage."""
    out: list[str] = []
    for e in rec.events:
        if e.kind == "label_domain" and e.data.get("split") == "train" and e.data["problem"] not in out:
            out.append(e.data["problem"])
    return out


@dataclass
class DataFacts:
    """What the data phase found and the later phases use: the training split's profile and the
    samples kept (prepared, on the model's device) for the model checks and the probes."""

    profile: DataProfile
    kept: list[Batch]
    raw_target_dtype: str | None = None


def _checks(pipe: Pipeline, train_loader: Any, val_loader: Any, opts: Options, rec: _Recorder,
            snapshot: Snapshot, t0: float | None = None) -> None:
    """The checkup as a pipeline of phases, each handing its facts to the next.

    read the data → inspect the model → first loss → probes. A phase that finds the next one
    cannot run meaningfully (labels the loss would crash on, a loss that raised, no finite
    sample) has recorded why, and the pipeline stops there: what was measured is still judged.
    """
    _record_setup(pipe, rec)
    _status(opts, phase="reading the data")
    data = _read_data(pipe, train_loader, val_loader, opts, rec, snapshot)
    _status(opts, phase="inspecting the model")
    prec = _inspect_model(pipe, data, opts, rec, snapshot)
    _status(opts, phase="the first loss")
    if not _loss_phase(pipe, data, prec, opts, rec, snapshot):
        return
    batches = _probe_batches(data, opts, rec)
    if batches is None:
        return
    pbatches, clean = batches
    ctx = ProbeContext(pipe, pbatches, clean, rec, snapshot, opts, data.profile.out_shape, train_loader)
    _probes(ctx, t0 if t0 is not None else time.perf_counter())


def _status(opts: Options, **progress: Any) -> None:
    if opts.status is not None:
        opts.status.update(progress)


def _record_setup(pipe: Pipeline, rec: _Recorder) -> None:
    """The loss, optimizer and model as configured, into the Run's metadata (the rules read them)."""
    model = pipe.model
    info = pipe.loss_info
    rec.meta["loss"] = {k: v for k, v in info.items() if v is not None}
    if info.get("kind"):
        rec.meta["loss_kind"] = info["kind"]
    if pipe.optimizer is not None:
        g = pipe.optimizer.param_groups[0]
        rec.meta["optimizer"] = {"class": type(pipe.optimizer).__name__,
                                 **{k: v for k, v in g.items() if k != "params" and isinstance(v, (int, float, bool, str))}}
        if isinstance(g.get("lr"), (int, float)):
            rec.meta["lr"] = float(g["lr"])
    rec.meta["models"] = [{"class": type(model).__name__,
                           "parameters": int(sum(p.numel() for p in model.parameters())),
                           "trainable": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}]

def _read_data(pipe: Pipeline, train_loader: Any, val_loader: Any, opts: Options, rec: _Recorder,
               snapshot: Snapshot) -> DataFacts:
    """Data phase: read the splits (non-finite values, scales, labels against the loss, balance,
    order, train/validation overlap) and keep ``probe_samples`` samples for the later phases."""
    model = pipe.model
    info = pipe.loss_info
    state: dict[str, Any] = {}

    def sampler_name(loader: Any) -> str | None:
        s = getattr(loader, "sampler", None)
        return type(s).__name__ if s is not None else None

    def on_train(b: Batch, i: int) -> None:
        b = pipe.prepare(b)
        if i == 0:
            model.train()
            with rolled_back(snapshot, opts.seed):
                out = _call(pipe, b.x)
            state["out"] = out
            out_shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
            if out_shape is None:
                rec.not_checked.append("the model's output is not a tensor: labels not checked against the loss")
            state["profile"] = DataProfile("train", info.get("kind"), out_shape, info.get("ignore_index"),
                                           ids_kind=state["ids_kind"], sampler=sampler_name(train_loader))
            if val_loader is not None:
                state["leak"] = Leakage()
        state["profile"].update(b)
        if "leak" in state:
            state["leak"].add_train(b)

    state["ids_kind"] = "dataset indices" if _is_map_loader(train_loader) else "positions"
    scan: Scan = read_batches(train_loader, "train_loader", batch_fn=opts.batch_fn, max_samples=opts.max_samples,
                              keep_samples=opts.probe_samples, on_batch=on_train)
    profile: DataProfile = state["profile"]
    kept = [pipe.prepare(b) for b in scan.kept]
    out_shape = profile.out_shape
    rec.meta["batch_size"] = profile.batch_size
    if info.get("kind") in CLASS_LOSSES and out_shape:
        rec.meta["num_classes"] = int(out_shape[0])
    for kind, data in profile.events():
        rec.event(kind, data)
    read_what = f"{scan.samples_read} samples in {scan.batches_read} batches"
    if not scan.exhausted:
        read_what += f" (stopped at max_samples={opts.max_samples})"
        rec.not_checked.append(f"train_loader read up to {scan.samples_read} samples (max_samples); the rest unchecked")
    rec.line("data: train", read_what + _data_summary(profile), None)
    if val_loader is not None:
        vp = DataProfile("val", info.get("kind"), out_shape, info.get("ignore_index"),
                         ids_kind="dataset indices" if _is_map_loader(val_loader) else "positions",
                         sampler=sampler_name(val_loader))
        leak: Leakage = state["leak"]

        def on_val(b: Batch, i: int) -> None:
            b = pipe.prepare(b)
            vp.update(b)
            leak.add_val(b)

        try:
            vscan = read_batches(val_loader, "val_loader", batch_fn=opts.batch_fn, max_samples=opts.max_samples,
                                 keep_samples=0, on_batch=on_val)
        except TrainDoctorError as exc:
            if not opts.val_optional:
                raise
            rec.not_checked.append(f"validation data skipped ({exc}): leakage (D006) not checked")
        else:
            for kind, data in vp.events():
                rec.event(kind, data)
            rec.event(*leak.event())
            rec.line("data: validation", f"{vscan.samples_read} samples; {leak.duplicates} also in the training data",
                     None)
    elif not any("validation" in m for m in rec.not_checked):
        rec.not_checked.append("no val_loader: train/validation leakage (D006) not checked")
    if profile.y_kind == "continuous":
        t = profile.facts()["targets"]
        if "rms" in t:
            rec.meta["target_sq_mean"] = t["rms"] ** 2
            rec.meta["target_var"] = t["std"] ** 2

    return DataFacts(profile, kept, scan.raw_target_dtype)


def _inspect_model(pipe: Pipeline, data: DataFacts, opts: Options, rec: _Recorder,
                   snapshot: Snapshot) -> dict[str, Any]:
    """Model phase: per-layer init scale and float16 headroom on the first kept batch; returns
    the precision facts, which the loss phase completes and records."""
    model = pipe.model
    first = data.kept[0]
    with rolled_back(snapshot, opts.seed):
        model.train()
        rec.event("init_scale", init_scale(model, lambda: pipe.forward(first.x)))
    with rolled_back(snapshot, opts.seed):
        model.train()
        prec = precision_facts(model, lambda: pipe.forward(first.x), declared=opts.amp_dtype)
    prec["loss_reduction"] = pipe.loss_info.get("reduction")
    prec["batch_size"] = len(first)

    return prec


def _loss_phase(pipe: Pipeline, data: DataFacts, prec: dict[str, Any], opts: Options, rec: _Recorder,
                snapshot: Snapshot) -> bool:
    """First-loss phase: whether the loss can be computed on these labels, its first value, its
    graph; False when the probes cannot run (the reason is in ``rec.not_checked``)."""
    info = pipe.loss_info
    blocked = _domain_blocks_loss(rec)
    loss_ok = pipe.loss_fn is not None and not blocked
    if blocked:
        rec.not_checked.append(
            f"loss-based probes skipped: the labels do not fit {info.get('name')} ({', '.join(blocked)}), "
            "so computing the loss would crash or learn from garbage (see D004)")
    if pipe.loss_fn is None:
        rec.not_checked.append("no loss function: loss-based checks and probes skipped (pass loss_fn= to the API)")
    if loss_ok:
        loss_ok = _first_loss(pipe, data.kept, data.kept[0], rec, snapshot, opts, prec, data.profile,
                              data.raw_target_dtype)
    rec.event("precision", prec)
    return loss_ok


def _probe_batches(data: DataFacts, opts: Options, rec: _Recorder) -> tuple[list[Batch], list[Batch]] | None:
    """The probes' batches: the kept finite samples, reshuffled into batches of the loader's size
    (``(pbatches, clean)``), or None when fewer than two finite samples are left."""
    # probes run on finite samples only: the non-finite ones are reported, not trained on
    clean: list[Batch] = []
    dropped = 0
    for b in data.kept:
        okx = torch.isfinite(b.x.reshape(len(b), -1)).all(1) if b.x.is_floating_point() else torch.ones(len(b), dtype=torch.bool, device=b.x.device)
        oky = torch.isfinite(b.y.reshape(len(b), -1)).all(1) if b.y.is_floating_point() else torch.ones(len(b), dtype=torch.bool, device=b.y.device)
        ok = (okx & oky).cpu()
        if bool(ok.all()):
            clean.append(b)
        elif bool(ok.any()):
            clean.append(b.select(ok.nonzero().flatten()))
            dropped += int((~ok).sum())
        else:
            dropped += len(b)
    if dropped:
        rec.notes.append(f"the probes ran on the finite samples only ({dropped} samples with NaN/Inf left out)")
    if not clean:
        rec.not_checked.append("no finite samples: probes skipped")
        return None
    batch_size = data.profile.batch_size or 32
    pbatches = shuffled_batches(clean, batch_size, seed=opts.seed)
    if not pbatches:
        rec.not_checked.append("fewer than 2 finite samples: probes skipped")
        return None

    return pbatches, clean


def _first_loss(pipe: Pipeline, kept: list[Batch], first: Batch, rec: _Recorder, snapshot: Snapshot, opts: Options,
                prec: dict[str, Any], profile: DataProfile, raw_target_dtype: str | None = None) -> bool:
    """Initial loss (L009), the loss graph (M001/M002), bisection of non-finite batches."""
    info = pipe.loss_info
    with rolled_back(snapshot, opts.seed):
        pipe.model.train()
        try:
            # the same first-step trace as a live run (watch/trace.py): M008, M009, M010, hand-written M002
            trace = StepTrace()
            trace.start(pipe.model, [first.x], inside=False)
            try:
                with torch.enable_grad():
                    loss = pipe.batch_loss(first)
            finally:
                trace.stop()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TrainDoctorError(
                    f"loss_fn(outputs, targets) returned {type(loss).__name__}"
                    f"{list(loss.shape) if isinstance(loss, torch.Tensor) else ''}; expected a scalar tensor")
            try:
                facts = trace.facts(loss)
            finally:
                trace.release()
            if raw_target_dtype and raw_target_dtype.startswith(("int", "uint")):
                # the loader gave integer labels; the script's own `y.float()` ran as batch preparation,
                # before the traced step: say so, as a live run's trace would have seen it
                for lf in facts.get("losses") or []:
                    t = lf.get("target") or {}
                    if str(t.get("dtype", "")).startswith(("float", "bfloat", "half")) and "cast_from" not in t:
                        t["cast_from"] = raw_target_dtype
            rec.event("model_graph", facts)
            meta, evs = read_loss_graph(loss, [pipe.model]) if loss.grad_fn is not None else ({}, [])
        except TrainDoctorError:
            raise
        except Exception as exc:  # noqa: BLE001 - a crash in the loss is evidence (D004), not our failure
            d = crash_event_data(exc)
            rec.event("crash", d)
            rec.not_checked.append(f"loss-based probes skipped: the loss raised {d['type']}: {_one_line(d['message'], 120)}")
            return False
    for k in ("loss_kind", "num_classes", "loss_graph"):
        if k in meta and k not in rec.meta:
            rec.meta[k] = meta[k]
    if not info.get("kind") and meta.get("loss_kind"):
        info["kind"] = meta["loss_kind"]
        rec.notes.append(f"loss kind read off the autograd graph: {meta['loss_kind']}")
        if meta["loss_kind"] in CLASS_LOSSES and profile.out_shape:
            rec.meta["num_classes"] = int(profile.out_shape[0])
    for kind, data in evs:
        rec.event(kind, data)
    prec["loss_value"] = float(loss.detach())
    with rolled_back(snapshot, opts.seed):
        il = initial_loss(pipe, kept)
    rec.series["loss"] = Series([0], [il["mean"]])
    expected = None
    c = rec.meta.get("num_classes")
    kind = rec.meta.get("loss_kind")
    expected = chance_loss(kind, c)
    if expected is None and kind == "mse" and "target_sq_mean" in rec.meta:
        expected = (rec.meta["target_sq_mean"], "mean(y²)")
    exp_txt = f" (a fresh model gives ≈ {expected[1]} = {fmt(expected[0])})" if expected else ""
    rec.line("initial loss", f"{fmt(il['mean'])} over {il['batches']} batches{exp_txt}", None)
    if not il["all_finite"]:
        with rolled_back(snapshot, opts.seed):
            bad = next(b for b, v in zip(kept, il["values"]) if not math.isfinite(v))
            res = bisect_nonfinite(pipe, bad)
        _record_bisect(rec, res, il["mean"], step=0)
    return True


def _record_bisect(rec: _Recorder, res: dict[str, Any], value: float, step: int) -> None:
    """Bisection results in the live monitor's ``nonfinite_loss`` schema (read by L001, D001, A004)."""
    data: dict[str, Any] = {"value": value, "bisect": res, "source": "checkup"}
    reasons = res.get("reasons", {})
    if reasons.get("inputs"):
        ids = reasons["inputs"]
        data["input_nonfinite"] = {"tensor": "inputs", "positions": [], "count": len(ids), "batch_size": res["batch_size"],
                                   "sample_ids": ids}
    elif reasons.get("output") and res.get("first_module"):
        fm = dict(res["first_module"])
        fm.update({"sample_ids": reasons["output"], "positions": [], "count": len(reasons["output"])})
        data["first_module"] = fm
    elif res.get("count"):
        data["in_loss"] = True
    rec.event("nonfinite_loss", data, step=step)
    who = res.get("sample_ids", [])
    rec.line("bad-batch bisection",
             f"batch at step {step}: loss {value}; {res.get('count', 0)} sample(s) responsible {who[:10]} "
             f"({', '.join(f'{k}: {len(v)}' for k, v in reasons.items())}; {res.get('evaluations')} evaluations)",
             False if who else None)


def _time_step(pipe: Pipeline, pbatches: list[Batch], snapshot: Snapshot, seed: int) -> float:
    """Seconds of one training step (forward, backward, Adam step) on a probe batch.

    Three steps, the fastest of the last two kept: the first pays for allocation and lazy
    initialisation. The probes' lengths are budgeted in these steps.
    """
    times: list[float] = []
    with rolled_back(snapshot, seed):
        pipe.model.train()
        opt, _ = pipe.make_optimizer(None, like_user=False)
        for i in range(3):
            b = pbatches[i % len(pbatches)]
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = pipe.batch_loss(b)
            if isinstance(loss, torch.Tensor) and loss.requires_grad and math.isfinite(float(loss.detach())):
                loss.backward()
                opt.step()
            if pipe.device.type == "cuda":
                torch.cuda.synchronize(pipe.device)
            times.append(time.perf_counter() - t)
    return min(times[1:])


def _probes(ctx: ProbeContext, t0: float) -> None:
    """The probes phase: every enabled probe of the registry, in order, within the budget."""
    chosen = [p for p in REGISTRY.values() if p.enabled(ctx)]
    if not chosen:
        return
    opts, rec = ctx.opts, ctx.rec
    budget = None
    if opts.budget_s is not None:
        budget = Budget(float(opts.budget_s), t0)
        if any(p.scalable for p in chosen):
            _status(opts, phase="timing one training step")
            budget.step_s = _time_step(ctx.pipe, ctx.pbatches, ctx.snapshot, opts.seed)
            rec.meta["budget"] = {"seconds": budget.seconds, "step_s": budget.step_s,
                                  "left_for_probes_s": round(budget.left(), 3)}
            progress(f"one training step ≈ {fmt(budget.step_s * 1e3)} ms; {max(0.0, budget.left()):.0f} s of the "
                     f"{budget.seconds:g} s budget left for {len(chosen)} probe(s)")
    for i, probe in enumerate(chosen):
        _status(opts, probe=probe.title, done=i, total=len(chosen))
        run_probe(probe, ctx, budget, chosen[i + 1:])
    _status(opts, done=len(chosen), phase="diagnosing")


def _batch_at_step(loader: Any, step: int, batch_fn: BatchFn | None) -> Batch:
    """The batch a training loop over ``loader`` meets at optimizer step ``step`` (0-based).

    The loader is iterated as the training iterates it (its own sampler and generator, epoch
    after epoch), so with a seeded loader and the checkup run where training starts it is the
    very batch; indices come from the loader's index fetch.
    """
    if step < 0:
        raise TrainDoctorError(f"nonfinite_step must be ≥ 0, got {step}")
    seen = 0
    while True:
        it = iter(loader)
        ids_q: list[Any] = []
        orig = getattr(it, "_next_index", None)
        if orig is not None and getattr(loader, "num_workers", 0) == 0:
            def wrapped(orig: Any = orig, ids_q: list[Any] = ids_q) -> Any:
                idx = orig()
                ids_q.append(idx)
                return idx

            it._next_index = wrapped  # type: ignore[attr-defined]
        got = False
        for item in it:
            got = True
            if seen == step:
                x, y = unpack(item, step, "train_loader", batch_fn)
                idx = ids_q[-1] if ids_q else None
                ids = [int(i) for i in idx] if isinstance(idx, (list, tuple)) and len(idx) == x.shape[0] else \
                    list(range(x.shape[0]))
                return Batch(x, y, ids)
            seen += 1
        if not got:
            raise TrainDoctorError("train_loader yielded no batches; expected at least one (inputs, targets) batch")


def checkup_script(
    script: str,
    args: list[str],
    *,
    probes: Iterable[str] | None = None,
    shallow: bool = False,
    nonfinite_step: int | None = None,
    amp_dtype: str | None = None,
    max_samples: int = 20000,
    probe_samples: int = 2048,
    steps: int = 300,
    budget_s: float | None = BUDGET_S,
    status: dict[str, Any] | None = None,
) -> CheckupReport:
    """``traindoctor checkup SCRIPT [ARGS]``: run the script to its first loss, check what it built.

    The script is stopped before its first loss is computed (so labels that would crash the
    loss are checked first), the checkup runs on the model, loss, optimizer and loaders found,
    and the training itself never runs. What could not be found is listed in the report.
    ``status``: a dict the checkup writes its progress into (``report/live.py`` shows it).
    """
    from .discover import run_to_first_loss

    _check_budget(budget_s)
    chosen = tuple(probes) if probes is not None else DEFAULT_PROBES
    if shallow and "depth" not in chosen:
        chosen = (*chosen, "depth")
    found, _disc = run_to_first_loss(script, args)
    model = found.model
    assert model is not None
    info = describe_loss(found.loss_fn) if found.loss_fn is not None else {"name": None, "kind": None}
    pipe = Pipeline(model, found.loss_fn, found.optimizer, info, output_fn=found.output_fn, notes=list(found.notes))
    intro = [
        ProbeLine("found: model", f"`{found.model_name or '?'}` ({type(model).__name__}, "
                                  f"{sum(p.numel() for p in model.parameters()):,} parameters)"),
        ProbeLine("found: loss", found.loss_how or "?"),
        ProbeLine("found: optimizer", f"{type(found.optimizer).__name__} lr {fmt(found.optimizer.param_groups[0].get('lr'))}"
                  if found.optimizer is not None else "none"),
        ProbeLine("found: training data", found.train_how),
    ]
    if found.val_loader is not None:
        intro.append(ProbeLine("found: validation data", found.val_how))
    if found.where:
        intro.append(ProbeLine("stopped at", f"{found.where} (the first loss; the training step never ran)"))
    opts = Options(max_samples=max_samples, probe_samples=probe_samples, steps=steps, probes=chosen,
                   shallow="auto" if shallow else None, nonfinite_step=nonfinite_step, amp_dtype=amp_dtype,
                   batch_fn=found.batch_fn, val_optional=True, budget_s=budget_s, status=status)
    return run_checkup(pipe, found.train_loader, found.val_loader, opts, source=str(script), intro=intro,
                       missing=list(found.missing))
