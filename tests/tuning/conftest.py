"""A throwaway PostgreSQL server for the tuning tests: ``postgres_url`` (session scope).

``initdb`` into a fresh directory under the system's temp dir, ``pg_ctl start`` listening on 127.0.0.1
only, on a free port, with its unix socket in that directory; a database and a user with a password
(password authentication over TCP: scram-sha-256); the URL ``postgresql://USER:PW@127.0.0.1:PORT/DB``.
At the end the server is stopped and the directory removed.

PostgreSQL refuses to run as root: run as root, the server runs as the ``postgres`` system user (which
Debian's package creates) through ``runuser``, and the directory belongs to it.

The server binaries are looked for where ``tools/ensure-postgres`` looks (``TRAINDOCTOR_PG_BINDIR``, PATH,
``/usr/lib/postgresql/*/bin``). Missing, the tests fail (they do not skip): ``make test`` runs
``tools/ensure-postgres`` first, which installs them.
"""
from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BINARIES = ("initdb", "pg_ctl", "postgres")
HINT = "run tools/ensure-postgres (it installs Debian's postgresql package; `make test` runs it)"


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path))


def pg_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    if os.environ.get("TRAINDOCTOR_PG_BINDIR"):
        dirs = [os.environ["TRAINDOCTOR_PG_BINDIR"]]
    else:
        dirs = [os.path.dirname(p) for p in [shutil.which("initdb")] if p]
        dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for d in dirs:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in BINARIES):
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One PostgreSQL cluster in ``base``, run as ``user`` (None: this process's user)."""

    def __init__(self, bindir: Path, base: Path, user: str | None) -> None:
        self.bindir, self.base, self.user = bindir, base, user
        self.data = base / "data"
        self.log = base / "server.log"
        self.port = 0

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # cwd: the server's user may not be allowed into the tests' working directory
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        return subprocess.run(cmd, cwd=self.base, env=env, capture_output=True, text=True, timeout=timeout)

    def check(self, *args: str, timeout: float = 60) -> None:
        r = self.run(*args, timeout=timeout)
        if r.returncode != 0:
            self.fail(args, r)

    def fail(self, args: tuple[str, ...], r: subprocess.CompletedProcess[str]) -> None:
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        pytest.fail(f"PostgreSQL test server: `{' '.join(args[:2])}` failed (exit {r.returncode}):\n"
                    f"{r.stdout[-2000:]}{r.stderr[-2000:]}\n{log}", pytrace=False)

    def init(self, admin: str) -> None:
        # trust on the unix socket (in a directory only the server's user may enter), passwords over TCP
        self.check("initdb", "-D", str(self.data), "-U", admin, "--auth-local=trust",
                   "--auth-host=scram-sha-256", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        conf = self.data / "postgresql.conf"
        base_conf = conf.read_text()
        for attempt in range(3):  # a free port can be taken between the probe and the start
            self.port = _free_port()
            # appended as root, the file keeps its owner (the server's user)
            conf.write_text(base_conf + "\n# tests/tuning/conftest.py\n"
                            f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                            f"unix_socket_directories = '{self.base}'\n"
                            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                            "max_connections = 50\nshared_buffers = 16MB\n")
            args = ("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
            r = self.run(*args)
            if r.returncode == 0:
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if attempt == 2 or "could not bind" not in log:
                self.fail(args, r)

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://USER:PW@127.0.0.1:PORT/DB`` of a throwaway server, stopped and removed at the end."""
    bindir = pg_bindir()
    if bindir is None:
        env = os.environ.get("TRAINDOCTOR_PG_BINDIR")
        where = f"TRAINDOCTOR_PG_BINDIR={env}" if env else "PATH nor in /usr/lib/postgresql/*/bin"
        pytest.fail(f"PostgreSQL server binaries ({', '.join(BINARIES)}) not found in {where}: {HINT}", pytrace=False)
    try:
        import psycopg2
    except ImportError:
        pytest.fail("psycopg2 is missing: pip install psycopg2-binary", pytrace=False)
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"running as root, and there is no `postgres` system user to run the server as: {HINT}",
                        pytrace=False)
        if shutil.which("runuser") is None:
            pytest.fail("running as root, and `runuser` (util-linux) is missing to run the server as `postgres`",
                        pytrace=False)
        user = "postgres"
    # a short path: the unix socket's path must fit in 107 bytes
    base = Path(tempfile.mkdtemp(prefix="td-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    if user is not None:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    cluster = Cluster(bindir, base, user)
    try:
        t0 = time.monotonic()
        cluster.init("td_admin")
        cluster.start()
        db, role, password = "td_tune", "td_worker", secrets.token_hex(12)
        con = psycopg2.connect(host=str(base), port=cluster.port, user="td_admin", dbname="postgres")
        con.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with con.cursor() as cur:
            cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))
            cur.execute(f"CREATE DATABASE {db} OWNER {role}")
        con.close()
        url = f"postgresql://{role}:{password}@127.0.0.1:{cluster.port}/{db}"
        print(f"PostgreSQL test server ({bindir}, as {user or 'this user'}) up in {time.monotonic() - t0:.1f} s")
        yield url
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
