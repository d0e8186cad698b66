"""The terminal report, with rich: findings with their evidence, then ranked causes and fixes."""
from __future__ import annotations

from typing import IO

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..diagnosis import Diagnosis
from ..numfmt import fmt
from .safe import safe_markup as esc

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _console(file: IO[str] | None, width: int | None = None) -> Console:
    return Console(file=file, width=width, soft_wrap=False, highlight=False)


def render(diag: Diagnosis, file: IO[str] | None = None, *, title: str = "traindoctor", width: int | None = None,
           max_causes: int = 3) -> None:
    con = _console(file, width)
    src = diag.source.get("source") or diag.source.get("store")
    head = f"[bold]{esc(title, newlines=False)}[/bold]" + (f" — {esc(src, newlines=False)}" if src else "")
    con.rule(head)
    if diag.source.get("columns"):
        cols = ", ".join(f"{k}={v}" for k, v in diag.source["columns"].items())
        con.print(f"[dim]columns used: {esc(cols, newlines=False)}[/dim]")
    ended = getattr(diag, "ended", None)
    if ended and not diag.findings:  # a crashed or stopped run is never called healthy
        con.print(f"[bold red]ended early[/bold red]: {esc(ended)}; no symptom found before that.")
    elif not diag.judged:
        con.print("[bold yellow]not judged[/bold yellow]: no symptom found, but the log is too thin to call the run healthy (below).")
    elif diag.healthy:
        con.print("[bold green]healthy[/bold green]: no symptom found.")
    else:
        t = Table(show_header=True, header_style="bold", expand=False, box=None, pad_edge=False)
        t.add_column("code")
        t.add_column("symptom")
        t.add_column("steps", justify="right")
        t.add_column("evidence", overflow="fold")
        for f in diag.findings:
            steps = "" if f.step is None else (str(f.step) if f.step_end in (None, f.step) else f"{f.step}–{f.step_end}")
            where = f.evidence.get("where") if isinstance(f.evidence, dict) else None
            at = f" [dim]at {esc(str(where).rsplit('/', 1)[-1])}[/]" if isinstance(where, str) and ":" in where else ""
            t.add_row(f"[{STYLE.get(f.severity, '')}]{esc(f.code)}[/]", esc(f.name), steps, esc(f.message) + at)
        con.print(t)
        if diag.causes:
            con.print()
            con.print("[bold]Most likely causes[/bold]")
            for i, c in enumerate(diag.causes[:max_causes], 1):
                body = [f"[dim]evidence:[/dim] {esc(', '.join(c.evidence))}"]
                if i == 1 and c.summary:  # the chain of evidence in words for the leading cause
                    body.append(esc(c.summary))
                body += [f"[dim]replayed:[/dim] {esc(line)}" for line in c.verification]
                body.append("[dim]fix:[/dim]")
                body += [f"  {j}. {esc(fx)}" for j, fx in enumerate(c.fixes[: 4 if i == 1 else 2], 1)]
                con.print(Panel("\n".join(body), title=f"{i}. {esc(c.id)} — {esc(c.title, newlines=False)} ({c.confidence:.2f})",
                                title_align="left", expand=False))
            rest = diag.causes[max_causes:]
            if rest:
                con.print("[dim]also possible: " + ", ".join(f"{esc(c.id)} ({c.confidence:.2f})" for c in rest) + "[/dim]")
        for r in diag.ruled_out:
            # a cause the findings pointed at that this run's own facts contradict
            con.print(f"[dim]ruled out: {esc(r.id)} — {esc('; '.join(r.reasons))} (pointed at by "
                      f"{esc(', '.join(r.evidence))})[/dim]")
    if diag.treatments or diag.heal_stopped is not None:
        _treatments(con, diag)
    for n in diag.notes:
        con.print(f"[dim]note: {esc(n)}[/dim]")
    for n in diag.not_judged:
        con.print(f"[dim]not judged: {esc(n)}[/dim]")


def _changes(changes: object) -> str:
    """``lr 0.5 → 0.05, clip_grad_norm None → 2.1``: what a treatment changed, before → after."""
    if not isinstance(changes, dict):
        return ""
    parts = []
    for k, v in changes.items():
        if isinstance(v, (list, tuple)) and len(v) == 2:
            parts.append(f"{k} {fmt(v[0])} → {fmt(v[1])}")
        else:
            parts.append(f"{k} {fmt(v)}")
    return ", ".join(parts)


def _treatments(con: Console, diag: Diagnosis) -> None:
    """What healing did, in order: a line per treatment, then why it stopped when it gave up."""
    con.print()
    con.print("[bold]Treatments applied[/bold]")
    skips = [t for t in diag.treatments if t.cause == "nonfinite-data"]
    if len(skips) > 3:  # one line for the poisoned batches skipped, with every sample quarantined
        ids = sorted({i for t in skips for i in (t.quarantined or ())},
                     key=lambda i: (0, i, "") if isinstance(i, int) else (1, 0, str(i)))
        steps = ", ".join(str(t.step) for t in skips[:8]) + (", …" if len(skips) > 8 else "")
        con.print(f"  steps {esc(steps)}: {len(skips)} batches holding NaN/Inf skipped (nonfinite-data); "
                  f"quarantined samples {esc(', '.join(map(str, ids[:30])))}" + (" …" if len(ids) > 30 else ""))
    for t in diag.treatments:
        if len(skips) > 3 and t.cause == "nonfinite-data":
            continue
        back = f"; rolled back to step {t.rolled_back_to}" if t.rolled_back_to is not None else ""
        changed = _changes(t.changes)
        quarantined = f"; quarantined samples {', '.join(map(str, t.quarantined[:20]))}" if t.quarantined else ""
        verified = ""
        if t.verified:
            verified = f" [dim]({esc(str(t.verified.get('summary', '')))})[/dim]" if t.verified.get("summary") else ""
        con.print(f"  step {t.step}: {esc(t.code or '?')} → {esc(t.cause or '?')}: {esc(t.action or '')}"
                  + (f" [dim]({esc(changed)})[/dim]" if changed else "") + esc(back + quarantined) + verified)
    replays = [t.verified for t in diag.treatments if t.verified]
    if replays:
        secs = sum(float(v.get("seconds") or 0.0) for v in replays)
        tried = sum(len(v.get("tried") or []) for v in replays)
        con.print(f"  [dim]verification: {tried} fix(es) replayed in {fmt(secs)} s in all[/dim]")
    if diag.heal_stopped is not None:
        con.print(f"[bold red]healing stopped[/bold red]: {esc(diag.heal_stopped.message or '')}")


def render_explain(text: str, file: IO[str] | None = None) -> None:
    con = _console(file)
    con.print(esc(text))
