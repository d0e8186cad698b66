"""Many runs at once (``traindoctor diagnose DIR``): one table, and one JSON document.

Each row is a run found in the directory: its path, its format, a verdict and the leading
cause. A verdict is the worst severity with the symptom codes behind it, ``healthy`` when no
rule found anything, or ``not judged`` when the run is too short for the loss rules to say.
Logs that could not be read get a row with their one-line error; files that are not training
logs at all (a CSV of data, an earlier checkpoint) are listed below the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from ..diagnosis import Diagnosis
from ..findings import SEVERITIES, severity_rank
from .output import write_document
from .safe import safe_markup as esc

SCHEMA = "traindoctor-runs/1"
STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@dataclass
class RunResult:
    """One run of a directory: its diagnosis, or the error that kept it from being read."""

    path: str
    format: str
    diagnosis: Diagnosis | None = None
    error: str | None = None
    note: str | None = None  # e.g. a symbolic link that leads out of the tree


@dataclass
class Summary:
    root: str
    results: list[RunResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def worst_severity(self) -> str | None:
        sev = [r.diagnosis.worst_severity for r in self.results if r.diagnosis is not None]
        sev = [s for s in sev if s is not None]
        return max(sev, key=severity_rank) if sev else None

    @property
    def errors(self) -> list[RunResult]:
        return [r for r in self.results if r.error is not None]


def verdict(diag: Diagnosis) -> str:
    """``error: L001 L002 G001``, ``healthy`` or ``not judged: …``."""
    if diag.findings:
        codes = list(dict.fromkeys(f.code for f in diag.findings))
        shown = " ".join(codes[:4]) + (f" +{len(codes) - 4}" if len(codes) > 4 else "")
        return f"{diag.worst_severity}: {shown}"
    if not diag.judged:
        short = next((str(n) for n in diag.not_judged if n.scope == "loss"), "too thin")
        return "not judged: " + short.split(":")[0]
    return "healthy"


def top_cause(diag: Diagnosis) -> str:
    if not diag.causes:
        return ""
    c = diag.causes[0]
    return f"{c.id} ({c.confidence:.2f})"


def display_path(path: Path, root: Path) -> str:
    try:  # lexically first: a symbolic link (a loop, one out of the tree) is shown where it lies
        rel = path.relative_to(root)
    except ValueError:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except (ValueError, OSError, RuntimeError):
            return os.fspath(path)
    return rel.as_posix() if rel.parts else (root.name or os.fspath(root))


def render_summary(summary: Summary, file: IO[str] | None = None, *, width: int | None = None) -> None:
    con = Console(file=file, width=width, soft_wrap=False, highlight=False)
    n = len(summary.results)
    con.rule(f"[bold]traindoctor diagnose[/bold] — {esc(summary.root, newlines=False)} ({n} run{'s' if n != 1 else ''})")
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
    t.add_column("run", overflow="fold")
    t.add_column("format")
    t.add_column("verdict")
    t.add_column("top cause", overflow="fold")
    for r in summary.results:
        shown = esc(r.path, newlines=False) + (f" [dim]({esc(r.note, newlines=False)})[/dim]" if r.note else "")
        if r.diagnosis is None:
            t.add_row(shown, esc(r.format), "[bold red]unreadable[/]", esc(r.error or ""))
            continue
        v = verdict(r.diagnosis)
        sev = r.diagnosis.worst_severity
        style = STYLE.get(sev or "", "green" if v == "healthy" else "dim")
        t.add_row(shown, esc(r.format), f"[{style}]{esc(v)}[/]", esc(top_cause(r.diagnosis)))
    con.print(t)
    counts = {s: 0 for s in ("healthy", "not judged", *SEVERITIES)}
    for r in summary.results:
        if r.diagnosis is not None:
            counts[r.diagnosis.verdict] += 1
    parts = [f"{counts[k]} {k}" for k in ("error", "warning", "info", "not judged", "healthy") if counts[k]]
    if summary.errors:
        parts.append(f"{len(summary.errors)} unreadable")
    con.print("[dim]" + ", ".join(parts) + "[/dim]")
    for path, why in summary.skipped:
        con.print(f"[dim]passed over: {esc(path, newlines=False)} ({esc(why)})[/dim]")


def summary_json(summary: Summary) -> dict[str, Any]:
    runs = []
    for r in summary.results:
        if r.diagnosis is not None:
            runs.append({"path": r.path, "format": r.format, **({"note": r.note} if r.note else {}),
                         **r.diagnosis.to_json()})
    return {
        "schema": SCHEMA,
        "root": summary.root,
        "worst_severity": summary.worst_severity,
        "runs": runs,
        "errors": [{"path": r.path, "format": r.format, "error": r.error, **({"note": r.note} if r.note else {})}
                   for r in summary.errors],
        "skipped": [{"path": p, "reason": why} for p, why in summary.skipped],
    }


def write_summary_json(summary: Summary, path: str | os.PathLike[str]) -> None:
    """Write as :func:`.output.write_document` does (``-``: stdout; a regular file atomically, a device or
    FIFO into it); strict JSON, non-finite evidence already as strings."""
    write_document(summary_json(summary), path)
