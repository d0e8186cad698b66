"""Shared plumbing of the reliability suite: the CLI in a subprocess, as this user or as `nobody`.

Permissions only mean something for a user who is not root (root reads a file whatever its mode),
so a test about them runs the command as ``nobody`` when the suite runs as root (``setpriv``, from
util-linux), and as the current user otherwise. It never skips silently: root without ``setpriv``
is a failure that says so.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0


_probe: list[str | None] = []  # why `nobody` cannot run this interpreter ([None]: it can)


def _as_user_prefix(user: bool) -> list[str]:
    if not user or not ROOT:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root without setpriv: permission tests cannot run as an unprivileged user")
    prefix = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    if not _probe:
        r = subprocess.run([*prefix, sys.executable, "-c", "import traindoctor"], capture_output=True, text=True,
                           cwd=tempfile.gettempdir(), timeout=60)
        _probe.append(None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1])
    if _probe[0] is not None:
        # a checkout nobody can reach (e.g. under a private /root): said in the summary (-rs), never silent
        pytest.skip(f"user nobody cannot run {sys.executable} with traindoctor: {_probe[0]}")
    return prefix


def cli(*args: str, cwd: str | os.PathLike[str] | None = None, unprivileged: bool = False,
        input: str | bytes | None = None, timeout: float = 120, env: dict[str, str] | None = None,
        text: bool = True) -> subprocess.CompletedProcess:
    """``python -m traindoctor ARGS`` in a subprocess (as ``nobody`` under root when ``unprivileged``)."""
    e = dict(os.environ)
    e.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    if env:
        e.update(env)
    if unprivileged and ROOT:
        e["HOME"] = str(cwd or tempfile.gettempdir())
    cmd = [*_as_user_prefix(unprivileged), sys.executable, "-m", "traindoctor", *args]
    return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, timeout=timeout, env=e, text=text)


@pytest.fixture
def shared_dir():
    """A fresh directory an unprivileged user can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="td-rel-"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            try:
                if not p.is_symlink():
                    p.chmod(0o777 if p.is_dir() else 0o666)
            except OSError:
                pass
        shutil.rmtree(d, ignore_errors=True)
