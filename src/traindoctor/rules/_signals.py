"""Derived signals several rules consult, so each is computed one way (pure numpy over a Run)."""
from __future__ import annotations

import math

import numpy as np

from ..events import InitScale, ModelGraph
from ..layerkinds import EMBEDDING_MODULES
from ..losskinds import CLASSES
from ..numfmt import fmt
from ..run import Run
from ._stats import late


def adversarial(run: Run) -> bool:
    """Two or more optimizers stepping in turn (a GAN, an actor-critic): the logged loss mixes
    players whose losses are not supposed to fall, so the progress rules do not judge it."""
    n = run.meta.get("optimizers_stepping")
    return isinstance(n, int) and n >= 2


def weight_layers(run: Run) -> list[tuple[str, int]]:
    """Weight matrices/kernels (ndim ≥ 2) with a sampled gradient norm, in registration order."""
    info = run.meta.get("params") or {}
    out = []
    for name in run.names("grad_norm"):
        p = name.split("/", 1)[1]
        meta = info.get(p) or {}
        if meta.get("ndim", 2) >= 2:
            out.append((p, int(meta.get("numel", 1) or 1)))
    return out


def depth_layers(run: Run) -> list[tuple[str, int]]:
    """The weight layers a gradient crosses on its way back through the network's depth: ``weight_layers``
    less embedding tables (a lookup's gradient is spread over the rows a batch did not use: small per
    weight by construction) and the parameters inside an attention module (its query/key projections get
    little gradient while attention is near uniform, as at initialisation, whatever the depth). Where the
    run did not record which module holds a parameter (a log), every weight layer counts."""
    info = run.meta.get("params") or {}
    return [(p, n) for p, n in weight_layers(run)
            if (info.get(p) or {}).get("module") not in EMBEDDING_MODULES and not (info.get(p) or {}).get("attention")]


def weight_update_ratios(run: Run) -> dict[str, np.ndarray]:
    """Per weight layer, the sampled ‖Δw‖/‖w‖ (NaN where the weight norm is 0). Tensors that start
    at zero (a learned positional embedding, a zero-initialised gate) are left out: their ratio is
    an update over a norm that is still near zero, not a step size."""
    info = run.meta.get("params") or {}
    out = {}
    for name in run.names("update_ratio"):
        p = name.split("/", 1)[1]
        if (info.get(p) or {}).get("ndim", 2) < 2:
            continue
        wn = run.series.get(f"weight_norm/{p}")
        if wn is not None and len(wn) and not (np.isfinite(wn.values[0]) and wn.values[0] > 0):
            continue
        out[p] = run.series[name].values
    return out


def per_step(ratios: dict[str, np.ndarray], how: str) -> np.ndarray | None:
    """Across layers, per sampled step: ``how`` is "median" or "max" (NaN-safe)."""
    if not ratios:
        return None
    n = len(next(iter(ratios.values())))
    rows = [v for v in ratios.values() if len(v) == n]
    mat = np.vstack(rows)
    mat = np.where(np.isfinite(mat), mat, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(mat, axis=0) if how == "median" else np.nanmax(mat, axis=0)


def best_layer_update_ratio(run: Run) -> float | None:
    """The late update ratio of the layer that moves most: an LR too low slows every layer, a
    vanishing gradient only the early ones, so this is the LR's own signal."""
    v = per_step(weight_update_ratios(run), "max")
    if v is None:
        return None
    lv = late(v)
    return float(np.median(lv)) if lv.size else None


def vanishing_ratio(run: Run) -> float | None:
    """Late RMS gradient of the first weight layer over the last one's (None with < 3 layers)."""
    layers = depth_layers(run)
    if len(layers) < 3:
        return None
    (first, n0), (lastl, n1) = layers[0], layers[-1]
    a, b = run.series[f"grad_norm/{first}"].values, run.series[f"grad_norm/{lastl}"].values
    if len(a) != len(b) or len(a) < 2:
        return None
    with np.errstate(all="ignore"):
        r = (a / math.sqrt(n0)) / (b / math.sqrt(n1))
    lr = late(r)
    return float(np.median(lr)) if lr.size else None


def zero_weights(run: Run) -> list[str]:
    """Parameters whose weight norm is exactly 0 on every sample (zero initialisation never broken)."""
    out = []
    for name in run.names("weight_norm"):
        v = run.series[name].values
        if v.size >= 2 and np.all(v == 0):
            out.append(name.split("/", 1)[1])
    return out


def inputs_look_normalised(run: Run) -> bool | None:
    """From the first batch's input statistics: None when unknown."""
    st = run.info.input_stats
    if st is None:
        return None
    try:
        return abs(float(st["mean"])) <= 3 and float(st["std"]) <= 5 and float(st["absmax"]) <= 100
    except (KeyError, TypeError, ValueError):
        return None


def first_nonfinite_loss_step(run: Run) -> int | None:
    s = run.get("loss")
    if s is None:
        return None
    bad = ~np.isfinite(s.values)
    return int(s.steps[int(np.argmax(bad))]) if bad.any() else None


def before_nonfinite(run: Run, name: str):
    """Series ``name`` cut at the first non-finite loss: after it, every statistic only echoes the NaN."""
    s = run.get(name)
    cut = first_nonfinite_loss_step(run)
    if s is None or cut is None:
        return s
    keep = s.steps < cut
    return type(s)(s.steps[keep], s.values[keep])


def sum_reduction_factor(run: Run) -> int | None:
    """How many elements the training loss sums over, when the script reduces it with a sum
    (``reduction='sum'``): the loss of a fresh model is then N× ln C, and every comparison with
    the chance loss, a clamp value or the validation loss must divide by N first. None for a mean
    (or when unknown). From the loss call at the first step (``loss_sum_over``), else from the
    traced loss's input shape."""
    factor = run.meta.get("loss_per_element_factor")
    if isinstance(factor, (int, float)) and not isinstance(factor, bool) and math.isfinite(factor):
        # measured live: the first recorded loss over that call's mean per element (≈ N for a sum,
        # ≈ 1 for a mean, and ≈ 1 for a sum the script divides itself, as Hugging Face models do)
        return int(round(factor)) if factor >= 1.5 else None
    red = run.meta.get("loss_reduction")
    n = run.meta.get("loss_sum_over")
    graph = next(iter(run.facts(ModelGraph)), ModelGraph())
    losses = graph.losses or ()
    if red is None and len(losses) == 1:
        red = losses[0].get("reduction")
    if red != "sum":
        return None
    if isinstance(n, int) and n > 1:
        return n
    if len(losses) != 1:
        return None
    lf = losses[0]
    shape = lf.get("pred_shape")
    if not shape or not all(d > 0 for d in shape):
        return None
    if lf.get("kind") in ("cross_entropy", "nll"):
        k = math.prod(shape) // shape[1] if len(shape) >= 2 else shape[0]
    else:
        k = math.prod(shape)
    return k if k > 1 else None


def per_element(run: Run) -> Run:
    """The run as the rules judge it: a training loss summed over N elements divided by N (the
    per-element mean every threshold is written for), with a note saying so. Other runs as they are."""
    n = sum_reduction_factor(run)
    if n is None:
        return run
    out = Run(series=dict(run.series), events=run.events, meta=dict(run.meta))
    for name in ["loss", *run.names("loss_term")]:
        s = run.series.get(name)
        if s is not None:
            out.series[name] = type(s)(s.steps, s.values / n)
    notes = list(out.meta.get("notes") or [])
    notes.append(f"the training loss is a sum over {n} elements (reduction='sum'); it is judged per element (÷{n})")
    out.meta["notes"] = notes
    out.meta["loss_judged_per_element"] = n
    return out


def recurrent(run: Run) -> bool:
    """The traced model has a recurrent layer (RNN, LSTM, GRU): gradients there explode through time."""
    return any(g.module_types & {"RNN", "LSTM", "GRU"} for g in run.facts(ModelGraph))


def bottleneck(run: Run) -> dict | None:
    """A hidden weight layer narrower than the classifier's output: the logits of C classes then live
    in a space of lower rank than C, whatever is trained (from the first step's layer facts).
    Classification losses only (an autoencoder's narrow code is deliberate)."""
    if run.meta.get("loss_kind") not in CLASSES:
        return None
    for init in run.facts(InitScale):
        layers = init.layers or ()
        if len(layers) < 2:
            continue
        last = next((lay for lay in reversed(layers) if lay.last), None)
        outs = last.fan_out if last else None
        if outs is None or outs < 2:
            continue
        hidden = [lay for lay in layers if not lay.last and lay.fan_out is not None]
        if not hidden:
            continue
        narrow = min(hidden, key=lambda lay: lay.fan_out or 0)
        if narrow.fan_out is not None and narrow.fan_out < outs:
            return {"layer": narrow.name, "width": narrow.fan_out, "outputs": outs}
    return None


# optimizers whose step is g / (sqrt(v) + eps): a large eps turns them into plain SGD at lr / eps
_EPS_DIVIDES = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax", "RMSprop", "Adagrad", "SparseAdam")


def eps_swamps(run: Run) -> dict | None:
    """The optimizer's eps dwarfs the gradients it normalises: {"eps", "grad_rms", "optimizer"}.

    An adaptive step is g / (√v + ε); with ε ten times the typical per-weight gradient (the
    run's own late RMS gradient element, median over its weight layers) the denominator is ε
    and every step shrinks by that factor or more. Values at or below the libraries' defaults
    (≤ 1e-6) are never blamed."""
    opt = run.info.optimizer
    cls, eps = opt.get("class"), opt.get("eps")
    if cls not in _EPS_DIVIDES or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 1e-6:
        return None
    rms = []
    for name, n in weight_layers(run):
        v = late(run.series[f"grad_norm/{name}"].values)
        v = v[np.isfinite(v)]
        if v.size and n > 0:
            rms.append(float(np.median(v)) / math.sqrt(n))
    if not rms:
        return None
    g = float(np.median(rms))
    if not (g >= 0 and eps >= 10 * g):
        return None
    return {"eps": float(eps), "grad_rms": g, "optimizer": cls}


def eps_note(sw: dict) -> str:
    """The message clause for :func:`eps_swamps`."""
    return (f"; {sw['optimizer']}'s eps={fmt(sw['eps'])} is {fmt(sw['eps'] / sw['grad_rms'])}× the typical gradient "
            f"element ({fmt(sw['grad_rms'])}), so its steps are lr·g/eps, not lr")
