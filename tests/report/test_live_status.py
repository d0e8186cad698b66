"""The live status line (``report/live.py``): shown on a terminal while ``traindoctor run`` and
``traindoctor checkup`` work, never a byte of it anywhere else.

The command-line tests run real tiny trainings with stderr (and stdout) on a pseudo-terminal and read
what the terminal got; :func:`screen` replays those bytes as a terminal would (carriage return, line
feed, erase line, cursor up) to see what is left on the screen at the end: the script's lines whole, the
critical-finding line whole, the report, and no status line.
"""
from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from traindoctor.report.live import StatusLine, status_enabled

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "traindoctor" / "examples"
ENV = {k: v for k, v in os.environ.items() if k not in ("TRAINDOCTOR_STATUS", "NO_COLOR", "FORCE_COLOR")}
ENV.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", TERM="xterm-256color", PYTHONDONTWRITEBYTECODE="1")
_CSI = re.compile(rb"\x1b\[([?0-9;]*)([A-Za-z])")
_EPOCH = re.compile(r"epoch +(\d+)  train_loss \d+\.\d{4}  val_loss \d+\.\d{4}  val_acc \d\.\d{3}")


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            return
        if not chunk:
            return
        into += chunk


def on_terminal(args: list[str], *, stdout_too: bool = True, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> tuple[int, bytes, bytes]:
    """``traindoctor ARGS`` with stderr (and stdout, unless ``stdout_too`` is False: then piped) on a
    160-column pseudo-terminal: (exit code, the terminal's bytes, the piped stdout)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    got = bytearray()
    reader = threading.Thread(target=_read_all, args=(master, got), daemon=True)
    reader.start()
    try:
        p = subprocess.Popen([sys.executable, "-m", "traindoctor", *args], stdin=subprocess.DEVNULL,
                             stdout=slave if stdout_too else subprocess.PIPE, stderr=slave, env=env or ENV,
                             cwd=cwd)
        os.close(slave)
        out = p.stdout.read() if p.stdout is not None else b""
        code = p.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        os.close(master)
    return code, bytes(got), out


def piped(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "traindoctor", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          env=env or ENV, cwd=cwd, timeout=120)


def screen(raw: bytes) -> list[str]:
    """The lines a terminal shows after ``raw`` (CR, LF, ESC[2K, ESC[nA acted on; other CSI sequences,
    colours and the cursor's visibility, ignored; no wrapping: the lines are shorter than the terminal)."""
    lines, row, col, i = [""], 0, 0, 0
    while i < len(raw):
        m = _CSI.match(raw, i)
        if m:
            arg, cmd = m.group(1).decode(), m.group(2).decode()
            if cmd == "K":
                lines[row] = "" if arg == "2" else lines[row][:col]
            elif cmd == "A":
                row = max(0, row - int(arg or 1))
            i = m.end()
            continue
        b = raw[i]
        if b == 0x0D:
            col, i = 0, i + 1
            continue
        if b == 0x0A:
            row, i = row + 1, i + 1
            if row == len(lines):
                lines.append("")
            continue
        j = i + 1
        while j < len(raw) and (raw[j] & 0xC0) == 0x80:
            j += 1
        ch, i = raw[i:j].decode("utf-8", "replace"), j
        line = lines[row].ljust(col)
        lines[row] = line[:col] + ch + line[col + 1:]
        col += 1
    return [ln.rstrip() for ln in lines]


def renders(raw: bytes, title: str) -> list[str]:
    """Every drawing of the status line whose title is ``title``, colours removed."""
    plain = _CSI.sub(b"", raw).decode("utf-8", "replace")
    return re.findall(re.escape(title) + r" · [^\r\n]*", plain)


def test_run_on_a_terminal_shows_step_and_loss_and_leaves_the_scripts_lines_whole():
    # 30 epochs: a second or two of training, several of rich's refresh ticks (4 a second) within it
    code, raw, _ = on_terminal(["run", "--no-store", str(EXAMPLES / "healthy.py"), "--epochs", "30"])
    assert code == 0, raw.decode(errors="replace")[-3000:]
    shown = renders(raw, "traindoctor run healthy.py")
    # drawn while the script trained: the step count, the recent loss, steps/s and no alert
    training = [s for s in shown if re.search(r"step [1-9][\d,]* · loss \d\.\d+", s)]
    assert training, shown
    assert any(re.search(r"steps/s \d", s) for s in training), training
    assert all("alerts 0" in s for s in training) and not any(re.search(r"alerts [1-9]", s) for s in shown), shown
    assert b"status line failed" not in raw
    # the script's lines each reached the terminal whole, each from the start of an erased line
    # (never after the status's text, never split by a drawing)
    for n in range(1, 31):
        at = raw.index(f"epoch {n:3d}  train_loss".encode())
        end = raw.index(b"\r\n", at)
        assert _EPOCH.fullmatch(raw[at:end].decode()), raw[at - 40:end + 2]
        assert raw[:at].endswith((b"\r\x1b[2K", b"\n")), raw[at - 80:at]
    # and at the end the screen holds them in order, the report after them, and no status line
    final = screen(raw)
    epochs = [int(m.group(1)) for ln in final if (m := _EPOCH.fullmatch(ln))]
    assert epochs == list(range(1, 31)), final
    assert "healthy: no symptom found." in final
    assert not any("traindoctor run healthy.py ·" in ln for ln in final), final
    assert raw.rstrip().endswith(b"\x1b[?25h") or b"\x1b[?25h" in raw  # the cursor shown again


def test_critical_finding_line_and_stderr_of_the_script_are_not_garbled():
    code, raw, _ = on_terminal(["run", "--no-store", str(EXAMPLES / "lr_too_high.py"), "--epochs", "3"])
    assert code == 0, raw.decode(errors="replace")[-3000:]
    final = screen(raw)
    crit = [ln for ln in final if ln.startswith("traindoctor: L001 nonfinite-loss")]
    assert len(crit) == 1 and re.fullmatch(r"traindoctor: L001 nonfinite-loss — the loss is nan at step \d+; .*",
                                           crit[0]), final
    assert [int(m.group(1)) for ln in final if (m := re.fullmatch(r"epoch +(\d+)  train_loss nan .*", ln))] == [1, 2, 3]
    assert not any("traindoctor run lr_too_high.py ·" in ln for ln in final), final
    # the status counted the alert and named the step of the first non-finite loss
    shown = renders(raw, "traindoctor run lr_too_high.py")
    assert any(re.search(r"non-finite loss at step \d+ · alerts 1 \(last L001\)", s) for s in shown), shown


def test_piped_stderr_gets_not_one_byte_of_status():
    """Piped, the output is byte for byte that of --no-status, rich's FORCE_COLOR notwithstanding."""
    env = {**ENV, "FORCE_COLOR": "1"}
    args = [str(EXAMPLES / "healthy.py"), "--epochs", "2"]
    default = piped(["run", "--no-store", *args], env=env)
    off = piped(["run", "--no-store", "--no-status", *args], env=env)
    assert default.returncode == off.returncode == 0, default.stderr[-2000:]
    assert default.stdout == off.stdout and len(default.stdout.splitlines()) == 2
    assert default.stderr == off.stderr
    assert b"steps/s" not in default.stderr and b"\x1b[?25l" not in default.stderr


def test_stderr_on_a_terminal_with_stdout_piped_keeps_stdout_exact():
    code, raw, out = on_terminal(["run", "--no-store", str(EXAMPLES / "healthy.py"), "--epochs", "2"],
                                 stdout_too=False)
    assert code == 0
    assert renders(raw, "traindoctor run healthy.py")  # the status is on the terminal …
    lines = out.decode().splitlines()  # … and stdout holds the script's lines, nothing else
    assert [int(_EPOCH.fullmatch(ln).group(1)) for ln in lines] == [1, 2], out
    assert b"\x1b" not in out


@pytest.mark.parametrize("how", ["--no-status", "TRAINDOCTOR_STATUS=0"])
def test_no_status_and_the_environment_variable_turn_it_off(how):
    args = ["run", "--no-store", str(EXAMPLES / "healthy.py"), "--epochs", "2"]
    env = dict(ENV)
    if how == "--no-status":
        args.insert(1, how)
    else:
        env["TRAINDOCTOR_STATUS"] = "0"
    code, raw, _ = on_terminal(args, env=env)
    assert code == 0
    final = screen(raw)
    assert "healthy: no symptom found." in final and _EPOCH.fullmatch(final[1]), final  # the run itself, as ever
    assert not renders(raw, "traindoctor run healthy.py") and b"\x1b[?25l" not in raw


def test_checkup_on_a_terminal_shows_the_probe_and_the_budget():
    code, raw, _ = on_terminal(["checkup", "--budget", "20", "--steps", "4000", str(EXAMPLES / "healthy.py")])
    assert code == 0, raw.decode(errors="replace")[-3000:]
    shown = renders(raw, "traindoctor checkup healthy.py")
    assert any("running the script to its first loss" in s for s in shown), shown
    probing = [s for s in shown if re.search(r"probe .+ \((\d)/(\d)\) · done \d/\d · budget [\d.]+ s of 20 s", s)]
    assert probing, shown
    for s in probing:  # the probe shown is the next to finish: one more than those done
        m = re.search(r"\((\d)/(\d)\) · done (\d)/(\d)", s)
        assert int(m.group(1)) == int(m.group(3)) + 1 and m.group(2) == m.group(4), s
    final = screen(raw)
    assert "healthy: no symptom found." in final
    assert "traindoctor checkup: LR range test…" in final  # the checkup's own progress lines, whole
    assert not any("traindoctor checkup healthy.py ·" in ln for ln in final), final


# ---- the API, in this process ---------------------------------------------------------------------------------
class _Terminal:
    """A pseudo-terminal for one test: ``file`` writes to it, ``bytes()`` is what it got so far."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        self.file = open(slave, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        self.got = bytearray()
        self._reader = threading.Thread(target=_read_all, args=(self.master, self.got), daemon=True)
        self._reader.start()

    def bytes(self, settle: float = 0.2) -> bytes:
        time.sleep(settle)
        return bytes(self.got)

    def wait_for(self, text: bytes, timeout: float = 10.0) -> None:
        """Until the terminal got ``text`` (colours removed), at most ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while text not in _CSI.sub(b"", bytes(self.got)) and time.monotonic() < end:
            time.sleep(0.05)

    def close(self) -> None:
        self.file.close()
        self._reader.join(timeout=5)
        os.close(self.master)


@pytest.fixture
def term(monkeypatch):
    for k in ("TRAINDOCTOR_STATUS", "NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    t = _Terminal()
    yield t
    t.close()


def test_not_a_terminal_means_nothing_at_all():
    buf = io.StringIO()
    with StatusLine("traindoctor tune x.py", file=buf) as status:
        status.update(trials="1/2")
        assert not status.active
    assert buf.getvalue() == ""
    assert not status_enabled(buf)


def test_fields_from_update_are_shown_and_user_text_is_escaped(term):
    evil = "study\x1b]0;pwned\x07\x1b[2J.py"
    with StatusLine(f"traindoctor tune {evil}", file=term.file) as status:
        assert status.active
        status.update(trials="3/10", pruned=1, best=0.2512345, **{"bad\x1b[31m": "x\x1b[2Jy"})
        term.wait_for(b"trials 3/10")  # rich's refresh thread draws it, within a quarter of a second
    raw = term.bytes()
    plain = _CSI.sub(b"", raw).decode()
    line = re.findall(r"traindoctor tune [^\r\n]*", plain)[-1]
    assert r"study\x1b]0;pwned\x07\x1b[2J.py" in line  # shown as text, never acted on
    assert "trials 3/10 · pruned 1 · best 0.2512" in line
    assert r"bad\x1b[31m x\x1b[2Jy" in line
    assert b"\x1b]0;" not in raw and b"\x07" not in raw and b"\x1b[2J" not in raw
    assert not any("traindoctor tune" in ln for ln in screen(raw))  # transient


def test_a_failing_poll_turns_the_status_off_says_so_once_and_the_caller_goes_on(term):
    calls = []

    def poll():
        calls.append(1)
        raise RuntimeError("snapshot exploded")

    with StatusLine("traindoctor run x.py", poll=poll, file=term.file) as status:
        time.sleep(0.8)  # several refresh ticks: the poll is tried once, then the status is off
        assert not status.active
        term.file.write("the caller goes on\n")
    raw = term.bytes()
    assert len(calls) == 1
    assert raw.count(b"live status line failed") == 1
    assert b"RuntimeError: snapshot exploded" in raw
    assert "the caller goes on" in screen(raw)


def test_an_unfinished_line_is_never_drawn_over(term, monkeypatch):
    """The script's streams on the status's terminal pass through: while a line is unfinished
    (``print(..., end="")``) the status is not drawn; once it ends, the status comes back below it."""
    monkeypatch.setattr(sys, "stdout", term.file)
    monkeypatch.setattr(sys, "stderr", term.file)
    with StatusLine("traindoctor run x.py", poll=lambda: {"step": 7}, file=term.file) as status:
        assert status.active and sys.stdout is not term.file  # the pass-through
        print("half a line", end="", flush=True)
        before = len(term.bytes())
        time.sleep(0.8)  # three refresh ticks
        during = term.bytes(0.0)[before:]
        print(" and its end")
        print("to stderr", file=sys.stderr)
        time.sleep(0.4)
    assert sys.stdout is term.file and sys.stderr is term.file  # given back
    raw = term.bytes()
    assert b"traindoctor run x.py" not in during  # nothing drawn over the unfinished line
    final = screen(raw)
    assert final[:2] == ["half a line and its end", "to stderr"], final
    assert not any("traindoctor run x.py" in ln for ln in final), final
    after_end = _CSI.sub(b"", raw[raw.index(b" and its end"):])
    assert b"traindoctor run x.py \xc2\xb7 step 7" in after_end  # drawn again once the line ended


@pytest.mark.parametrize("status", ["--no-status", None])
def test_a_watched_script_sees_its_terminal_as_a_terminal(tmp_path, status):
    """tqdm and rich inside the script ask ``sys.stdout.isatty()``: under ``traindoctor run`` on a terminal
    the answer is the terminal's, with or without the status line (stdout wraps the real stream)."""
    script = tmp_path / "ask.py"
    script.write_text("import sys\nprint('ANSWER', sys.stdout.isatty(), sys.stderr.isatty(), sys.stdout.encoding,"
                      " sys.stdout.fileno())\n")
    args = ["run", "--no-store", *([status] if status else []), str(script)]
    code, term, _ = on_terminal(args)
    assert code == 0, term
    answer = next(line for line in screen(term) if line.startswith("ANSWER"))
    assert answer.split()[1:4] == ["True", "True", "utf-8"], answer
