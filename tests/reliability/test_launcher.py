"""`traindoctor run` / `checkup` launch a script as `python SCRIPT ARGS` would: its __file__, argv,
sys.path, tracebacks and exit codes; a read-only working directory or a crash never turns into a
traindoctor failure or a "healthy" report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import cli

TRAIN = """\
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 4), torch.randn(32, 1)
for step in range({steps}):
{hook}    opt.zero_grad()
    loss = nn.functional.mse_loss({call}(x), y)
    loss.backward()
    opt.step()
    print(f"step {{step}} loss {{loss.item():.6f}}")
"""


def train_script(steps: int = 5, hook: str = "", head: str = "", call: str = "model") -> str:
    hook = textwrap.indent(textwrap.dedent(hook), "    ") if hook else ""
    return textwrap.dedent(head) + TRAIN.format(steps=steps, hook=hook, call=call)


def python(script: str | os.PathLike[str], *args: str, cwd: str | os.PathLike[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=120)


# ------------------------------------------------------------------ 2. __file__, argv[0], sys.path[0]
WHERE = """\
import json, os, sys
print("WHERE " + json.dumps({"file": __file__, "argv0": sys.argv[0], "path0": sys.path[0]}))
os.chdir(os.path.dirname(__file__))
print("CHDIR " + os.getcwd())
"""


def _where(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("WHERE "))
    return json.loads(line[6:])


@pytest.mark.parametrize("cmd", ["run", "checkup"])
def test_file_is_absolute_and_chdir_to_its_dir_works(tmp_path, cmd):
    sub = tmp_path / "proj"
    sub.mkdir()
    (sub / "train.py").write_text(WHERE + train_script(steps=3))
    bare = python("./proj/train.py", cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr
    args = ["--no-store"] if cmd == "run" else ["--skip", "lr_range", "--skip", "overfit", "--skip", "repeat",
                                                 "--skip", "short_training", "--skip", "gradcheck", "--steps", "5"]
    r = cli(cmd, *args, "./proj/train.py", cwd=tmp_path)
    assert "FileNotFoundError" not in r.stderr, r.stderr
    assert _where(r.stdout) == _where(bare.stdout)  # absolute __file__, argv[0] as typed, the script's dir
    assert os.path.isabs(_where(r.stdout)["file"])
    assert _where(r.stdout)["argv0"] == "./proj/train.py"
    assert f"CHDIR {sub.resolve()}" in r.stdout
    if cmd == "run":
        assert r.returncode == 0, r.stderr
        assert [ln for ln in r.stdout.splitlines() if ln.startswith("step")] == \
               [ln for ln in bare.stdout.splitlines() if ln.startswith("step")]


# ------------------------------------------------------------------ 8. a read-only working directory
def test_read_only_working_directory_keeps_training_in_memory(shared_dir):
    (shared_dir / "train.py").write_text(train_script(steps=4))
    shared_dir.chmod(0o555)
    r = cli("run", "train.py", cwd=shared_dir, unprivileged=True)
    assert r.returncode == 0, r.stderr
    assert [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("step")] == ["0", "1", "2", "3"]
    warn = [ln for ln in r.stderr.splitlines() if "cannot create" in ln]
    assert len(warn) == 1, r.stderr
    assert "--no-store" in warn[0] and "in memory" in warn[0] and "Permission denied" in warn[0], warn
    assert str(shared_dir) in warn[0]
    assert "traindoctor run" in r.stderr  # the report still comes
    assert "run stored in" not in r.stderr
    assert not (shared_dir / ".traindoctor").exists()


# ------------------------------------------------------------------ 13. `--` reaches the script
ARGV = "import json, sys\nprint('ARGV ' + json.dumps(sys.argv[1:]))\n"


def _argv(out: str) -> list:
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("ARGV "))[5:])


@pytest.mark.parametrize("argv, expected", [
    (["s.py", "--", "--x"], ["--", "--x"]),
    (["--", "s.py", "--x"], ["--x"]),
    (["--", "s.py", "--", "--x"], ["--", "--x"]),
    (["--no-store", "s.py", "a", "--", "b", "--no-store"], ["a", "--", "b", "--no-store"]),
    (["--cadence", "3", "s.py", "--cadence", "9"], ["--cadence", "9"]),
])
def test_script_gets_exactly_the_arguments_after_its_name(tmp_path, argv, expected):
    from traindoctor import cli as tdcli

    seen = {}

    def fake_watch(script, args, **kw):
        seen["script"], seen["args"] = script, list(args)
        raise SystemExit(0)

    import traindoctor.watch.launcher as launcher

    orig = launcher.watch_script
    launcher.watch_script = fake_watch
    try:
        with pytest.raises(SystemExit):
            tdcli.main(["run", *argv])
    finally:
        launcher.watch_script = orig
    assert seen == {"script": "s.py", "args": expected}


def test_double_dash_reaches_the_script_as_under_python(tmp_path):
    (tmp_path / "s.py").write_text(ARGV + train_script(steps=2))
    bare = python("s.py", "--", "--x", cwd=tmp_path)
    r = cli("run", "--no-store", "s.py", "--", "--x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _argv(r.stdout) == _argv(bare.stdout) == ["--", "--x"]


def test_checkup_passes_double_dash_too(tmp_path):
    from traindoctor import cli as tdcli

    seen = {}
    import traindoctor.checks.checkup as checkup

    def fake(script, args, **kw):
        seen["args"] = list(args)
        raise SystemExit(0)

    orig = checkup.checkup_script
    checkup.checkup_script = fake
    try:
        with pytest.raises(SystemExit):
            tdcli.main(["checkup", "--steps", "5", "s.py", "--", "--x"])
    finally:
        checkup.checkup_script = orig
    assert seen == {"args": ["--", "--x"]}


# ------------------------------------------------------------------ 16. Ctrl-C, SyntaxError, crashes, compile
def _traceback_files(err: str) -> list[str]:
    return [ln.strip() for ln in err.splitlines() if ln.strip().startswith("File ")]


def test_keyboard_interrupt_as_python_shows_it_and_is_reported(tmp_path):
    (tmp_path / "s.py").write_text(train_script(steps=6, hook="if step == 3:\n    raise KeyboardInterrupt\n"))
    bare = python("s.py", cwd=tmp_path)
    r = cli("run", "--no-store", "s.py", cwd=tmp_path)
    assert r.returncode == 130, r.stderr
    assert bare.returncode in (130, -2)
    assert _traceback_files(r.stderr) == _traceback_files(bare.stderr), r.stderr
    assert "traindoctor" not in "".join(_traceback_files(r.stderr))
    assert "interrupted at step 3 (KeyboardInterrupt)" in " ".join(r.stderr.split())
    assert "healthy" not in r.stderr


def test_syntax_error_shown_as_python_shows_it(tmp_path):
    (tmp_path / "s.py").write_text("import torch\nx = (1,\nprint(x\n")
    bare = python("s.py", cwd=tmp_path)
    r = cli("run", "--no-store", "s.py", cwd=tmp_path)
    assert r.returncode == bare.returncode == 1
    assert "<frozen runpy>" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(bare.stderr), r.stderr


def test_crashed_run_is_never_reported_healthy(tmp_path):
    from traindoctor.watch.launcher import watch_script

    s = tmp_path / "s.py"
    s.write_text(train_script(steps=30, hook="if step == 25:\n    raise ValueError('boom')\n"))
    res = watch_script(s, [], store="")
    assert res.exit_code == 1
    d = res.diagnosis
    assert not d.healthy and d.verdict != "healthy", d.verdict
    assert d.to_json()["healthy"] is False
    assert any("crashed at step 25" in n and "ValueError: boom" in n for n in d.notes), d.notes
    import io

    from traindoctor.report import render

    buf = io.StringIO()
    render(d, file=buf, width=200)
    text = buf.getvalue()
    assert "healthy" not in text, text
    assert "crashed at step 25" in text


def test_crash_is_not_healthy_even_when_its_rule_fails(tmp_path, monkeypatch):
    """M014 is how a crash usually shows; a crash is never "healthy" without it either."""
    import dataclasses

    from traindoctor.rules import RULES, all_rules
    from traindoctor.watch.launcher import watch_script

    all_rules()

    def broken(run):
        raise RuntimeError("rule broken")

    monkeypatch.setitem(RULES, "M014", dataclasses.replace(RULES["M014"], check=broken))
    s = tmp_path / "s.py"
    s.write_text(train_script(steps=30, hook="if step == 25:\n    raise ValueError('boom')\n"))
    d = watch_script(s, [], store="").diagnosis
    assert not d.findings  # nothing else to find in this run
    assert d.verdict != "healthy" and not d.healthy
    assert any("crashed at step 25" in n for n in d.notes), d.notes


def test_nonzero_exit_is_not_healthy(tmp_path):
    from traindoctor.watch.launcher import watch_script

    s = tmp_path / "s.py"
    s.write_text(train_script(steps=30, hook="if step == 25:\n    raise SystemExit(3)\n"))
    res = watch_script(s, [], store="")
    assert res.exit_code == 3
    assert res.diagnosis.verdict != "healthy" and not res.diagnosis.healthy
    assert any("exited with code 3 at step 25" in n for n in res.diagnosis.notes), res.diagnosis.notes


def test_interrupted_run_is_never_reported_healthy(tmp_path):
    from traindoctor.watch.launcher import watch_script

    s = tmp_path / "s.py"
    s.write_text(train_script(steps=30, hook="if step == 25:\n    raise KeyboardInterrupt\n"))
    res = watch_script(s, [], store="")
    assert res.exit_code == 130
    assert res.diagnosis.verdict != "healthy" and not res.diagnosis.healthy
    assert any("interrupted at step 25 (KeyboardInterrupt)" in n for n in res.diagnosis.notes), res.diagnosis.notes


def test_torch_compile_gets_no_warning_about_our_hooks(tmp_path):
    head = "import warnings\n"
    s = train_script(steps=3, call="cm").replace("opt = ", "cm = torch.compile(model)\nopt = ", 1)
    # the user's own warnings still come through
    s += "warnings.warn('mine, from the script')\n"
    (tmp_path / "c.py").write_text(head + s)
    bare = python("c.py", cwd=tmp_path)
    if bare.returncode != 0:
        pytest.skip(f"torch.compile does not work here: {bare.stderr.strip().splitlines()[-1:]}")
    r = cli("run", "--no-store", "c.py", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "global hooks" not in r.stderr, r.stderr
    assert "mine, from the script" in r.stderr
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("step")] == \
           [ln for ln in bare.stdout.splitlines() if ln.startswith("step")]


def test_user_global_hook_still_warned_under_compile(tmp_path):
    """The warning is torch's to give when the script has global hooks of its own."""
    from torch.nn.modules import module as mm

    from traindoctor.watch.autohooks import AutoWatch
    from traindoctor.watch.monitor import Monitor

    mon = Monitor(store=None)
    w = AutoWatch(mon)
    try:
        assert not mm._has_any_global_hook()
        h = mm.register_module_forward_hook(lambda m, a, o: None)
        try:
            assert mm._has_any_global_hook()
        finally:
            h.remove()
    finally:
        w.close()
        mon.close()
    assert not mm._has_any_global_hook()


def test_checkup_discovery_hooks_do_not_trigger_the_compile_warning(tmp_path):
    from torch.nn.modules import module as mm

    from traindoctor.checks.discover import Discovery

    d = Discovery(tmp_path / "s.py")
    d.install()
    try:
        assert mm._global_forward_pre_hooks  # installed
        assert not mm._has_any_global_hook()  # but not counted by torch.compile's check
    finally:
        d.uninstall()
    assert not mm._global_forward_pre_hooks and not mm._has_any_global_hook()
