"""The live dashboard, served for real and looked at in headless Chromium.

One server on an ephemeral port watches a directory holding a finished run, a run a background process
is writing (it appends points every 0.2 s; a file tells it when to start writing NaN), a run whose file
name and metric names are HTML, and a damaged store. The page must list them all, draw the live run's
loss and grow it without a reload, show the finding when the loss goes NaN, compare two runs, show the
HTML names as text, and never log a console error. The HTTP tests talk to the server directly.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import Page, distinct_colours

from traindoctor.errors import TrainDoctorError
from traindoctor.report.dashboard import Dashboard
from traindoctor.store import RunStore

SRC = str(Path(__file__).resolve().parents[2] / "src")
SHOTS = os.environ.get("TRAINDOCTOR_SCREENSHOTS")  # keep the screenshots here (to look at them)

EVIL_FILE = "<img src=x onerror=alert(2)><b>bold.db"
EVIL_METRIC = "<script>alert(1)</script>"
EVIL_MODULE = "<img src=y onerror=alert(3)>"

WRITER = textwrap.dedent(
    """
    import math, os, sys, time
    sys.path.insert(0, sys.argv[3])
    from traindoctor.store import RunStore
    path, ctl = sys.argv[1], sys.argv[2]
    st = RunStore(path, meta={"loss_kind": "cross_entropy", "num_classes": 10, "lr": 0.003,
                              "optimizer": {"type": "Adam"}}, batch_size=10**9)
    step, nan = 0, False
    end = time.time() + 90
    while time.time() < end and not os.path.exists(ctl + ".stop"):
        nan = nan or os.path.exists(ctl + ".nan")
        pts = []
        for _ in range(4):
            v = float("nan") if nan else 2.3 * math.exp(-step / 60) + 0.25 + 0.03 * math.sin(step)
            pts += [("loss", step, v), ("accuracy", step, 0.1 + 0.8 * (1 - math.exp(-step / 60)))]
            if step % 8 == 0:
                pts += [("val_loss", step, v + 0.1), ("val_accuracy", step, 0.1 + 0.75 * (1 - math.exp(-step / 60)))]
            step += 1
        st.add_points(pts)
        st.flush()
        print(step, flush=True)
        time.sleep(0.2)
    st.close()
    """
)


def _finished(path: Path, *, steps: int = 240, lr: float = 1e-3, extra: Callable[[int], list[Any]] | None = None,
              meta: dict[str, Any] | None = None) -> None:
    """A closed store: a loss that falls, validation every 10 steps, accuracy."""
    with RunStore(path, meta={"loss_kind": "cross_entropy", "num_classes": 10, "lr": lr, **(meta or {})}) as st:
        for i in range(steps):
            v = 2.3 * math.exp(-i / 50) + 0.15 + 0.02 * math.cos(i)
            pts = [("loss", i, v), ("accuracy", i, 0.1 + 0.85 * (1 - math.exp(-i / 50)))]
            if i % 10 == 0:
                pts += [("val_loss", i, v + 0.08 + i / 4000), ("val_accuracy", i, 0.1 + 0.8 * (1 - math.exp(-i / 50)))]
            pts += extra(i) if extra else []
            st.add_points(pts)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The directory of runs, the live writer, and the dashboard serving them."""
    d = tmp_path_factory.mktemp("dash")
    runs = d / "runs"
    runs.mkdir()
    _finished(runs / "baseline.db")
    _finished(runs / EVIL_FILE, steps=120, meta={"optimizer": {"type": "<b>SGD</b>"}},
              extra=lambda i: [(EVIL_METRIC, i, math.sin(i / 9)), (f"grad_norm/{EVIL_MODULE}", i, 1 + i / 100)])
    (runs / "broken.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)  # cut short: unreadable
    ctl = d / "ctl"
    script = d / "writer.py"
    script.write_text(WRITER)
    live = runs / "live.db"
    proc = subprocess.Popen([sys.executable, str(script), str(live), str(ctl), SRC], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    first = proc.stdout.readline() if proc.stdout else ""
    assert first.strip(), proc.stderr.read() if proc.stderr else "the writer printed nothing"
    dash = Dashboard(runs, port=0, poll_s=0.5).start()
    try:
        yield {"dir": d, "runs": runs, "live": live, "ctl": ctl, "proc": proc, "dash": dash}
    finally:
        dash.stop()
        (d / "ctl.stop").touch()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(page: Page, js: str, timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``js`` in the page until it returns something truthy (no reload in between)."""
    end = time.monotonic() + timeout
    while True:
        value = page.page.evaluate(js)
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or js}; errors: {page.errors}")
        page.page.wait_for_timeout(150)


def row(page: Page, name: str) -> Any:
    return page.page.locator(".runrow", has=page.page.locator(".rname", has_text=name))


def shot(page: Page, scene: dict[str, Any], name: str) -> bytes:
    png = page.page.screenshot(full_page=True)
    (scene["dir"] / name).write_bytes(png)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SHOTS) / name).write_bytes(png)
    assert distinct_colours(png) > 60, f"{name} looks blank"
    return png


def test_the_page_lists_runs_follows_a_live_run_and_compares(scene: dict[str, Any], page: Page) -> None:
    dash: Dashboard = scene["dash"]
    p = page.page
    p.goto(dash.url)
    p.wait_for_selector(".runrow", timeout=20000)
    wait_for(page, "() => document.querySelectorAll('.runrow').length === 4", what="the four runs in the list")
    names = p.eval_on_selector_all(".runrow .rname", "els => els.map(e => e.textContent)")
    assert sorted(names) == sorted(["baseline.db", "live.db", EVIL_FILE, "broken.db"])

    # the damaged store: its one-line error in the list, not a crash
    err = row(page, "broken.db").locator(".rerror").text_content()
    assert "broken.db" in err and "\n" not in err

    # the live run (picked first: it is live) draws its loss, and grows without a reload
    row(page, "live.db").click()
    wait_for(page, """() => [...document.querySelectorAll('.runrow')].some(r =>
        r.querySelector('.rname').textContent === 'live.db' && r.querySelector('.pill').textContent === 'live')""",
             what="the live run marked live")
    n0 = wait_for(page, "() => { const d = document.getElementById('plot-loss'); return d && d.data && d.data[0].x.length }",
                  what="the live run's loss chart")
    steps0 = p.locator("#run-state .rsteps").text_content()
    wait_for(page, f"() => document.getElementById('plot-loss').data[0].x.length > {n0} + 8",
             what="the loss chart to grow while the writer appends")
    wait_for(page, f"() => (document.querySelector('#run-state .rsteps') || {{}}).textContent !== {json.dumps(steps0)}",
             what="the step count to grow")
    assert p.evaluate("() => performance.getEntriesByType('navigation').length") == 1  # never reloaded
    assert p.locator("#plot-accuracy").count() == 1
    shot(page, scene, "dashboard-live.png")

    # the writer's loss goes NaN: the finding appears, in the diagnosis and in the list's badge
    (scene["dir"] / "ctl.nan").touch()
    wait_for(page, "() => /L001/.test(document.getElementById('run-diag').textContent)", timeout=20,
             what="the non-finite loss finding (L001)")
    wait_for(page, "() => document.querySelector('.runrow.sel .verdict').textContent === 'error'",
             what="the list's badge to say error")
    assert p.locator("#run-badge .verdict").text_content() == "error"
    assert "L001" in p.evaluate("() => document.getElementById('plot-loss').data.map(t => (t.text || []).join(' ')).join(' ')")
    shot(page, scene, "dashboard-finding.png")

    # compare two runs: both drawn, one colour each, and the table side by side
    row(page, "baseline.db").locator("input.cmp").check()
    row(page, "live.db").locator("input.cmp").check()
    p.click("#compare-btn")
    groups = wait_for(page, """() => { const d = document.getElementById('cmp-cmp_loss');
        if (!d || !d.data) return null; const g = new Set(d.data.map(t => t.legendgroup)); return g.size === 2 ? [...g] : null }""",
                      what="the compare chart with two runs")
    assert len(groups) == 2
    colours = p.evaluate("() => new Set(document.getElementById('cmp-cmp_loss').data.map(t => t.line && t.line.color)"
                         ".filter(Boolean)).size")
    assert colours == 2
    heads = p.eval_on_selector_all("#cmp-table thead .runname", "els => els.map(e => e.textContent)")
    assert sorted(heads) == ["baseline.db", "live.db"]
    table = p.locator("#cmp-table").text_content()
    assert "final training loss" in table and "L001" in table and "healthy" in table
    assert p.locator("#cmp-cmp_accuracy").count() == 1
    shot(page, scene, "dashboard-compare.png")

    # nothing but this server was asked for anything
    origin = dash.url.rstrip("/")
    assert all(u.startswith(origin) or u.startswith("data:") for u in page.requests), page.requests
    assert not page.errors, page.errors
    assert not page.dialogs


def test_names_that_are_html_are_shown_as_text(scene: dict[str, Any], page: Page) -> None:
    p = page.page
    p.goto(scene["dash"].url)
    p.wait_for_selector(".runrow", timeout=20000)
    scripts = p.evaluate("() => document.scripts.length")
    wait_for(page, f"() => [...document.querySelectorAll('.rname')].some(e => e.textContent === {json.dumps(EVIL_FILE)})",
             what="the HTML-named run in the list")
    row(page, "bold.db").click()
    wait_for(page, "() => { const d = document.getElementById('plot-other'); return d && d.data }",
             what="the other-metrics chart")
    assert p.locator("#run-name").text_content() == EVIL_FILE
    assert "<b>SGD</b>" in p.locator("#run-facts").text_content()
    # Plotly shows the entities as the characters: the legend and the heatmap's labels read as the names
    legend = p.evaluate("() => document.querySelector('#box-plot-other .legend').textContent")
    assert EVIL_METRIC in legend
    labels = p.evaluate("() => document.querySelector('#box-plot-grad_heatmap .yaxislayer-above').textContent")
    assert EVIL_MODULE in labels
    p.wait_for_timeout(600)  # a poll or two more
    assert p.evaluate("() => document.scripts.length") == scripts  # no script element was injected
    assert p.evaluate("() => document.querySelectorAll('img, b img, [onerror]').length") == 0
    assert p.evaluate("() => document.querySelectorAll('#runlist b, #run-name b, #run-source b').length") == 0
    assert not page.dialogs, page.dialogs
    assert not page.errors, page.errors


def _get(dash: Dashboard, path: str, host: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_http_refuses_other_hosts_unknown_ids_and_paths(scene: dict[str, Any]) -> None:
    dash: Dashboard = scene["dash"]
    ok = f"127.0.0.1:{dash.port}"
    status, body = _get(dash, "/api/runs", ok)
    assert status == 200
    runs = json.loads(body)["runs"]
    rid = next(r["id"] for r in runs if r["name"] == "baseline.db")
    # DNS rebinding: a page of another site whose name resolves to 127.0.0.1
    for host in (f"evil.example:{dash.port}", "evil.example", "127.0.0.1.evil.example", "", None):
        assert _get(dash, "/api/runs", host)[0] == 403, host
        assert _get(dash, f"/api/run/{rid}", host)[0] == 403, host
    for host in (f"localhost:{dash.port}", "localhost:9999", f"[::1]:{dash.port}"):  # ssh -L from another port too
        assert _get(dash, "/api/runs", host)[0] == 200, host
    # runs are named by the server's ids only: unknown ids, paths and anything else are 4xx
    for path in ("/api/run/000000000000", "/api/run/../../etc/passwd", "/api/run/" + "%2e%2e%2fbaseline.db",
                 "/api/run/baseline.db", "/../../../etc/passwd", "/static/../../../../etc/passwd",
                 "/static/plotly.min.js", "/etc/passwd", "/api/runs/../run", "//etc/passwd",
                 f"/api/compare?ids={rid},000000000000"):
        status, body = _get(dash, path, ok)
        assert status == 404, (path, status)
        assert b"root:" not in body
    for path in ("/api/compare?ids=" + rid, f"/api/compare?ids={rid},{rid}", "/api/compare?ids=../x,../y"):
        assert _get(dash, path, ok)[0] == 400, path
    assert _get(dash, "/api/runs", ok, method="POST")[0] == 405
    status, body = _get(dash, f"/api/run/{rid}", ok)
    assert status == 200 and json.loads(body)["id"] == rid
    version = json.loads(body)["version"]
    assert json.loads(_get(dash, f"/api/run/{rid}?v={version}", ok)[1]) == {"id": rid, "version": version,
                                                                            "unchanged": True}
    # the page: JSON in it escaped for a script block, scripts from this server only
    status, page_html = _get(dash, "/", ok)
    assert status == 200
    assert re.findall(rb'<script src="static/[^"]+"', page_html) and b"<script>" not in page_html


def test_a_finished_run_is_read_once(scene: dict[str, Any]) -> None:
    """Polling is cheap: an unchanged store is not read again."""
    dash: Dashboard = scene["dash"]
    idx = dash.index
    e = next(e for e in idx._entries.values() if e.name == "baseline.db")
    version = e.version
    for _ in range(3):
        idx.scan()
        assert e.version == version


def test_port_in_use_is_one_line(scene: dict[str, Any]) -> None:
    with pytest.raises(TrainDoctorError) as exc:
        Dashboard(scene["runs"], port=scene["dash"].port).bind()
    msg = str(exc.value)
    assert "already in use" in msg and "--port" in msg and "\n" not in msg


def test_ctrl_c_stops_the_command_cleanly(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that is free now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from traindoctor.report.dashboard import serve; "
                             f"sys.exit(serve({str(tmp_path)!r}, port={port}))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}/" in line, line + (proc.stderr.read() if proc.stderr else "")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/runs")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err
    assert out.strip() == "traindoctor dashboard: stopped" and "Traceback" not in err, (out, err)


def test_a_run_unreadable_once_is_read_when_it_mends(tmp_path: Path) -> None:
    """A store caught damaged (or half-copied) by one scan is read as soon as it is whole."""
    from traindoctor.report.dashboard import RunIndex

    bad = tmp_path / "copying.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    idx = RunIndex(tmp_path)
    idx.scan()
    (row,) = idx.listing()["runs"]
    assert row["state"] == "error" and "copying.db" in row["error"]
    bad.unlink()
    _finished(bad, steps=60)
    idx.scan()
    (row,) = idx.listing()["runs"]
    assert row["state"] == "finished" and row["error"] is None and row["steps"] == 60
    detail = json.loads(idx.detail(row["id"]) or b"{}")
    assert [f["id"] for f in detail["figures"]][:2] == ["loss", "accuracy"]
    assert idx.detail("0" * 12) is None
