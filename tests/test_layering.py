"""Which way imports go, read from the source (no import is executed).

The judging half (run → rules → causes → diagnosis) is torch-free and knows nothing of where a run
came from; the readers and the reports are torch-free too, so `traindoctor diagnose` never loads
torch. The measuring halves (watch/ for a live run, checks/ for the checkup) still share code by
importing each other in a few places; the list below is every such crossing today, and it may only
shrink (moving them to one torch-facing layer both import is open work).
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "traindoctor"
JUDGING = ["run.py", "findings.py", "catalogue.py", "losskinds.py", "calibration.py", "diagnosis.py", "rules", "causes"]
TORCH_FREE = [*JUDGING, "logs", "report", "store.py", "errors.py", "explain.py", "docs.py", "cli.py"]
SOURCES = ("watch", "checks", "logs", "report", "cli", "store", "examples", "hessian")
# watch/ ↔ checks/ imports that exist today: (importing file, imported module)
CROSSINGS = {
    ("checks/checkup.py", "watch.doctor"), ("checks/checkup.py", "watch.trace"),
    ("checks/discover.py", "watch.autohooks"), ("checks/discover.py", "watch.doctor"),
    ("checks/discover.py", "watch.launcher"), ("checks/discover.py", "watch.trace"),
    ("checks/model.py", "watch.monitor"),
    ("watch/datascan.py", "checks.data"), ("watch/dataprofile.py", "checks.batches"),
    ("watch/dataprofile.py", "checks.data"), ("watch/firststep.py", "checks.model"),
    ("watch/leakage.py", "checks.data"), ("watch/scanning.py", "checks.data"),
}


def _files(parts: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in parts:
        q = PKG / p
        out += sorted(q.rglob("*.py")) if q.is_dir() else [q]
    return out


def _imports(f: Path) -> list[str]:
    """Absolute module names (within traindoctor: 'watch.monitor', …; others as written)."""
    rel = f.relative_to(PKG).with_suffix("").parts
    names: list[str] = []
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join([*rel[: len(rel) - node.level], *(node.module.split(".") if node.module else [])])
                names += [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names.append(node.module or "")
    return names


def test_the_judging_half_and_the_readers_never_import_torch() -> None:
    bad = [(str(f.relative_to(PKG)), m) for f in _files(TORCH_FREE) for m in _imports(f)
           if m.split(".")[0] == "torch"]
    assert not bad, bad


def test_the_judging_half_does_not_know_where_a_run_came_from() -> None:
    bad = [(str(f.relative_to(PKG)), m) for f in _files(JUDGING) for m in _imports(f)
           if m.split(".")[0] in SOURCES]
    assert not bad, bad


def test_watch_and_checks_cross_no_more_than_they_do_today() -> None:
    found = set()
    for side, other in (("watch", "checks"), ("checks", "watch")):
        for f in _files([side]):
            for m in _imports(f):
                if m.split(".")[0] == other:
                    found.add((str(f.relative_to(PKG)), ".".join(m.split(".")[:2])))
    new = found - CROSSINGS
    assert not new, f"new imports between watch/ and checks/: {sorted(new)}"
    gone = CROSSINGS - found
    assert not gone, f"these crossings are gone: remove them from CROSSINGS {sorted(gone)}"
