"""The checkup in the terminal: the diagnosis (findings, ranked causes, fixes), then one line per
check and probe with its numbers, then what could not be checked and why. It renders; it
decides nothing."""
from __future__ import annotations

from typing import IO, Any

from rich.console import Console
from rich.table import Table

from ..report.safe import safe_markup as escape

MARK = {True: "[green]ok[/green]", False: "[bold red]![/bold red]", None: "[dim]·[/dim]"}


def render_checkup(report: Any, file: IO[str] | None = None, *, title: str = "traindoctor checkup",
                   width: int | None = None) -> None:
    from ..report import render

    render(report.diagnosis, file=file, title=title, width=width)
    con = Console(file=file, width=width, soft_wrap=False, highlight=False)
    con.print()
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False, title=None)
    t.add_column("")
    t.add_column("check / probe")
    t.add_column("measured", overflow="fold")
    for line in report.lines:
        t.add_row(MARK.get(line.ok, ""), escape(line.probe), escape(line.outcome))
    con.print("[bold]Checks and probes[/bold]")
    con.print(t)
    tail = f"checkup took {report.elapsed_s:.1f} s"
    tail += "; model, optimizer and RNG states restored bitwise" if report.restored else \
        "; [bold red]the model/optimizer/RNG state could not be restored bitwise[/bold red]"
    con.print(f"[dim]{tail}[/dim]")
