"""Which way imports go, read from the source (no import is executed).

The judging half (run → rules → causes → diagnosis) is torch-free and knows nothing of where a run
came from; the readers and the reports are torch-free too, so `traindoctor diagnose` never loads
torch. The measuring halves (watch/ for a live run, checks/ for the checkup) share one torch-facing
layer, inspect/: watch → inspect ← checks, and neither half imports the other.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "traindoctor"
JUDGING = ["run.py", "findings.py", "catalogue.py", "losskinds.py", "layerkinds.py", "numfmt.py", "events.py",
           "calibration.py", "diagnosis.py", "ranks.py", "rules", "causes"]
TORCH_FREE = [*JUDGING, "logs", "report", "store.py", "errors.py", "explain.py", "docs.py", "cli.py"]
SOURCES = ("watch", "checks", "inspect", "heal", "logs", "report", "cli", "store", "examples", "hessian")

def _files(parts: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in parts:
        q = PKG / p
        out += sorted(q.rglob("*.py")) if q.is_dir() else [q]
    return out


def _imports(f: Path) -> list[str]:
    """Module names: traindoctor's as 'traindoctor.watch.monitor' (relative imports resolved), others as written."""
    rel = f.relative_to(PKG).with_suffix("").parts
    names: list[str] = []
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(["traindoctor", *rel[: len(rel) - node.level], *(node.module.split(".") if node.module else [])])
                names += [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names.append(node.module or "")
    return names


def test_the_judging_half_and_the_readers_never_import_torch() -> None:
    bad = [(str(f.relative_to(PKG)), m) for f in _files(TORCH_FREE) for m in _imports(f)
           if m.split(".")[0] == "torch"]
    assert not bad, bad


def _ours(m: str) -> str | None:
    """The top-level part of traindoctor a module name is in ('watch', 'run' …), or None."""
    parts = m.split(".")
    return parts[1] if parts[0] == "traindoctor" and len(parts) > 1 else None


def test_the_judging_half_does_not_know_where_a_run_came_from() -> None:
    bad = [(str(f.relative_to(PKG)), m) for f in _files(JUDGING) for m in _imports(f)
           if _ours(m) in SOURCES]
    assert not bad, bad


def test_watch_and_checks_share_inspect_and_never_import_each_other() -> None:
    bad = []
    for side, others in (("watch", ("checks",)), ("checks", ("watch",)), ("inspect", ("watch", "checks")),
                         ("heal", ("watch", "checks"))):
        for f in _files([side]):
            bad += [(str(f.relative_to(PKG)), m) for m in _imports(f) if _ours(m) in others]
    assert not bad, bad
