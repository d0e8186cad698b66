"""The healer: ``Doctor(model, optimizer, heal=True)`` treats the run while it trains.

Watching tells the user what went wrong after the compute is spent; the healer acts at the step the
symptom appears, with the same evidence a diagnosis would use, and records every act in the Run so the
report shows what was done and why:

* a non-finite loss (L001), a loss ten times the highest of the last healthy ones or ten times the loss
  before any update (L002), a loss pinned at float32's log clamp for three steps (L008), a non-finite or
  exploding gradient (G003, G001): roll back to the last good snapshot and treat the leading cause:
  lr-too-high (LR ×0.1, or less in the first steps when the trajectory's first update moved the weights
  by more than their size: the dose that brings that step under a tenth of their norm; when it comes back,
  also a linear warm-up; when the schedule raised the LR ten times or more just before, the LR held at its
  level before the raise instead), exploding-gradient (clip
  the gradient norm at the 90th percentile of recent healthy steps), nonfinite-data (skip the batch,
  quarantine its rows; a GradScaler gets its scale back, so poisoned batches cannot halve it to nothing);
* updates the size of the weights (G004's evidence on the healer's own samples of ‖Δw‖/‖w‖, dense in
  the first steps): roll back to before them, LR × the dose the measured ratio asks for;
* a schedule that raised the LR ten times or more, with the loss rising after it (L003): roll back to
  before the raise and hold the LR at its level before it (the schedule carries on under the cap);
* a classification loss back at chance after it had learned (L007, a collapse): roll back to before it,
  and treat the leading blow-up cause;
* a step whose update a GradScaler skipped (inf/NaN gradients) is judged as a step whose update was
  dropped: a run whose every step is skipped is still seen;
* a stalled loss (L006, the rule's test on chunk medians): LR ×0.5, at most every ``stall_every`` steps;
* with ``arch`` (--heal=arch): a dead ReLU becomes a LeakyReLU, sigmoid/tanh with vanishing gradients
  become ReLUs with a fresh start, and an output sigmoid pinned at 0/1 under BCELoss while the loss is
  no better than chance becomes a ``SaturationSafeSigmoid`` (BCEWithLogitsLoss's gradient, same outputs);
* overfitting (V001: ``val_loss`` not better than its best for ``patience`` evaluations): keep the
  best-validation weights, set ``should_stop``, restore them on ``restore_best()`` or at close.

The leading cause is read from the run's own evidence at that moment: a batch whose inputs hold NaN/Inf
is nonfinite-data; otherwise the project's diagnosis of the Run recorded so far is asked (only when a
symptom fires) and its highest-ranked treatable cause is taken; without one, a gradient symptom, or a
gradient norm that grew while the loss did not, is exploding-gradient, and anything else lr-too-high.

It never loops: each cause is treated ``max_treatments`` times at most (nonfinite-data: ``max_skips``
poisoned batches in a row); a cause whose treatments did not hold hands over to the next blow-up cause
the run's facts allow (lr-too-high, exploding-gradient); past them all the run is rolled back to its
last good state once more, healing stops, ``should_stop`` is set and a ``heal_stopped`` event says why.

Cost, per step with ``heal=True``: the loss is read once as a number (a device sync on an accelerator),
and an optimizer pre-hook takes the global gradient norm with one fused ``torch._foreach_norm`` (on the
CPU it is read there too, so that a non-finite update is dropped before it applies; on an accelerator it
is read with the loss, in the same transfer); a model with BatchNorm has its running statistics copied
(one fused copy) before each training forward. Every ``every`` healthy steps a snapshot copies the
parameters, buffers and optimizer state (``snapshot.py``): measured on 2 CPU threads, 2 ms for a 0.66 M
parameter MLP under Adam (a step of batch 256 takes 10 ms) and 15 ms for 8.9 M parameters (a step: 104 ms),
so ≈ 0.3 % of the run at the default period of 50; 220 ms when written to disk. Observe mode
(``heal=False``) builds none of this.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..diagnosis import diagnose
from ..losskinds import chance_loss
from ..run import Run
from .snapshot import DEFAULT_MEMORY_LIMIT, SnapshotStore, TrainingState, model_tensors
from .treatments import (
    CapLR,
    ClipGradients,
    Controls,
    Float32Forward,
    LowerLR,
    SaturationSafeSigmoid,
    SkipBatch,
    Treatment,
    WarmUp,
    nonfinite_rows,
    sample_ids,
    scale_lr,
)
from .verify import Fix, Verification, WindowRecorder, candidates, verify

# a loss pinned here is a probability that underflowed float32 (−ln FLT_MIN, −ln of the subnormal minimum)
SATURATED = (87.3365, 103.2789)
# optimizer state that marks a per-weight adaptive step (Adam/AdamW/NAdam/RAdam, RMSprop, Adagrad,
# Adadelta, Adamax): its first step is ±lr everywhere, whatever the gradient
ADAPTIVE = ("exp_avg_sq", "square_avg", "sum", "acc_delta", "exp_inf")
# what a blow-up of the loss or the gradients can be treated as
BLOWUP_CAUSES = ("lr-too-high", "exploding-gradient", "nonfinite-data", "precision-overflow")


def swap_modules(model: nn.Module, names: list[str], make: Callable[[nn.Module], nn.Module]) -> Callable[[], None]:
    """Each module named in ``names`` replaced on ``model`` by ``make(old)``; returns what puts them back."""
    done: list[tuple[nn.Module, str, nn.Module]] = []
    for n in names:
        parent_name, _, attr = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        new = make(old)
        new.train(old.training)
        setattr(parent, attr, new)
        done.append((parent, attr, old))

    def undo() -> None:
        for parent, attr, old in reversed(done):
            setattr(parent, attr, old)

    return undo


def kaiming(layers: list[nn.Module]) -> None:
    """Weight layers initialised again for ReLU: Kaiming normal, zero bias (in place)."""
    with torch.no_grad():
        for m in layers:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def _fresh(opt: torch.optim.Optimizer) -> bool:
    """No step taken from this optimizer state: none kept, or (Adagrad builds its state when it is
    made) every parameter's ``step`` still 0. Read once per trajectory."""
    steps = [st.get("step") for st in opt.state.values()]
    return all(s is None or float(s) == 0 for s in steps)


@dataclass
class HealPolicy:
    """The healer's settings. The defaults suit runs of a few hundred steps or more."""

    every: int = 50  # a last-known-good snapshot every this many healthy steps
    memory_limit: int = DEFAULT_MEMORY_LIMIT  # bytes: a larger snapshot goes to a private temp dir
    max_treatments: int = 3  # per cause; past it healing stops and should_stop is set
    max_skips: int = 10  # poisoned batches in a row before healing stops (skipping one loses nothing)
    lr_factor: float = 0.1  # lr-too-high
    warmup_steps: int = 100  # when lr-too-high comes back after a lower LR
    clip_percentile: float = 90.0  # exploding-gradient
    diverge_ratio: float = 10.0  # a loss this many times the highest of the last 20 healthy ones diverges (L002)
    explode_ratio: float = 100.0  # a gradient norm this many times the recent healthy median explodes (G001)
    stall_window: int = 200  # steps without progress that make a stall (L006)
    stall_every: int = 200  # at most one LR halving per this many steps
    stall_factor: float = 0.5
    patience: int = 5  # validation evaluations rising in a row, above the best, before overfitting is called
    overfit_margin: float = 0.1  # ... each at least this far (relative) above the best validation loss
    freeze_on_overfit: bool = False  # zero-code: keep the best weights and drop later updates, not stop
    verify_budget: float = 0.1  # --verify: replays may take this fraction of the run's time so far
    arch: bool = False  # --heal=arch: repairs that change the model (dead ReLUs → LeakyReLU)
    dead_bar: float = 0.5  # a ReLU module with this fraction of dead units ...
    dead_samples: int = 3  # ... on this many sampled steps in a row is replaced (A001's bar, sustained)
    dead_reinit: float = 0.9  # ... and at this fraction dead, the weight layers feeding it are initialised again
    leaky_slope: float = 0.01
    # --heal=arch, vanishing gradients (G002's evidence on the healer's own samples, every
    # ``vanish_every`` updates): RMS gradient of the first weight layer below ``vanish_bar`` × the last's
    # on ``vanish_samples`` samples in a row, with at least three weight layers
    vanish_every: int = 25
    vanish_bar: float = 1e-3
    vanish_samples: int = 3
    # updates the size of the weights (G004's evidence, measured by the healer on its own samples): the
    # update/weight ratio ‖Δw‖/‖w‖ (median over weight matrices) every ``ratio_every_early`` updates for
    # the first ``ratio_early``, then every ``ratio_every``; G004's bars: ≥ 0.5 on two samples, or > 3e-2
    # on the last three samples past the early phase (not G004's first-step bar: an adaptive optimizer's
    # first step moves small weights by several times their norm in runs that train well)
    ratio_early: int = 50
    ratio_every_early: int = 5
    ratio_every: int = 25
    ratio_big: float = 0.5
    ratio_high: float = 3e-2
    ratio_under: float = 0.2  # the LR is scaled by (this × the bar crossed) / measured ratio (×0.01 to ×0.1)
    first_target: float = 0.1  # after an early blow-up, the first update's ratio the new LR must bring it under
    # the schedule raised the LR (≥ ``rise`` × within the last ``rise_window`` steps) and the loss rose with
    # it (the median since the raise ≥ ``rise_harm`` × the median before): hold the LR at its level before
    rise: float = 10.0
    # a classification loss back at chance (median of 20 ≥ collapse_high × ln C) after learning
    # (a median of 20 ≤ collapse_low × ln C within the last rise_window steps): L007, a collapse
    collapse_high: float = 0.9
    collapse_low: float = 0.6
    rise_window: int = 200
    rise_harm: float = 2.0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"heal_every must be a positive number of steps, got {self.every}")
        if not (self.verify_budget > 0 and math.isfinite(self.verify_budget)):
            raise ValueError(f"verify_budget must be a positive fraction of the run's time, got {self.verify_budget}")


class Healer:
    """Treats one model and optimizer (with their schedulers and GradScaler) from inside the loop."""

    def __init__(self, monitor: Any, model: nn.Module, optimizer: torch.optim.Optimizer, schedulers: list[Any],
                 scaler: Any, policy: HealPolicy, run_record: Callable[[], Run], *,
                 recorder: WindowRecorder | None = None,
                 quiet: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        self.monitor = monitor
        # --verify: the steps since the last snapshot (references), and how to keep the watcher out of a replay
        self.recorder = recorder
        self._quiet = quiet
        self._replaying = False
        self._born = time.perf_counter()
        self.verify_seconds = 0.0
        self.model = model
        self.optimizer = optimizer
        self.policy = policy
        self._run_record = run_record
        self.ctl = Controls(optimizer, schedulers)
        self.store = SnapshotStore(model, optimizer, schedulers, scaler, policy.memory_limit)
        self.treatments: list[dict[str, Any]] = []
        self.stopped: dict[str, Any] | None = None  # the heal_stopped event, once healing gave up
        self.should_stop = False
        self.alive = True  # False once the healer itself failed (contained, reported once)
        self._counts: dict[str, int] = {}
        self._losses: deque[float] = deque(maxlen=20)  # recent healthy losses: the divergence reference
        self._grad_norm: torch.Tensor | None = None  # this step's, from the pre-hook
        self._norm_read: float | None = None  # ... already read (CPU)
        self._dropped = False  # this step's update was dropped before it applied
        self._healthy = 0
        self._suspect: TrainingState | None = None  # the snapshot last rolled back to
        self._skip_run, self._last_skip = 0, -2
        self._warm_lrs: list[Any] | None = None  # the groups' LRs, put back after a step that changed them
        # (step, first group's LR, the highest LR the run had used before that step)
        self._lr_hist: deque[tuple[int, float, float]] = deque(maxlen=self.policy.rise_window)
        self._lr_peak = 0.0
        self._lr_vals: deque[float] = deque(maxlen=self.policy.rise_window)  # the same LRs alone
        self._loss_hist: deque[tuple[int, float]] = deque(maxlen=self.policy.rise_window)  # (step, healthy loss)
        self._chunk: list[float] = []
        self._medians: list[float] = []
        self._start: float | None = None
        self._last_stall: int | None = None
        self._best_val = math.inf
        self._best: TrainingState | None = None
        self._since_best = 0
        self._prev_val = math.inf
        self._train_at_best = math.nan
        self.frozen = False  # past overfitting in zero-code mode: the best weights kept, updates dropped
        self.overfitting = False
        self._said: dict[str, int] = {}  # live lines said per cause
        self._spiked = False  # the last step's gradient norm spiked (G001 if the loss now shows harm)
        self._bad_rows: list[int] = []  # rows of a poisoned batch seen at a backward since the last step
        self._dead_runs: dict[str, int] = {}  # ReLU module → consecutive sampled steps at or above the bar
        self._replaced: set[str] = set()
        self._vanish_run = 0  # samples in a row with vanishing gradients (--heal=arch)
        self._swapped_squash = False  # the saturating activations were swapped once
        self._pending_swaps: list[tuple[int, str, float]] = []
        self._arch_verdicts: dict[str, dict[str, Any]] = {}  # --verify: a pending repair's replay verdict
        self._pending_squash: tuple[int, float, dict[str, Any] | None] | None = None  # (step, ratio, verdict)
        self._pinned = 0  # steps in a row with the loss at a float32 log clamp
        self._first_ratio: float | None = None  # ‖Δw‖/‖w‖ of this trajectory's first update
        self._fresh_start = False  # ... which started from an empty optimizer state
        self._loaded: bool | None = None  # weights loaded before training (read once, at the first measured update)
        self._scale_ok: torch.Tensor | None = None  # the GradScaler's scale at the last healthy step
        self._start_loss: float | None = None  # the first healthy loss: a loss ten times it diverged (L002)
        self._updates = 0  # optimizer updates since the start or the last update-size treatment
        self._ratio_params: list[torch.Tensor] | None = None  # the weight matrices whose ratio is measured
        self._ratio_before: tuple[list[torch.Tensor], list[torch.Tensor], int, bool] | None = None
        self._ratios: list[tuple[int, float]] = []  # (step, median ratio) since the last treatment
        self._big_updates: tuple[int, float, float, str] | None = None  # (from step, ratio, bar, why): at on_step
        self._handles = [optimizer.register_step_pre_hook(self._hook(self._pre_step)),
                         optimizer.register_step_post_hook(self._hook(self._post_step))]
        # BatchNorm running statistics, copied before each training forward: a poisoned batch writes NaN
        # into them before any optimizer hook runs, and with this copy skipping it needs no rollback
        self._bn_live = [t for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                         for t in (m.running_mean, m.running_var, m.num_batches_tracked) if t is not None]
        self._bn_saved = [t.clone() for t in self._bn_live]
        if self._bn_live:
            self._handles.append(model.register_forward_pre_hook(
                lambda module, args: self.guarded(self._before_forward, module)))

    @property
    def active(self) -> bool:
        """Still treating: alive and not given up."""
        return self.alive and self.stopped is None

    @property
    def quarantined(self) -> list[int]:
        return list(self.ctl.quarantined)

    # containment -------------------------------------------------------------------------------

    def _contain(self, exc: BaseException) -> None:
        self.alive = False
        self.monitor.contain("heal", exc)

    def guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn``; a failure of the healer turns it off and is reported once, training goes on."""
        if not self.alive:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the doctor must never break the run
            self._contain(exc)
            return None

    def _hook(self, fn: Callable[[torch.optim.Optimizer], None]) -> Callable[..., None]:
        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if not self._replaying:  # a verifying replay trains the model as it was, untreated
                self.guarded(fn, opt)

        return hook

    # the optimizer step ------------------------------------------------------------------------

    def _pre_step(self, opt: torch.optim.Optimizer) -> None:
        swaps, self._pending_swaps = self._pending_swaps, []
        for step, name, v in swaps:
            if self.recorder is not None and name not in self._arch_verdicts:
                self._pending_swaps.append((step, name, v))  # --verify: replayed after this step, applied at the next
            else:
                self._swap_dead(step, name, v)
        if self.frozen and self._best is not None:  # past overfitting: no update, and the best state kept
            for g in opt.param_groups:
                for p in g["params"]:
                    p.grad = None
            self._best.restore(rng=False)  # the forward since wrote BatchNorm statistics: the best's come back
            return
        if not self.store.kept:  # the state training starts from (after any checkpoint the user loaded)
            self._reset_poisoned_batchnorm()
            self.store.take(self.monitor.step, self.ctl.lr_scale)
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        pending = self._pending_squash is not None and self._pending_squash[2] is not None  # replayed: apply it now
        if self.policy.arch and not self._swapped_squash and self.active and self._updates > 0 \
                and (pending or self._updates % self.policy.vanish_every == 0) and self._vanishing():
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params if not p.grad.is_sparse]
        self._grad_norm, self._norm_read, self._dropped = None, None, False
        if not grads:
            return
        dev = grads[0].device
        total = torch.stack([n.to(dev) for n in torch._foreach_norm(grads)]).float().norm()
        self._grad_norm = total
        if dev.type == "cpu":
            self._norm_read = float(total)
            if not math.isfinite(self._norm_read) and self.active:
                for p in params:  # a parameter without a gradient is not updated: the step is dropped
                    p.grad = None
                self._dropped = True
                return
        if self.ctl.clip is not None:
            coef = (self.ctl.clip / (total + 1e-6)).clamp(max=1.0).float()
            torch._foreach_mul_(grads, coef)
        lr0 = opt.param_groups[0].get("lr")
        if isinstance(lr0, (int, float)) and not isinstance(lr0, bool):
            self._lr_hist.append((self.monitor.step, float(lr0), self._lr_peak))
            self._lr_vals.append(float(lr0))
            self._lr_peak = max(self._lr_peak, float(lr0))
        f = 1.0
        if self.ctl.warmup_done < self.ctl.warmup_total:
            f = (self.ctl.warmup_done + 1) / self.ctl.warmup_total
            self.ctl.warmup_done += 1
        cap = self.ctl.lr_cap
        if cap is not None and isinstance(lr0, (int, float)) and lr0 * f > cap:
            f = cap / lr0
        if f != 1.0:  # acts inside the step only: the schedulers read and write the real LR
            self._warm_lrs = [g["lr"] for g in opt.param_groups]
            for g in opt.param_groups:
                g["lr"] = g["lr"] * f
        if self.active and self._ratio_due():
            if self._ratio_params is None:  # weight matrices that do not start at zero (G004's selection)
                mats = [p for p in params if p.dim() >= 2 and not p.grad.is_sparse]
                norms = [float(n) for n in torch._foreach_norm([p.detach() for p in mats])] if mats else []
                self._ratio_params = [p for p, n in zip(mats, norms) if n > 0 and math.isfinite(n)]
            ws = [p for p in self._ratio_params if p.grad is not None]
            if ws:
                with torch.no_grad():
                    before = torch._foreach_mul([w.detach() for w in ws], 1.0)
                if self._updates == 0:
                    self._fresh_start = _fresh(opt)  # this trajectory starts from an empty optimizer state
                self._ratio_before = (ws, before, self.monitor.step, self._fresh_start and self._updates < 5)

    def _grad_scale(self) -> torch.Tensor | None:
        scaler = self.store.scaler
        scale = getattr(scaler, "_scale", None) if scaler is not None else None
        return scale if isinstance(scale, torch.Tensor) else None

    def _restore_scale(self) -> None:
        """A GradScaler halves its scale at every step it skips: a loader that keeps serving the same
        poisoned samples would halve it towards zero (no gradient left), so a skipped poisoned batch
        gives back the scale of the last healthy step."""
        scale, ok = self._grad_scale(), self._scale_ok
        if scale is not None and ok is not None and ok.shape == scale.shape:
            with torch.no_grad():
                scale.copy_(torch.maximum(scale, ok.to(scale.device)))

    def _reset_poisoned_batchnorm(self) -> None:
        """Zero-code healing starts at the first optimizer step, after the first forward: a poisoned first
        batch has already written NaN into BatchNorm's running statistics. Those modules get BatchNorm's
        initial statistics back (``reset_running_stats``), so the first snapshot, and every roll-back to
        it, starts clean."""
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats \
                    and not all(bool(torch.isfinite(t).all()) for t in (m.running_mean, m.running_var) if t is not None):
                m.reset_running_stats()
        if self._bn_live:
            torch._foreach_copy_(self._bn_saved, self._bn_live)

    def _before_forward(self, module: nn.Module) -> None:
        if module.training and torch.is_grad_enabled() and not self._replaying:
            torch._foreach_copy_(self._bn_saved, self._bn_live)

    def _post_step(self, opt: torch.optim.Optimizer) -> None:
        if self._warm_lrs is not None:  # a warm-up or a cap acts inside the step only: schedulers see the real LR
            for g, lr in zip(opt.param_groups, self._warm_lrs):
                g["lr"] = lr
            self._warm_lrs = None
        self._updates += 1
        measured, self._ratio_before = self._ratio_before, None
        if measured is not None and not self._dropped:
            ws, before, step, fresh = measured
            with torch.no_grad():
                upd = torch.stack(torch._foreach_norm(torch._foreach_sub([w.detach() for w in ws], before)))
                wn = torch.stack(torch._foreach_norm(before))
                ratio = float((upd.float() / wn.float()).median())
            if self._updates == 1 and math.isfinite(ratio):
                self._first_ratio = ratio  # the trajectory's first update: the LR against the weights' scale
            # only an adaptive optimizer's first steps from an empty state are special (the first moves every
            # weight by about lr, the next few little less while its averages fill), and only on weights
            # that were not loaded: a step the size of pretrained weights wipes them out
            self._note_ratio(step, ratio, fresh and not self._pretrained()
                             and any(k in st for st in opt.state.values() for k in ADAPTIVE))

    def _blowup_dose(self) -> float:
        """The LR factor for a blow-up: ×``lr_factor``, or less when the blow-up comes early and the
        trajectory's first update measured the LR against the weights' scale. That update moved the
        weights by r of their norm; SGD with momentum β goes on to steps 1/(1−β) times larger (an
        adaptive optimizer's first step, ≈ lr / rms(w), is its largest). The dose brings that steady step
        under ``first_target`` of the weights' norm (a tenth of that for weights loaded before training:
        a fine-tune keeps what it loaded), and is at least ×1e-3."""
        p, r0 = self.policy, self._first_ratio
        if r0 is None or self._updates > p.ratio_early:
            return p.lr_factor
        g = self.optimizer.param_groups[0]
        beta = g.get("momentum", 0.0) if type(self.optimizer).__name__ == "SGD" else 0.0
        steady = r0 / (1 - beta) if isinstance(beta, (int, float)) and 0 < beta < 1 else r0
        target = p.first_target / (10 if self._pretrained() else 1)
        if steady * p.lr_factor <= target:
            return p.lr_factor
        return float(f"{max(1e-3, target / steady):.2g}")

    def _pretrained(self) -> bool:
        """The script loaded weights into a model before training (a ``state_dict_load`` the watcher saw
        before the first step, that loaded something): the weights are worth keeping from the first step."""
        if self._loaded is None:
            events = getattr(self.monitor, "_events", None) or []
            self._loaded = any(getattr(e, "kind", None) == "state_dict_load" and e.data.get("before_training")
                               and (e.data.get("loaded") or 0) > 0 for e in events)
        return self._loaded

    def _ratio_due(self) -> bool:
        """Every one of the first five updates (a bad LR wrecks the weights in the first steps, and units
        that die stop moving), then every ``ratio_every_early`` to ``ratio_early``, then every ``ratio_every``."""
        n, p = self._updates, self.policy
        return n < 5 or n % (p.ratio_every_early if n < p.ratio_early else p.ratio_every) == 0

    def _note_ratio(self, step: int, ratio: float, fresh: bool) -> None:
        """A measured update/weight ratio: updates the size of the weights are G004's evidence that the LR
        is too high (judged at the end of the step, with the loss)."""
        if not math.isfinite(ratio) or fresh:
            # a non-finite update is the loss's and the gradients' symptom, treated there; the first update
            # from a fresh optimizer is not judged (an adaptive one's moves every weight by about lr)
            return
        self._ratios.append((step, ratio))
        p = self.policy
        big = [(s, r) for s, r in self._ratios if r >= p.ratio_big]
        if len(big) >= 2:
            self._big_updates = (big[0][0], statistics.median(r for _, r in big), p.ratio_big,
                                 f"{len(big)} sampled updates moved the weights by ≥ {p.ratio_big:g} of their norm "
                                 f"(up to {max(r for _, r in big):.3g})")
        elif self._updates > p.ratio_early and len(self._ratios) >= 3 \
                and all(r > p.ratio_high for _, r in self._ratios[-3:]):
            last = self._ratios[-3:]
            self._big_updates = (last[0][0], statistics.median(r for _, r in last), p.ratio_high,
                                 f"the last 3 sampled updates moved the weights by > {p.ratio_high:g} of their norm "
                                 f"(median {statistics.median(r for _, r in last):.3g}; a healthy step ≈ 1e-3)")

    # each step ---------------------------------------------------------------------------------

    def _read(self, loss: torch.Tensor | float) -> tuple[float, float | None]:
        """The loss as a number (one read) and the step's gradient norm (read with it)."""
        g, read = self._grad_norm, self._norm_read
        self._grad_norm = self._norm_read = None
        if not isinstance(loss, torch.Tensor):
            return float(loss), read if g is None or read is not None else float(g)
        t = loss.detach().reshape(-1)[0].float()
        if g is not None and read is None and g.device == t.device:
            value, norm = torch.stack([t, g.float()]).tolist()
            return value, norm
        return float(t), read if g is None or read is not None else float(g)

    def on_step(self, step: int, loss: torch.Tensor | float, inputs: Any, ids: list[int] | None) -> None:
        """The step ``step`` is finished (its update applied or dropped): judge it, treat it."""
        if not self.active or self.frozen:  # frozen: the best weights stay, no update applies
            return
        value, norm = self._read(loss)
        dropped, self._dropped = self._dropped, False
        if self._start_loss is None and math.isfinite(value) and value > 0:
            self._start_loss = value  # the loss before any update: what a diverged one is ten times
        code = self._symptom(value, norm)
        spiked, self._spiked = self._spiked, False
        if code is None and spiked and self._losses and value > 1.5 * max(self._losses) \
                and (self._start_loss is None or value >= 0.5 * self._start_loss):
            # the last step's gradient spike hurt: the loss rose past every recent one (and back to half
            # its start: near convergence both a spike and a jump are mini-batch noise)
            code = "G001"
        if code == "spike":
            self._spiked = True  # a gradient spike alone is a hazard: treated only if the loss shows harm
        elif code is None:
            big, self._big_updates = self._big_updates, None
            if big is not None:
                self._on_big_updates(step, value, *big)
            else:
                self._healthy_step(step, value, norm)
        else:
            self._big_updates = None
            self._on_symptom(step, "G001" if spiked and code == "L002" else code, value, norm, inputs, ids,
                             dropped)
        self._bad_rows = []
        if (self._pending_swaps or self._pending_squash is not None) and self.recorder is not None and self.active:
            self._verify_arch(step)

    def skipped_update(self) -> None:
        """A GradScaler skipped this step's update (inf/NaN gradients): the step is judged next, as one
        whose update was dropped; nothing was measured of an update that did not happen."""
        self._dropped = True
        self._ratio_before = None
        self._grad_norm = self._norm_read = None

    def note_bad_rows(self, rows: list[int]) -> None:
        """A backward since the last step saw a non-finite loss on a batch with these NaN/Inf rows (ids):
        under a GradScaler that step's update is skipped, and the step the healer judges next is a later
        batch's, so the poisoned one is remembered here."""
        self._bad_rows = list(rows)

    def _symptom(self, value: float, norm: float | None) -> str | None:
        if not math.isfinite(value):
            return "L001"
        start = self._start_loss
        if self._losses:  # from the first step on: a blow-up can come at the second
            ref = max(self._losses)  # the worst recent batch: a noisy one is not a divergence
            # ... nor a tiny loss near convergence jumping on mini-batch noise (L002's own guard: it must
            # climb back to half the starting loss)
            if ref > 0 and value > self.policy.diverge_ratio * ref and (start is None or value >= 0.5 * start):
                return "L002"
        if start is not None and value > self.policy.diverge_ratio * start:
            return "L002"  # a climb too gradual for the recent reference: ten times the loss before any update
        # L008's own evidence: three steps in a row at a clamp (a loss passing through the value is not pinned)
        self._pinned = self._pinned + 1 if any(abs(value - c) <= 5e-4 * c for c in SATURATED) else 0
        if self._pinned >= 3:
            return "L008"
        if norm is not None:
            if not math.isfinite(norm):
                return "G003"
            if (self.ctl.clip is None and len(self.ctl.healthy_norms) >= 20
                    and norm > self.policy.explode_ratio * statistics.median(self.ctl.healthy_norms)):
                return "spike"  # judged at the next step, by what it did to the loss
        return None

    def _healthy_step(self, step: int, value: float, norm: float | None) -> None:
        self._losses.append(value)
        scale = self._grad_scale()
        if scale is not None:
            self._scale_ok = scale.detach().clone()
        self._loss_hist.append((step, value))
        if self._healthy % 10 == 0 and self._collapsed(step, value):
            return
        raised = self._lr_raised()
        if raised is not None and self._counts.get("lr-too-high", 0) < self.policy.max_treatments:
            since, before, factor = raised
            prior = [v for s, v in self._loss_hist if s < since][-20:]
            after = [v for s, v in self._loss_hist if s >= since][-10:]
            if len(prior) >= 5 and len(after) >= 5 \
                    and statistics.median(after) >= self.policy.rise_harm * statistics.median(prior) > 0:
                self._treat_raise(step, "L003", value, raised,
                                  f"evidence: the LR rose {factor:.3g}× from step {since} and the loss with it "
                                  f"({statistics.median(prior):.4g} → {statistics.median(after):.4g})")
                return
        if norm is not None:
            self.ctl.healthy_norms.append(norm)
        self._skip_run = 0
        self._healthy += 1
        if self._healthy % self.policy.every == 0:
            self.store.take(step + 1, self.ctl.lr_scale)  # the state the next step starts from
        self._chunk.append(value)
        if len(self._chunk) >= max(1, self.policy.stall_window // 10):
            self._medians.append(statistics.median(self._chunk))
            self._chunk = []
            if self._start is None:
                self._start = self._medians[0]
            if self._stalled(step):
                self._last_stall, self._medians = step, []
                n = self._counts["no-lr-decay"] = self._counts.get("no-lr-decay", 0) + 1
                # a stall is not a fault that burns compute: past the cap it is left to the diagnosis,
                # and the run goes on (never stopped for it)
                if n <= self.policy.max_treatments:
                    self._treat(step, "L006", "no-lr-decay", "evidence: the stall rule (L006) on the loss so far",
                                [LowerLR("no-lr-decay", self.policy.stall_factor)], None, count=n)

    def _stalled(self, step: int) -> bool:
        """L006 on chunk medians: the loss fell (≥ 5 % of its start), then its best improved by less than
        1 % of the start over the last window, at a level far above a good one."""
        m, start = 10, self._start
        if start is None or start <= 0 or len(self._medians) < m + 2:
            return False
        if self._last_stall is not None and step - self._last_stall < self.policy.stall_every:
            return False
        recent = self._medians[-m:]
        level = statistics.median(recent)
        if min(self._medians[:-m]) - min(recent) >= 0.01 * start or start - level < 0.05 * start:
            return False
        meta = self.monitor.meta
        c = meta.get("num_classes")
        floor = 0.3 * math.log(c) if meta.get("loss_kind") == "cross_entropy" and isinstance(c, int) and c >= 2 \
            else 0.5 * start
        return level >= floor

    # the leading cause -------------------------------------------------------------------------

    def _leading_cause(self, code: str, inputs_known: bool) -> tuple[str, str]:
        """The cause to treat and where that came from (the diagnosis, or the run's own evidence)."""
        if self._float16() and not self._losses_rose():
            # tried first, as it is the cheapest to rule out: a float16 forward that broke without the loss
            # climbing first; if it comes back in float32, the diagnosis names the next cause
            return "precision-overflow", "evidence: autocast float16, and the loss did not rise before it broke"
        try:
            causes = [c.id for c in diagnose(self._run_record()).causes]
        except Exception:  # noqa: BLE001 - a diagnosis that cannot run leaves the evidence
            causes = []
        for c in causes:
            if c in BLOWUP_CAUSES and not (c == "nonfinite-data" and inputs_known) \
                    and not (c == "precision-overflow" and not self._float16()):  # treatable only under autocast
                return c, "diagnosis"
        if code in ("G001", "G003"):
            return "exploding-gradient", "evidence: the gradient norm blew up"
        norms, losses = list(self.ctl.healthy_norms), list(self._losses)
        if len(norms) >= 10 and len(losses) >= 10:
            grew = statistics.median(norms[-3:]) >= 10 * statistics.median(norms[:-3])
            flat = statistics.median(losses[-3:]) <= 1.5 * statistics.median(losses[:-3])
            if grew and flat:
                return "exploding-gradient", "evidence: the gradient norm grew while the loss did not"
        return "lr-too-high", "evidence: finite inputs, the loss blew up"

    def _float16(self) -> bool:
        """The model's forward runs under autocast float16 (and no float32 treatment is in force yet)."""
        prec = self.monitor.meta.get("precision")
        return isinstance(prec, dict) and prec.get("autocast") == "float16" and not self.ctl.handles

    def _losses_rose(self) -> bool:
        """The last healthy losses climbed (a divergence building), rather than a sudden break."""
        ls = list(self._losses)
        return len(ls) >= 4 and statistics.median(ls[-3:]) > 1.5 * statistics.median(ls[:-3])

    def _on_symptom(self, step: int, code: str, value: float, norm: float | None, inputs: Any,
                    ids: list[int] | None, dropped: bool) -> None:
        rows = nonfinite_rows(inputs) if inputs is not None else []
        named = sample_ids(rows, ids, inputs) if rows else self._bad_rows
        if named:
            cause, source = "nonfinite-data", "evidence: the input batch holds NaN/Inf"
        else:
            cause, source = self._leading_cause(code, inputs is not None)
        if cause == "nonfinite-data":
            self._skip_run = self._skip_run + 1 if self._last_skip == step - 1 else 1
            self._last_skip = step
            if self._skip_run > self.policy.max_skips:
                self._give_up(step, code, cause, f"{self._skip_run} batches in a row held NaN/Inf")
                return
            # an update dropped before it applied (by this healer, or by a GradScaler that skipped the step)
            # leaves at most the BatchNorm statistics the forward wrote to undo (from their copy); only a
            # model that is still non-finite after that needs the last good state back
            if dropped and self._bn_live and not self._model_finite():
                torch._foreach_copy_(self._bn_live, self._bn_saved)
            back = None if self._model_finite() else self.store.newest()
            self._treat(step, code, cause, source, [SkipBatch(sample_ids=named)], back, rng=False,
                        value=value, quarantined=named, count=self._skip_run)
            self._restore_scale()
            return
        if self._counts.get(cause, 0) >= self.policy.max_treatments:
            # this hypothesis is spent: the next blow-up cause the run's facts allow is tried before giving up
            nxt = next((c for c in ("lr-too-high", "exploding-gradient")
                        if c != cause and self._counts.get(c, 0) < self.policy.max_treatments
                        and (c != "exploding-gradient" or len(self.ctl.healthy_norms) >= 5)), None)
            if nxt is None:
                spent = ", ".join(f"{c} ×{k}" for c, k in self._counts.items())
                self._give_up(step, code, cause, f"it came back after every treatment tried ({spent})")
                return
            source = f"{cause} treated {self._counts[cause]} times without holding: the next cause tried"
            cause = nxt
        float32 = cause == "precision-overflow" and self._float16()
        clip = cause == "exploding-gradient" and len(self.ctl.healthy_norms) >= 5
        raised = self._lr_raised() if cause == "lr-too-high" and not (float32 or clip) else None
        if raised is not None:  # the schedule raised the LR just before: its level before comes back
            self._treat_raise(step, code, value, raised, f"{source}; the LR rose {raised[2]:.3g}× from step {raised[0]}")
            return
        n = self._counts[cause] = self._counts.get(cause, 0) + 1
        ts: list[Treatment]
        if float32:
            ts = [Float32Forward(self.model)]
        elif clip:
            ts = [ClipGradients(self.policy.clip_percentile)]
        else:
            ts = [LowerLR(cause, self._blowup_dose())]
            if n > 1:
                ts.append(WarmUp(self.policy.warmup_steps, cause))
        self._treat_verified(step, code, cause, source, ts, self.store.target(self._suspect), value, n)

    def _treat_verified(self, step: int, code: str, cause: str, source: str, ts: list[Treatment],
                        back: TrainingState | None, value: float, n: int, symptom: str = "blow-up",
                        first: list[Fix] | None = None) -> None:
        """Treat with ``ts``; with ``--verify``, the candidates (``first``, then the cause's and the other
        blow-up causes') are replayed from ``back`` first and the one that measurably helped is applied."""
        verified = None
        if self.recorder is not None and back is not None:
            verification = self._verify(step, cause, back, symptom, first or [])
            if verification is not None:
                verified = verification.to_json()
                best = verification.best
                if best is not None and best.helped:  # the fix that measurably helped is the one applied
                    cause, ts = best.fix.cause, self._treatments_for(best.fix)
                    source += "; verified on a replay"
        self._treat(step, code, cause, source, ts, back, value=value, count=n, verified=verified)
        self._suspect = back

    def _collapsed(self, step: int, value: float) -> bool:
        """L007 after the loss had learned: the recent losses (median of 20) are back at the chance loss
        (ln C) after a stretch of 20 well below it (≤ ``collapse_low`` × ln C). The model forgot what it
        had learned, the mark of steps too large for it: back to a state from before the collapse, and
        the leading blow-up cause treated (True when it was)."""
        meta = self.monitor.meta
        chance = chance_loss(meta.get("loss_kind"), meta.get("num_classes"))
        hist = list(self._loss_hist)
        if chance is None or len(hist) < 40 or self._counts.get("lr-too-high", 0) >= self.policy.max_treatments:
            return False
        ln_c = chance[0]
        if statistics.median(v for _, v in hist[-20:]) < self.policy.collapse_high * ln_c:
            return False
        lows = [i for i in range(20, len(hist) - 19, 5)
                if statistics.median(v for _, v in hist[i - 20:i]) <= self.policy.collapse_low * ln_c]
        if not lows:
            return False
        good = hist[lows[-1] - 1][0]  # the last step of the last stretch well below chance
        back = self.store.at_or_before(good)
        cause, source = self._leading_cause("L007", True)
        if cause not in ("lr-too-high", "exploding-gradient") or self._counts.get(cause, 0) >= self.policy.max_treatments:
            cause, source = "lr-too-high", "evidence: the loss went back to chance after learning"
        n = self._counts[cause] = self._counts.get(cause, 0) + 1
        ts: list[Treatment] = [ClipGradients(self.policy.clip_percentile)] \
            if cause == "exploding-gradient" and len(self.ctl.healthy_norms) >= 5 else [LowerLR(cause, self.policy.lr_factor)]
        source += (f"; the loss (median of 20) is back at {statistics.median(v for _, v in hist[-20:]):.4g} ≈ "
                   f"{chance[1]} after {statistics.median(v for _, v in hist[lows[-1] - 20:lows[-1]]):.4g} by step {good}")
        self._treat_verified(step, "L007", cause, source, ts, back, value, n, symptom="rise")
        self._loss_hist.clear()  # judged again on the losses from here (also when nothing was rolled back)
        return True

    def _lr_raised(self) -> tuple[int, float, float] | None:
        """The schedule raised the LR ``rise``× or more within the window, past the highest LR the run had
        used before: (the first step at the raised level, the LR before it, by how much), for the latest
        such raise; None otherwise (or when a cap already holds it)."""
        if not self._lr_hist:
            return None
        now = self._lr_hist[-1][1]
        if not now > 0 or (self.ctl.lr_cap is not None and self.ctl.lr_cap < now):
            return None  # a cap already holds it
        if min(self._lr_vals) * self.policy.rise > now:
            return None  # no raise in the window (the common case, one C-level pass)
        hist = list(self._lr_hist)
        for i in range(len(hist) - 1, 0, -1):
            if hist[i - 1][1] * self.policy.rise <= now:
                # back to a level the run already trained at (a warm restart after a cosine's minimum)
                # is the schedule's design, not a spike: only a raise past the run's highest LR counts
                if now <= 1.5 * hist[i][2]:
                    return None
                return hist[i][0], hist[i - 1][1], now / hist[i - 1][1]
        return None

    def _treat_raise(self, step: int, code: str, value: float, raised: tuple[int, float, float], source: str) -> None:
        """lr-too-high right after the schedule raised the LR: back to the last state before the raise,
        and the LR held at its level before it (the schedule carries on below the cap)."""
        since, before, factor = raised
        n = self._counts["lr-too-high"] = self._counts.get("lr-too-high", 0) + 1
        back = self.store.at_or_before(since)
        cap = CapLR(cap=before, raised=factor)
        self._treat_verified(step, code, "lr-too-high", source, [cap], back, value, n,
                             symptom="rise" if code == "L003" else "blow-up",
                             first=[Fix("lr-too-high", cap.action, lr_cap=before)])

    def _on_big_updates(self, step: int, value: float, since: int, ratio: float, bar: float, why: str) -> None:
        """Updates the size of the weights (G004): back to the last state before them, and the LR scaled
        by the dose that brings the measured ratio well under the bar it crossed (``ratio_under × bar / ratio``,
        between ×0.01 and ×0.1). Not a
        blow-up: when the LR treatments are spent, nothing more is done here (the diagnosis reports it)."""
        self._ratios, self._updates = [], 0  # judged afresh whatever is done (a roll-back also resets them)
        cause = "lr-too-high"
        n = self._counts.get(cause, 0)
        if n >= self.policy.max_treatments:
            self._healthy_step(step, value, None)
            return
        n = self._counts[cause] = n + 1
        factor = min(0.1, max(0.01, self.policy.ratio_under * bar / ratio))
        factor = float(f"{factor:.2g}")
        back = self.store.at_or_before(since)
        lower = LowerLR(cause, factor)
        self._treat_verified(step, "G004", cause, f"evidence: {why}", [lower], back, value, n, symptom="updates",
                             first=[Fix(cause, f"lower the {lower.action}", lr_factor=factor)])

    def _verify(self, step: int, cause: str, back: TrainingState, symptom: str = "blow-up",
                first: list[Fix] | None = None) -> Verification | None:
        """Replay the steps since ``back`` with the candidates for this cause and the other blow-up
        cause, within the budget (a fraction of the run's time so far); None when the window is not
        recorded (a loss that is not one call on the model's output, or a window past the recorder's limit)."""
        assert self.recorder is not None
        records = self.recorder.since(back.step, step)
        if not records:
            return None
        others = [c for c in ("lr-too-high", "exploding-gradient", "precision-overflow") if c != cause
                  and (c != "precision-overflow" or self._float16())]
        fixes: list[Fix] = list(first or [])
        seen = {fx.name for fx in fixes}
        for c in [cause, *others]:
            for fx in candidates(c, list(self.ctl.healthy_norms)):
                if fx.name not in seen:
                    seen.add(fx.name)
                    fixes.append(fx)
        budget = self.policy.verify_budget * (time.perf_counter() - self._born) - self.verify_seconds
        self._replaying = True
        try:
            v = verify(back, records, fixes, budget_s=max(0.0, budget), quiet=self._quiet, symptom=symptom)
        finally:
            self._replaying = False
        self.verify_seconds += v.seconds
        return v

    def _treatments_for(self, fix: Fix) -> list[Treatment]:
        """A verified fix as the treatment that applies it to the run from here on."""
        ts: list[Treatment] = []
        if fix.lr_factor != 1.0:
            ts.append(LowerLR(fix.cause, fix.lr_factor))
        if fix.warmup:
            ts.append(WarmUp(self.policy.warmup_steps, fix.cause))
        if fix.clip is not None:
            ts.append(ClipGradients(self.policy.clip_percentile, fix.cause))
        if fix.float32:
            ts.append(Float32Forward(self.model))
        if fix.lr_cap is not None:
            raised = self._lr_hist[-1][1] / fix.lr_cap if self._lr_hist and fix.lr_cap > 0 else 1.0
            ts.append(CapLR(cap=fix.lr_cap, raised=raised, cause=fix.cause))
        return ts

    def _model_finite(self) -> bool:
        ts = [t for t in model_tensors(self.model) if t.is_floating_point()]
        return not ts or bool(torch.isfinite(torch.stack([n.to(ts[0].device) for n in torch._foreach_norm(ts)])).all())

    # acting ------------------------------------------------------------------------------------

    def _new_trajectory(self) -> None:
        """What was measured of the trajectory the run has left (losses, update sizes): judged afresh."""
        self._losses.clear()
        self._loss_hist.clear()
        self._chunk, self._medians = [], []
        self._ratios, self._updates, self._first_ratio = [], 0, None

    def _roll_back(self, snap: TrainingState, rng: bool) -> None:
        """Back to ``snap``, keeping the LR treatments given since it was taken."""
        snap.restore(rng=rng)
        self.store.keep_until(snap)
        if self.ctl.lr_scale != snap.lr_scale:
            scale_lr(self.optimizer, self.ctl.schedulers, self.ctl.lr_scale / snap.lr_scale)
        self._new_trajectory()
        self._lr_hist.clear()  # the schedule replays from the snapshot
        self._lr_vals.clear()

    def _treat(self, step: int, code: str, cause: str, source: str, ts: list[Treatment],
               back: TrainingState | None, rng: bool = True, value: float | None = None,
               quarantined: list[int] | None = None, count: int = 1,
               verified: dict[str, Any] | None = None) -> None:
        if back is not None:
            self._roll_back(back, rng)
        changes: dict[str, Any] = {}
        for t in ts:
            changes.update(t.apply(self.ctl))
        data: dict[str, Any] = {
            "step": step, "code": code, "cause": cause, "source": source,
            "action": "; ".join(t.action for t in ts), "changes": changes,
            "rolled_back_to": back.step if back is not None else None,
            "quarantined": list(quarantined or []), "treatment": count,
        }
        if value is not None:
            data["loss"] = value if math.isfinite(value) else str(value)
        if verified is not None:
            data["verified"] = verified
        self.treatments.append(data)
        self.monitor.event("treatment", data, step=step)
        where = f"; rolled back to step {back.step}" if back is not None else ""
        said = self._said[cause] = self._said.get(cause, 0) + 1
        if said <= 3:  # a loader full of poisoned samples would say it at every batch: the report lists them all
            more = "; further ones are treated without a line here" if said == 3 and cause == "nonfinite-data" else ""
            self.monitor.on_critical(f"traindoctor: healing {code} at step {step} as {cause} — {data['action']}{where}"
                                     f"{more}")
        if verified is not None and verified.get("summary"):
            self.monitor.on_critical(f"traindoctor: {verified['summary']}")

    def _give_up(self, step: int, code: str, cause: str, why: str) -> None:
        back = self.store.newest()
        if back is not None:
            self._roll_back(back, rng=True)
        msg = (f"{code} at step {step}: {why}; healing stopped, the run should stop"
               + (f" (the weights are back to step {back.step})" if back is not None else ""))
        self.stopped = {"step": step, "code": code, "cause": cause, "treatments": dict(self._counts),
                        "rolled_back_to": back.step if back is not None else None, "message": msg}
        self.should_stop = True
        self.monitor.event("heal_stopped", self.stopped, step=step)
        self.monitor.on_critical(f"traindoctor: {msg}")

    # validation --------------------------------------------------------------------------------

    # architecture repairs (--heal=arch) ------------------------------------------------------------

    def on_activation(self, step: int, kind: str, name: str, value: Any) -> None:
        """A sampled step's activation statistic: a ReLU module dead for ``dead_samples`` samples in a row
        is replaced by a LeakyReLU, in place, so its units get a gradient again (once per module); the
        model's output sigmoid feeding BCELoss, pinned at exactly 0 or 1 on as many samples in a row while
        the loss is no better than chance, by a sigmoid whose gradient survives that (``SaturationSafeSigmoid``)."""
        if not (self.policy.arch and self.active) or kind not in ("dead_frac", "pinned_frac") or name in self._replaced:
            return
        if kind == "pinned_frac" and not self._output_sigmoid(name):
            return
        v = float(value)
        self._dead_runs[name] = self._dead_runs.get(name, 0) + 1 if v >= self.policy.dead_bar else 0
        if self._dead_runs[name] < self.policy.dead_samples:
            return
        if kind == "pinned_frac" and not self._stuck_at_chance():
            return  # pinned outputs that are right cost nothing: a confident model that learned
        self._replaced.add(name)
        self._pending_swaps.append((step, name, v))  # done at the optimizer step: never inside a forward

    def _output_sigmoid(self, name: str) -> bool:
        """``name`` is an ``nn.Sigmoid`` module, the model's last leaf module (its output activation), and
        the run's loss is BCELoss (M002's hazard: a sigmoid feeding a log without the fused form)."""
        if self.monitor.meta.get("loss_kind") != "bce":
            return False
        leaves = [(n, m) for n, m in self.model.named_modules() if not any(True for _ in m.children())]
        return bool(leaves) and leaves[-1][0] == name and type(leaves[-1][1]) is nn.Sigmoid

    def _stuck_at_chance(self) -> bool:
        """The recent healthy losses (median) are no better than a binary classifier at chance (ln 2)."""
        ls = list(self._losses)
        return len(ls) >= 5 and statistics.median(ls) >= math.log(2)

    def _swap_dead(self, step: int, name: str, v: float) -> None:
        """``name``, a ReLU module dead on the last samples, replaced by a LeakyReLU on the live model (an
        output sigmoid pinned at 0/1 under BCELoss: by ``SaturationSafeSigmoid``)."""
        parent_name, _, attr = name.rpartition(".")
        try:
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
        except AttributeError:  # a module of another model (a GAN's second network): not this healer's
            return
        old = getattr(parent, attr, None)
        if type(old) is nn.Sigmoid:
            self._swap_pinned(step, name, v)
            return
        if type(old) not in (nn.ReLU, nn.ReLU6):  # a LeakyReLU, ELU … already passes negative inputs
            return
        fix = self._leaky_fix(name, v)
        verified = self._arch_verdicts.pop(name, None) or None
        fix.arch(self.model)  # type: ignore[misc]
        # (nearly) the whole layer is dead: what feeds it learned nothing and sits deep in the dead zone
        # (a bias far below zero), where a leaky slope of 0.01 takes thousands of steps to climb out;
        # the fix above initialised it again: its gradient, optimizer state and the snapshots go
        fed = self._feeding(name) if v >= self.policy.dead_reinit else []
        if fed:
            self._reinit(fed, init=False)
        changes: dict[str, Any] = {f"module {name}": [type(old).__name__, f"LeakyReLU({self.policy.leaky_slope:g})"]}
        if fed:
            changes["reinitialised"] = [[], [n for n, _ in fed]]
        source = f"evidence: {v:.0%} of `{name}`'s units dead on {self._dead_runs[name]} sampled steps"
        data = {"step": step, "code": "A001", "cause": "dying-relu",
                "source": source + ("; verified on a replay" if (verified or {}).get("result") == "verified" else ""),
                "action": fix.name, "changes": changes, "rolled_back_to": None, "quarantined": [], "treatment": 1}
        if verified is not None:
            data["verified"] = verified
        self.treatments.append(data)
        self.monitor.event("treatment", data, step=step)
        self.monitor.on_critical(f"traindoctor: healing A001 at step {step} as dying-relu — {data['action']}")

    def _swap_pinned(self, step: int, name: str, v: float) -> None:
        fix = self._safe_sigmoid_fix(name)
        verified = self._arch_verdicts.pop(name, None) or None
        fix.arch(self.model)  # type: ignore[misc]
        source = (f"evidence: {v:.0%} of `{name}`'s outputs float32-rounded to 0 or 1 (no gradient through them) on "
                  f"{self._dead_runs[name]} sampled steps, sigmoid into BCELoss, the loss no better than chance")
        data = {"step": step, "code": "M002", "cause": "numerically-unstable-loss",
                "source": source + ("; verified on a replay" if (verified or {}).get("result") == "verified" else ""),
                "action": fix.name, "changes": {f"module {name}": ["Sigmoid", "SaturationSafeSigmoid"]},
                "rolled_back_to": None, "quarantined": [], "treatment": 1}
        if verified is not None:
            data["verified"] = verified
        self.treatments.append(data)
        self.monitor.event("treatment", data, step=step)
        self.monitor.on_critical(f"traindoctor: healing M002 at step {step} as numerically-unstable-loss — {fix.name}")

    def _safe_sigmoid_fix(self, name: str) -> Fix:
        """The pinned-sigmoid repair as a fix a replay can apply (and undo)."""
        def apply(model: nn.Module) -> Callable[[], None]:
            return swap_modules(model, [name], lambda old: SaturationSafeSigmoid())

        return Fix("numerically-unstable-loss",
                   f"give `{name}` (Sigmoid into BCELoss) BCEWithLogitsLoss's gradient: p − y reaches the logit "
                   f"where float32 rounds the sigmoid to 0 or 1 (outputs unchanged; in the script, drop the "
                   f"sigmoid and use nn.BCEWithLogitsLoss)", arch=apply)

    def _arch_fix(self, name: str, v: float) -> Fix:
        """The pending repair for module ``name`` as a fix a replay can apply."""
        try:
            mod = self.model.get_submodule(name)
        except AttributeError:
            mod = None
        return self._safe_sigmoid_fix(name) if type(mod) is nn.Sigmoid else self._leaky_fix(name, v)

    def _leaky_fix(self, name: str, v: float) -> Fix:
        """The dead-ReLU repair as a fix a replay can apply (and undo): the module becomes a LeakyReLU,
        and at ``dead_reinit`` the weight layers feeding it start again (Kaiming)."""
        slope = self.policy.leaky_slope
        fed = self._feeding(name) if v >= self.policy.dead_reinit else []

        def apply(model: nn.Module) -> Callable[[], None]:
            undo = swap_modules(model, [name], lambda old: nn.LeakyReLU(slope, inplace=bool(getattr(old, "inplace", False))))
            kaiming([m for _, m in fed])
            return undo

        what = f"replace `{name}` (ReLU) with LeakyReLU({slope:g})"
        if fed:
            what += f"; initialise {', '.join(f'`{n}`' for n, _ in fed)} again (Kaiming), which fed it"
        return Fix("dying-relu", what, arch=apply)

    def _verify_arch(self, step: int) -> None:
        """--verify for the architecture repairs waiting for the next optimizer step: each is replayed
        from the newest snapshot (the loss must fall where it did not) and its verdict kept for the
        treatment event; decided here, after the step, so that no replay runs inside an optimizer step."""
        back = self.store.newest()
        records = self.recorder.since(back.step, step) if self.recorder is not None and back is not None else []
        if self._pending_squash is not None and self._pending_squash[2] is None:
            at, ratio, _ = self._pending_squash
            fix = self._squash_fix(self._weight_layers())
            verdict: dict[str, Any] = {}
            if fix is not None and records and back is not None:
                verdict = self._replay_arch(back, records, fix)
            self._pending_squash = (at, ratio, verdict)
        for _, name, v in self._pending_swaps:
            if name in self._arch_verdicts:
                continue
            if not records or back is None:  # not replayable: the repair goes ahead unverified
                self._arch_verdicts[name] = {}
                continue
            self._arch_verdicts[name] = self._replay_arch(back, records, self._arch_fix(name, v))

    def _replay_arch(self, back: TrainingState, records: list[Any], fix: Fix) -> dict[str, Any]:
        """One architecture repair replayed against the control (the loss must end clearly lower)."""
        budget = self.policy.verify_budget * (time.perf_counter() - self._born) - self.verify_seconds
        self._replaying = True
        try:
            res = verify(back, records, [fix], budget_s=max(0.0, budget), quiet=self._quiet, symptom="stuck")
        finally:
            self._replaying = False
        self.verify_seconds += res.seconds
        if res.best is not None:
            self.monitor.on_critical(f"traindoctor: {res.best.summary(res.first, res.last)}")
        return res.to_json()

    def _feeding(self, name: str) -> list[tuple[str, nn.Module]]:
        """The weight layers registered after the previous ReLU-family module and before ``name`` (one
        ``nn.ReLU`` after each layer of a Sequential: the layer before it; one shared activation module
        registered after a ModuleList of layers: all of them but the last weight layer)."""
        mods = list(self.model.named_modules())
        names = [n for n, _ in mods]
        if name not in names:
            return []
        at = names.index(name)
        weights = [i for i, (_, m) in enumerate(mods) if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        last = weights[-1] if weights else -1
        start = max([i for i, (_, m) in enumerate(mods[:at]) if isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU))],
                    default=-1)
        return [mods[i] for i in weights if start < i < at and i != last]

    def _reinit(self, layers: list[tuple[str, nn.Module]], init: bool = True) -> None:
        """Weight layers initialised again for ReLU (Kaiming normal, zero bias; ``init=False``: already
        done), their optimizer state and this step's gradient dropped; the snapshots (of the old weights)
        forgotten: a new start for them."""
        if init:
            kaiming([m for _, m in layers])
        with torch.no_grad():
            for _, m in layers:
                for prm in m.parameters(recurse=False):
                    prm.grad = None
                    self.optimizer.state.pop(prm, None)
        self.store.keep_until(None)
        self._new_trajectory()
        self._start = None  # the stall rule's start level: the restarted layers start from a new loss

    def _weight_layers(self) -> list[tuple[str, nn.Module]]:
        """The model's weight layers (Linear, convolutions) in registration order."""
        return [(n, m) for n, m in self.model.named_modules()
                if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.weight is not None]

    def _vanishing(self) -> bool:
        """G002 on this step's gradients: the first weight layer's RMS gradient below ``vanish_bar`` × the
        last's, ``vanish_samples`` samples in a row; then the saturating activations are swapped (True).
        With --verify the swap waits: replayed after this step (``_verify_arch``), applied at the next."""
        if self._pending_squash is not None:
            if self._pending_squash[2] is None:
                return False  # its replay comes after this step
            step, ratio, verified = self._pending_squash
            self._pending_squash = None
            return self._swap_squashing(step, ratio, self._weight_layers(), verified or None)
        layers = self._weight_layers()
        if len(layers) < 3:
            return False
        first, last = layers[0][1].weight, layers[-1][1].weight
        if first.grad is None or last.grad is None:
            return False
        rms = torch.stack([first.grad.detach().float().norm() / first.numel() ** 0.5,
                           last.grad.detach().float().norm() / last.numel() ** 0.5]).tolist()
        ratio = rms[0] / rms[1] if rms[1] > 0 else math.nan
        self._vanish_run = self._vanish_run + 1 if ratio < self.policy.vanish_bar else 0
        if self._vanish_run < self.policy.vanish_samples:
            return False
        if self._squash_fix(layers) is None:
            self._swapped_squash = True  # no module to swap (a functional sigmoid): nothing is done
            return False
        if self.recorder is not None:
            self._pending_squash = (self.monitor.step, ratio, None)
            return False
        return self._swap_squashing(self.monitor.step, ratio, layers, None)

    def _squash_fix(self, layers: list[tuple[str, nn.Module]]) -> Fix | None:
        """The vanishing-gradient repair as a fix a replay can apply (and undo): every ``nn.Sigmoid``/
        ``nn.Tanh`` registered before the last weight layer becomes ``nn.ReLU``, the weight layers before
        it start again (Kaiming) and their BatchNorm statistics too. None without such a module."""
        mods = list(self.model.named_modules())
        last_at = [n for n, _ in mods].index(layers[-1][0])
        hidden = [n for i, (n, m) in enumerate(mods) if i < last_at and type(m) in (nn.Sigmoid, nn.Tanh)]
        if not hidden:
            return None
        before = [m for i, (_, m) in enumerate(mods) if i < last_at and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        norms = [m for i, (_, m) in enumerate(mods)
                 if i < last_at and isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        kinds = sorted({type(m).__name__ for n, m in mods if n in hidden})

        def apply(model: nn.Module) -> Callable[[], None]:
            undo = swap_modules(model, hidden, lambda old: nn.ReLU())
            kaiming(before)
            for m in norms:
                m.reset_running_stats()
            return undo

        what = (f"replace {len(hidden)} {'/'.join(kinds)} module{'s' if len(hidden) > 1 else ''} before the last "
                f"weight layer with ReLU and initialise the {len(before)} weight layers before it again (Kaiming)")
        return Fix("vanishing-gradient", what, arch=apply)

    def _swap_squashing(self, step: int, ratio: float, layers: list[tuple[str, nn.Module]],
                        verified: dict[str, Any] | None) -> bool:
        """Vanishing gradients through sigmoid/tanh (--heal=arch): the repair of ``_squash_fix`` on the live
        model. The early layers had not learned; the run restarts them in a form whose gradient reaches
        them (their optimizer state and this step's gradient dropped, the snapshots of the old weights
        forgotten). False when the model has no such module."""
        self._swapped_squash = True
        fix = self._squash_fix(layers)
        if fix is None:
            return False
        mods = list(self.model.named_modules())
        last_at = [n for n, _ in mods].index(layers[-1][0])
        hidden = [(n, m) for i, (n, m) in enumerate(mods) if i < last_at and type(m) in (nn.Sigmoid, nn.Tanh)]
        before_last = [(n, m) for i, (n, m) in enumerate(mods)
                       if i < last_at and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        fix.arch(self.model)  # type: ignore[misc]
        self._reinit(before_last, init=False)
        if self._bn_live:
            torch._foreach_copy_(self._bn_saved, self._bn_live)
        source = (f"evidence: the first weight layer's RMS gradient {ratio:.2g}× the last one's on "
                  f"{self.policy.vanish_samples} samples in a row")
        data = {"step": step, "code": "G002", "cause": "vanishing-gradient",
                "source": source + ("; verified on a replay" if (verified or {}).get("result") == "verified" else ""),
                "action": fix.name,
                "changes": {**{f"module {n}": [type(m).__name__, "ReLU"] for n, m in hidden},
                            "reinitialised": [[], [n for n, _ in before_last]]},
                "rolled_back_to": None, "quarantined": [], "treatment": 1}
        if verified is not None:
            data["verified"] = verified
        self.treatments.append(data)
        self.monitor.event("treatment", data, step=step)
        self.monitor.on_critical(f"traindoctor: healing G002 at step {step} as vanishing-gradient — {data['action']}")
        return True

    def on_val(self, step: int, val_loss: float) -> None:
        """A validation loss at ``step``: keep the best weights; call overfitting after ``patience``."""
        if not math.isfinite(val_loss):
            return
        if val_loss < self._best_val:
            if self._best is not None:
                self._best.drop()
            self._best_val, self._best, self._since_best = val_loss, self.store.take_model(step), 0
            self._prev_val = val_loss
            self._train_at_best = statistics.median(self._losses) if self._losses else math.nan
            return
        # overfitting is the validation loss climbing away from its best while training still improves:
        # an evaluation counts when it is past the margin above the best, not below the one before it
        # (a noisy or recovering validation loss resets the count), and the training loss is below its
        # level at the best
        prev, self._prev_val = self._prev_val, val_loss
        rising = val_loss > self._best_val * (1 + self.policy.overfit_margin) and val_loss >= 0.99 * prev
        train_now = statistics.median(self._losses) if self._losses else math.nan
        training_improves = not (train_now >= self._train_at_best)  # unknown (NaN) counts as improving
        self._since_best = self._since_best + 1 if rising and training_improves else 0
        if self._since_best >= self.policy.patience and not self.overfitting:
            self.overfitting = True
            if self.policy.freeze_on_overfit:
                self._freeze(step)
                return
            self.should_stop = True
            data = {"step": step, "code": "V001", "cause": "overfitting", "source": "evidence: validation loss",
                    "action": "stop; keep the weights of the best validation loss",
                    "changes": {"should_stop": [False, True]}, "rolled_back_to": None, "quarantined": [],
                    "treatment": 1, "best_step": self._best.step if self._best else None,
                    "best_val_loss": self._best_val}
            self.treatments.append(data)
            self.monitor.event("treatment", data, step=step)
            self.monitor.on_critical(f"traindoctor: V001 overfitting at step {step} — the validation loss has "
                                     f"not beaten {self._best_val:.4g} (step {data['best_step']}) for "
                                     f"{self._since_best} evaluations: stop; doctor.restore_best() brings those "
                                     f"weights back")

    def _freeze(self, step: int) -> None:
        """Zero-code overfitting: the script cannot be asked to stop without losing what it does after its
        loop (its evaluation, its saving), so the best weights go back now and every later update is
        dropped: the script runs to its end on the best-validation model."""
        if self._best is None:
            return
        self.frozen = True  # the weights come back at the next optimizer step: never between a forward and its backward
        data = {"step": step, "code": "V001", "cause": "overfitting", "source": "evidence: validation loss",
                "action": "keep the weights of the best validation loss; later updates are dropped, so the "
                          "script's own evaluation and saving see them",
                "changes": {"updates": ["applied", "dropped"]}, "rolled_back_to": self._best.step,
                "quarantined": [], "treatment": 1, "best_step": self._best.step, "best_val_loss": self._best_val}
        self.treatments.append(data)
        self.monitor.event("treatment", data, step=step)
        self.monitor.on_critical(f"traindoctor: V001 overfitting at step {step} — the validation loss climbed "
                                 f"away from {self._best_val:.4g} (step {self._best.step}): its weights come back "
                                 f"and later updates are dropped")

    def restore_best(self) -> int | None:
        """Put the best-validation weights back into the model; the step they are from (None: none kept)."""
        if self._best is None:
            return None
        self._best.restore(rng=False)
        data = {"step": self.monitor.step, "code": "V001", "cause": "overfitting", "source": "restore_best",
                "action": "restore the weights of the best validation loss", "changes": {},
                "rolled_back_to": self._best.step, "quarantined": [], "treatment": 1,
                "best_val_loss": self._best_val}
        self.treatments.append(data)
        self.monitor.event("treatment", data)
        return self._best.step

    def remove_hooks(self) -> None:
        for h in self._handles + self.ctl.handles:
            h.remove()
        self._handles, self.ctl.handles = [], []

    def close(self) -> None:
        """At the end: the best weights back if the run overfitted, hooks off, snapshots freed. Runs
        even after the healer failed, so that nothing of it stays on the optimizer or on disk."""
        if self.alive and self.overfitting and not self.frozen:  # the run overfitted: it ends with its best weights
            self.guarded(self.restore_best)
        try:
            self.remove_hooks()
            self.store.close()
            if self._best is not None and self._best.path is not None:
                self._best.drop()  # its file went with the store's directory: nothing left to restore
                self._best = None
        except Exception as exc:  # noqa: BLE001 - the doctor must never break the run
            self.monitor.contain("heal", exc)
        self.alive = False
