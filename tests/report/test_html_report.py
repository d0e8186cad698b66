"""The HTML report: real runs rendered, opened in headless Chromium, looked at.

Each report is written by the CLI (``traindoctor report``) from a run a real tiny training wrote, then
opened from disk in Chromium with the network cut off: no console error, the charts drawn by
plotly.js, the findings in the page and on the loss chart, a screenshot that is not blank.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _browser import Page, distinct_colours

from traindoctor.diagnosis import diagnose
from traindoctor.report.figures import downsample, figures
from traindoctor.report.html import json_for_script, render_html
from traindoctor.run import Event, Run, Series

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "traindoctor" / "examples"
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TRAINDOCTOR_STATUS": "0"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "traindoctor", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=240)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real runs of the built-in examples: a diverging one, a healthy one, one healed and verified."""
    d = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("lr_too_high", []), ("healthy", []), ("heal", ["--heal", "--verify"])):
        script = EXAMPLES / ("lr_too_high.py" if name == "heal" else f"{name}.py")
        store = d / f"{name}.db"
        p = cli("run", "--store", str(store), *extra, str(script), cwd=d)
        assert store.exists(), p.stderr
        out[name] = store
    return out


def open_report(page: Page, path: Path) -> None:
    page.page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
                    else route.continue_())
    page.page.goto(path.as_uri())
    page.page.wait_for_selector("body[data-charts]", timeout=30000)


def plot_data(page: Page, chart: str) -> list[dict]:
    return page.page.evaluate(f"""() => document.querySelector('#chart-{chart} .plot').data.map(
        t => ({{name: t.name, type: t.type, n: (t.x || []).length, text: t.text || null, x: t.x}}))""")


def test_report_of_a_diverging_run_shows_the_findings_on_the_charts(runs, page, tmp_path):
    out = tmp_path / "report.html"
    p = cli("report", str(runs["lr_too_high"]), "--html", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "report written to" in p.stderr and "L001" in p.stdout  # the diagnosis printed too
    open_report(page, out)
    assert page.errors == []
    assert [u for u in page.requests if not u.startswith("file:")] == []  # self-contained: nothing fetched
    charts = page.page.evaluate("() => [...document.querySelectorAll('.chart')].map(c => c.id)")
    for want in ("chart-loss", "chart-accuracy", "chart-lr", "chart-grad_heatmap", "chart-update_ratio",
                 "chart-activations"):
        assert want in charts
    # every chart actually drawn by plotly.js: an SVG with traces
    assert page.page.evaluate("() => [...document.querySelectorAll('.chart .plot')].every(p => p.querySelector('svg.main-svg'))")
    loss = plot_data(page, "loss")
    marks = [t for t in loss if t["name"].startswith("findings")]
    codes = {c for t in marks for c in t["text"]}
    assert {"L001", "L002"} <= codes
    diag = json.loads(cli("diagnose", str(runs["lr_too_high"]), "--json", "-", cwd=tmp_path).stdout)
    for f in diag["findings"]:  # each finding marked at its own step
        xs = [x for t in marks for x, c in zip(t["x"], t["text"], strict=True) if c == f["code"]]
        assert f["step"] in xs
    text = page.page.inner_text("main")
    assert "lr-too-high" in text and "Symptoms" in text and "Most likely causes" in text
    heat = plot_data(page, "grad_heatmap")
    assert heat[0]["type"] == "heatmap"
    shot = page.page.screenshot(full_page=True)
    assert distinct_colours(shot) > 50
    (tmp_path / "report.png").write_bytes(shot)


def test_report_of_a_healed_run_shows_treatments_and_verified_fixes(runs, page, tmp_path):
    out = tmp_path / "healed.html"
    p = cli("report", str(runs["heal"]), "--html", str(out), "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    open_report(page, out)
    assert page.errors == []
    table = page.page.inner_text("#treatments")
    assert "lr-too-high" in table and "lr 10 → " in table
    assert "verified" in table.lower() or "replay" in table.lower()
    lr = plot_data(page, "lr")
    assert any(t["name"] == "treatments" and t["n"] >= 1 for t in lr)
    # the LR line turns at the treatment's step, not at the next sampled step
    treat_step = [t for t in lr if t["name"] == "treatments"][0]["x"][0]
    line = page.page.evaluate("() => { const t = document.querySelector('#chart-lr .plot').data[0]; return [t.x, t.y]; }")
    after = [y for x, y in zip(*line, strict=True) if x == treat_step]
    assert len(after) == 2 and after[1] < after[0]


def test_healthy_run_says_healthy_and_marks_the_best_epoch(runs, page, tmp_path):
    out = tmp_path / "ok.html"
    assert cli("report", str(runs["healthy"]), "--html", str(out), "--quiet", cwd=tmp_path).returncode == 0
    open_report(page, out)
    assert page.errors == []
    assert page.page.inner_text("#verdict .verdict") == "healthy"
    assert page.page.query_selector("#symptoms") is None
    notes = page.page.evaluate("() => document.querySelector('#chart-loss .plot').layout.annotations.map(a => a.text)")
    assert any(n.startswith("best validation loss") for n in notes)


def test_user_text_is_shown_as_text_never_run(page, tmp_path):
    """A metric, a layer and a file named with markup, from a real run: each shown literally, nothing runs."""
    import torch
    from torch import nn

    import traindoctor

    evil = "<script>alert(1)</script>"
    layer = "<img src=x onerror=alert(2)>"
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module(layer, nn.Linear(4, 16))
    model.add_module("act", nn.ReLU())
    model.add_module("out", nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(256, 4), torch.randint(0, 3, (256,))
    store = tmp_path / "run <b>bold<i>.db"
    doctor = traindoctor.Doctor(model, opt, store=store, cadence=1)
    for step in range(120):
        i = (step * 32) % 256
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
        loss.backward()
        opt.step()
        doctor.step(loss)
        if step % 20 == 19:
            doctor.log(**{evil: float(step), "val_loss": float(loss) + 0.1})
    doctor.close()
    out = tmp_path / "evil.html"
    p = cli("report", str(store), "--html", str(out), "--quiet", cwd=tmp_path)
    assert p.returncode in (0, 1), p.stderr
    raw = out.read_text()
    assert evil not in raw and layer not in raw  # neither appears unescaped anywhere in the file
    open_report(page, out)
    assert page.errors == [] and page.dialogs == []
    assert page.page.evaluate("() => document.querySelectorAll('main img, header b, main script').length") == 0
    assert "run <b>bold<i>.db" in page.page.inner_text("header")
    legends = page.page.evaluate("() => [...document.querySelectorAll('.legendtext')].map(e => e.textContent)")
    assert evil in legends
    ticks = page.page.evaluate("() => [...document.querySelectorAll('#chart-grad_heatmap .ytick text')]"
                               ".map(e => e.textContent)")
    assert f"{layer}.weight" in ticks


def test_report_cli_errors_are_one_line_and_lose_nothing(runs, tmp_path):
    # a directory of two runs: which one?
    p = cli("report", str(runs["healthy"].parent), cwd=tmp_path)
    assert p.returncode == 2 and "holds 3 runs" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    # the default name never replaces a file that is there
    keep = tmp_path / "healthy.html"
    keep.write_text("mine")
    p = cli("report", str(runs["healthy"]), "--quiet", cwd=tmp_path)
    assert p.returncode == 2 and "already exists" in p.stderr and keep.read_text() == "mine"
    p = cli("report", str(runs["healthy"]), "--html", str(tmp_path / "no" / "r.html"), cwd=tmp_path)
    assert p.returncode == 2 and "directory" in p.stderr and "does not exist" in p.stderr
    p = cli("report", str(tmp_path / "missing.db"), "--html", str(tmp_path / "r.html"), cwd=tmp_path)
    assert p.returncode == 2 and not (tmp_path / "r.html").exists()
    # default: <run>.html in the current directory
    sub = tmp_path / "sub"
    sub.mkdir()
    p = cli("report", str(runs["healthy"]), "--quiet", cwd=sub)
    assert p.returncode == 0 and (sub / "healthy.html").stat().st_size > 1_000_000


# ---------------------------------------------------------------------------------- display thinning


def test_downsample_keeps_extremes_and_every_finding_step():
    n = 1_000_000
    steps = np.arange(n, dtype=np.int64)
    values = np.sin(steps / 5000.0)
    values[123_457] = 40.0  # a one-step spike
    values[654_321] = -40.0
    values[900_001] = np.nan
    st, va, thinned = downsample(steps, values, 2000, keep=[777_777, 5])
    assert thinned and len(st) <= 4 * 2000 + 10
    assert 123_457 in st and 654_321 in st and 777_777 in st and 5 in st and 900_001 in st
    assert np.nanmax(va) == 40.0 and np.nanmin(va) == -40.0
    assert np.all(np.diff(st) > 0)
    kept = dict(zip(st.tolist(), va.tolist(), strict=True))
    assert kept[777_777] == values[777_777]


def test_figures_survive_non_finite_and_empty_series():
    run = Run(series={"loss": Series(np.arange(5), np.array([1.0, np.inf, np.nan, -np.inf, 2.0])),
                      "val_loss": Series(np.array([4]), np.array([np.nan])),
                      "grad_norm/a": Series(np.arange(5), np.full(5, np.nan)),
                      "update_ratio/a": Series(np.arange(5), np.zeros(5)),
                      "lr": Series(np.arange(5), np.full(5, np.nan))},
              events=[Event(2, "treatment", {"code": "L001", "cause": "lr-too-high", "changes": {"lr": [float("nan"), 0.1]}})])
    figs = figures(run, diagnose(run))
    text = json_for_script(figs)  # strict JSON: no NaN or Infinity token anywhere
    assert "NaN" not in text and "Infinity" not in text
    html = render_html(run, diagnose(run))
    assert html.count("<script") == 3


def test_json_in_the_page_cannot_close_its_script_block():
    s = json_for_script({"a": "</script><script>alert(1)</script>", "b": "\u2028&"})
    assert "</" not in s and "<" not in s and "&" not in s and "\u2028" not in s
    assert json.loads(s) == {"a": "</script><script>alert(1)</script>", "b": "\u2028&"}


def test_run_and_checkup_write_their_report_with_html(page, tmp_path):
    """``run --html`` and ``checkup --html``: the checkup's page draws its LR range test and its probes."""
    run_page = tmp_path / "run.html"
    p = cli("run", "--no-store", "--html", str(run_page), str(EXAMPLES / "lr_too_high.py"), cwd=tmp_path)
    assert p.returncode == 0 and run_page.exists(), p.stderr
    open_report(page, run_page)
    assert page.errors == [] and "L001" in page.page.inner_text("#symptoms")
    chk = tmp_path / "checkup.html"
    p = cli("checkup", "--html", str(chk), "--steps", "60", "--budget", "30", str(EXAMPLES / "lr_too_high.py"),
            cwd=tmp_path)
    assert p.returncode in (0, 1) and chk.exists(), p.stderr
    page.page.goto(chk.as_uri())
    page.page.wait_for_selector("body[data-charts]", timeout=30000)
    assert page.errors == []
    assert page.page.inner_text("header h1") == "traindoctor checkup"
    rng = plot_data(page, "lr_range")
    assert rng[0]["n"] > 10
    notes = page.page.evaluate("() => document.querySelector('#chart-lr_range .plot').layout.annotations.map(a => a.text)")
    assert any(n.startswith("suggested lr") for n in notes)
    assert {t["name"] for t in plot_data(page, "probes")} >= {"tiny batch", "one sample"}
    assert page.page.query_selector("#chart-loss") is None  # one loss point: no curve to draw
