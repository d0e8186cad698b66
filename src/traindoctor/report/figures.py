"""The run as charts: Plotly figure specs (plain JSON) built from a Run and its Diagnosis.

One builder for the HTML report and the live dashboard. Each chart is a dict ``{"id", "title",
"figure", "caption"}`` whose ``figure`` is Plotly's own JSON (``data`` and ``layout``), drawn in the
page by plotly.js. Nothing here imports torch or plotly's Python package: figures are data.

Long runs are shown, not shipped: a line series of more points than :data:`MAX_POINTS` is cut into
buckets and each bucket keeps its lowest and highest point (a spike or a dip is never averaged away),
plus every point at a step a finding or a treatment names, exactly. A per-layer heatmap is bucketed
the same way (each cell holds the bucket's largest gradient norm). The chart's caption says when a
series was thinned, and from how many points.

Text is escaped for Plotly: plotly.js reads a subset of HTML in every label (``<b>``, ``<br>``, entities),
so a metric called ``<script>…`` would be swallowed as a tag; :func:`pe` turns ``<``, ``>`` and ``&``
into entities, which plotly.js shows as the characters themselves. Non-finite values become ``null``
(a gap in the line; JSON has no NaN) and are marked as points of their own.
"""
from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..diagnosis import Diagnosis
from ..events import Treatment
from ..losskinds import chance_loss
from ..numfmt import fmt
from ..run import Run, Series

MAX_POINTS = 2000  # buckets per displayed line series (each keeps its min and max: ≤ 2× this many points)
MAX_COLUMNS = 300  # time buckets of a heatmap
MAX_LINES = 24  # lines per per-layer chart (the rest are listed in the caption)
MAX_OTHER = 16  # other logged metrics shown

SEV_COLOR = {"error": "#c62828", "warning": "#ef6c00", "info": "#0277bd"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
UPDATE_RATIO_BAND = (10 ** -3.5, 10 ** -2.5)  # about 1e-3: the rule of thumb for a healthy update/weight ratio

ACCURACY = re.compile(r"(^|[/_.:-])acc(uracy)?($|[/_.:-])|accuracy", re.I)


def pe(text: object) -> str:
    """Escape user text for a Plotly label: plotly.js shows the entities as the characters."""
    return html.escape(str(text), quote=False)


def json_floats(values: np.ndarray) -> list[float | None]:
    """Floats for JSON: non-finite to None (a gap), rounded to 7 significant digits (halves the bytes)."""
    out: list[float | None] = []
    for v in values.tolist():
        out.append(float(f"{v:.7g}") if math.isfinite(v) else None)
    return out


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS,
               keep: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray, bool]:
    """At most about ``2 * max_points`` points of a series: each of ``max_points`` buckets keeps its
    lowest and highest finite point and its first non-finite one; every point whose step is in
    ``keep`` stays. Returns ``(steps, values, thinned)``."""
    n = len(values)
    if n <= 2 * max_points:
        return steps, values, False
    size = math.ceil(n / max_points)
    nb = math.ceil(n / size)
    pad = nb * size - n
    v = np.concatenate([values, np.full(pad, np.nan)]).reshape(nb, size)
    fin = np.isfinite(v)
    lo = np.where(fin, v, np.inf).argmin(axis=1)
    hi = np.where(fin, v, -np.inf).argmax(axis=1)
    bad = ~fin
    bad[-1, size - pad:] = False  # the padding is not a sighting
    base = np.arange(nb) * size
    idx = [base + lo, base + hi, [0, n - 1]]
    has_fin = fin.any(axis=1)
    idx[0] = idx[0][has_fin]
    idx[1] = idx[1][has_fin]
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size:
        idx.append(rows * size + bad[rows].argmax(axis=1))
    keep = np.asarray(sorted(set(int(k) for k in keep)), dtype=np.int64)
    if keep.size:
        idx.append(np.flatnonzero(np.isin(steps, keep)))
    sel = np.unique(np.concatenate([np.asarray(i, dtype=np.int64) for i in idx]))
    return steps[sel], values[sel], True


def _line(name: str, s: Series, keep: Sequence[int], *, color: str | None = None, width: float = 1.5,
          dash: str | None = None, yaxis: str | None = None, legendgroup: str | None = None,
          showlegend: bool = True) -> tuple[dict[str, Any], int | None]:
    st, va, thinned = downsample(s.steps, s.values, keep=keep)
    line: dict[str, Any] = {"width": width}
    if color:
        line["color"] = color
    if dash:
        line["dash"] = dash
    few = int(np.isfinite(va).sum()) <= 60  # a handful of points: drawn as points too, or one alone is invisible
    tr: dict[str, Any] = {"type": "scattergl" if len(st) > 5000 else "scatter", "mode": "lines+markers" if few else "lines",
                          "marker": {"size": 4},
                          "name": pe(name), "x": st.tolist(), "y": json_floats(va), "line": line,
                          "hovertemplate": "step %{x}<br>%{y:.4g}<extra>" + pe(name) + "</extra>",
                          "showlegend": showlegend}
    if yaxis:
        tr["yaxis"] = yaxis
    if legendgroup:
        tr["legendgroup"] = legendgroup
    return tr, (len(s) if thinned else None)


def _nonfinite_marks(name: str, s: Series, y: float | None) -> dict[str, Any] | None:
    """A red ✕ where the series stops being finite (its first non-finite point, and the count)."""
    bad = ~np.isfinite(s.values)
    if not bad.any():
        return None
    first = int(s.steps[np.argmax(bad)])
    count = int(bad.sum())
    return {"type": "scatter", "mode": "markers", "name": pe(f"{name} non-finite"),
            "x": [first], "y": [y], "marker": {"symbol": "x", "size": 12, "color": "#b71c1c"},
            "hovertemplate": pe(f"{name}: first non-finite value at step {first} ({count} non-finite points)")
            + "<extra></extra>"}


def base_layout(title: str, *, ytitle: str = "", logy: bool = False, xtitle: str = "step", height: int = 340,
            logx: bool = False) -> dict[str, Any]:
    return {
        "title": {"text": pe(title), "x": 0.01, "font": {"size": 15}},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
        "xaxis": {"title": {"text": pe(xtitle)}, "type": "log" if logx else "linear", "zeroline": False},
        "yaxis": {"title": {"text": pe(ytitle)}, "type": "log" if logy else "linear", "zeroline": False},
        "legend": {"orientation": "h", "y": -0.22, "font": {"size": 11}},
        "hovermode": "closest",
        "template": None,
        "plot_bgcolor": "#fafafa",
        "paper_bgcolor": "#ffffff",
        "shapes": [],
        "annotations": [],
    }


def wants_log(values: Iterable[np.ndarray]) -> bool:
    """A log axis when every finite value is positive and they span over two decades."""
    arr = [v[np.isfinite(v)] for v in values]
    arr = [a for a in arr if a.size]
    if not arr:
        return False
    allv = np.concatenate(arr)
    if (allv <= 0).any():
        return False
    return bool(allv.max() / allv.min() > 100)


def _value_at(s: Series | None, step: int) -> float | None:
    """The series' finite value at or just before ``step`` (for placing a marker on the curve)."""
    if s is None or not len(s):
        return None
    i = int(np.searchsorted(s.steps, step, side="right")) - 1
    while i >= 0 and not math.isfinite(s.values[i]):
        i -= 1
    if i < 0:
        f = s.finite()
        return float(f.values[0]) if len(f) else None
    return float(s.values[i])


def finding_steps(diag: Diagnosis | None) -> list[int]:
    """Every step a finding or a treatment names: kept exactly when a series is thinned."""
    if diag is None:
        return []
    out = set()
    for f in diag.findings:
        for s in (f.step, f.step_end):
            if isinstance(s, int):
                out.add(s)
    for t in diag.treatments:
        out.add(int(t.step))
    return sorted(out)


def _caption(thinned: dict[str, int]) -> str:
    if not thinned:
        return ""
    parts = ", ".join(f"{k} ({n:,} points)" for k, n in list(thinned.items())[:4])
    more = f" and {len(thinned) - 4} more" if len(thinned) > 4 else ""
    return (f"Thinned for display: {parts}{more} — each of {MAX_POINTS} buckets keeps its lowest and highest "
            f"point, and every step a finding names is kept exactly.")


def _mark_findings(fig: dict[str, Any], diag: Diagnosis | None, on: Series | None) -> None:
    """Each finding as a marker on the curve at its step (its code as the label, the message on hover),
    and a shaded span when it covers a range of steps."""
    if diag is None:
        return
    xs: dict[str, list[Any]] = {}
    for f in diag.findings:
        if not isinstance(f.step, int):
            continue
        d = xs.setdefault(f.severity, {"x": [], "y": [], "text": [], "hover": []})  # type: ignore[arg-type]
        y = _value_at(on, f.step)
        d["x"].append(f.step)
        d["y"].append(y)
        d["text"].append(pe(f.code))
        d["hover"].append(pe(f"{f.code} {f.name} (step {f.step}"
                             + (f"–{f.step_end}" if isinstance(f.step_end, int) and f.step_end != f.step else "")
                             + f"): {_short(f.message)}"))
        if isinstance(f.step_end, int) and f.step_end > f.step:
            fig["layout"]["shapes"].append({
                "type": "rect", "xref": "x", "yref": "paper", "x0": f.step, "x1": f.step_end, "y0": 0, "y1": 1,
                "fillcolor": SEV_COLOR.get(f.severity, "#888"), "opacity": 0.07, "line": {"width": 0},
                "layer": "below"})
    for sev, d in xs.items():
        fig["data"].append({
            "type": "scatter", "mode": "markers+text", "name": pe(f"findings ({sev})"), "x": d["x"], "y": d["y"],
            "text": d["text"], "textposition": "top center", "textfont": {"color": SEV_COLOR.get(sev, "#444")},
            "hovertext": d["hover"], "hoverinfo": "text",
            "marker": {"symbol": "diamond", "size": 11, "color": SEV_COLOR.get(sev, "#444"),
                       "line": {"width": 1, "color": "#fff"}}})


def _short(text: str, n: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _fig(cid: str, title: str, layout: dict[str, Any], data: list[dict[str, Any]], caption: str = "") -> dict[str, Any]:
    return {"id": cid, "title": title, "figure": {"data": data, "layout": layout}, "caption": caption}


def loss_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    loss = run.get("loss")
    val = run.get("val_loss")
    if loss is not None and len(loss.finite()) < 2 and val is None:
        loss = None  # one point (a checkup stops at the first loss): no curve to draw
    if loss is None and val is None:
        return None
    keep = finding_steps(diag)
    data: list[dict[str, Any]] = []
    thinned: dict[str, int] = {}
    for name, s, color, width in (("train loss", loss, PALETTE[0], 1.2), ("validation loss", val, PALETTE[1], 2.2)):
        if s is None:
            continue
        tr, n = _line(name, s, keep, color=color, width=width)
        if name == "validation loss" and len(s) <= 400:
            tr["mode"] = "lines+markers"
            tr["marker"] = {"size": 6}
        data.append(tr)
        if n:
            thinned[name] = n
    fig = _fig("loss", "Loss: training and validation", base_layout("Loss: training and validation", ytitle="loss",
                                                                 logy=wants_log([s.values for s in (loss, val) if s is not None])),
               data)
    lay = fig["figure"]["layout"]
    for name, s in (("train loss", loss), ("validation loss", val)):
        if s is not None:
            m = _nonfinite_marks(name, s, _value_at(s, int(s.steps[-1])))
            if m:
                data.append(m)
    if val is not None:
        fv = val.finite()
        if len(fv) >= 2:
            i = int(np.argmin(fv.values))
            best_step, best = int(fv.steps[i]), float(fv.values[i])
            lay["shapes"].append({"type": "line", "xref": "x", "yref": "paper", "x0": best_step, "x1": best_step,
                                  "y0": 0, "y1": 1, "line": {"color": "#2e7d32", "width": 1.5, "dash": "dash"}})
            lay["annotations"].append({"x": best_step, "xref": "x", "y": 1, "yref": "paper", "yanchor": "bottom",
                                       "text": pe(f"best validation loss {fmt(best)} (step {best_step})"),
                                       "showarrow": False, "font": {"color": "#2e7d32", "size": 11}})
    _mark_findings(fig["figure"], diag, loss if loss is not None else val)
    info = run.info
    chance = chance_loss(info.loss_kind, info.num_classes)
    if chance is not None:
        level, said = chance
        lay["shapes"].append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": level, "y1": level,
                              "line": {"color": "#9e9e9e", "width": 1, "dash": "dot"}})
        lay["annotations"].append({"x": 1, "xref": "paper", "xanchor": "right",
                                   "y": math.log10(level) if lay["yaxis"]["type"] == "log" else level, "yref": "y",
                                   "yanchor": "bottom", "text": pe(f"chance: {said} = {level:.3f}"),
                                   "showarrow": False, "font": {"color": "#757575", "size": 10}})
    fig["caption"] = _caption(thinned)
    return fig


def accuracy_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    names = [n for n in run.series if ACCURACY.search(n) and "/" not in n and run.get(n) is not None]
    if not names:
        return None
    keep = finding_steps(diag)
    data, thinned = [], {}
    for i, n in enumerate(names[:6]):
        tr, k = _line(n, run.series[n], keep, color=PALETTE[i % len(PALETTE)], width=2 if "val" in n else 1.2)
        data.append(tr)
        if k:
            thinned[n] = k
    lay = base_layout("Accuracy", ytitle="accuracy")
    return _fig("accuracy", "Accuracy", lay, data, _caption(thinned))


def _with_treatments(lr: Series, treatments: Sequence[Treatment]) -> Series:
    """The sampled LR series with each treatment's LR change put in at its step: the LR is sampled every
    few steps, a treatment changes it at one, and the step line must turn there, not at the next sample."""
    add_s, add_v = [], []
    for t in treatments:
        ch = (t.changes or {}).get("lr") if isinstance(t.changes, dict) else None
        if isinstance(ch, (list, tuple)) and len(ch) == 2 and all(isinstance(v, (int, float)) for v in ch):
            add_s += [t.step, t.step]
            add_v += [float(ch[0]), float(ch[1])]
    if not add_s:
        return lr
    steps = np.concatenate([lr.steps, np.asarray(add_s, dtype=np.int64)])
    values = np.concatenate([lr.values, np.asarray(add_v)])
    order = np.argsort(steps, kind="stable")
    return Series(steps[order], values[order])


def lr_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    lr = run.get("lr")
    treatments = list(diag.treatments) if diag is not None else run.facts(Treatment)
    if lr is None and not treatments:
        return None
    data: list[dict[str, Any]] = []
    thinned = {}
    if lr is not None:
        lr = _with_treatments(lr, treatments)
        tr, k = _line("learning rate", lr, finding_steps(diag), color=PALETTE[4], width=2)
        tr["line"]["shape"] = "hv"
        data.append(tr)
        if k:
            thinned["lr"] = k
    if treatments:
        ys, hov, txt = [], [], []
        for t in treatments:
            y = _value_at(lr, t.step)
            if isinstance(t.changes, dict) and isinstance(t.changes.get("lr"), (list, tuple)) and len(t.changes["lr"]) == 2:
                new = t.changes["lr"][1]
                y = float(new) if isinstance(new, (int, float)) and math.isfinite(new) and new > 0 else y
            ys.append(y)
            changed = ", ".join(f"{k} {fmt(v[0])} → {fmt(v[1])}" if isinstance(v, (list, tuple)) and len(v) == 2
                                else f"{k} {fmt(v)}" for k, v in (t.changes or {}).items())
            verified = (t.verified or {}).get("summary") if t.verified else None
            hov.append(pe(f"step {t.step}: {t.code or '?'} → {t.cause or '?'}: {t.action or ''}"
                          + (f" ({changed})" if changed else "")
                          + (f"; rolled back to step {t.rolled_back_to}" if t.rolled_back_to is not None else "")
                          + (f"; {verified}" if verified else "")))
            txt.append(pe(t.cause or t.code or "treatment"))
        data.append({"type": "scatter", "mode": "markers", "name": "treatments", "x": [t.step for t in treatments],
                     "y": ys, "hovertext": hov, "hoverinfo": "text", "text": txt,
                     "marker": {"symbol": "star", "size": 14, "color": "#00897b", "line": {"width": 1, "color": "#004d40"}}})
    logy = lr is not None and wants_log([lr.values])
    lay = base_layout("Learning rate" + (" and treatments" if treatments else ""), ytitle="lr", logy=logy)
    return _fig("lr", "Learning rate", lay, data, _caption(thinned))


def _drawable(run: Run, name: str) -> bool:
    """A series with at least one finite point (one with none has nothing to draw)."""
    s = run.get(name)
    return s is not None and bool(np.isfinite(s.values).any())


def _layer_names(run: Run, prefix: str) -> list[str]:
    return [n for n in run.names(prefix) if run.get(n) is not None]


def grad_heatmap(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    """Per-layer gradient norm over time, log10, in time buckets (each cell the bucket's largest norm)."""
    names = _layer_names(run, "grad_norm")
    if not names:
        return None
    all_steps = np.unique(np.concatenate([run.series[n].steps for n in names]))
    if all_steps.size == 0:
        return None
    edges = _edges(all_steps)
    z, nonfin = [], []
    for n in names:
        s = run.series[n]
        col = np.searchsorted(edges, s.steps, side="right") - 1
        col = np.clip(col, 0, len(edges) - 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            lv = np.where(np.isfinite(s.values) & (s.values > 0), np.log10(np.abs(s.values)), np.nan)
        row = np.full(len(edges) - 1, -np.inf)
        np.maximum.at(row, col, np.where(np.isnan(lv), -np.inf, lv))
        zero = np.zeros(len(edges) - 1, bool)
        np.logical_or.at(zero, col, np.isfinite(s.values) & (s.values == 0))
        seen = np.zeros(len(edges) - 1, bool)
        seen[col] = True
        row[~seen] = np.nan
        row[np.isneginf(row) & zero] = np.nan  # exact zeros: shown as gaps, counted in hover text
        row[np.isneginf(row)] = np.nan
        z.append(json_floats(row))
        bad = ~np.isfinite(s.values)
        if bad.any():
            nonfin.append((n.split("/", 1)[1], int(s.steps[np.argmax(bad)])))
    mids = ((edges[:-1] + edges[1:]) / 2).round().astype(int).tolist()
    labels = [pe(n.split("/", 1)[1]) for n in names]
    data: list[dict[str, Any]] = [{
        "type": "heatmap", "x": mids, "y": labels, "z": z, "colorscale": "Viridis",
        "colorbar": {"title": {"text": "log10 ‖g‖"}},
        "hovertemplate": "%{y}<br>step ≈ %{x}<br>log10 ‖g‖ = %{z:.2f}<extra></extra>", "hoverongaps": False}]
    if nonfin:
        data.append({"type": "scatter", "mode": "markers", "name": "first non-finite gradient",
                     "x": [s for _, s in nonfin], "y": [pe(n) for n, _ in nonfin],
                     "marker": {"symbol": "x", "size": 10, "color": "#ff1744"},
                     "hovertemplate": "%{y}: first non-finite gradient at step %{x}<extra></extra>"})
    lay = base_layout("Gradient norm per layer (log10)", ytitle="", height=max(260, min(900, 60 + 22 * len(names))))
    lay["yaxis"].update({"automargin": True, "autorange": "reversed", "type": "category"})
    lay["legend"]["y"] = -0.3
    cap = ("Each cell is the largest gradient norm in its bucket of steps; a blank cell is no sample "
           "(or a zero gradient). Rows from input (top) to output.")
    if len(edges) - 1 < all_steps.size:
        cap += f" {all_steps.size:,} sampled steps in {len(edges) - 1} buckets."
    return _fig("grad_heatmap", "Gradient norm per layer", lay, data, cap)


def _edges(steps: np.ndarray) -> np.ndarray:
    """Bucket edges over the sampled steps: one bucket per sampled step up to MAX_COLUMNS, else even spans."""
    if steps.size <= MAX_COLUMNS:
        mids = steps.astype(float)
        if steps.size == 1:
            return np.array([mids[0] - 0.5, mids[0] + 0.5])
        inner = (mids[:-1] + mids[1:]) / 2
        return np.concatenate([[mids[0] - (inner[0] - mids[0])], inner, [mids[-1] + (mids[-1] - inner[-1])]])
    return np.linspace(float(steps[0]), float(steps[-1]) + 1, MAX_COLUMNS + 1)


def _per_layer_lines(run: Run, diag: Diagnosis | None, prefix: str, cid: str, title: str, ytitle: str, *,
                     logy: bool | None = None, yrange: list[float] | None = None) -> dict[str, Any] | None:
    names = _layer_names(run, prefix)
    if not names:
        return None
    keep = finding_steps(diag)
    data, thinned = [], {}
    for i, n in enumerate(names[:MAX_LINES]):
        tr, k = _line(n.split("/", 1)[1], run.series[n], keep, color=PALETTE[i % len(PALETTE)], width=1.3)
        data.append(tr)
        if k:
            thinned[n] = k
    if logy is None:
        logy = wants_log([run.series[n].values for n in names[:MAX_LINES]])
    lay = base_layout(title, ytitle=ytitle, logy=logy)
    if yrange:
        lay["yaxis"]["range"] = yrange
    cap = _caption(thinned)
    if len(names) > MAX_LINES:
        cap = (cap + " " if cap else "") + f"{len(names) - MAX_LINES} more layers not drawn: " + ", ".join(
            n.split("/", 1)[1] for n in names[MAX_LINES:MAX_LINES + 8]) + ("…" if len(names) > MAX_LINES + 8 else "")
    return _fig(cid, title, lay, data, cap)


def update_ratio_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    fig = _per_layer_lines(run, diag, "update_ratio", "update_ratio", "Update / weight ratio per layer",
                           "‖Δw‖ / ‖w‖", logy=True)
    if fig is None:
        return None
    lo, hi = UPDATE_RATIO_BAND
    lay = fig["figure"]["layout"]
    lay["shapes"].append({"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": lo, "y1": hi,
                          "fillcolor": "#43a047", "opacity": 0.12, "line": {"width": 0}, "layer": "below"})
    lay["shapes"].append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": 1e-3, "y1": 1e-3,
                          "line": {"color": "#2e7d32", "width": 1, "dash": "dot"}})
    lay["annotations"].append({"x": 0, "xref": "paper", "xanchor": "left", "y": math.log10(hi), "yref": "y",
                               "yanchor": "bottom", "text": "≈ 1e-3: the usual healthy range", "showarrow": False,
                               "font": {"color": "#2e7d32", "size": 10}})
    fig["caption"] = ("The green band is about 1e-3 (10^-3.5 to 10^-2.5): far above it each step rewrites the "
                      "weights, far below it they barely move. " + fig["caption"]).strip()
    return fig


def activation_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    dead = _layer_names(run, "dead_frac")
    sat = _layer_names(run, "saturated_frac")
    if not dead and not sat:
        return None
    keep = finding_steps(diag)
    data, thinned = [], {}
    for j, (prefix, names, dash) in enumerate((("dead", dead, None), ("saturated", sat, "dash"))):
        for i, n in enumerate(names[:MAX_LINES // 2]):
            tr, k = _line(f"{prefix}: {n.split('/', 1)[1]}", run.series[n], keep,
                          color=PALETTE[(i + 5 * j) % len(PALETTE)], dash=dash, width=1.5)
            data.append(tr)
            if k:
                thinned[n] = k
    lay = base_layout("Dead and saturated units per module", ytitle="fraction of units")
    lay["yaxis"]["range"] = [-0.02, 1.02]
    return _fig("activations", "Dead and saturated units", lay, data,
                ("Dead: units that output zero for the whole sampled batch (ReLU family). Saturated: units in "
                 "the flat tails of a squashing activation. " + _caption(thinned)).strip())


def lr_range_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    lrs = run.get("lr_range/lr")
    losses = run.get("lr_range/loss")
    if lrs is None or losses is None:
        return None
    n = min(len(lrs), len(losses))
    data = [{"type": "scatter", "mode": "lines", "name": "loss", "x": json_floats(lrs.values[:n]), "y": json_floats(losses.values[:n]),
             "line": {"color": PALETTE[7], "width": 1}}]
    sm = run.get("lr_range/loss_smooth")
    if sm is not None:
        m = min(n, len(sm))
        data.append({"type": "scatter", "mode": "lines", "name": "smoothed", "x": json_floats(lrs.values[:m]),
                     "y": json_floats(sm.values[:m]), "line": {"color": PALETTE[0], "width": 2.2}})
    lay = base_layout("Learning-rate range test", ytitle="loss", xtitle="learning rate", logx=True)
    ref = (sm if sm is not None else losses).finite()
    if len(ref):
        # the test runs until the loss blows up: show the part that decides the LR, not the blow-up's scale
        top = 2.5 * float(ref.values[0])
        fin = losses.values[np.isfinite(losses.values)]
        if fin.size and fin.max() > top > 0:
            lay["yaxis"]["range"] = [min(0.0, float(fin.min())), top]
    ev = run.events_of("lr_range_test")
    sug = ev[0].data.get("suggested_lr") if ev else None
    if isinstance(sug, (int, float)) and math.isfinite(sug) and sug > 0:
        lay["shapes"].append({"type": "line", "xref": "x", "yref": "paper", "x0": sug, "x1": sug, "y0": 0, "y1": 1,
                              "line": {"color": "#2e7d32", "dash": "dash"}})
        lay["annotations"].append({"x": math.log10(sug), "xref": "x", "y": 1, "yref": "paper", "yanchor": "bottom",
                                   "text": f"suggested lr {fmt(sug)}", "showarrow": False,
                                   "font": {"color": "#2e7d32", "size": 11}})
    return _fig("lr_range", "Learning-rate range test", lay, data,
                "The loss over a short run whose learning rate grows each step; the suggestion is where the "
                "smoothed loss falls fastest, before it turns up.")


def probe_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    """The checkup's short training probes (overfit a tiny batch, fit one sample, zero inputs …), one curve each."""
    names = [n for n in run.names("probe") if _drawable(run, n)]
    if not names:
        return None
    data = []
    for i, n in enumerate(names[:MAX_LINES]):
        label = n.split("/", 1)[1].removesuffix("/loss").replace("_", " ")
        tr, _ = _line(label, run.series[n], (), color=PALETTE[i % len(PALETTE)], width=1.6)
        data.append(tr)
    lay = base_layout("Checkup probes: short training runs", ytitle="loss", xtitle="probe step",
                  logy=wants_log([run.series[n].values for n in names[:MAX_LINES]]))
    return _fig("probes", "Checkup probes", lay, data,
                "Each probe trains a copy of the model briefly from the same start (the model itself is restored "
                "bitwise afterwards): a tiny batch and one sample should be fitted, zero inputs should do worse.")


_SHOWN_PREFIXES = ("grad_norm/", "update_ratio/", "weight_norm/", "dead_frac/", "saturated_frac/", "act_absmax/",
                   "lr_range/", "loss_term/", "probe/")
_SHOWN = {"loss", "val_loss", "lr", "grad_norm"}


def other_chart(run: Run, diag: Diagnosis | None) -> dict[str, Any] | None:
    """Every other logged metric (the total gradient norm, logits, the user's own), one line each."""
    listed = [n for n in run.series if n not in _SHOWN and not n.startswith(_SHOWN_PREFIXES)
              and not ACCURACY.search(n) and run.get(n) is not None]
    names = [n for n in listed if _drawable(run, n)]
    empty = [n for n in listed if n not in names]
    if not names:
        return None
    keep = finding_steps(diag)
    data, thinned = [], {}
    for i, n in enumerate(names[:MAX_OTHER]):
        tr, k = _line(n, run.series[n], keep, color=PALETTE[i % len(PALETTE)], width=1.3)
        data.append(tr)
        if k:
            thinned[n] = k
    lay = base_layout("Other logged metrics", ytitle="value",
                  logy=wants_log([run.series[n].values for n in names[:MAX_OTHER]]))
    cap = _caption(thinned)
    if len(names) > MAX_OTHER:
        cap = (cap + " " if cap else "") + f"{len(names) - MAX_OTHER} more not drawn."
    if empty:
        cap = (cap + " " if cap else "") + "No finite value to draw: " + ", ".join(empty[:8]) + ("…" if len(empty) > 8 else "") + "."
    return _fig("other", "Other logged metrics", lay, data, cap)


BUILDERS = (loss_chart, accuracy_chart, lr_chart, grad_heatmap, update_ratio_chart, activation_chart,
            lr_range_chart, probe_chart, other_chart)


def figures(run: Run, diag: Diagnosis | None, extra: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Every chart the run has data for, in reading order; ``extra`` (e.g. tuning plots) at the end."""
    out = []
    for build in BUILDERS:
        fig = build(run, diag)
        if fig is not None:
            out.append(fig)
    out.extend(extra)
    return out
