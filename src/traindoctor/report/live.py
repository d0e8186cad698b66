"""A live status line on stderr while the doctor works: ``traindoctor run``'s step, recent loss, steps/s
and alerts so far; ``traindoctor checkup``'s probe, how many are done, and the time against the budget.

One small API for every long command (``traindoctor tune`` can show trials done / pruned / best with it)::

    with StatusLine("traindoctor tune study.py") as status:
        for i, trial in enumerate(trials):
            ...
            status.update(trials=f"{i + 1}/{n}", pruned=pruned, best=best)

or polled: ``status.poll(fn)`` gives a function returning the fields (a mapping, label → value), which
rich's refresh thread calls at most :data:`REFRESH_PER_SECOND` times a second. It runs on that thread,
so it must be cheap and lock-free: read a few attributes, never a tensor operation, never ``.item()``,
never a lock that a thread printing to stdout/stderr may hold. :class:`RunProgress` (the live monitor of
``traindoctor run``) and :class:`CheckupProgress` (a dict the checkup writes its progress into) are the two
such functions here. Values are shown as given: ``int`` with thousands separators, ``float`` with
:func:`~traindoctor.numfmt.fmt`'s four digits, ``None`` leaves the field out, a ``rich.text.Text`` keeps its
style; every label and string goes through :func:`~traindoctor.report.safe.safe` and is shown as rich
``Text``, never as markup (a script's or a probe's name is user text).

**When it shows.** Only while stderr is a terminal (a terminal rich does not call dumb): piped or
redirected, nothing is started and not one byte is added to stderr or stdout. ``--no-status`` (``run``,
``checkup``) and ``TRAINDOCTOR_STATUS=0`` turn it off.

**The watched script's own output.** The script runs in this process and prints to the same terminal,
so its ``sys.stdout``/``sys.stderr`` (those on the status's terminal, nothing else) are replaced, for the
status's life, by a pass-through (:class:`_Through`): each write goes to the real stream as the very same
``str``, whole and at once. Before it, the status line is erased (rich's own cursor controls,
``LiveRender.position_cursor``); after a write that ends a line, the status is drawn again below it; while a
line is left unfinished (``print(..., end="")``, a ``\\r`` progress bar) the status stays hidden, so it never
lands in the middle of someone's line. Rich's own ``redirect_stdout``/``redirect_stderr`` are not used: its
``FileProxy`` holds text back until a newline (a progress bar would not move), re-renders every line through
the console (word-wrapped at the terminal's width, tabs expanded, ANSI codes re-encoded) and sends the
script's stdout to the status's stream. The doctor's own messages during the run (the immediate
critical-finding line, a contained internal error, the checkup's progress lines) are printed through the same
``sys.stderr`` and so go above the status too. The status is transient: erased before the command's final
report. Not covered: bytes written below Python's ``sys.stdout``/``sys.stderr`` (``os.write(1, …)``, C code,
a subprocess, ``sys.stdout.buffer``), which may land on the status line until its next redraw.

**Cost.** The refresh thread draws at most 4 times a second (about 0.1 ms a draw: under 0.1 % of the time);
a line the script prints while the status shows costs one erase (about 10 µs), and it is drawn again at once
only if that keeps such redraws under 0.5 % of the time (else at the next tick); the poll reads attributes.

**Containment.** Whatever fails inside the status (a poll, a render, the terminal) turns it off, erased,
with one line on stderr; the run goes on, its output unchanged. Nothing the status does raises into the caller.
"""
from __future__ import annotations

import os
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import IO, Any

from .safe import safe

REFRESH_PER_SECOND = 4.0  # rich's refresh thread draws at most this often
_REDRAW_SHARE = 0.005  # redraws caused by the script's prints take at most this share of the time
_OFF = ("0", "false", "no", "off")

Fields = Mapping[str, Any]


def status_enabled(file: IO[str] | None = None, *, disabled: bool = False) -> bool:
    """Whether a status line may be shown on ``file`` (default ``sys.stderr``): not ``disabled``
    (``--no-status``), not ``TRAINDOCTOR_STATUS=0``, and ``file`` a terminal that is not dumb."""
    if disabled or os.environ.get("TRAINDOCTOR_STATUS", "").strip().lower() in _OFF:
        return False
    if os.environ.get("TERM", "").strip().lower() in ("dumb", "unknown"):
        return False
    f = file if file is not None else sys.stderr
    try:
        return f is not None and os.isatty(f.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (a StringIO, pytest's capture), closed
        return False


def _terminal(stream: Any) -> int | None:
    """The device of the terminal ``stream`` writes to, or None (not a terminal, no descriptor)."""
    try:
        fd = stream.fileno()
        if not os.isatty(fd):
            return None
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_rdev if stat.S_ISCHR(st.st_mode) else None


class _Through:
    """One of the script's streams (``sys.stdout``/``sys.stderr``) on the status's terminal: every write
    goes to the real stream unchanged, the status erased first and drawn again when a line has ended."""

    def __init__(self, inner: Any, status: StatusLine) -> None:
        self._inner = inner
        self._status = status

    def write(self, text: str) -> int:
        return self._status._write(self._inner, text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    def __getattr__(self, name: str) -> Any:  # encoding, errors, buffer, reconfigure … as the real stream
        return getattr(self._inner, name)


def _make_live(owner: StatusLine, console: Any) -> Any:
    """A ``rich.live.Live`` that draws only while no one's line is unfinished on the terminal."""
    from rich.live import Live

    class _Live(Live):
        def refresh(self) -> None:
            with self._lock:
                if owner._hold or owner._broken or owner._closing:
                    return
                try:
                    if owner._fd is not None:  # the width of the status's own terminal (rich asks fds 0-2)
                        cols = os.get_terminal_size(owner._fd).columns
                        if cols > 0 and cols != self.console.width:
                            self.console.width = cols
                    super().refresh()
                    owner._shown = self._live_render.last_render_height > 0
                    owner._drawn_at = time.perf_counter()
                except Exception as exc:  # noqa: BLE001 - the status never breaks the run
                    owner.fail(exc)

        def erase(self) -> None:
            """The status line(s) erased, the cursor where the first began (rich's controls)."""
            with self._lock:
                self.console.control(self._live_render.position_cursor())
                self._live_render._shape = None  # nothing of the status is on the screen now

    return _Live(console=console, transient=True, redirect_stdout=False, redirect_stderr=False,
                 refresh_per_second=REFRESH_PER_SECOND, get_renderable=owner._renderable)


def _plain(s: str) -> str:
    return safe(s, newlines=False)


class StatusLine:
    """A one-line live status on stderr (a context manager); see the module docstring.

    ``title`` leads the line (user text: it is escaped); ``poll`` (or :meth:`poll` later) returns the
    fields, called by rich's refresh thread; :meth:`update` sets fields from the caller's thread. The
    elapsed time ends the line. ``enabled=False`` (``--no-status``) or no terminal: nothing happens, and
    :attr:`active` is False.
    """

    def __init__(self, title: str, *, poll: Callable[[], Fields] | None = None, enabled: bool = True,
                 file: IO[str] | None = None) -> None:
        self.title = title
        self._poll = poll
        self._fields: dict[str, Any] = {}
        self._enabled = enabled
        self._file = file
        self._live: Any = None
        self._installed: list[tuple[str, _Through, Any]] = []
        self._pid = os.getpid()
        self._t0 = time.monotonic()
        self._shown = False  # the status is on the screen, the cursor at its end
        self._hold = False  # a line of someone's is unfinished on the terminal: draw nothing
        self._broken = False
        self._closing = False
        self._drawn_at = 0.0
        self._draw_s = 1e-4  # one draw's cost (measured at the first write-caused redraw)
        self._failure: str | None = None
        self._said = False
        self._fd: int | None = None
        self._spinner: Any = None
        self._sep = " · "

    # ---- the caller's side ----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the status is showing (started on a terminal and not failed)."""
        return self._live is not None and not self._broken

    def update(self, **fields: Any) -> None:
        """Set fields (``None`` removes one); shown at the next refresh, within a quarter of a second."""
        for k, v in fields.items():
            if v is None:
                self._fields.pop(k, None)
            else:
                self._fields[k] = v

    def poll(self, fn: Callable[[], Fields] | None) -> None:
        """Read the fields from ``fn()`` at each refresh (cheap and lock-free: see the module docstring)."""
        self._poll = fn

    def __enter__(self) -> StatusLine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start drawing, when stderr is a terminal and the status is wanted; never raises."""
        if self._live is not None or self._broken:
            return
        file = self._file if self._file is not None else sys.stderr
        if not status_enabled(file, disabled=not self._enabled):
            return
        try:
            from rich.console import Console
            from rich.spinner import Spinner

            console = Console(file=file, force_terminal=True, force_jupyter=False, force_interactive=True,
                              markup=False, emoji=False, highlight=False)
            if console.is_dumb_terminal:
                return
            utf = (console.encoding or "").lower().replace("-", "").startswith("utf")
            self._spinner = Spinner("dots" if utf else "line")
            self._sep = " · " if utf else " | "
            self._fd = file.fileno()
            self._t0 = time.monotonic()
            self._live = _make_live(self, console)
            self._live.start(refresh=True)
            term = _terminal(file) if not self._broken else None
            for name in ("stderr", "stdout"):  # the streams that print on this terminal, only those
                stream = getattr(sys, name)
                if term is not None and _terminal(stream) == term:
                    proxy = _Through(stream, self)
                    setattr(sys, name, proxy)
                    self._installed.append((name, proxy, stream))
        except Exception as exc:  # noqa: BLE001 - no status, the run as ever
            self.fail(exc)
            self.stop()

    def stop(self) -> None:
        """Erase the status and give the streams back; never raises. Called before the final report."""
        live = self._live
        if live is not None:
            try:
                with live._lock:  # no write of the script's in between
                    self._closing = True
                    if self._shown and not self._hold:
                        live.erase()
                    self._shown = False
                    self._uninstall()
                live.stop()  # the thread stopped, the cursor shown again; nothing drawn (closing)
            except Exception as exc:  # noqa: BLE001
                self.fail(exc)
            finally:
                self._uninstall()
                self._live = None
        self._say_failure()

    # ---- containment --------------------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The status failed: turned off and erased; said once on stderr (now when the cursor is at a line's
        start, else when the status stops)."""
        if self._broken:
            return
        self._broken = True
        why = " ".join(str(exc).split())[:200]
        self._failure = (f"traindoctor: the live status line failed and was turned off ({type(exc).__name__}"
                         f"{': ' + why if why else ''}); the run goes on")
        live = self._live
        try:
            if live is not None and self._shown and not self._hold:
                live.erase()
        except Exception:  # noqa: BLE001 - the terminal itself failed: nothing more to try
            pass
        self._shown = False
        if not self._hold:
            self._say_failure()

    def _say_failure(self) -> None:
        if self._failure is None or self._said:
            return
        self._said = True
        try:
            print(_plain(self._failure), file=self._file if self._file is not None else sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - stderr itself is gone
            pass

    def _uninstall(self) -> None:
        for name, proxy, inner in self._installed:
            if getattr(sys, name) is proxy:  # replaced since by the script: its replacement stays, ours passes through
                setattr(sys, name, inner)
        self._installed = []

    # ---- the terminal's side ------------------------------------------------------------------------------
    def _write(self, inner: Any, text: str) -> int:
        live = self._live
        if live is None or self._broken or self._closing or os.getpid() != self._pid:
            return inner.write(text)  # stopped, failed, or a forked child (a DataLoader worker): as is
        with live._lock:
            if self._shown:
                try:
                    live.erase()
                    self._shown = False
                except Exception as exc:  # noqa: BLE001
                    self.fail(exc)
            n = inner.write(text)  # the script's text, unchanged; its stream's own errors are its own
            if text:
                self._hold = not text.endswith("\n")
                if not self._hold and not self._broken:
                    now = time.perf_counter()
                    if now - self._drawn_at >= self._draw_s / _REDRAW_SHARE:
                        try:
                            inner.flush()  # on the terminal before the status is drawn after it
                        except (OSError, ValueError):
                            pass
                        live.refresh()
                        self._draw_s = max(1e-5, time.perf_counter() - now)
            return n

    def _renderable(self) -> Any:
        from rich.text import Text

        fields: dict[str, Any] = dict(self._fields)
        poll = self._poll
        if poll is not None:
            fields.update(poll())
        sep = self._sep
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        line.append(_plain(self.title), style="bold")
        for label, value in fields.items():
            if value is None:
                continue
            line.append(sep, style="dim")
            if label:
                line.append(_plain(label) + " ", style="dim")
            line.append_text(_value(value))
        line.append(sep, style="dim")
        line.append(_clock(time.monotonic() - self._t0), style="dim")
        spin = self._spinner.render(time.monotonic()) if self._spinner is not None else Text()
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        out.append_text(spin if isinstance(spin, Text) else Text(str(spin)))
        out.append(" ")
        out.append_text(line)
        return out


def _value(v: Any) -> Any:
    from rich.text import Text

    from ..numfmt import fmt

    if isinstance(v, Text):
        return v
    if isinstance(v, bool):
        return Text("yes" if v else "no")
    if isinstance(v, int):
        return Text(f"{v:,}")
    if isinstance(v, float):
        return Text(fmt(v), style=None if v == v and abs(v) != float("inf") else "bold red")
    return Text(_plain(str(v)))


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


# ---- traindoctor run ----------------------------------------------------------------------------------------
class RunProgress:
    """The status fields of a live run, read off its monitor: the step, the recent loss, steps/s, the
    critical findings said so far (the lines printed the moment they happened, counted as they are
    printed), treatments (``--heal``). Attribute reads only; no lock, no tensor (an accelerator's loss is
    shown when the monitor's writer thread has read it, every few steps)."""

    _WINDOW_S = 3.0  # steps/s over about the last three seconds

    def __init__(self, monitor: Any) -> None:
        self._m = monitor
        self.alerts = 0
        self.last_alert: str | None = None
        self._loss: float | None = None
        self._steps: deque[tuple[float, int]] = deque()
        self._events_seen = 0
        self._treatments = 0
        said = monitor.on_critical

        def counted(msg: str) -> None:
            self.alerts += 1
            words = str(msg).removeprefix("traindoctor: ").split(" ", 2)
            code = words[1] if words[0] == "healing" and len(words) > 1 else words[0]  # "healing G004 at step …"
            self.last_alert = code if len(code) == 4 and code[0].isalpha() and code[1:].isdigit() else None
            said(msg)

        monitor.on_critical = counted

    def _recent_loss(self) -> float | None:
        m = self._m
        acc = m._loss_acc  # this step's loss, read at backward() (a float on the CPU)
        if acc:
            v = acc[-1]
            if type(v) is float:
                self._loss = v
                return v
        pending = m._pending  # the last steps' losses, queued for the writer thread (read from the right end)
        for i in range(1, min(len(pending), 16) + 1):
            try:
                name, _, v = pending[-i]
            except (IndexError, ValueError, TypeError):  # drained at this instant
                break
            if name == "loss" and type(v) is float:
                self._loss = v
                return v
        col = m._table._cols.get("loss")  # the last loss the writer thread has recorded
        if col is not None:
            try:
                self._loss = col.values[-1]
            except IndexError:  # being thinned at this instant
                pass
        return self._loss

    def _rate(self, step: int) -> float | None:
        now = time.monotonic()
        q = self._steps
        if step == 0:  # not training yet: the rate counts from the first step
            q.clear()
        q.append((now, step))
        while len(q) > 2 and now - q[1][0] >= self._WINDOW_S:
            q.popleft()
        t0, s0 = q[0]
        return (step - s0) / (now - t0) if now - t0 >= 0.5 and step >= s0 else None

    def _count_treatments(self) -> int:
        ev = self._m._events
        n = len(ev)
        if n < self._events_seen:  # old events thinned: counted already
            self._events_seen = n
        for i in range(self._events_seen, n):
            try:
                if ev[i].kind == "treatment":
                    self._treatments += 1
            except IndexError:
                break
        self._events_seen = n
        return self._treatments

    def __call__(self) -> Fields:
        from rich.text import Text

        m = self._m
        step = int(m.step)
        loss = self._recent_loss()
        out: dict[str, Any] = {}
        if getattr(m, "_closed", False):
            out[""] = Text("diagnosing…", style="italic")
        elif step == 0 and loss is None:
            out[""] = Text("starting…", style="italic")
        out["step"] = step
        out["loss"] = loss
        rate = self._rate(step)
        out["steps/s"] = rate
        bad = getattr(m, "nonfinite_loss_step", None)
        if bad is not None:
            out["non-finite loss at step"] = Text(f"{bad:,}", style="bold red")
        last = f" (last {self.last_alert})" if self.last_alert else ""
        out["alerts"] = Text(f"{self.alerts}{last}", style="bold red" if self.alerts else "green")
        if "heal" in m.meta:
            out["treatments"] = self._count_treatments()
        return out


def monitor_hook(status: StatusLine) -> Callable[[Any], None] | None:
    """For ``watch_script(on_monitor=…)``: the status follows the run's monitor (None when it is not showing)."""
    if not status.active:
        return None

    def hook(monitor: Any) -> None:
        try:
            status.poll(RunProgress(monitor))
        except Exception as exc:  # noqa: BLE001
            status.fail(exc)

    return hook


# ---- traindoctor checkup ------------------------------------------------------------------------------------
class CheckupProgress:
    """The checkup's status fields from :attr:`fields`, the dict the checkup writes its progress into
    (``phase``; ``probe``, ``done``, ``total`` during the probes; ``t0``, the budget's start on
    ``time.perf_counter``), with the time used against ``budget_s``."""

    def __init__(self, budget_s: float | None = None) -> None:
        self.fields: dict[str, Any] = {"phase": "running the script to its first loss"}
        self.budget_s = budget_s

    def __call__(self) -> Fields:
        f = self.fields
        out: dict[str, Any] = {}
        total, done, probe = f.get("total"), f.get("done"), f.get("probe")
        if total is not None and probe is not None and done is not None and done < total:
            out["probe"] = f"{probe} ({done + 1}/{total})"
        elif f.get("phase"):
            out[""] = str(f["phase"])
        if total is not None and done is not None:
            out["done"] = f"{done}/{total}"
        t0 = f.get("t0")
        if t0 is not None and self.budget_s is not None:
            used = time.perf_counter() - t0
            out["budget"] = f"{used:.1f} s of {self.budget_s:g} s"
        return out
