"""The HTML report: one self-contained file, charts drawn by plotly.js (embedded), the diagnosis as text.

``render_html(run, diag)`` returns the page; ``write_html`` writes it as ``--json`` writes JSON
(atomically, a device or a FIFO into it). The page needs no network: plotly.js is inlined from the
``plotly`` package. Every chart is a figure spec from :mod:`.figures`, carried in a
``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are JSON escapes, so no string
in it can end the block; every string of the diagnosis is escaped with :func:`html.escape`.

:func:`diagnosis_html` (the diagnosis as an HTML fragment) and :func:`page_css` are shared with the
live dashboard.
"""
from __future__ import annotations

import functools
import html
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from ..diagnosis import Diagnosis
from ..numfmt import fmt
from ..run import Run
from .figures import figures
from .output import write_text

SCHEMA = "traindoctor-html/1"


def h(text: object) -> str:
    return html.escape(str(text), quote=True)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js, minified, from the ``plotly`` package (no network, no CDN)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def json_for_script(obj: Any) -> str:
    """JSON safe inside a ``<script>`` block: ``<``, ``>``, ``&`` and the JS line separators escaped."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page_css() -> str:
    return """
:root { --fg:#1d2330; --muted:#5f6b7a; --line:#e3e7ee; --bg:#f5f7fa; --card:#fff;
        --error:#c62828; --warning:#ef6c00; --info:#0277bd; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
header.top { background:#1d2330; color:#fff; padding:14px 24px; display:flex; align-items:baseline; gap:16px;
             flex-wrap:wrap; }
header.top h1 { font-size:18px; margin:0; font-weight:600; }
header.top .src { color:#c9d1dc; font-family:ui-monospace,Menlo,Consolas,monospace; font-size:13px;
                  overflow-wrap:anywhere; }
main { max-width:1280px; margin:0 auto; padding:18px 24px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:0 0 16px; }
section h2 { font-size:16px; margin:0 0 10px; }
.verdict { display:inline-block; padding:3px 10px; border-radius:12px; font-weight:600; color:#fff; font-size:13px; }
.v-error { background:var(--error); } .v-warning { background:var(--warning); } .v-info { background:var(--info); }
.v-healthy { background:var(--ok); } .v-notjudged, .v-ended { background:#6d4c41; }
.facts { color:var(--muted); margin-top:6px; font-size:13px; }
.facts span { margin-right:16px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; text-transform:uppercase; letter-spacing:.03em; }
td.code { font-family:ui-monospace,Menlo,Consolas,monospace; font-weight:700; white-space:nowrap; }
td.steps { white-space:nowrap; text-align:right; font-variant-numeric:tabular-nums; }
.sev-error { color:var(--error); } .sev-warning { color:var(--warning); } .sev-info { color:var(--info); }
.cause { border:1px solid var(--line); border-left:4px solid var(--info); border-radius:6px; padding:10px 14px;
         margin:10px 0; }
.cause.first { border-left-color:var(--error); }
.cause h3 { margin:0 0 4px; font-size:15px; }
.cause .conf { float:right; font-variant-numeric:tabular-nums; color:var(--muted); }
.bar { height:6px; background:var(--line); border-radius:3px; margin:4px 0 8px; overflow:hidden; }
.bar > i { display:block; height:100%; background:var(--info); }
.cause.first .bar > i { background:var(--error); }
.muted { color:var(--muted); }
ol.fixes { margin:4px 0 0 0; padding-left:22px; }
ul.plain { margin:4px 0; padding-left:20px; }
code, .mono { font-family:ui-monospace,Menlo,Consolas,monospace; font-size:12.5px; overflow-wrap:anywhere; }
.charts { display:grid; grid-template-columns:repeat(auto-fit,minmax(560px,1fr)); gap:16px; }
.chart { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:6px 8px 8px; min-width:0;
         overflow:hidden; }
.chart.wide { grid-column:1 / -1; }
.chart .caption { color:var(--muted); font-size:12px; margin:2px 8px 4px; }
.plot { width:100%; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px; }
"""


def _steps(step: Any, end: Any) -> str:
    if not isinstance(step, int):
        return ""
    return str(step) if end in (None, step) else f"{step}–{end}"


def verdict_badge(diag: Diagnosis) -> str:
    if diag.ended and not diag.findings:
        return '<span class="verdict v-ended">ended early</span>'
    v = diag.verdict
    cls = {"not judged": "notjudged"}.get(v, v)
    return f'<span class="verdict v-{h(cls)}">{h(v)}</span>'


def verdict_line(diag: Diagnosis) -> str:
    """One sentence under the badge: what the verdict means for this run."""
    if diag.ended and not diag.findings:
        return f"{h(diag.ended)}; no symptom found before that."
    if not diag.judged:
        return "No symptom found, but the log is too thin to call the run healthy (see below)."
    if diag.healthy:
        return "No symptom found."
    n = len(diag.findings)
    lead = f" Most likely cause: <b>{h(diag.causes[0].id)}</b> — {h(diag.causes[0].title)}." if diag.causes else ""
    return f"{n} finding{'s' if n != 1 else ''}.{lead}"


def diagnosis_html(diag: Diagnosis, *, max_causes: int = 3) -> str:
    """The diagnosis as an HTML fragment: symptoms, ranked causes with evidence and fixes (with what a
    replay verified), what was ruled out and why, treatments applied, notes and what was not judged."""
    out: list[str] = []
    if diag.findings:
        rows = []
        for f in diag.findings:
            where = f.evidence.get("where") if isinstance(f.evidence, dict) else None
            at = f' <span class="muted">at <code>{h(where)}</code></span>' if isinstance(where, str) and ":" in where else ""
            rows.append(f'<tr><td class="code sev-{h(f.severity)}">{h(f.code)}</td><td>{h(f.name)}'
                        f'<div class="muted">{h(f.severity)}</div></td><td class="steps">{h(_steps(f.step, f.step_end))}</td>'
                        f"<td>{h(f.message)}{at}</td></tr>")
        out.append('<section id="symptoms"><h2>Symptoms</h2><table><thead><tr><th>code</th><th>symptom</th>'
                   '<th>steps</th><th>evidence</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></section>")
    if diag.causes:
        cards = []
        for i, c in enumerate(diag.causes[:max_causes]):
            conf = max(0.0, min(1.0, float(c.confidence))) if math.isfinite(c.confidence) else 0.0
            parts = [f'<div class="cause{" first" if i == 0 else ""}"><span class="conf">confidence {conf:.2f}</span>'
                     f"<h3>{i + 1}. {h(c.title)} <code class=\"muted\">{h(c.id)}</code></h3>"
                     f'<div class="bar"><i style="width:{conf * 100:.0f}%"></i></div>']
            if c.summary:
                parts.append(f"<p>{h(c.summary)}</p>")
            if c.evidence:
                parts.append('<div><span class="muted">evidence:</span> ' + ", ".join(f"<code>{h(e)}</code>" for e in c.evidence)
                             + "</div>")
            if c.chain:
                parts.append('<ul class="plain">' + "".join(f"<li>{h(x)}</li>" for x in c.chain) + "</ul>")
            if c.verification:
                parts.append('<div><span class="muted">verified on a replay:</span><ul class="plain">'
                             + "".join(f"<li>{h(v)}</li>" for v in c.verification) + "</ul></div>")
            if c.fixes:
                parts.append('<div><span class="muted">fix:</span><ol class="fixes">'
                             + "".join(f"<li>{h(fx)}</li>" for fx in c.fixes[: 5 if i == 0 else 3]) + "</ol></div>")
            parts.append("</div>")
            cards.append("".join(parts))
        rest = diag.causes[max_causes:]
        more = ('<p class="muted">also possible: ' + ", ".join(f"{h(c.id)} ({c.confidence:.2f})" for c in rest) + "</p>"
                if rest else "")
        out.append('<section id="causes"><h2>Most likely causes</h2>' + "".join(cards) + more + "</section>")
    if diag.ruled_out:
        items = "".join(f"<li><b>{h(r.id)}</b> — {h(r.title)}: {h('; '.join(r.reasons))} "
                        f'<span class="muted">(pointed at by {h(", ".join(r.evidence))})</span></li>' for r in diag.ruled_out)
        out.append(f'<section id="ruled-out"><h2>Ruled out</h2><p class="muted">Causes a finding pointed at that this '
                   f'run\'s own facts contradict.</p><ul class="plain">{items}</ul></section>')
    if diag.treatments or diag.heal_stopped is not None:
        rows = []
        for t in diag.treatments:
            changes = ", ".join(f"{k} {fmt(v[0])} → {fmt(v[1])}" if isinstance(v, (list, tuple)) and len(v) == 2
                                else f"{k} {fmt(v)}" for k, v in (t.changes or {}).items())
            extra = []
            if t.rolled_back_to is not None:
                extra.append(f"rolled back to step {t.rolled_back_to}")
            if t.quarantined:
                extra.append(f"quarantined samples {', '.join(map(str, t.quarantined[:20]))}"
                             + (" …" if len(t.quarantined) > 20 else ""))
            ver = (t.verified or {}).get("summary") if t.verified else None
            rows.append(f'<tr><td class="steps">{t.step}</td><td class="code">{h(t.code or "?")}</td><td>{h(t.cause or "?")}</td>'
                        f"<td>{h(t.action or '')}{(' <span class=muted>(' + h(changes) + ')</span>') if changes else ''}"
                        f"{('<div class=muted>' + h('; '.join(extra)) + '</div>') if extra else ''}</td>"
                        f"<td>{h(ver) if ver else '<span class=muted>—</span>'}</td></tr>")
        stopped = (f'<p class="sev-error"><b>healing stopped</b> at step {diag.heal_stopped.step}: '
                   f"{h(diag.heal_stopped.message or '')}</p>" if diag.heal_stopped is not None else "")
        table = ('<table><thead><tr><th>step</th><th>code</th><th>cause</th><th>what was done</th>'
                 '<th>verified effect</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>") if rows else ""
        out.append(f'<section id="treatments"><h2>Treatments applied</h2>{table}{stopped}</section>')
    notes = [f"<li>{h(n)}</li>" for n in diag.notes]
    notes += [f'<li><span class="muted">not judged:</span> {h(str(n))}</li>' for n in diag.not_judged]
    if notes:
        out.append(f'<section id="notes"><h2>Notes</h2><ul class="plain">{"".join(notes)}</ul></section>')
    return "".join(out)


def run_facts(run: Run, diag: Diagnosis) -> list[tuple[str, str]]:
    """A few facts for the header: steps, format, loss, optimizer, model size."""
    facts: list[tuple[str, str]] = []
    if run.num_steps:
        facts.append(("steps", f"{run.num_steps:,}"))
    fmt_ = run.meta.get("format")
    if fmt_:
        facts.append(("format", str(fmt_)))
    info = run.info
    if info.loss_kind:
        facts.append(("loss", str(info.loss_kind)))
    opt = run.meta.get("optimizer")
    if isinstance(opt, dict) and opt.get("type"):
        facts.append(("optimizer", str(opt["type"])))
    if isinstance(info.lr, (int, float)) and math.isfinite(info.lr):
        facts.append(("lr", fmt(info.lr)))
    params = run.meta.get("params")
    if isinstance(params, (int, float)):
        facts.append(("parameters", f"{int(params):,}"))
    elif isinstance(params, list):
        facts.append(("parameter tensors", str(len(params))))
    if diag.source.get("columns"):
        facts.append(("columns used", ", ".join(f"{k}={v}" for k, v in diag.source["columns"].items())))
    return facts


_SCRIPT = """
(function () {
  var figs = JSON.parse(document.getElementById("td-figures").textContent);
  var host = document.getElementById("td-charts");
  var wide = {"loss": 1, "grad_heatmap": 1};
  figs.forEach(function (f) {
    var box = document.createElement("div");
    box.className = "chart" + (wide[f.id] ? " wide" : "");
    box.id = "chart-" + f.id;
    var plot = document.createElement("div");
    plot.className = "plot";
    box.appendChild(plot);
    if (f.caption) {
      var cap = document.createElement("div");
      cap.className = "caption";
      cap.textContent = f.caption;
      box.appendChild(cap);
    }
    host.appendChild(box);
    f.plot = plot;
  });
  // drawn once every box is in the grid, so each chart takes its final width
  figs.forEach(function (f) {
    Plotly.newPlot(f.plot, f.figure.data, f.figure.layout, {responsive: true, displaylogo: false});
  });
  document.body.setAttribute("data-charts", String(figs.length));
})();
"""


def page(title: str, src: str, body: str, figs: Sequence[dict[str, Any]]) -> str:
    """A whole self-contained page: ``body`` (HTML, already escaped) above the charts of ``figs``."""
    charts = ('<div class="charts" id="td-charts"></div>' if figs
              else '<p class="muted">Nothing to chart.</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="traindoctor ({SCHEMA})">
<title>{h(title)}{(" — " + h(os.path.basename(str(src)))) if src else ""}</title>
<style>{page_css()}</style>
<script>{plotly_js()}</script>
</head><body>
<header class="top"><h1>{h(title)}</h1><span class="src">{h(src)}</span></header>
<main>
{body}
<section id="charts"><h2>Charts</h2>{charts}</section>
</main>
<footer>traindoctor — the report needs no network: plotly.js is embedded.</footer>
<script type="application/json" id="td-figures">{json_for_script(list(figs))}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def render_html(run: Run, diag: Diagnosis, *, title: str = "traindoctor report",
                extra_figures: Sequence[dict[str, Any]] = ()) -> str:
    """The whole page as a string (see the module docstring)."""
    figs = figures(run, diag, extra_figures)
    src = diag.source.get("source") or diag.source.get("store") or run.meta.get("source") or run.meta.get("script") or ""
    facts = "".join(f"<span><b>{h(k)}</b> {h(v)}</span>" for k, v in run_facts(run, diag))
    body = (f'<section id="verdict"><h2>Verdict {verdict_badge(diag)}</h2><div>{verdict_line(diag)}</div>'
            f'<div class="facts">{facts}</div></section>\n{diagnosis_html(diag)}')
    return page(title, str(src), body, figs)


def write_html(run: Run, diag: Diagnosis, dest: str | os.PathLike[str], **kw: Any) -> None:
    """Write :func:`render_html` to ``dest`` as ``--json`` writes (``-``: standard output)."""
    write_text(render_html(run, diag, **kw), dest)

