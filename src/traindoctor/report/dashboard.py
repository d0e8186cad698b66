"""The live dashboard: ``traindoctor dashboard [DIR]``, a page on 127.0.0.1 that watches the runs in DIR.

It lists every run :func:`~traindoctor.logs.find_runs` finds under DIR (run stores and the other log
formats), with its state (a store still being written is *live*), its steps so far, its verdict and
leading cause; it draws the selected run's charts (the report's own figures, :mod:`.figures`) and its
diagnosis (:func:`.html.diagnosis_html`), and updates both while another process writes the store;
and it compares two or more runs side by side (their losses and accuracies overlaid, one colour per
run, and their verdicts, causes and final values in one table).

How it stays cheap: one background thread rescans DIR every ``poll_s`` seconds while a page is open
(and rests when none has asked for a while). A run is read again and diagnosed only when its files
changed (the mtime and size of the file and, for a store, of its ``-wal``), or, for a live store, every
:data:`LIVE_RECHECK_S` seconds so that a writer that died is noticed; the page's polls read what is
cached. The page polls JSON (``/api/runs``, ``/api/run/<id>``, ``/api/compare``) and redraws the charts
in place with ``Plotly.react``.

Safety: it binds to 127.0.0.1 unless told otherwise; bound to a loopback address it refuses any request
whose ``Host`` header is not a loopback name (DNS rebinding); a run is named by an id from the server's
own listing, never by a path from the client, and only the exact routes below are served. Every string
that came from a run (names, metrics, modules, paths, messages) reaches the page escaped: the server's
HTML with :func:`html.escape` (through :mod:`.html`), the page's own DOM with ``textContent``, Plotly's
labels by :func:`.figures.pe`; the one JSON block in the page goes through :func:`.html.json_for_script`;
a Content-Security-Policy allows scripts from this server only.

Routes (GET and HEAD; anything else is 404, or 405 for another method):

* ``/``: the page (no run data in it);
* ``/static/plotly-<hash>.min.js`` and ``/static/dashboard-<hash>.js``: plotly.js from the ``plotly``
  package and the page's script, cached for a year (the name changes with the content);
* ``/api/runs``: the listing;
* ``/api/run/<id>[?v=VERSION]``: one run's figures and diagnosis (``{"unchanged": true}`` when VERSION
  is still current);
* ``/api/compare?ids=<id>,<id>[,...][&v=VERSION]``: the comparison of 2 to :data:`MAX_COMPARE` runs.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import ipaddress
import itertools
import json
import math
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..errors import TrainDoctorError

if TYPE_CHECKING:
    import argparse

    import numpy as np

    from ..diagnosis import Diagnosis
    from ..run import Run, Series

DEFAULT_DIR = ".traindoctor/runs"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
POLL_S = 2.0  # how often the page polls, and the background rescan runs
LIVE_RECHECK_S = 10.0  # a live store is read again this often even when unchanged: is its writer still there?
IDLE_S = 60.0  # no page asked for this long: the background rescan rests
MAX_COMPARE = 10  # runs in one comparison (one colour each)
COMPARE_POINTS = 1000  # buckets per compared series (each keeps its min and max)
_ID = re.compile(r"[0-9a-f]{12}")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


# ---- what is known of each run ---------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One run of the listing: where it is, and what was computed from its files as they last were."""

    id: str
    path: Path
    name: str
    format: str
    note: str | None
    first_seen: float
    sig: Any = None  # the files' (mtime, size) when last read
    loaded_at: float = 0.0  # monotonic time of the last read
    version: str = ""
    state: str = "reading"
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the listing's row (without the age)
    digest: dict[str, Any] | None = None  # what a comparison needs (thinned series, final values)
    detail: bytes | None = None  # /api/run's answer (JSON), built when the run is viewed
    mtime: float = 0.0


def _one_line(text: object, limit: int = 600) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _state(run: Run) -> tuple[str, str]:
    """``(state, label)`` of a run, from what :func:`~traindoctor.store.load_store` noted of its writer."""
    for n in run.meta.get("notes") or []:
        n = str(n)
        if n.startswith("the run is still being written"):
            return "live", "live"
        if n.startswith("the store was not closed:"):
            return "open", "not closed"
        if "not closed cleanly" in n:
            return "unclean", "ended without closing"
        if n.startswith("the store stopped"):
            return "stopped", "store stopped"
    if run.meta.get("format") == "store":
        return "finished", "finished"
    return "log", "log file"


def _steps(run: Run) -> int:
    if run.num_steps:
        return run.num_steps
    last = [int(s.steps[-1]) + 1 for s in run.series.values() if len(s)]
    return max(last) if last else 0


def _badge(diag: Diagnosis) -> dict[str, str]:
    """What :func:`.html.verdict_badge` shows, as data: a class (from a fixed set) and its text."""
    if diag.ended and not diag.findings:
        return {"cls": "ended", "text": "ended early"}
    v = diag.verdict
    return {"cls": {"not judged": "notjudged"}.get(v, v), "text": v}


def _cause(diag: Diagnosis) -> dict[str, Any] | None:
    if not diag.causes:
        return None
    c = diag.causes[0]
    conf = float(c.confidence) if math.isfinite(c.confidence) else 0.0
    return {"id": c.id, "title": c.title, "confidence": round(max(0.0, min(1.0, conf)), 3)}


def _thin(s: Series | None, keep: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray] | None:
    if s is None or not len(s):
        return None
    from .figures import downsample

    st, va, _ = downsample(s.steps, s.values, max_points=COMPARE_POINTS, keep=keep)
    return st, va


def _last_finite(s: Series | None) -> tuple[float, int] | None:
    if s is None or not len(s):
        return None
    import numpy as np

    ok = np.flatnonzero(np.isfinite(s.values))
    if not ok.size:
        return None
    i = int(ok[-1])
    return float(s.values[i]), int(s.steps[i])


def _final(s: Series | None) -> str | None:
    """The series' last value; a non-finite last value says so, with the last finite one."""
    from ..numfmt import fmt

    if s is None or not len(s):
        return None
    last = float(s.values[-1])
    if math.isfinite(last):
        return fmt(last)
    lf = _last_finite(s)
    return f"{fmt(last)} (last finite {fmt(lf[0])} at step {lf[1]})" if lf else fmt(last)


def _acc_names(run: Run) -> tuple[str | None, str | None]:
    """The training and validation accuracy series, when logged."""
    from .figures import ACCURACY

    names = [n for n in run.series if ACCURACY.search(n) and "/" not in n and len(run.series[n])]
    val = next((n for n in names if "val" in n.lower()), None)
    train = next((n for n in names if "val" not in n.lower() and "test" not in n.lower()), None)
    return train, val


def _digest(run: Run, diag: Diagnosis) -> dict[str, Any]:
    """What a comparison draws and tabulates of one run: thinned series and its final values."""
    import numpy as np

    from ..numfmt import fmt
    from .figures import finding_steps

    keep = finding_steps(diag)
    loss, val = run.get("loss"), run.get("val_loss")
    acc, vacc = _acc_names(run)
    best = None
    if val is not None:
        ok = np.isfinite(val.values)
        if ok.any():
            i = int(np.argmin(np.where(ok, val.values, np.inf)))
            best = f"{fmt(float(val.values[i]))} at step {int(val.steps[i])}"
    first_bad = None
    if loss is not None and len(loss):
        bad = ~np.isfinite(loss.values)
        if bad.any():
            first_bad = int(loss.steps[int(np.argmax(bad))])
    return {
        "series": {"loss": _thin(loss, keep), "val_loss": _thin(val, keep),
                   "acc": _thin(run.get(acc)) if acc else None, "val_acc": _thin(run.get(vacc)) if vacc else None},
        "acc_names": [acc, vacc],
        "first_nonfinite": first_bad,
        "table": {"final_loss": _final(loss), "final_val_loss": _final(val), "best_val_loss": best,
                  "final_acc": _final(run.get(acc)) if acc else None,
                  "final_val_acc": _final(run.get(vacc)) if vacc else None},
    }


def _dumps(obj: Any) -> bytes:
    """Strict JSON (a stray NaN becomes null rather than an invalid document)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _files_sig(path: Path) -> Any:
    """What changes when a run's files change: (mtime, size) of the file and its ``-wal`` (a store), or of
    every file below a run directory (TensorBoard, MLflow, Hugging Face)."""
    def one(p: str | Path) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    if not path.is_dir():
        return one(path), one(f"{path}-wal")
    out: list[Any] = [one(path)]
    count = 0
    for base, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            out.append((os.path.relpath(os.path.join(base, f), path), one(os.path.join(base, f))))
            count += 1
            if count >= 5000:
                return tuple(out)
    return tuple(out)


def _sig_mtime(sig: Any) -> float:
    """The newest mtime (seconds) in a :func:`_files_sig`."""
    best = 0
    stack = [sig]
    while stack:
        x = stack.pop()
        if isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, int) for v in x):
            best = max(best, x[0])
        elif isinstance(x, (tuple, list)):
            stack.extend(x)
    return best / 1e9


class RunIndex:
    """The runs under ``root`` and what was computed from them, kept fresh by :meth:`scan` (no HTTP here).

    Thread-safe: the background rescan and the page's requests share it. Nothing heavier than a run's
    answers is kept (no :class:`Run`): the listing row, the comparison's thinned series, and the detail
    (figures and diagnosis) of the runs a page looked at lately.
    """

    def __init__(self, root: str | os.PathLike[str], *, poll_s: float = POLL_S) -> None:
        self.root = Path(root)
        self.poll_s = float(poll_s)
        self.scan_error: str | None = None
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._order: list[str] = []
        self._passed_over: list[dict[str, str]] = []
        self._load_locks: dict[str, threading.Lock] = {}
        self._viewed: dict[str, float] = {}  # id → when a page last asked for its detail
        self._asked: dict[str, float] = {}  # id → when a page last asked for its detail or a comparison with it
        self._nonce = secrets.token_hex(3)
        self._gen = itertools.count(1)
        self.scanned = threading.Event()  # the first scan is done (every run read once)
        self.listed = threading.Event()  # the first scan found the runs (the listing may say "reading…")
        self.last_asked = time.monotonic()

    # ---- ids and the scan ----

    @staticmethod
    def run_id(path: Path) -> str:
        return hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:12]

    def _name(self, path: Path) -> str:
        from .summary import display_path

        return display_path(path, self.root) if self.root.is_dir() else path.name

    def _find(self) -> tuple[list[Any], list[tuple[Path, str, str]], list[tuple[Path, str]]]:
        from ..logs import RunRef, detect_format, find_runs

        root = self.root
        if not root.exists():
            return [], [], []
        if not root.is_dir():
            return [RunRef(root, detect_format(root) or "unknown")], [], []
        found = find_runs(root)
        return found.runs, found.unreadable, found.passed_over

    def scan(self) -> None:
        """Find the runs under the root, and read again each one whose files changed (the runs a page
        looks at first, then the newest)."""
        try:
            refs, unreadable, passed = self._find()
            self.scan_error = None
        except Exception as e:  # noqa: BLE001 - a failed scan is a line on the page, not a dead server
            self.scan_error = _one_line(f"cannot scan {self.root}: {type(e).__name__}: {e}")
            self.listed.set()
            self.scanned.set()
            return
        todo: list[_Entry] = []
        with self._lock:
            order: list[str] = []
            for ref in refs:
                rid = self.run_id(ref.path)
                e = self._entries.get(rid)
                if e is None:
                    sig = _files_sig(ref.path)
                    e = _Entry(rid, ref.path, self._name(ref.path), ref.format, ref.note,
                               first_seen=_sig_mtime(sig) or time.time())
                    self._entries[rid] = e
                elif e.state == "error" and e.sig is None:  # unreadable at the last scan, readable now: read it
                    e.state, e.loaded_at = "reading", 0.0
                e.format, e.note = (e.format if e.summary else ref.format), ref.note
                order.append(rid)
                todo.append(e)
            for path, fmt, why in unreadable:
                rid = self.run_id(path)
                e = self._entries.get(rid)
                if e is None:
                    e = _Entry(rid, path, self._name(path), fmt, None,
                               first_seen=_sig_mtime(_files_sig(path)) or time.time())
                    self._entries[rid] = e
                self._set_error(e, _one_line(f"{e.name}: {why}"), None, state="error")
                order.append(rid)
            self._passed_over = [{"name": self._name(p), "why": why} for p, why in passed]
            self._order = order
            for rid in list(self._entries):
                if rid not in order:
                    del self._entries[rid]
                    self._load_locks.pop(rid, None)
                elif not self._viewed_lately(rid):
                    self._entries[rid].detail = None  # built again when a page looks at the run again
        self.listed.set()
        now = time.monotonic()
        todo.sort(key=lambda e: (now - self._asked.get(e.id, -1e9) > IDLE_S, -e.first_seen))
        for e in todo:
            self.refresh(e)
        self.scanned.set()

    def _set_error(self, e: _Entry, error: str, sig: Any, *, state: str) -> None:
        e.error, e.sig, e.state = error, sig, state
        e.loaded_at = time.monotonic()
        e.version = f"{self._nonce}-{next(self._gen)}"
        e.summary = {"id": e.id, "name": e.name, "source": os.fspath(e.path), "format": e.format, "note": e.note,
                     "state": state, "state_text": "unreadable" if state == "error" else "not a training log",
                     "error": error, "version": e.version}
        e.digest, e.detail = None, None

    def _viewed_lately(self, rid: str) -> bool:
        return time.monotonic() - self._viewed.get(rid, -1e9) < IDLE_S

    def refresh(self, e: _Entry, *, need_detail: bool = False) -> None:
        """Read the run again if its files changed since it was last read (or a live one was last read
        :data:`LIVE_RECHECK_S` ago, or its detail is wanted and not built)."""
        with self._lock:
            lock = self._load_locks.setdefault(e.id, threading.Lock())
        with lock:
            if e.state == "error" and e.sig is None:
                return  # find_runs could not open it: the next scan says again
            sig = _files_sig(e.path)
            e.mtime = _sig_mtime(sig)
            age = time.monotonic() - e.loaded_at
            fresh = e.sig == sig and not (e.state == "live" and age > LIVE_RECHECK_S)
            if e.loaded_at and (fresh or age < min(1.0, self.poll_s / 2)):  # a live run: at most twice a poll
                if not need_detail or e.detail is not None or e.error is not None:
                    return
            self._load(e, sig, with_detail=need_detail or self._viewed_lately(e.id))

    def _load(self, e: _Entry, sig: Any, *, with_detail: bool) -> None:
        from ..diagnosis import diagnose
        from ..errors import LogError
        from ..logs import NoTrainingLoss, load

        try:
            run = load(e.path)
        except NoTrainingLoss:
            self._set_error(e, "not a training log: no training-loss metric", sig, state="skipped")
            return
        except LogError as ex:
            self._set_error(e, _one_line(ex), sig, state="error")
            return
        except Exception as ex:  # noqa: BLE001 - one bad run is a row, never a dead dashboard
            self._set_error(e, _one_line(f"{e.name}: could not be read ({type(ex).__name__}: {ex})"), sig, state="error")
            return
        try:
            diag = diagnose(run)
            state, label = _state(run)
            steps = _steps(run)
            digest = _digest(run, diag)
            summary = {"id": e.id, "name": e.name, "source": os.fspath(e.path),
                       "format": str(run.meta.get("format") or e.format), "note": e.note,
                       "state": state, "state_text": label, "steps": steps, "verdict": diag.verdict,
                       "badge": _badge(diag), "cause": _cause(diag), "ended": diag.ended,
                       "codes": list(dict.fromkeys(f.code for f in diag.findings)), "error": None}
            detail = self._detail(e, run, diag, summary) if with_detail else None
        except Exception as ex:  # noqa: BLE001
            self._set_error(e, _one_line(f"{e.name}: the diagnosis failed ({type(ex).__name__}: {ex}); this is a "
                                         "traindoctor bug, please report it"), sig, state="error")
            return
        with self._lock:
            e.version = f"{self._nonce}-{next(self._gen)}"
            summary["version"] = e.version
            if detail is not None:
                detail["version"] = e.version
            e.sig, e.loaded_at, e.state, e.error = sig, time.monotonic(), state, None
            e.format = summary["format"]
            e.summary, e.digest = summary, digest
            e.detail = _dumps(detail) if detail is not None else None

    @staticmethod
    def _detail(e: _Entry, run: Run, diag: Diagnosis, summary: dict[str, Any]) -> dict[str, Any]:
        from .figures import figures
        from .html import diagnosis_html, run_facts, verdict_line

        return {**summary, "verdict_html": verdict_line(diag), "facts": [list(kv) for kv in run_facts(run, diag)],
                "figures": figures(run, diag), "diagnosis_html": diagnosis_html(diag)}

    # ---- what the page asks ----

    def touch(self) -> bool:
        """A page asked; returns whether the index was resting (the rescan should wake)."""
        idle = time.monotonic() - self.last_asked > IDLE_S
        self.last_asked = time.monotonic()
        return idle

    def get(self, rid: str) -> _Entry | None:
        with self._lock:
            return self._entries.get(rid) if _ID.fullmatch(rid) else None

    def listing(self) -> dict[str, Any]:
        with self._lock:
            entries = [self._entries[rid] for rid in self._order]
            passed = list(self._passed_over)
        # a file that turned out not to be a training log (a CSV of data) is passed over, as diagnose DIR does
        passed += [{"name": e.name, "why": e.error or ""} for e in entries if e.state == "skipped"]
        entries = [e for e in entries if e.state != "skipped"]
        now = time.time()
        rows = []
        for e in sorted(entries, key=lambda e: (-e.first_seen, e.name)):
            row = dict(e.summary) if e.summary else {"id": e.id, "name": e.name, "source": os.fspath(e.path),
                                                      "format": e.format, "note": e.note, "state": "reading",
                                                      "state_text": "reading…", "error": None, "version": ""}
            row["age_s"] = round(max(0.0, now - e.mtime), 1) if e.mtime else None
            rows.append(row)
        return {"root": os.fspath(self.root), "exists": self.root.exists(), "runs": rows, "passed_over": passed,
                "scan_error": self.scan_error, "scanned": self.scanned.is_set()}

    def detail(self, rid: str, since: str | None = None) -> bytes | None:
        """``/api/run/<id>``: None for an id not in the listing."""
        e = self.get(rid)
        if e is None:
            return None
        self._viewed[rid] = self._asked[rid] = time.monotonic()
        self.refresh(e, need_detail=True)
        if since and since == e.version:
            return _dumps({"id": rid, "version": e.version, "unchanged": True})
        if e.error is not None or e.detail is None:  # no detail without an error: not to be kept (version "")
            return _dumps({**e.summary, "version": e.version if e.error is not None else "", "figures": [], "facts": [],
                           "verdict_html": "", "diagnosis_html": ""})
        return e.detail

    def compare(self, ids: list[str], since: str | None = None) -> bytes | None:
        """``/api/compare``: None when an id is not in the listing."""
        entries = [self.get(rid) for rid in ids]
        if any(e is None for e in entries):
            return None
        now = time.monotonic()
        for e in entries:
            assert e is not None
            self._asked[e.id] = now
            self.refresh(e)
        version = ",".join(e.version for e in entries if e is not None)
        key = ",".join(ids)
        if since and since == version:
            return _dumps({"key": key, "version": version, "unchanged": True})
        return _dumps(compare_payload([e for e in entries if e is not None], key, version))


# ---- the comparison ---------------------------------------------------------------------------------------------


def _layout(title: str, ytitle: str, logy: bool) -> dict[str, Any]:
    from .figures import base_layout

    return base_layout(title, ytitle=ytitle, logy=logy, height=380)


def _trace(name: str, st: np.ndarray, va: np.ndarray, color: str, group: str, *, dash: str | None = None,
           width: float = 1.6) -> dict[str, Any]:
    import numpy as np

    from .figures import json_floats, pe

    few = int(np.isfinite(va).sum()) <= 60
    line: dict[str, Any] = {"color": color, "width": width}
    if dash:
        line["dash"] = dash
    return {"type": "scatter", "mode": "lines+markers" if few else "lines", "name": pe(name),
            "x": st.tolist(), "y": json_floats(va), "line": line, "marker": {"size": 5, "color": color},
            "legendgroup": group, "hovertemplate": "step %{x}<br>%{y:.4g}<extra>" + pe(name) + "</extra>"}


def compare_payload(entries: list[_Entry], key: str, version: str) -> dict[str, Any]:
    """The comparison of runs: overlaid losses (and accuracies when any run logged one), one colour per
    run (training solid, validation dashed), and a row of facts per run for the side-by-side table."""
    from .figures import PALETTE, pe, wants_log

    loss_data: list[dict[str, Any]] = []
    acc_data: list[dict[str, Any]] = []
    loss_vals: list[Any] = []
    runs = []
    for i, e in enumerate(entries):
        color = PALETTE[i % len(PALETTE)]
        runs.append({**{k: e.summary.get(k) for k in ("id", "name", "source", "format", "state", "state_text", "steps",
                                                        "badge", "cause", "codes", "error", "verdict")},
                     "color": color, "table": (e.digest or {}).get("table", {})})
        d = e.digest
        if d is None:
            continue
        ser = d["series"]
        for role, label, dash, width in (("loss", "train", None, 1.4), ("val_loss", "validation", "dash", 2.2)):
            if ser.get(role) is not None:
                st, va = ser[role]
                loss_data.append(_trace(f"{e.name} · {label}", st, va, color, e.id, dash=dash, width=width))
                loss_vals.append(va)
        if d.get("first_nonfinite") is not None:
            step = d["first_nonfinite"]
            loss_data.append({"type": "scatter", "mode": "markers", "name": pe(f"{e.name} · first non-finite loss"),
                              "x": [step], "y": [None], "legendgroup": e.id, "showlegend": False,
                              "marker": {"symbol": "x", "size": 12, "color": color}})
        acc_name, vacc_name = d.get("acc_names") or [None, None]
        for role, label, dash, width in (("acc", acc_name, None, 1.4), ("val_acc", vacc_name, "dash", 2.2)):
            if ser.get(role) is not None:
                st, va = ser[role]
                acc_data.append(_trace(f"{e.name} · {label}", st, va, color, e.id, dash=dash, width=width))
    _place_nonfinite(loss_data)
    figs = []
    if loss_data:
        figs.append({"id": "cmp_loss", "title": "Loss", "caption": "One colour per run: training loss solid, "
                     "validation loss dashed; ✕ where a run's training loss first went non-finite.",
                     "figure": {"data": loss_data, "layout": _layout("Loss: training (solid) and validation (dashed)",
                                                                     "loss", wants_log(loss_vals))}})
    if acc_data:
        figs.append({"id": "cmp_accuracy", "title": "Accuracy", "caption": "One colour per run: training accuracy "
                     "solid, validation accuracy dashed.",
                     "figure": {"data": acc_data, "layout": _layout("Accuracy", "accuracy", False)}})
    return {"key": key, "version": version, "runs": runs, "figures": figs}


def _place_nonfinite(data: list[dict[str, Any]]) -> None:
    """Put each non-finite marker on its run's training-loss curve (the last finite point before it)."""
    for tr in data:
        if tr.get("marker", {}).get("symbol") != "x":
            continue
        step = tr["x"][0]
        curve = next((t for t in data if t.get("legendgroup") == tr["legendgroup"] and t is not tr), None)
        if curve is None:
            continue
        ys = [y for x, y in zip(curve["x"], curve["y"]) if x <= step and y is not None]
        tr["y"] = [ys[-1] if ys else None]


# ---- the page -----------------------------------------------------------------------------------------------------

_CSS = """
[hidden] { display:none !important; }
header.top { position:sticky; top:0; z-index:10; align-items:center; }
header.top .conn { margin-left:auto; font-size:12.5px; color:#c9d1dc; display:flex; align-items:center; gap:6px; }
header.top .conn i { width:8px; height:8px; border-radius:50%; background:#9e9e9e; display:inline-block; }
header.top .conn.ok i { background:#66bb6a; } header.top .conn.bad i { background:#ef5350; }
header.top .conn.bad { color:#ffcdd2; }
.layout { display:grid; grid-template-columns:minmax(300px,360px) minmax(0,1fr); gap:16px; max-width:1760px;
          margin:0 auto; padding:16px 20px 40px; align-items:start; }
.layout > main { max-width:none; margin:0; padding:0; min-width:0; }
aside.side { position:sticky; top:64px; max-height:calc(100vh - 80px); display:flex; flex-direction:column;
             background:var(--card); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
.side-head { display:flex; align-items:center; gap:8px; padding:12px 14px 10px; border-bottom:1px solid var(--line); }
.side-head h2 { font-size:16px; margin:0; }
.side-head .count { color:var(--muted); font-size:12.5px; }
.side-head button { margin-left:auto; }
button { font:inherit; font-size:12.5px; padding:4px 10px; border-radius:6px; border:1px solid #1f77b4;
         background:#1f77b4; color:#fff; cursor:pointer; }
button:disabled { background:#e3e7ee; border-color:#d5dae3; color:#8a94a3; cursor:default; }
button.ghost { background:transparent; color:#1f77b4; }
#runlist { overflow:auto; flex:1; }
.runrow { display:flex; gap:10px; padding:10px 14px; border-bottom:1px solid var(--line); cursor:pointer;
          border-left:3px solid transparent; outline:none; }
.runrow:hover { background:#f7f9fc; }
.runrow:focus-visible { box-shadow:inset 0 0 0 2px #90caf9; }
.runrow.sel { background:#eef4fb; border-left-color:#1f77b4; }
.runrow input { margin-top:3px; flex:none; }
.rbody { min-width:0; flex:1; }
.rname { font-family:ui-monospace,Menlo,Consolas,monospace; font-size:12.5px; font-weight:600; white-space:nowrap;
         overflow:hidden; text-overflow:ellipsis; }
.rmeta { color:var(--muted); font-size:12px; display:flex; gap:8px; align-items:center; flex-wrap:wrap; margin:2px 0 4px; }
.rverdict { display:flex; gap:8px; align-items:center; flex-wrap:wrap; font-size:12.5px; }
.rverdict .verdict { font-size:11.5px; padding:1px 8px; }
.rcause { font-family:ui-monospace,Menlo,Consolas,monospace; font-size:12px; }
.rcodes { color:var(--muted); font-size:11.5px; font-family:ui-monospace,Menlo,Consolas,monospace; }
.rerror { color:var(--error); font-size:12px; overflow-wrap:anywhere; }
.rskip { color:var(--muted); font-size:12px; }
.pill { display:inline-flex; align-items:center; gap:5px; padding:0 7px; border-radius:9px; font-size:11.5px;
        background:#eceff1; color:#455a64; line-height:18px; }
.pill.st-live { background:#e8f5e9; color:#2e7d32; font-weight:600; }
.pill.st-live i { width:7px; height:7px; border-radius:50%; background:#43a047; animation:pulse 1.4s infinite; }
.pill.st-unclean, .pill.st-stopped, .pill.st-error { background:#fdecea; color:#b71c1c; }
.pill.st-open { background:#fff3e0; color:#e65100; }
@keyframes pulse { 0% { opacity:1; } 50% { opacity:.25; } 100% { opacity:1; } }
.side-foot { padding:8px 14px; font-size:12px; color:var(--muted); border-top:1px solid var(--line); }
.side-foot summary { cursor:pointer; }
.side-foot li { overflow-wrap:anywhere; }
.empty { padding:28px 20px; color:var(--muted); }
.empty code { background:#eef1f5; padding:1px 5px; border-radius:4px; }
#run-head h2 { display:flex; gap:10px; align-items:center; flex-wrap:wrap; font-size:17px; }
#run-head .name { font-family:ui-monospace,Menlo,Consolas,monospace; overflow-wrap:anywhere; }
#run-head .source { color:var(--muted); font-size:12px; font-family:ui-monospace,Menlo,Consolas,monospace;
                    overflow-wrap:anywhere; margin-bottom:6px; }
.errbox { color:var(--error); background:#fdecea; border-radius:6px; padding:8px 12px; overflow-wrap:anywhere; }
table.cmp th { text-transform:none; letter-spacing:0; font-size:12.5px; color:var(--fg); }
table.cmp td:first-child, table.cmp th:first-child { color:var(--muted); font-size:12px; white-space:nowrap; width:1%; }
table.cmp td { font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
table.cmp .sw { display:inline-block; width:12px; height:12px; border-radius:3px; margin-right:6px; vertical-align:-1px; }
table.cmp .runname { font-family:ui-monospace,Menlo,Consolas,monospace; overflow-wrap:anywhere; }
.cmp-wrap { overflow-x:auto; }
@media (max-width: 900px) { .layout { grid-template-columns:1fr; } aside.side { position:static; max-height:none; } }
"""

_JS = r"""
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("td-config").textContent);
  var POLL = Math.max(250, cfg.poll_ms || 2000);
  var MAX_COMPARE = cfg.max_compare || 10;
  var BADGES = {error: 1, warning: 1, info: 1, healthy: 1, notjudged: 1, ended: 1};
  var STATES = {live: 1, finished: 1, open: 1, unclean: 1, stopped: 1, log: 1, reading: 1, error: 1, skipped: 1};
  var WIDE = {loss: 1, grad_heatmap: 1, cmp_loss: 1};
  var PLOT_CONFIG = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"]};
  var S = {rows: {}, list: [], byId: {}, mode: "none", selected: null, checked: [], runVersion: null,
           runDiag: null, cmpVersion: null, timer: null, first: true};

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function badge(b) {
    b = b || {cls: "notjudged", text: "?"};
    return el("span", "verdict v-" + (BADGES[b.cls] ? b.cls : "notjudged"), b.text);
  }
  function pill(state, text) {
    var p = el("span", "pill st-" + (STATES[state] ? state : "log"));
    if (state === "live") p.appendChild(el("i"));
    p.appendChild(document.createTextNode(text || state));
    return p;
  }
  function ago(s) {
    if (s === null || s === undefined) return "";
    if (s < 2) return "updated just now";
    if (s < 120) return "updated " + Math.round(s) + " s ago";
    if (s < 7200) return "updated " + Math.round(s / 60) + " min ago";
    if (s < 172800) return "updated " + (s / 3600).toFixed(1) + " h ago";
    return "updated " + Math.round(s / 86400) + " days ago";
  }
  function causeText(c) { return c ? c.id + " (" + Number(c.confidence).toFixed(2) + ")" : ""; }
  function getJSON(url) {
    return fetch(url, {cache: "no-store", headers: {"Accept": "application/json"}}).then(function (r) {
      if (!r.ok) { var err = new Error("HTTP " + r.status); err.status = r.status; throw err; }
      return r.json();
    });
  }
  function setConn(ok, why) {
    var c = $("td-conn");
    c.className = "conn " + (ok ? "ok" : "bad");
    c.lastChild.textContent = ok ? "live · every " + (POLL / 1000) + " s" : "not reachable — retrying (" + why + ")";
  }

  // ---- where we are: #run=ID or #compare=ID,ID ----
  function readHash() {
    var h = location.hash.replace(/^#/, ""), m;
    if ((m = /^run=([0-9a-f]{12})$/.exec(h))) { S.mode = "run"; S.selected = m[1]; }
    else if ((m = /^compare=([0-9a-f]{12}(?:,[0-9a-f]{12})+)$/.exec(h))) {
      S.mode = "compare"; S.checked = m[1].split(",").slice(0, MAX_COMPARE);
    }
  }
  function writeHash() {
    var h = S.mode === "run" && S.selected ? "#run=" + S.selected : S.mode === "compare" ? "#compare=" + S.checked.join(",") : "";
    if (location.hash !== h) history.replaceState(null, "", h || location.pathname);
  }

  // ---- the list of runs ----
  function makeRow(id) {
    var node = el("div", "runrow");
    node.setAttribute("data-id", id);
    node.setAttribute("role", "button");
    node.tabIndex = 0;
    var cb = el("input", "cmp");
    cb.type = "checkbox";
    cb.title = "select for comparison";
    var body = el("div", "rbody"), name = el("div", "rname"), meta = el("div", "rmeta"), verdict = el("div", "rverdict");
    var age = el("span", "rage");
    body.appendChild(name); body.appendChild(meta); body.appendChild(verdict);
    node.appendChild(cb); node.appendChild(body);
    node.addEventListener("click", function (ev) { if (ev.target !== cb) selectRun(id); });
    node.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); selectRun(id); } });
    cb.addEventListener("change", function () { toggleCompare(id, cb.checked); });
    return {node: node, cb: cb, name: name, meta: meta, verdict: verdict, age: age, key: null};
  }
  function fillRow(row, r) {
    row.node.classList.toggle("sel", S.mode === "run" && S.selected === r.id);
    row.cb.checked = S.checked.indexOf(r.id) >= 0;
    row.cb.disabled = !!r.error;
    row.age.textContent = ago(r.age_s);
    var key = JSON.stringify([r.name, r.source, r.state, r.state_text, r.format, r.steps, r.error, r.badge, r.cause, r.codes, r.note]);
    if (row.key === key) return;
    row.key = key;
    row.name.textContent = r.name;
    row.node.title = r.source + (r.note ? " (" + r.note + ")" : "");
    clear(row.meta);
    row.meta.appendChild(pill(r.state, r.state_text));
    row.meta.appendChild(el("span", "rfmt", r.format));
    if (r.steps !== undefined && r.steps !== null) row.meta.appendChild(el("span", "rsteps", r.steps.toLocaleString() + " steps"));
    row.meta.appendChild(row.age);
    clear(row.verdict);
    if (r.error) {
      row.verdict.appendChild(el("div", r.state === "skipped" ? "rskip" : "rerror", r.error));
    } else if (r.badge) {
      row.verdict.appendChild(badge(r.badge));
      if (r.cause) { var c = el("span", "rcause", causeText(r.cause)); c.title = r.cause.title; row.verdict.appendChild(c); }
      if (r.codes && r.codes.length) row.verdict.appendChild(el("span", "rcodes", r.codes.slice(0, 5).join(" ") + (r.codes.length > 5 ? " …" : "")));
    }
  }
  function renderList(data) {
    $("td-root").textContent = data.root;
    var list = $("runlist"), seen = {};
    S.list = data.runs; S.byId = {};
    data.runs.forEach(function (r, i) {
      seen[r.id] = 1; S.byId[r.id] = r;
      var row = S.rows[r.id];
      if (!row) { row = makeRow(r.id); S.rows[r.id] = row; }
      fillRow(row, r);
      if (list.children[i] !== row.node) list.insertBefore(row.node, list.children[i] || null);
    });
    Object.keys(S.rows).forEach(function (id) {
      if (!seen[id]) { if (S.rows[id].node.parentNode) list.removeChild(S.rows[id].node); delete S.rows[id]; }
    });
    S.checked = S.checked.filter(function (id) { return seen[id]; });
    var n = data.runs.length;
    $("run-count").textContent = n ? n + " run" + (n === 1 ? "" : "s") : "";
    var empty = $("list-empty");
    empty.hidden = n > 0;
    $("view-empty").textContent = n ? "Select a run on the left; tick two or more to compare them."
      : "No runs yet: this page fills in by itself when one starts.";
    if (!n) {
      clear(empty);
      if (data.scan_error) empty.appendChild(el("div", "rerror", data.scan_error));
      else if (!data.scanned) empty.appendChild(el("div", null, "Looking for runs…"));
      else {
        empty.appendChild(el("div", null, data.exists ? "No runs in " + data.root + " yet." : data.root + " does not exist yet."));
        var hint = el("div"); hint.style.marginTop = "8px";
        hint.appendChild(document.createTextNode("Start one with "));
        hint.appendChild(el("code", null, "traindoctor run train.py"));
        hint.appendChild(document.createTextNode(": it appears here by itself while it trains."));
        empty.appendChild(hint);
      }
    }
    var foot = $("passed-over"), items = data.passed_over || [];
    foot.hidden = !items.length;
    if (items.length) {
      clear(foot);
      var det = el("details"), sum = el("summary", null, items.length + " file" + (items.length === 1 ? "" : "s") + " passed over");
      var ul = el("ul", "plain");
      items.slice(0, 50).forEach(function (p) { ul.appendChild(el("li", null, p.name + " — " + p.why)); });
      det.appendChild(sum); det.appendChild(ul); foot.appendChild(det);
    }
    updateCompareButton();
    updateRunState();
    if (S.mode === "run" && S.selected && !S.byId[S.selected] && data.scanned) { S.mode = "none"; S.selected = null; showView(); }
    if (S.mode === "compare" && S.checked.length < 2 && data.scanned) { S.mode = "none"; showView(); }
    if (S.mode === "none" && n) {
      var pick = data.runs.filter(function (r) { return r.state === "live"; })[0] || data.runs.filter(function (r) { return !r.error; })[0];
      if (pick) { selectRun(pick.id); return; }
    }
    writeHash();
  }
  function updateRunState() {
    var st = $("run-state"), r = S.byId[S.selected];
    clear(st);
    if (S.mode !== "run" || !r) return;
    st.appendChild(pill(r.state, r.state_text));
    st.appendChild(el("span", "rfmt", r.format));
    if (r.steps !== undefined && r.steps !== null) st.appendChild(el("span", "rsteps", r.steps.toLocaleString() + " steps"));
    st.appendChild(el("span", "rage", ago(r.age_s)));
  }
  function updateCompareButton() {
    var b = $("compare-btn");
    b.textContent = "Compare (" + S.checked.length + ")";
    b.disabled = S.checked.length < 2;
    $("clear-btn").hidden = !S.checked.length;
  }

  // ---- one run ----
  function selectRun(id) {
    S.mode = "run"; S.selected = id; S.runVersion = null;
    Object.keys(S.rows).forEach(function (k) { S.rows[k].node.classList.toggle("sel", k === id); });
    writeHash(); showView(); updateRunState();
    loadRun().catch(function () {});
  }
  function loadRun() {
    var id = S.selected, v = S.runVersion;
    return getJSON("api/run/" + id + (v ? "?v=" + encodeURIComponent(v) : "")).then(function (d) {
      if (S.mode !== "run" || S.selected !== id || d.id !== id) return;
      renderRun(d);
    }, function (e) {
      if (e.status === 404) { if (S.selected === id) { S.mode = "none"; S.selected = null; showView(); } return; }
      throw e;
    });
  }
  function gen(v) { var m = /-(\d+)$/.exec(v || ""); return m ? Number(m[1]) : 0; }
  function renderRun(d) {
    if (d.unchanged) return;
    S.runVersion = d.version;
    var r = S.byId[d.id];
    if (r && S.rows[d.id] && gen(d.version) > gen(r.version)) {  // read after the listing was: the row catches up now
      ["state", "state_text", "steps", "badge", "cause", "codes", "verdict", "format", "error", "version"].forEach(function (k) { r[k] = d[k]; });
      fillRow(S.rows[d.id], r);
      updateRunState();
    }
    $("run-name").textContent = d.name;
    $("run-source").textContent = d.source + (d.note ? " (" + d.note + ")" : "");
    var b = $("run-badge"); clear(b);
    if (!d.error && d.badge) b.appendChild(badge(d.badge));
    var err = $("run-error");
    err.hidden = !d.error; err.textContent = d.error || "";
    $("run-verdict").innerHTML = d.verdict_html || "";  // built by the server with html.escape
    var facts = $("run-facts"); clear(facts);
    (d.facts || []).forEach(function (kv) {
      var s = el("span"); s.appendChild(el("b", null, kv[0])); s.appendChild(document.createTextNode(" " + kv[1])); facts.appendChild(s);
    });
    var figs = d.figures || [];
    $("run-charts-section").hidden = !!d.error;
    $("run-nocharts").hidden = figs.length > 0;
    drawCharts($("run-charts"), "plot-", figs, d.id);
    if (S.runDiag !== d.diagnosis_html) { $("run-diag").innerHTML = d.diagnosis_html || ""; S.runDiag = d.diagnosis_html; }  // html.escape'd
    document.title = (d.badge ? d.badge.text + " — " : "") + d.name + " — traindoctor dashboard";
    document.body.setAttribute("data-run-version", d.version);
  }

  // ---- charts, redrawn in place ----
  function drawCharts(host, prefix, figs, rev) {
    var want = {};
    figs.forEach(function (f, i) {
      var pid = prefix + f.id, box = $("box-" + pid);
      want["box-" + pid] = 1;
      if (!box) {
        box = el("div", "chart"); box.id = "box-" + pid;
        var plot = el("div", "plot"); plot.id = pid;
        box.appendChild(plot); box.appendChild(el("div", "caption"));
      }
      box.className = "chart" + (WIDE[f.id] ? " wide" : "");
      if (host.children[i] !== box) host.insertBefore(box, host.children[i] || null);
      var layout = f.figure.layout || {};
      layout.uirevision = rev + ":" + f.id;  // a zoom or a hidden trace survives the run's updates
      Plotly.react(box.firstChild, f.figure.data, layout, PLOT_CONFIG);
      var cap = box.lastChild;
      cap.textContent = f.caption || "";
      cap.hidden = !f.caption;
    });
    Array.prototype.slice.call(host.children).forEach(function (box) {
      if (!want[box.id]) { Plotly.purge(box.firstChild); host.removeChild(box); }
    });
    host.setAttribute("data-charts", String(figs.length));
  }

  // ---- several runs side by side ----
  function toggleCompare(id, on) {
    var i = S.checked.indexOf(id);
    if (on && i < 0) {
      if (S.checked.length >= MAX_COMPARE) { S.rows[id].cb.checked = false; return; }
      S.checked.push(id);
    } else if (!on && i >= 0) S.checked.splice(i, 1);
    updateCompareButton();
    if (S.mode === "compare") {
      if (S.checked.length >= 2) { S.cmpVersion = null; writeHash(); loadCompare().catch(function () {}); }
      else selectRun(S.checked[0] || S.selected || (S.list[0] && S.list[0].id));
    }
  }
  function startCompare() {
    if (S.checked.length < 2) return;
    S.mode = "compare"; S.cmpVersion = null;
    Object.keys(S.rows).forEach(function (k) { S.rows[k].node.classList.remove("sel"); });
    writeHash(); showView();
    loadCompare().catch(function () {});
  }
  function loadCompare() {
    var key = S.checked.join(","), v = S.cmpVersion;
    return getJSON("api/compare?ids=" + encodeURIComponent(key) + (v ? "&v=" + encodeURIComponent(v) : "")).then(function (d) {
      if (S.mode !== "compare" || S.checked.join(",") !== d.key) return;
      renderCompare(d);
    }, function (e) { if (e.status === 404 || e.status === 400) return; throw e; });
  }
  var CMP_ROWS = [["verdict", null], ["leading cause", null], ["findings", null], ["state", null], ["steps", null],
                  ["final training loss", "final_loss"], ["final validation loss", "final_val_loss"],
                  ["best validation loss", "best_val_loss"], ["final accuracy", "final_acc"],
                  ["final validation accuracy", "final_val_acc"]];
  function renderCompare(d) {
    if (d.unchanged) return;
    S.cmpVersion = d.version;
    $("cmp-title").textContent = "Comparing " + d.runs.length + " runs";
    var t = $("cmp-table"); clear(t);
    var thead = el("thead"), hr = el("tr");
    hr.appendChild(el("th", null, ""));
    d.runs.forEach(function (r) {
      var th = el("th"), sw = el("span", "sw");
      if (/^#[0-9a-fA-F]{6}$/.test(r.color)) sw.style.background = r.color;
      th.appendChild(sw); th.appendChild(el("span", "runname", r.name)); th.title = r.source;
      hr.appendChild(th);
    });
    thead.appendChild(hr); t.appendChild(thead);
    var tb = el("tbody");
    CMP_ROWS.forEach(function (spec) {
      var label = spec[0], key = spec[1];
      var cells = d.runs.map(function (r) {
        if (r.error) return label === "verdict" ? el("span", "rerror", r.error) : null;
        if (key) { var v = (r.table || {})[key]; return v === null || v === undefined ? null : document.createTextNode(v); }
        if (label === "verdict") return r.badge ? badge(r.badge) : null;
        if (label === "leading cause") {
          if (!r.cause) return null;
          var span = el("span"); span.appendChild(el("code", null, r.cause.id));
          span.appendChild(document.createTextNode(" " + r.cause.title + " (" + Number(r.cause.confidence).toFixed(2) + ")"));
          return span;
        }
        if (label === "findings") return r.codes && r.codes.length ? el("code", null, r.codes.join(" ")) : null;
        if (label === "state") return pill(r.state, r.state_text);
        if (label === "steps") return r.steps === null || r.steps === undefined ? null : document.createTextNode(r.steps.toLocaleString());
        return null;
      });
      if (cells.every(function (c) { return c === null; }) && label !== "verdict") return;
      var tr = el("tr"); tr.appendChild(el("td", null, label));
      cells.forEach(function (c) { var td = el("td"); if (c) td.appendChild(c); else td.appendChild(el("span", "muted", "—")); tr.appendChild(td); });
      tb.appendChild(tr);
    });
    t.appendChild(tb);
    $("cmp-nocharts").hidden = d.figures.length > 0;
    drawCharts($("cmp-charts"), "cmp-", d.figures, d.key);
  }

  // ---- views and the poll ----
  function showView() {
    $("view-empty").hidden = S.mode !== "none";
    $("view-run").hidden = S.mode !== "run";
    $("view-compare").hidden = S.mode !== "compare";
    if (S.mode === "none") document.title = "traindoctor dashboard";
    var host = S.mode === "run" ? $("run-charts") : S.mode === "compare" ? $("cmp-charts") : null;
    if (host) Array.prototype.slice.call(host.querySelectorAll(".plot")).forEach(function (p) {
      if (p.data) Plotly.Plots.resize(p);
    });
  }
  function tick() {
    clearTimeout(S.timer);
    var jobs = [getJSON("api/runs").then(renderList)];
    if (S.mode === "run" && S.selected) jobs.push(loadRun());
    if (S.mode === "compare" && S.checked.length >= 2) jobs.push(loadCompare());
    Promise.all(jobs).then(function () { setConn(true); }, function (e) {
      setConn(false, e && e.message ? e.message : "error");
      if (!(e instanceof TypeError) && !e.status && window.console) console.warn(e);
    }).then(function () { S.timer = setTimeout(tick, POLL); });
  }
  $("compare-btn").addEventListener("click", startCompare);
  $("clear-btn").addEventListener("click", function () {
    S.checked = [];
    Object.keys(S.rows).forEach(function (k) { S.rows[k].cb.checked = false; });
    updateCompareButton();
    if (S.mode === "compare") { S.mode = "none"; showView(); tick(); }
  });
  readHash();
  showView();
  if (S.mode === "compare") updateCompareButton();
  tick();
})();
"""


def _asset(text: str, stem: str, ext: str) -> tuple[str, bytes]:
    data = text.encode("utf-8")
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}.{ext}", data


class _Assets:
    """The two scripts the page loads, named by their content (so they may be cached for good)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.js_name, self.js = _asset(_JS, "dashboard", "js")
        self._plotly: tuple[str, bytes] | None = None
        self._plotly_gz: bytes | None = None

    def plotly(self) -> tuple[str, bytes]:
        with self._lock:
            if self._plotly is None:
                from .html import plotly_js

                self._plotly = _asset(plotly_js(), "plotly", "min.js")
            return self._plotly

    def plotly_gz(self) -> bytes:
        data = self.plotly()[1]
        with self._lock:
            if self._plotly_gz is None:
                self._plotly_gz = gzip.compress(data, compresslevel=6, mtime=0)
            return self._plotly_gz


def page(root: str, poll_s: float, assets: _Assets) -> str:
    """The page: its frame only; the runs come from the JSON API."""
    from .html import h, json_for_script, page_css

    cfg = {"poll_ms": int(poll_s * 1000), "max_compare": MAX_COMPARE}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>traindoctor dashboard</title>
<style>{page_css()}{_CSS}</style>
<script src="static/{h(assets.plotly()[0])}" defer></script>
<script src="static/{h(assets.js_name)}" defer></script>
</head><body>
<header class="top"><h1>traindoctor dashboard</h1><span class="src" id="td-root">{h(root)}</span>
<span class="conn" id="td-conn"><i></i><span>connecting…</span></span></header>
<div class="layout">
<aside class="side" id="side">
  <div class="side-head"><h2>Runs</h2><span class="count" id="run-count"></span>
    <button type="button" id="compare-btn" disabled title="tick two or more runs, then compare them">Compare (0)</button>
    <button type="button" class="ghost" id="clear-btn" hidden>clear</button></div>
  <div id="runlist"></div>
  <div class="empty" id="list-empty" hidden></div>
  <div class="side-foot" id="passed-over" hidden></div>
</aside>
<main>
  <section id="view-empty" class="empty">Select a run on the left; tick two or more to compare them.</section>
  <div id="view-run" hidden>
    <section id="run-head"><h2><span class="name" id="run-name"></span><span id="run-badge"></span></h2>
      <div class="source" id="run-source"></div>
      <div class="rmeta" id="run-state"></div>
      <div class="errbox" id="run-error" hidden></div>
      <div id="run-verdict"></div><div class="facts" id="run-facts"></div></section>
    <section id="run-charts-section"><h2>Charts</h2><p class="muted" id="run-nocharts" hidden>No series to chart yet.</p>
      <div class="charts" id="run-charts"></div></section>
    <div id="run-diag"></div>
  </div>
  <div id="view-compare" hidden>
    <section><h2 id="cmp-title">Comparing runs</h2><div class="cmp-wrap"><table class="cmp" id="cmp-table"></table></div></section>
    <section><h2>Charts</h2><p class="muted" id="cmp-nocharts" hidden>None of these runs has a loss to chart yet.</p>
      <div class="charts" id="cmp-charts"></div></section>
  </div>
</main>
</div>
<footer>traindoctor dashboard — reads the runs in place; nothing leaves this machine.</footer>
<script type="application/json" id="td-config">{json_for_script(cfg)}</script>
</body></html>
"""


# ---- the server -------------------------------------------------------------------------------------------------

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _host_name(value: str) -> str | None:
    """The host part of a ``Host`` header (no port, no brackets), lower case; None when malformed."""
    v = value.strip().lower()
    if not v:
        return None
    if v.startswith("["):
        end = v.find("]")
        return v[1:end] if end > 1 else None
    if v.count(":") > 1:
        return None  # a bare IPv6 address is not a valid Host
    return v.split(":", 1)[0].rstrip(".") or None


def _is_loopback_name(name: str) -> bool:
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    dashboard: Dashboard


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "traindoctor"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: a poll every two seconds is not news

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._handle(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head=True)

    def _refuse_method(self) -> None:
        self._send(405, b'{"error":"only GET and HEAD"}', "application/json", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815

    def _send(self, code: int, body: bytes, ctype: str, *, head: bool = False, cache: str = "no-store",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, code: int, message: str, head: bool = False) -> None:
        self._send(code, _dumps({"error": message}), "application/json; charset=utf-8", head=head)

    def _handle(self, head: bool) -> None:
        dash = self.server.dashboard
        try:
            if not dash.host_allowed(self.headers.get("Host")):
                self._send(403, b"403: this dashboard answers only requests to localhost (the Host header named "
                                b"another name)\n", "text/plain; charset=utf-8", head=head)
                return
            url = urlsplit(self.path)
            route = url.path
            query = parse_qs(url.query, keep_blank_values=False, max_num_fields=10)
            idx = dash.index
            if route in ("/", "/index.html"):
                idx.touch()
                body = page(os.fspath(idx.root), idx.poll_s, dash.assets).encode("utf-8")
                self._send(200, body, "text/html; charset=utf-8", head=head, extra={"Content-Security-Policy": _CSP})
            elif route.startswith("/static/"):
                self._static(route[len("/static/"):], head)
            elif route == "/api/runs":
                if idx.touch():
                    dash.wake()
                idx.listed.wait(timeout=5.0)
                self._send(200, _dumps(idx.listing()), "application/json; charset=utf-8", head=head)
            elif route.startswith("/api/run/"):
                rid = route[len("/api/run/"):]
                idx.touch()
                body = idx.detail(rid, (query.get("v") or [None])[0]) if _ID.fullmatch(rid) else None
                if body is None:
                    self._error(404, "no run with this id in the listing", head)
                else:
                    self._send(200, body, "application/json; charset=utf-8", head=head)
            elif route == "/api/compare":
                idx.touch()
                ids = [i for i in ",".join(query.get("ids") or []).split(",") if i]
                if len(ids) < 2 or len(ids) > MAX_COMPARE or len(set(ids)) != len(ids) \
                        or not all(_ID.fullmatch(i) for i in ids):
                    self._error(400, f"ids: give 2 to {MAX_COMPARE} different run ids, comma-separated", head)
                    return
                body = idx.compare(ids, (query.get("v") or [None])[0])
                if body is None:
                    self._error(404, "a run id is not in the listing", head)
                else:
                    self._send(200, body, "application/json; charset=utf-8", head=head)
            else:
                self._error(404, "not found", head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away mid-answer
        except Exception as e:  # noqa: BLE001 - one failed request must not take the server down
            dash.log(f"traindoctor dashboard: internal error on {_one_line(self.path, 200)}: {type(e).__name__}: "
                     f"{_one_line(e, 300)}")
            try:
                self._error(500, "internal error (see the server's terminal)", head)
            except OSError:
                pass

    def _static(self, name: str, head: bool) -> None:
        assets = self.server.dashboard.assets
        cache = "public, max-age=31536000, immutable"
        if name == assets.js_name:
            body, extra = assets.js, {}
        elif name.startswith("plotly-") and name == assets.plotly()[0]:
            body, extra = assets.plotly()[1], {"Vary": "Accept-Encoding"}
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body, extra = assets.plotly_gz(), {"Vary": "Accept-Encoding", "Content-Encoding": "gzip"}
        else:
            self._error(404, "not found", head)
            return
        etag = '"' + name + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", cache)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(200, body, "text/javascript; charset=utf-8", head=head, cache=cache, extra={"ETag": etag, **extra})


class Dashboard:
    """The dashboard server: :meth:`start` serves in background threads (tests, notebooks), :meth:`serve_forever`
    in this one (the command line). ``port=0`` takes any free port; :attr:`port` and :attr:`url` say which."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_DIR, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 poll_s: float = POLL_S, log: Callable[[str], None] | None = None) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise TrainDoctorError(f"--port {port}: expected a port number from 0 to 65535 (0: any free port)")
        if not poll_s > 0:
            raise TrainDoctorError(f"poll interval {poll_s}: expected a positive number of seconds")
        self.host = host
        self.port = port
        self.index = RunIndex(root, poll_s=poll_s)
        self.assets = _Assets()
        self.loopback = True
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._server: _Server | None = None
        self._serving = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def log(self, line: str) -> None:
        self._log(line)

    # ---- binding ----

    def bind(self) -> Dashboard:
        """Listen on host:port (raises :class:`TrainDoctorError` with one line when it cannot)."""
        if self._server is not None:
            return self
        host = self.host
        cls = _Server6 if ":" in host else _Server
        try:
            srv = cls((host.strip("[]"), self.port), _Handler)
        except socket.gaierror as e:
            raise TrainDoctorError(f"--host {host}: not an address or a host name this machine knows ({e.strerror})") from e
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise TrainDoctorError(f"port {self.port} on {host} is already in use (another dashboard?); choose "
                                       "another with --port, or --port 0 for any free one") from e
            if e.errno == errno.EACCES:
                raise TrainDoctorError(f"may not listen on port {self.port} on {host} ({e.strerror}); ports below 1024 "
                                       "need privileges: choose another with --port") from e
            if e.errno == errno.EADDRNOTAVAIL:
                raise TrainDoctorError(f"--host {host}: no such address on this machine") from e
            raise TrainDoctorError(f"cannot listen on {host}:{self.port}: {e.strerror or e}") from e
        srv.dashboard = self
        self._server = srv
        self.port = int(srv.server_address[1])
        try:
            self.loopback = ipaddress.ip_address(str(srv.server_address[0]).split("%", 1)[0]).is_loopback
        except ValueError:
            self.loopback = False
        return self

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def host_allowed(self, header: str | None) -> bool:
        """DNS-rebinding protection: bound to a loopback address, only a loopback name (any port, so that an
        ``ssh -L`` forward from another local port works) or the bound host itself may be asked for."""
        if not self.loopback:
            return True
        name = _host_name(header or "")
        if name is None:
            return False
        return _is_loopback_name(name) or name == self.host.strip("[]").lower()

    # ---- running ----

    def wake(self) -> None:
        self._wake.set()

    def _refresher(self) -> None:
        idx = self.index
        while not self._stop.is_set():
            if time.monotonic() - idx.last_asked < IDLE_S or not idx.scanned.is_set():
                try:
                    idx.scan()
                except Exception as e:  # noqa: BLE001 - the rescan goes on
                    idx.scan_error = _one_line(f"scan failed: {type(e).__name__}: {e}")
                    idx.scanned.set()
            self._wake.wait(idx.poll_s)
            self._wake.clear()

    def _start_refresher(self) -> None:
        t = threading.Thread(target=self._refresher, name="traindoctor-dashboard-scan", daemon=True)
        t.start()
        self._threads.append(t)

    def start(self) -> Dashboard:
        """Bind and serve in background threads; returns at once."""
        self.bind()
        assert self._server is not None
        self._start_refresher()
        self._serving = True
        t = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.25},
                             name="traindoctor-dashboard-http", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def serve_forever(self) -> None:
        """Bind and serve in this thread until :meth:`stop` or Ctrl-C (KeyboardInterrupt propagates)."""
        self.bind()
        assert self._server is not None
        self._start_refresher()
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=0.25)
        finally:
            self._serving = False

    def stop(self) -> None:
        """Stop serving and close the socket; again does nothing."""
        self._stop.set()
        self._wake.set()
        srv, self._server = self._server, None
        if srv is None:
            return
        if self._serving:
            srv.shutdown()
            self._serving = False
        srv.server_close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        self._threads = []

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(root: str | os.PathLike[str] = DEFAULT_DIR, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          open_browser: bool = False, poll_s: float = POLL_S, out: IO[str] | None = None) -> int:
    """Serve the dashboard of the runs under ``root`` until Ctrl-C; returns the exit code (0).

    Raises :class:`TrainDoctorError` (one line) when it cannot listen: a port in use, a host unknown."""
    out = out if out is not None else sys.stdout
    dash = Dashboard(root, host=host, port=port, poll_s=poll_s)
    dash.bind()
    where = os.fspath(root)
    print(f"traindoctor dashboard: {where} at {dash.url} (Ctrl-C to stop)", file=out, flush=True)
    if not dash.loopback:
        print(f"traindoctor dashboard: warning: listening on {host}, not on localhost: anyone who can reach this "
              "machine can read these runs; an ssh tunnel (ssh -L) is safer, see docs/dashboard.md",
              file=sys.stderr, flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.3, lambda: webbrowser.open(dash.url)).start()
    try:
        dash.serve_forever()
    except KeyboardInterrupt:
        print("traindoctor dashboard: stopped", file=out, flush=True)
    finally:
        dash.stop()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``dashboard`` subcommand's arguments (for the command line's parser)."""
    p.add_argument("dir", nargs="?", default=None, metavar="DIR",
                   help=f"the directory of runs to watch (default {DEFAULT_DIR}, where traindoctor run writes); "
                        "run stores and any other log traindoctor diagnose reads")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; from another machine "
                        "prefer an ssh tunnel, ssh -L 8765:localhost:8765 HOST, to 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--open", action="store_true", dest="open_browser", help="open the page in a browser")


def main_dashboard(args: argparse.Namespace) -> int:
    """``traindoctor dashboard [DIR] [--host H] [--port P] [--open]``: the command line's entry."""
    given = getattr(args, "dir", None)
    root = Path(given) if given else Path(DEFAULT_DIR)
    if given and not root.exists():
        raise TrainDoctorError(f"{given}: no such file or directory")
    return serve(root, host=getattr(args, "host", DEFAULT_HOST) or DEFAULT_HOST,
                 port=int(getattr(args, "port", DEFAULT_PORT)), open_browser=bool(getattr(args, "open_browser", False)))
