"""Where the output goes: ``--json`` destinations, hostile bytes on the terminal, odd encodings, usage.

Every test runs the CLI in a subprocess; a test that touches devices or permissions runs it as an
unprivileged user (``nobody`` under root), so a regression cannot replace ``/dev/null`` for the machine.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path

from .conftest import cli

ESC_HEADER = "\x1b]0;pwned\x07acc\x1b[2J"
RAW = ("\x1b", "\x07", "\x9b", "\x08")


def _csv(path: Path, header: str = "step,loss", rows: int = 30) -> Path:
    lines = [header] + [f"{i},{2.3 - 0.05 * i:.4f}" + (",0.5" if header.count(",") == 2 else "") for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o666)
    return path


def _one_line(p) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def _no_raw_controls(*texts: str) -> None:
    for t in texts:
        for c in RAW:
            assert c not in t, f"raw {c!r} reached the terminal: {t!r}"


def _script(d: Path, body: str, name: str = "train.py") -> Path:
    s = d / name
    s.write_text(body, encoding="utf-8")
    s.chmod(0o666)
    return s


# 1. --json writes into what is there instead of replacing it


def test_json_to_dev_null_keeps_the_device(shared_dir):
    log = _csv(shared_dir / "a.csv")
    p = cli("diagnose", str(log), "--json", "/dev/null", cwd=shared_dir, unprivileged=True)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_json_to_dev_stdout_as_an_ordinary_user(shared_dir):
    log = _csv(shared_dir / "a.csv")
    p = cli("diagnose", str(log), "--json", "/dev/stdout", cwd=shared_dir, unprivileged=True)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert '"schema": "traindoctor/1"' in p.stdout
    assert "traindoctor diagnose" in p.stdout  # the report is there too, and was not truncated away


def test_json_to_dev_stdout_redirected_to_a_file_keeps_the_report(shared_dir):
    log = _csv(shared_dir / "a.csv")
    out = shared_dir / "out.txt"
    import subprocess

    with open(out, "w") as f:
        # /dev/fd/1, not /dev/stdout: this runs as root, and a regression must fail here (no file can be
        # created in /proc) rather than replace the machine's /dev/stdout
        r = subprocess.run([sys.executable, "-m", "traindoctor", "diagnose", str(log), "--json", "/dev/fd/1"],
                           stdout=f, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "traindoctor diagnose" in text and '"schema": "traindoctor/1"' in text
    assert text.index("traindoctor diagnose") < text.index('"schema"')


def test_json_to_a_fifo_writes_into_the_fifo(shared_dir):
    log = _csv(shared_dir / "a.csv")
    fifo = shared_dir / "pipe"
    os.mkfifo(fifo)
    fifo.chmod(0o666)
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(open(fifo, encoding="utf-8").read()), daemon=True)
    t.start()
    p = cli("diagnose", str(log), "--json", str(fifo), cwd=shared_dir, unprivileged=True, timeout=60)
    t.join(30)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a file"
    assert got and json.loads(got[0])["schema"] == "traindoctor/1"


def test_json_through_a_symlink_writes_the_target_and_keeps_the_link(shared_dir):
    log = _csv(shared_dir / "a.csv")
    (shared_dir / "real").mkdir(mode=0o777)
    (shared_dir / "real").chmod(0o777)
    target = shared_dir / "real" / "d.json"
    target.write_text("old\n")
    target.chmod(0o644)
    link = shared_dir / "link.json"
    link.symlink_to(target)
    p = cli("diagnose", str(log), "--json", "link.json", cwd=shared_dir)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink()
    assert json.loads(target.read_text())["schema"] == "traindoctor/1"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(x.name for x in (shared_dir / "real").iterdir()) == ["d.json"]  # no temporary left behind


def test_json_regular_file_is_replaced_atomically_and_summary_too(shared_dir):
    runs = shared_dir / "runs"
    runs.mkdir()
    _csv(runs / "a.csv")
    _csv(runs / "b.csv")
    out = shared_dir / "all.json"
    out.write_text("stale")
    p = cli("diagnose", str(runs), "--json", str(out), cwd=shared_dir)
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["schema"] == "traindoctor-runs/1"
    assert sorted(x.name for x in shared_dir.iterdir()) == ["all.json", "runs"]
    link = shared_dir / "null.json"
    link.symlink_to("/dev/null")
    p = cli("diagnose", str(runs), "--json", str(link), cwd=shared_dir, unprivileged=True)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


# 3. a bad --json destination is found before any work, in one line; exit 2


def test_json_missing_directory_is_refused_up_front(shared_dir):
    log = _csv(shared_dir / "a.csv")
    p = cli("diagnose", str(log), "--json", "x/y.json", cwd=shared_dir)
    assert p.returncode == 2
    line = _one_line(p)
    assert "--json x/y.json" in line and "directory x does not exist" in line
    assert "traindoctor diagnose" not in p.stdout  # no report: refused before any work
    assert not (shared_dir / "x").exists()


def test_json_a_directory_is_refused_up_front(shared_dir):
    log = _csv(shared_dir / "a.csv")
    (shared_dir / "d").mkdir()
    p = cli("diagnose", str(log), "--json", "d", cwd=shared_dir)
    assert p.returncode == 2
    line = _one_line(p)
    assert "--json d" in line and "is a directory" in line


def test_json_no_permission_is_refused_before_the_script_runs(shared_dir):
    ro = shared_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    marker = shared_dir / "ran"
    script = _script(shared_dir, f"open({str(marker)!r}, 'w').write('x')\n")
    p = cli("run", "--no-store", "--json", str(ro / "o.json"), str(script), cwd=shared_dir, unprivileged=True)
    assert p.returncode == 2, p.stderr
    line = _one_line(p)
    assert "o.json" in line and "permission denied" in line
    assert not marker.exists(), "the script ran although the --json destination could not be written"


def test_checkup_bad_json_is_refused_before_any_work(shared_dir):
    script = _script(shared_dir, "raise SystemExit('should not run')\n")
    p = cli("checkup", "--json", "nope/c.json", str(script), cwd=shared_dir)
    assert p.returncode == 2
    line = _one_line(p)
    assert "--json nope/c.json" in line and "does not exist" in line


def test_run_relative_json_is_resolved_where_the_command_started(shared_dir):
    script = _script(shared_dir, "import os, sys\nos.makedirs('sub', exist_ok=True)\nos.chdir('sub')\nsys.exit(3)\n")
    p = cli("run", "--no-store", "--json", "out.json", str(script), cwd=shared_dir, unprivileged=True)
    assert p.returncode == 3, p.stderr
    assert (shared_dir / "out.json").is_file()
    assert not (shared_dir / "sub" / "out.json").exists()
    assert json.loads((shared_dir / "out.json").read_text())["schema"] == "traindoctor/1"


def test_run_a_failing_json_write_keeps_the_script_exit_code(shared_dir):
    script = _script(shared_dir, "import sys\nsys.exit(3)\n")
    p = cli("run", "--no-store", "--json", "/dev/full", str(script), cwd=shared_dir, unprivileged=True)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr
    bad = [ln for ln in p.stderr.splitlines() if "/dev/full" in ln]
    assert len(bad) == 1 and "could not write" in bad[0], p.stderr


# 9. hostile bytes never reach the terminal raw


def test_escape_sequences_in_a_csv_header_and_file_name_are_made_visible(shared_dir):
    log = _csv(shared_dir / "ev\x1b[2Jil.csv", header=f"step,loss,{ESC_HEADER}")
    p = cli("diagnose", str(log), "--metric", f"accuracy={ESC_HEADER}", cwd=shared_dir)
    assert p.returncode == 0, p.stderr
    _no_raw_controls(p.stdout, p.stderr)
    assert "\\x1b]0;pwned\\x07acc\\x1b[2J" in p.stdout  # shown, as visible escapes
    assert "ev\\x1b[2Jil.csv" in p.stdout
    # the JSON keeps the exact name
    j = cli("diagnose", str(log), "--metric", f"accuracy={ESC_HEADER}", "--json", "-", cwd=shared_dir)
    assert j.returncode == 0, j.stderr
    assert ESC_HEADER in json.loads(j.stdout)["source"]["columns"].values()


def test_escape_sequences_in_error_messages_are_made_visible(shared_dir):
    log = shared_dir / "nolos\x1b]0;x\x07s.csv"
    log.write_text(f"step,{ESC_HEADER}\n" + "".join(f"{i},{i / 10}\n" for i in range(30)))
    p = cli("diagnose", str(log), cwd=shared_dir)
    assert p.returncode == 2
    line = _one_line(p)
    _no_raw_controls(p.stdout, p.stderr)
    assert "\\x1b]0;pwned\\x07acc" in line
    p = cli("diagnose", str(shared_dir / "gone\x9b2J\x08.csv"), cwd=shared_dir)
    assert p.returncode == 2
    _no_raw_controls(p.stdout, p.stderr)


def test_escape_sequences_in_the_directory_summary_are_made_visible(shared_dir):
    runs = shared_dir / "runs"
    runs.mkdir()
    _csv(runs / "a\x1b[2J.csv")
    _csv(runs / "b\x1b]0;t\x07.csv")
    (runs / "c\x1b[31m.csv").write_text("step,loss\n0,abc\n1,def\n")
    p = cli("diagnose", str(runs), cwd=shared_dir)
    _no_raw_controls(p.stdout, p.stderr)
    assert "a\\x1b[2J.csv" in p.stdout
    j = cli("diagnose", str(runs), "--json", "-", cwd=shared_dir)
    paths = {r["path"] for r in json.loads(j.stdout)["runs"]}
    assert "a\x1b[2J.csv" in paths


# 14. a stdout that cannot encode the report's dashes and arrows


def test_ascii_stdout_still_gets_a_report(shared_dir):
    log = _csv(shared_dir / "a.csv")
    p = cli("diagnose", str(log), cwd=shared_dir, env={"PYTHONIOENCODING": "ascii"})
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "traindoctor diagnose" in p.stdout and "a.csv" in p.stdout
    j = cli("diagnose", str(log), "--json", "-", cwd=shared_dir, env={"PYTHONIOENCODING": "ascii"})
    assert j.returncode == 0, j.stderr
    assert json.loads(j.stdout)["schema"] == "traindoctor/1"


# 16. the suggested command can be pasted; a subcommand's mistakes show that subcommand's usage


def test_suggested_diagnose_command_is_shell_quoted(shared_dir):
    script = _script(shared_dir, "pass\n")
    p = cli("run", "--store", "my runs; rm -rf x.db", str(script), cwd=shared_dir)
    assert p.returncode == 0, p.stderr
    assert "traindoctor diagnose 'my runs; rm -rf x.db'" in p.stderr


def test_unknown_option_of_a_subcommand_shows_that_subcommand_usage(shared_dir):
    p = cli("diagnose", "x.csv", "--bogus", cwd=shared_dir)
    assert p.returncode == 2
    assert "usage: traindoctor diagnose" in p.stderr
    assert "unrecognized arguments: --bogus" in p.stderr
    p = cli("diagnose", "--fail-on", "bogus", "x.csv", cwd=shared_dir)
    assert p.returncode == 2 and "usage: traindoctor diagnose" in p.stderr
