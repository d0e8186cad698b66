"""Active experiments on a training pipeline: each trains or evaluates the user's own model in
place, from its starting weights, and is rolled back afterwards (see :mod:`..state`). The
registered probes (one module each in this package) call these.

Every probe returns plain numbers (an event's data, sometimes a curve); ``rules/probes.py``
turns them into findings. The probes never use the user's optimizer object: they build their
own, of the user's class and settings where the question is about those settings (LR range
test, shallow against deep), and Adam at a safe learning rate where the question is about the
model, loss and data plumbing (overfitting a tiny batch, the short training behind the
suspect-label, input-baseline and train/eval checks), so a bad learning rate does not hide or
fake a plumbing bug.
"""
from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...inspect.batches import Batch
from ...inspect.losses import FUNCTION_KINDS
from ...inspect.model import WEIGHT_LAYERS, leaf_order
from ...inspect.state import Snapshot, rolled_back
from ...losskinds import BINARY
from ...lrsweep import LRRange, RangeSweep

SAFE_LR = 1e-3  # Adam's default: trains nearly any small model, the plumbing probes' baseline


@dataclass
class Pipeline:
    """The model, its loss and how a loader's batch reaches them.

    ``input_fn``/``output_fn``/``target_fn`` adapt what the loader yields to what the training
    loop fed the model and the loss (the zero-code checkup reads them off the script's first
    step: a ``.view``, a ``.squeeze(1)``, a ``.float()``); with the API they are identities.
    """

    model: nn.Module
    loss_fn: Callable[[Any, Any], torch.Tensor] | None
    optimizer: torch.optim.Optimizer | None = None
    loss_info: dict[str, Any] = field(default_factory=dict)
    input_fn: Callable[[torch.Tensor], Any] | None = None
    output_fn: Callable[[Any], Any] | None = None
    target_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        if p is None:
            p = next(self.model.buffers(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def loss_kind(self) -> str | None:
        return self.loss_info.get("kind")

    def prepare(self, b: Batch) -> Batch:
        """A loader's batch as the training loop fed it: adapted inputs and targets, on the model's device."""
        x = self.input_fn(b.x) if self.input_fn is not None else b.x
        y = self.target_fn(b.y) if self.target_fn is not None else b.y
        dev = self.device
        return Batch(x.to(dev) if isinstance(x, torch.Tensor) else x, y.to(dev) if isinstance(y, torch.Tensor) else y,
                     b.ids)

    def forward(self, x: torch.Tensor) -> Any:
        """Model output as the loss receives it (``x`` already prepared)."""
        out = self.model(x)
        return self.output_fn(out) if self.output_fn is not None else out

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def loss(self, out: Any, y: torch.Tensor) -> torch.Tensor:
        assert self.loss_fn is not None
        return self.loss_fn(out, y)

    def batch_loss(self, b: Batch) -> torch.Tensor:
        return self.loss(self.forward(b.x), b.y)

    def per_sample(self, out: Any, y: torch.Tensor) -> torch.Tensor:
        """One loss per sample (float64), from the loss with ``reduction='none'`` where it allows it."""
        yt = self.targets(y)
        fn = self._unreduced()
        if fn is not None and isinstance(out, torch.Tensor):
            try:
                v = fn(out, yt)
                if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == out.shape[0]:
                    return v.detach().reshape(v.shape[0], -1).to(torch.float64).mean(1)
            except Exception:  # noqa: BLE001 - fall back to one call per sample
                pass
        n = out.shape[0] if isinstance(out, torch.Tensor) else len(yt)
        assert self.loss_fn is not None
        return torch.stack([self.loss_fn(out[i : i + 1], yt[i : i + 1]).detach().to(torch.float64).reshape(())
                            for i in range(n)])

    def _unreduced(self) -> Callable[[Any, Any], torch.Tensor] | None:
        fn = self.loss_fn
        if isinstance(fn, nn.Module) and isinstance(getattr(fn, "reduction", None), str):
            c = copy.copy(fn)
            c.reduction = "none"
            return c
        if isinstance(fn, functools.partial) and fn.func in FUNCTION_KINDS:
            return functools.partial(fn.func, *fn.args, **{**fn.keywords, "reduction": "none"})
        if fn in FUNCTION_KINDS:
            return functools.partial(fn, reduction="none")
        return None

    def trained_params(self) -> list[torch.Tensor]:
        """The parameters the user's optimizer trains (all trainable ones without an optimizer)."""
        if self.optimizer is not None:
            seen: set[int] = set()
            out = []
            for g in self.optimizer.param_groups:
                for p in g["params"]:
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
            return out
        return [p for p in self.model.parameters() if p.requires_grad]

    def make_optimizer(self, lr: float | None, *, like_user: bool,
                       param_map: dict[int, torch.Tensor] | None = None,
                       params: list[torch.Tensor] | None = None) -> tuple[torch.optim.Optimizer, str]:
        """A fresh optimizer: the user's class and settings (``like_user``), or Adam."""
        opt = self.optimizer
        if like_user and opt is not None and not isinstance(opt, torch.optim.LBFGS):
            groups = []
            for g in opt.param_groups:
                ps = [param_map.get(id(p), p) if param_map else p for p in g["params"]]
                if param_map is not None:
                    ps = [p for p in ps if any(p is q for q in param_map.values())]
                if not ps:
                    continue
                hp = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
                if lr is not None:
                    hp["lr"] = lr
                groups.append({"params": ps, **hp})
            if groups:
                try:
                    return type(opt)(groups), type(opt).__name__
                except Exception:  # noqa: BLE001 - a custom optimizer with required arguments
                    self.notes.append(f"could not rebuild {type(opt).__name__} for the probes; used Adam")
        if params is None:
            params = self.trained_params() if param_map is None else list(param_map.values())
        return torch.optim.Adam([p for p in params if p.requires_grad] or params, lr=lr or SAFE_LR), "Adam"


def _finite(v: float) -> bool:
    return math.isfinite(v)


def shuffled_batches(batches: list[Batch], batch_size: int, seed: int = 0) -> list[Batch]:
    """The kept samples regrouped into shuffled batches of the loader's size (seeded)."""
    same = [b for b in batches if b.x.shape[1:] == batches[0].x.shape[1:] and b.y.shape[1:] == batches[0].y.shape[1:]]
    x = torch.cat([b.x for b in same])
    y = torch.cat([b.y for b in same])
    ids = [i for b in same for i in b.ids]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    x, y = x[perm.to(x.device)], y[perm.to(y.device)]
    ids = [ids[i] for i in perm.tolist()]
    bs = max(2, min(batch_size, x.shape[0]))
    out = []
    for i in range(0, x.shape[0], bs):
        if x.shape[0] - i < 2:  # a last batch of 1 breaks BatchNorm in train mode
            break
        out.append(Batch(x[i : i + bs], y[i : i + bs], ids[i : i + bs]))
    return out


def _cycle(batches: list[Batch]) -> Iterator[Batch]:
    while True:
        yield from batches


def _step(pipe: Pipeline, opt: torch.optim.Optimizer, b: Batch, zero_inputs: bool = False) -> float:
    opt.zero_grad(set_to_none=True)
    x = torch.zeros_like(b.x) if zero_inputs else b.x
    loss = pipe.loss(pipe.forward(x), b.y)
    v = float(loss.detach())
    if _finite(v):
        loss.backward()
        opt.step()
    return v


def mean_loss(pipe: Pipeline, batches: list[Batch], *, train_mode: bool, zero_inputs: bool = False) -> float:
    """The sample-weighted mean loss over ``batches`` without gradients, in train or eval mode."""
    pipe.model.train(train_mode)
    tot = n = 0.0
    with torch.no_grad():
        for b in batches:
            x = torch.zeros_like(b.x) if zero_inputs else b.x
            v = float(pipe.loss(pipe.forward(x), b.y))
            tot += v * len(b)
            n += len(b)
    return tot / n if n else float("nan")


# ---------------------------------------------------------------------- initial loss
def initial_loss(pipe: Pipeline, batches: list[Batch], k: int = 4) -> dict[str, Any]:
    """Loss of the untouched model on the first ``k`` batches (train mode, no gradients)."""
    vals: list[float] = []
    pipe.model.train()
    with torch.no_grad():
        for b in batches[:k]:
            vals.append(float(pipe.batch_loss(b)))
    bad = [v for v in vals if not _finite(v)]
    mean = bad[0] if bad else sum(vals) / len(vals)
    return {"batches": len(vals), "values": vals, "mean": mean, "all_finite": not bad}


# ---------------------------------------------------------------------- LR range test
def lr_range_test(pipe: Pipeline, batches: list[Batch], snapshot: Snapshot, *, start_lr: float = 1e-7,
                  end_lr: float = 10.0, num_iter: int = 100, smooth_f: float = 0.05,
                  diverge_th: float = 5.0, skip_start: int = 10, skip_end: int = 5, min_fall: float = 0.1) -> LRRange:
    """Exponential LR sweep with the user's optimizer class (Leslie Smith's range test, read by
    :class:`~traindoctor.lrsweep.RangeSweep`): step ``i`` trains one batch at ``lr_i``; the sweep stops once
    the smoothed loss exceeds ``diverge_th`` times its best value. No LR is suggested unless the smoothed loss
    fell by at least ``min_fall`` (10 %) somewhere in the sweep.
    """
    sweep = RangeSweep(start_lr, end_lr, max(2, num_iter), smooth_f=smooth_f, diverge_th=diverge_th)
    with rolled_back(snapshot):
        pipe.model.train()
        opt, name = pipe.make_optimizer(start_lr, like_user=True)
        it = _cycle(batches)
        for i in range(num_iter):
            for g in opt.param_groups:
                g["lr"] = sweep.lr(i)
            if sweep.add(_step(pipe, opt, next(it))):
                break
    return sweep.result(name, skip_start=skip_start, skip_end=skip_end, min_fall=min_fall)


# ---------------------------------------------------------------------- fitting tiny data
def loss_floor(pipe: Pipeline, b: Batch, out_shape: tuple[int, ...] | None) -> float:
    """The lowest loss a perfect model can reach on ``b`` (label smoothing, soft targets), else 0."""
    info = pipe.loss_info
    y = pipe.targets(b.y)
    kind = info.get("kind")
    try:
        if kind == "cross_entropy":
            if y.is_floating_point():
                p = y.to(torch.float64).clamp(min=0)
                return float(-(p * p.clamp(min=1e-300).log()).sum(1).mean())
            eps = float(info.get("label_smoothing") or 0.0)
            if eps > 0 and out_shape:
                c = out_shape[0]
                hi, lo = 1 - eps + eps / c, eps / c
                return -(hi * math.log(hi) + (c - 1) * lo * math.log(lo))
        if kind in BINARY:
            p = y.to(torch.float64).clamp(0, 1)
            h = -(p * p.clamp(min=1e-300).log() + (1 - p) * (1 - p).clamp(min=1e-300).log())
            return float(h.mean())
    except Exception:  # noqa: BLE001 - no floor known
        pass
    return 0.0


def fit_probe(pipe: Pipeline, b: Batch, snapshot: Snapshot, *, steps: int = 300, lrs: tuple[float, ...] = (1e-3, 1e-2),
              floor: float = 0.0, tolerance: float = 0.03, variant: str = "tiny_batch") -> dict[str, Any]:
    """Train on ``b`` alone with Adam; can the pipeline drive the loss near its floor?

    Near means ``loss ≤ floor + max(tolerance·(initial − floor), 1e-3)``. Each learning rate of
    the ladder starts again from the user's weights; the first that fits ends the probe.
    """
    tries = []
    curve: list[float] = []
    for lr in lrs:
        with rolled_back(snapshot):
            pipe.model.train()
            opt, name = pipe.make_optimizer(lr, like_user=False)
            losses: list[float] = []
            target = None
            for _ in range(steps):
                v = _step(pipe, opt, b)
                losses.append(v)
                if not _finite(v):
                    break
                if target is None:
                    target = floor + max(tolerance * (v - floor), 1e-3)
                if v <= target:
                    break
            final_train = losses[-1] if losses else float("nan")
            final_eval = mean_loss(pipe, [b], train_mode=False)
        best = min([v for v in losses if _finite(v)] + [final_eval if _finite(final_eval) else math.inf])
        fitted = target is not None and best <= target
        tries.append({"lr": lr, "steps": len(losses), "initial_loss": losses[0] if losses else float("nan"),
                      "final_loss": final_train, "eval_mode_loss": final_eval, "best_loss": best,
                      "target": target, "fitted": fitted})
        curve = losses
        if fitted:
            break
    last = tries[-1]
    return {"variant": variant, "samples": len(b), "sample_ids": b.ids[:20], "optimizer": "Adam",
            "floor": floor, "tolerance": tolerance, "fitted": any(t["fitted"] for t in tries),
            "initial_loss": tries[0]["initial_loss"], "best_loss": min(t["best_loss"] for t in tries),
            "target": last["target"], "tries": tries, "params_trained": sum(p.numel() for p in pipe.trained_params()),
            "curve": curve}


def tiny_batch(batches: list[Batch], n: int = 10) -> Batch:
    """``n`` samples from the kept ones, with as many different labels as possible."""
    pool = [(b, i) for b in batches for i in range(len(b))]
    chosen: list[tuple[Batch, int]] = []
    seen: set[Any] = set()
    for b, i in pool:
        y = b.y[i]
        key = y.item() if y.numel() == 1 else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        chosen.append((b, i))
        if len(chosen) >= n:
            break
    for b, i in pool:
        if len(chosen) >= n:
            break
        if all(not (b is c and i == j) for c, j in chosen):
            chosen.append((b, i))
    x = torch.stack([b.x[i] for b, i in chosen])
    y = torch.stack([b.y[i] for b, i in chosen])
    return Batch(x, y, [b.ids[i] for b, i in chosen])


def repeated_sample(batches: list[Batch], copies: int = 4) -> Batch:
    b = batches[0]
    return Batch(b.x[:1].repeat(copies, *([1] * (b.x.dim() - 1))), b.y[:1].repeat(copies, *([1] * (b.y.dim() - 1))),
                 [b.ids[0]] * copies)


# ---------------------------------------------------------------------- short training
def short_training(pipe: Pipeline, batches: list[Batch], snapshot: Snapshot, *, steps: int = 300,
                   zero_inputs: bool = False, measure: Callable[[], dict[str, Any]] | None = None,
                   eval_batches: list[Batch] | None = None) -> dict[str, Any]:
    """Adam at a safe LR for ``steps`` steps on ``batches``; ``measure()`` runs on the trained model.

    ``final_loss`` is the eval-mode loss on ``eval_batches`` (held-out samples) when given, else
    on the training batches.
    """
    with rolled_back(snapshot):
        pipe.model.train()
        opt, _ = pipe.make_optimizer(SAFE_LR, like_user=False)
        it = _cycle(batches)
        losses = [_step(pipe, opt, next(it), zero_inputs) for _ in range(steps)]
        out: dict[str, Any] = {"steps": steps, "optimizer": "Adam", "lr": SAFE_LR, "zero_inputs": zero_inputs,
                               "first_loss": losses[0] if losses else float("nan"),
                               "curve": losses}
        k = max(1, steps // 10)
        tail = [v for v in losses[-k:] if _finite(v)]
        out["last_losses_mean"] = sum(tail) / len(tail) if tail else float("nan")
        out["finite"] = all(_finite(v) for v in losses)
        out["final_loss"] = mean_loss(pipe, eval_batches or batches, train_mode=False, zero_inputs=zero_inputs)
        out["evaluated_on"] = "held-out samples" if eval_batches else "training samples"
        if measure is not None:
            out.update(measure())
    return out


def per_sample_losses(pipe: Pipeline, batches: list[Batch]) -> tuple[torch.Tensor, list[int], torch.Tensor,
                                                                   torch.Tensor | None]:
    """Per-sample losses (eval mode), ids, labels and predicted classes (for class outputs)."""
    pipe.model.eval()
    losses, ids, labels, preds = [], [], [], []
    with torch.no_grad():
        for b in batches:
            out = pipe.forward(b.x)
            losses.append(pipe.per_sample(out, b.y).cpu())
            ids += b.ids
            labels.append(b.y.detach().cpu())
            if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] > 1:
                preds.append(out.argmax(1).cpu())
    return (torch.cat(losses), ids, torch.cat(labels),
            torch.cat(preds) if len(preds) == len(batches) and preds else None)


def label_outliers(losses: torch.Tensor, ids: list[int], labels: torch.Tensor, preds: torch.Tensor | None,
                   threshold: float | None = None, limit: int = 20) -> dict[str, Any]:
    """The per-sample loss distribution after a short training, and the samples far above it.

    With ``threshold``, a candidate is a sample whose loss exceeds it and, when the outputs are
    class scores, whose predicted class differs from its label.
    """
    fin = torch.isfinite(losses)
    lv = losses[fin]
    if lv.numel() < 20:
        return {"samples": int(lv.numel())}
    out: dict[str, Any] = {"samples": int(lv.numel()), "median_loss": float(lv.median()),
                           "q90_loss": float(lv.quantile(0.90)), "max_loss": float(lv.max()),
                           "mean_loss": float(lv.mean()), "threshold": threshold}
    single = labels.dim() == 1 or (labels.dim() == 2 and labels.shape[1] == 1)
    flat = labels.reshape(-1) if single else None

    def entry(i: int) -> dict[str, Any]:
        d: dict[str, Any] = {"id": ids[i], "loss": float(losses[i])}
        if flat is not None:
            d["label"] = flat[i].item()
        if preds is not None:
            d["predicted"] = int(preds[i])
        return d

    if threshold is not None:
        mask = fin & (losses > threshold)
        if preds is not None and flat is not None:
            mask &= preds.to(flat.dtype) != flat
        idx = mask.nonzero().flatten()
        idx = idx[torch.argsort(losses[idx], descending=True)]
        out["above_threshold"] = int(idx.numel())
        out["candidates"] = [entry(i) for i in idx[:limit].tolist()]
    return out


# ---------------------------------------------------------------------- shallow against deep
def derive_shallow(model: nn.Module) -> tuple[nn.Module, str] | None:
    """A copy of ``model`` without its shape-preserving hidden blocks (``nn.Sequential`` models).

    A block starts at a Linear/Conv layer whose input and output widths are equal and runs up to
    the next weight layer; removing every such block keeps the first and last layers.
    """
    seq = model if isinstance(model, nn.Sequential) else None
    path = ""
    if seq is None:
        subs = [(n, m) for n, m in model.named_children() if isinstance(m, nn.Sequential)]
        if not subs:
            return None
        path, seq = max(subs, key=lambda t: sum(1 for x in t[1] if isinstance(x, WEIGHT_LAYERS)))
    mods = list(seq)
    starts = [i for i, m in enumerate(mods) if isinstance(m, WEIGHT_LAYERS)]
    drop: list[int] = []
    removed = []
    for k, i in enumerate(starts[:-1]):
        m = mods[i]
        same = (isinstance(m, nn.Linear) and m.in_features == m.out_features) or (
            isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.in_channels == m.out_channels
            and all(s == 1 for s in m.stride))
        if same and k > 0:
            end = starts[k + 1]
            drop += list(range(i, end))
            removed.append(f"{type(m).__name__}({m.in_features if isinstance(m, nn.Linear) else m.in_channels})")
    if not drop:
        return None
    shallow = copy.deepcopy(model)
    new_seq = nn.Sequential(*[copy.deepcopy(mods[i]) for i in range(len(mods)) if i not in drop])
    if path:
        setattr(shallow, path, new_seq)
    else:
        shallow = new_seq
    what = f"removed {len(removed)} hidden block(s) of {'`' + path + '`' if path else 'the Sequential'}: " + ", ".join(removed[:6])
    return shallow, what


def train_curve(pipe: Pipeline, model: nn.Module, batches: list[Batch], steps: int, *, like_user: bool,
                seed: int = 0) -> tuple[list[float], str]:
    """Train ``model`` (a stand-in for the pipeline's) for ``steps`` and return the losses."""
    torch.manual_seed(seed)
    orig = pipe.model
    try:
        pipe.model = model
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        if model is orig:
            opt, name = pipe.make_optimizer(None, like_user=like_user)
        else:
            opt, name = pipe.make_optimizer(None, like_user=False, params=params) if not like_user or pipe.optimizer is None \
                else _like_user_for(pipe, params)
        it = _cycle(batches)
        return [_step(pipe, opt, next(it)) for _ in range(steps)], name
    finally:
        pipe.model = orig


def _like_user_for(pipe: Pipeline, params: list[torch.Tensor]) -> tuple[torch.optim.Optimizer, str]:
    opt = pipe.optimizer
    assert opt is not None
    hp = {k: copy.deepcopy(v) for k, v in opt.param_groups[0].items() if k != "params"}
    try:
        return type(opt)([{"params": params, **hp}]), type(opt).__name__
    except Exception:  # noqa: BLE001
        return torch.optim.Adam(params, lr=SAFE_LR), "Adam"


# ---------------------------------------------------------------------- bad-batch bisection
def bisect_nonfinite(pipe: Pipeline, b: Batch, max_evals: int = 400) -> dict[str, Any]:
    """Split a batch whose loss is non-finite until the samples responsible are named.

    Runs in eval mode (no batch statistics to spread one sample's NaN over the others, no
    dropout noise). A group is split while one of its halves alone is still non-finite; when
    neither half is, the group is reported as a whole (the samples only fail together).
    """
    was = pipe.model.training
    pipe.model.eval()
    evals = [0]

    def bad(rows: list[int]) -> bool:
        evals[0] += 1
        with torch.no_grad():
            sub = b.select(rows)
            try:
                return not math.isfinite(float(pipe.batch_loss(sub)))
            except Exception:  # noqa: BLE001 - a subset the loss refuses counts as not bad
                return False

    culprits: list[list[int]] = []

    def search(rows: list[int]) -> None:
        if evals[0] >= max_evals:
            culprits.append(rows)
            return
        if len(rows) == 1:
            culprits.append(rows)
            return
        mid = len(rows) // 2
        left, right = rows[:mid], rows[mid:]
        lb, rb = bad(left), bad(right)
        if lb:
            search(left)
        if rb:
            search(right)
        if not lb and not rb:
            culprits.append(rows)

    try:
        rows = list(range(len(b)))
        whole = bad(rows)
        if whole:
            search(rows)
        positions = sorted(r for g in culprits for r in g)
        reasons: dict[str, list[int]] = {}
        first_module = None
        for r in positions:
            x, y = b.x[r : r + 1], b.y[r : r + 1]
            if (x.is_floating_point() and not bool(torch.isfinite(x).all())):
                reasons.setdefault("inputs", []).append(r)
            elif y.is_floating_point() and not bool(torch.isfinite(y).all()):
                reasons.setdefault("targets", []).append(r)
            else:
                order = leaf_order(pipe.model, lambda x=x: pipe.forward(x))
                mod = next(((n, m) for n, m, o in order if isinstance(o, torch.Tensor) and o.is_floating_point()
                            and not bool(torch.isfinite(o).all())), None)
                if mod is not None:
                    reasons.setdefault("output", []).append(r)
                    if first_module is None:
                        first_module = {"name": mod[0], "type": type(mod[1]).__name__}
                else:
                    reasons.setdefault("loss", []).append(r)
        return {
            "batch_nonfinite": whole, "batch_size": len(b), "positions": positions[:50],
            "sample_ids": [b.ids[r] for r in positions][:50], "count": len(positions),
            "groups": [[b.ids[r] for r in g] for g in culprits if len(g) > 1][:5],
            "reasons": {k: [b.ids[r] for r in v][:50] for k, v in reasons.items()},
            "first_module": first_module, "evaluations": evals[0], "mode": "eval",
        }
    finally:
        pipe.model.train(was)
