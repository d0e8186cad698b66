"""The tuning report: the best parameters, the final re-runs over seeds, every trial with why it was pruned;
in the terminal (rich), as JSON, and as an HTML page with Optuna's own plots.
"""
from __future__ import annotations

import json
import math
import os
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from ..numfmt import fmt
from .output import write_document, write_text
from .safe import safe_markup as esc

STATE_STYLE = {"PROBE": "blue", "COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in p.items())


def _val(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return fmt(v)


def render_tune(result: Any, file: IO[str] | None = None, *, width: int | None = None, max_rows: int = 60) -> None:
    con = Console(file=file, width=width, soft_wrap=False, highlight=False)
    n = len(result.trials)
    con.rule(f"[bold]traindoctor tune[/bold] — study {esc(result.study_name, newlines=False)} ({n} trials)")
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col, kw in (("#", {"justify": "right"}), ("stage", {}), ("state", {}), ("parameters", {"overflow": "fold"}),
                    (result.metric, {"justify": "right"}), ("steps", {"justify": "right"}),
                    ("why (pruned, or a lead's choice)", {"overflow": "fold"})):
        t.add_column(col, **kw)
    rows = result.trials if n <= max_rows else result.trials[-max_rows:]
    for r in rows:
        st = STATE_STYLE.get(r.state, "")
        t.add_row(str(r.number), esc(_stage(r)), f"[{st}]{esc(r.state.lower())}[/]", esc(_params(r.params)),
                  _val(r.value) if r.state == "COMPLETE" else "", f"{r.steps:,}", esc(_why(r)))
    con.print(t)
    if n > max_rows:
        con.print(f"[dim]({n - max_rows} earlier trials in the JSON report)[/dim]")
    pruned = [r for r in result.trials if r.state == "PRUNED"]
    by_doctor = sum(1 for r in pruned if r.pruned_by == "doctor")
    con.print(f"[dim]{sum(1 for r in result.trials if r.state == 'COMPLETE')} complete, {len(pruned)} pruned "
              f"({by_doctor} by the doctor, {len(pruned) - by_doctor} by Optuna's pruner, a timeout or a non-finite result); "
              f"{result.compute:,} training steps in all[/dim]")
    if result.fine_space:
        con.print("[dim]fine stage searched: " + esc(", ".join(p.spec() for p in result.fine_space)) + "[/dim]")
    if result.final:
        con.print()
        con.print("[bold]Final re-runs over seeds[/bold]")
        ft = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        ft.add_column("parameters", overflow="fold")
        ft.add_column(f"{result.metric} mean ± std", justify="right")
        ft.add_column("runs", justify="right")
        for f in result.final:
            ft.add_row(esc(_params(f.params)), f"{_val(f.mean)} ± {_val(f.std)}",
                       f"{len(f.values)}" + (f" (+{f.failed} pruned)" if f.failed else ""))
        con.print(ft)
    if result.best_params is not None:
        con.print(f"[bold green]best[/bold green]: {esc(_params(result.best_params))} → {esc(result.metric)} "
                  f"{_val(result.best_value)}" + (" (mean over seeds)" if result.final else ""))
    else:
        con.print("[bold red]no trial completed[/bold red]: every trial was pruned or failed (reasons above)")
    for note in result.notes:
        con.print(f"[dim]note: {esc(note)}[/dim]")


def write_tune_json(result: Any, dest: str | os.PathLike[str]) -> None:
    write_document(result.to_json(), dest)


def optuna_figures(study: Any) -> list[dict[str, Any]]:
    """Optuna's own plots of the study (optimisation history, parameter slices and importances, the
    intermediate values), as figure specs for the page; a plot Optuna cannot draw for this study is left out."""
    import warnings

    from optuna import visualization as vis

    out = []
    plots = [("history", "Optimisation history", vis.plot_optimization_history),
             ("slice", "Each parameter against the objective", vis.plot_slice)]
    if len({k for t in study.get_trials(deepcopy=False) for k in t.params}) >= 2:  # one parameter: nothing to rank
        plots += [("importances", "Parameter importances", vis.plot_param_importances),
                  ("parallel", "Parallel coordinates", vis.plot_parallel_coordinate)]
    out.append(intermediate_figure(study))
    for cid, title, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = plot(study)
        except Exception:  # noqa: BLE001 - e.g. importances need two completed trials and two parameters
            continue
        if not fig.data:
            continue
        spec = json.loads(fig.to_json())
        spec["layout"].pop("template", None)
        spec["layout"].update({"height": 380, "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
                               "plot_bgcolor": "#fafafa", "paper_bgcolor": "#ffffff",
                               "title": {"text": title, "x": 0.01, "font": {"size": 15}}})
        out.append({"id": f"optuna_{cid}", "title": title, "figure": spec, "caption": ""})
    return out


def intermediate_figure(study: Any) -> dict[str, Any]:
    """Each trial's reported metric over its evaluations, one colour per stage: a pruned trial's line stops
    where it was stopped (Optuna's own plot would show the stages' step offsets)."""
    from ..tuning.study import STAGE_OFFSET
    from .figures import PALETTE, base_layout, json_floats, pe

    colour = {"coarse": PALETTE[7], "fine": PALETTE[0], "final": PALETTE[2]}
    data, shown = [], set()
    for t in study.get_trials(deepcopy=False):
        iv = t.intermediate_values
        if not iv:
            continue
        stage = str(t.user_attrs.get("stage", "?"))
        steps = sorted(iv)
        import numpy as np

        xs = [s - STAGE_OFFSET.get(stage, 0) for s in steps]
        pruned = t.state.name == "PRUNED"
        data.append({"type": "scatter", "mode": "lines+markers", "name": pe(stage), "legendgroup": stage,
                     "showlegend": stage not in shown, "x": xs, "y": json_floats(np.asarray([iv[s] for s in steps])),
                     "line": {"color": colour.get(stage, PALETTE[3]), "width": 1.2, "dash": "dot" if pruned else None},
                     "marker": {"size": 4, "symbol": "x" if pruned else "circle"},
                     "hovertemplate": pe(f"trial {t.number} ({stage}{', pruned' if pruned else ''})")
                     + "<br>evaluation %{x}: %{y:.4g}<extra></extra>"})
        shown.add(stage)
    lay = base_layout("Reported metric per trial (dotted: pruned)", ytitle="metric", xtitle="evaluation",
                      logy=False)
    return {"id": "intermediate", "title": "Reported metric per trial", "figure": {"data": data, "layout": lay},
            "caption": "A pruned trial's line ends where it was stopped."}


def probe_figure(probe: dict[str, Any] | None) -> dict[str, Any] | None:
    """The probe's LR range test: each step's loss against the learning rate it trained at, the rate it blew
    up at, and the range kept for the search (shaded)."""
    from .figures import PALETTE, base_layout, json_floats, pe

    if not probe or not probe.get("lrs"):
        return None
    import numpy as np

    lrs = [float(x) for x in probe["lrs"]]
    losses = np.asarray([np.nan if v is None else float(v) for v in probe.get("losses") or []][: len(lrs)], float)
    name = str(probe.get("param", "lr"))
    data = [{"type": "scatter", "mode": "lines+markers", "name": "loss", "x": lrs[: len(losses)],
             "y": json_floats(losses), "line": {"color": PALETTE[0], "width": 1.5}, "marker": {"size": 3},
             "hovertemplate": pe(name) + " %{x:.3g}: loss %{y:.4g}<extra></extra>"}]
    lay = base_layout("LR range test (the probe)", ytitle="loss", xtitle=name, logy=True, logx=True)
    shapes = []
    rng = probe.get("range")
    if isinstance(rng, list) and len(rng) == 2:
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": rng[0], "x1": rng[1], "y0": 0, "y1": 1,
                       "fillcolor": PALETTE[2], "opacity": 0.12, "line": {"width": 0}})
    if probe.get("diverged_at"):
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": probe["diverged_at"],
                       "x1": probe["diverged_at"], "y0": 0, "y1": 1, "line": {"color": PALETTE[3], "dash": "dash"}})
    lay["shapes"] = shapes
    return {"id": "probe", "title": "LR range test", "figure": {"data": data, "layout": lay},
            "caption": str(probe.get("why", ""))}  # shown as text (textContent), never as markup


def _stage(r: Any) -> str:
    """A trial's stage as the tables show it: a lead trial (Search.next_lead) is a fine one, marked."""
    return f"{r.stage} (lead)" if getattr(r, "lead", None) else r.stage


def _why(r: Any) -> str:
    """A trial's last column: how a lead was chosen, why a trial was pruned."""
    return "; ".join(w for w in (getattr(r, "lead", None), r.reason) if w)


def tune_html(result: Any) -> str:
    from .html import h, page

    rows = []
    for r in result.trials:
        rows.append(f"<tr><td class=steps>{r.number}</td><td>{h(_stage(r))}</td><td>{h(r.state.lower())}</td>"
                    f"<td class=mono>{h(_params(r.params))}</td><td class=steps>"
                    f"{h(_val(r.value)) if r.state == 'COMPLETE' else ''}</td><td class=steps>{r.steps:,}</td>"
                    f"<td>{h(_why(r))}</td></tr>")
    finals = "".join(f"<tr><td class=mono>{h(_params(f.params))}</td><td class=steps>{h(_val(f.mean))} ± "
                     f"{h(_val(f.std))}</td><td class=steps>{len(f.values)}</td></tr>" for f in result.final)
    best = (f"<p><b>best</b>: <code>{h(_params(result.best_params))}</code> → {h(result.metric)} "
            f"{h(_val(result.best_value))}</p>" if result.best_params is not None else
            "<p class=sev-error>no trial completed</p>")
    fine = (f"<p class=muted>fine stage searched: <code>{h(', '.join(p.spec() for p in result.fine_space))}</code></p>"
            if result.fine_space else "")
    body = (f'<section id="verdict"><h2>Result</h2>{best}<p class=muted>searched: '
            f"<code>{h(', '.join(p.spec() for p in result.space))}</code></p>{fine}"
            + "".join(f"<p class=muted>note: {h(n)}</p>" for n in result.notes) + "</section>"
            + (f'<section id="final"><h2>Final re-runs over seeds</h2><table><thead><tr><th>parameters</th><th>'
               f"{h(result.metric)} mean ± std</th><th>runs</th></tr></thead><tbody>{finals}</tbody></table></section>"
               if finals else "")
            + '<section id="trials"><h2>Trials</h2><table><thead><tr><th>#</th><th>stage</th><th>state</th>'
            f"<th>parameters</th><th>{h(result.metric)}</th><th>steps</th><th>why (pruned, or a lead's choice)</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></section>")
    figs = optuna_figures(result.study) if result.study is not None else []
    pf = probe_figure(getattr(result, "probe", None))
    if pf is not None:
        figs.insert(0, pf)
    return page(f"traindoctor tune — {result.study_name}", result.study_name, body, figs)


def write_tune_html(result: Any, dest: str | os.PathLike[str]) -> None:
    write_text(tune_html(result), dest)
