"""Third-party training-log analysers, run on the clinic's CSV logs and mapped onto our vocabulary.

Each tool gets its own venv under ``benchmarks/clinic/.tools/<tool>`` (``install``; the folder gets a
``.gitignore`` of ``*``) and is called only through its console script in a subprocess, in its JSON
mode; nothing of it is imported here. Only the standard library is used on our side.

    python benchmarks/clinic/tools.py install            # venvs + pinned releases (idempotent)
    python benchmarks/clinic/tools.py run TOOL LOG.csv   # one ToolResult as JSON
    python benchmarks/clinic/tools.py selftest           # every tool x the synthetic logs, as a table

Tools and the exact commands (``LOG.csv`` in the clinic format: ``step,epoch,loss,lr,val_loss,val_acc``)
------------------------------------------------------------------------------------------------------

========================  ===========================================================================
losslint 0.4.1            no dependencies (numpy only as the optional ``fast`` extra, not installed)
                          ``losslint check LOG.csv --format json --color never --step-col step
                          --loss-col loss --eval-loss-col val_loss`` (each override only when the
                          column is in the header: losslint refuses one that is not). Exit 0 = no
                          error-severity finding, 1 = one or more (its ``--fail-severity error``
                          default), 2 = could not read the file (message on stderr).
trainspotter 0.2.6        depends on numpy only.
                          ``trainspotter analyze LOG.csv --format lightning --output json``. It has
                          no column flags; its reader normalises ``loss`` -> ``train/loss``,
                          ``val_loss`` -> ``eval/loss``, ``lr`` -> ``lr`` (checked in its JSON
                          ``run.metrics``; ``epoch`` and ``val_acc`` are kept but no detector reads
                          them). ``--format lightning`` is its Lightning ``CSVLogger`` reader, the
                          generic CSV reader with blank cells skipped. Exit 0 = report, 2 = error.
runmedic 0.1.1            no dependencies.
                          ``runmedic diagnose LOG.csv --json --train-loss loss --val-loss val_loss
                          --lr lr`` (each override only when the column has at least one value:
                          runmedic drops empty series and then rejects an override naming one).
                          Exit 0 = report; 1 with a message on stderr = could not read the file.
========================  ===========================================================================

None of the three depends on torch; each is a plain ``pip install "pkg==ver"`` and ``install``
fails if torch is found in a venv afterwards. All three auto-detect the same columns without the
overrides (checked on the synthetic logs); the overrides are passed so that a differently named
extra column can never be picked instead. The tool's exit code, its stderr's last line, a timeout,
or JSON that does not parse becomes ``ToolResult.error`` (e.g. ``exit code 2: error: no usable rows
in ...`` for a header-only CSV).

What none of them reads: ``val_acc`` (no tool has an accuracy check, so L010 and accuracy-based
evidence are out of their reach); gradient norms (trainspotter's and runmedic's G001 checks need a
grad-norm column, which the clinic CSV does not have; losslint has no gradient check); and the
loss's scale/meaning (no L008 clamp value or L009 initial-loss check; only
runmedic compares the loss with ln(k)). No tool has an oscillation (L004), vanishing-gradient
(G002), underfitting (V002), train-flat-val-falls (V003), both-rising (V004) or train/val
distribution-mismatch (V005) finding.

Mapping of findings to our symptom codes (by the meaning stated in each tool's source/docstrings)
--------------------------------------------------------------------------------------------------

losslint (``findings[].check``; severities error / warning / info):

==================  =========  ==============================================================================
check               our code   what it means in losslint 0.4.1 (losslint/checks.py)
==================  =========  ==============================================================================
nan_inf             L001       NaN/Inf in a series; L001 only for ``loss`` / ``eval_loss``, None for other
                               columns (lr, val_acc, epoch)
divergence          L002       median of the last tenth of train loss > 1.25x the first tenth's
loss_spike          L003       a train-loss point > 10x the median of its 24 neighbours
stagnation          L006       last quarter of train loss improved < 1 % on the quarter before ("plateaued";
                               it does not look at the start, so it also fires on flat-from-start, converged
                               and rising runs)
overfit_onset       V001       eval loss rose for >= 3 consecutive evals while train loss improved (info)
step_backtrack      None       step index went backwards (logging/resume bug)
parse               None       a malformed row was skipped
==================  =========  ==============================================================================

losslint names no causes (its messages carry a one-phrase hint such as "data shard or LR bug?");
``causes`` is always empty.

trainspotter (``findings[].detector`` / ``title``; severities error / warning / info):

=====================================================  =========  ==========================================
detector / title                                        our code   note
=====================================================  =========  ==========================================
divergence / Diverged (non-finite values)               L001       train or eval loss NaN/Inf
divergence / Diverged (sustained growth)                L002       tail slope > 0 (p < .05), last >= 1.5x
                                                                   running min; on train or eval loss
spikes / Loss spike                                     L003       robust z > 6 on train or eval loss
plateau / Plateau                                       L006       stalled, not converged (its own
                                                                   suppression); L005 when the flat stretch
                                                                   starts within the tool's first window
                                                                   (its ``evidence.window`` points, 10 % of
                                                                   the run, at least 30) of the train loss
overfitting / Overfitting onset                         V001       None when the tool itself downgraded it
                                                                   to info as "explained by that divergence"
grad_norm / Gradient-norm explosion                     G001       needs a grad_norm column (never here)
grad_norm / Gradient clipping likely saturated          None
lr_schedule / No LR warmup detected                     None       fires on every constant-LR log
lr_schedule / LR increased after its peak               None
lr_schedule / LR discontinuity                          None
throughput / Throughput regression                      None       needs step times (never here)
eval_noise / Eval metric too noisy to rank checkpoints  None
loss_floor / Suspiciously low loss early (heuristic)    None       leakage suspicion
=====================================================  =========  ==========================================

trainspotter names no causes: each finding lists ``fixes`` (remedies), which are not mapped;
``causes`` is always empty.

runmedic (``findings[].check``; severities critical / warning / info):

====================  ============  ===========================================================================
check                 our code      note
====================  ============  ===========================================================================
non_finite            L001          first of train loss / val loss (/ grad norm -> G001) with a NaN/inf
divergence            L002          smoothed train loss fell, then regained > 50 % of the progress (skipped
                                    when the train loss has a NaN)
loss_spikes           L003          robust z > 8 on the residual from an EMA trend and > 1.5x the trend
no_learning           L005 (+L007)  smoothed train loss never improved 2 % on its start; L007 as well when
                                    its evidence says "loss ≈ ln(k) ... uniform distribution over k classes"
constant_lr_plateau   L006          constant lr, loss fell and then improved < 2 % of its total progress
                                    over the last 30 %, still above 5 % of its start (remedy: LR decay)
overfitting           V001          val best >= 4 evals before the end, last 3 evals >= 5 % above it,
                                    train fell meanwhile
grad_spikes           G001          grad norm > 10x its median (needs a grad-norm column: never here)
val_below_train       None          val loss > 10 % below train loss (usually harmless, sometimes leakage)
input_bound           None          performance checks, and stdout error patterns (OOM, NCCL, ...) that a
slow_steps, slowdown  None          CSV never triggers
memory_growth, log:*  None
====================  ============  ===========================================================================

runmedic names causes: every finding has ``likely_causes``, fixed English sentences (runmedic says
they are ordered by how well the data supports them; findings come critical first). ``causes`` is
their concatenation in that order, mapped by the sentence's start, de-duplicated:

=================================================================  ===============================================
runmedic likely cause (start of the sentence)                      our cause ids
=================================================================  ===============================================
The LR schedule never stops increasing                             lr-too-high
NaN from the very first steps points to a bug (NaN/inf in inputs   nonfinite-data, numerically-unstable-loss
or labels, log(0) or division by zero in the loss, bad init)
Exploding gradients: the learning rate is too high                 exploding-gradient, lr-too-high
Sudden blow-up with no visible lead-up (a bad batch, or an         nonfinite-data, numerically-unstable-loss
unstable op: log/sqrt/division near zero)
fp16 overflow under mixed precision                                (none)
Learning rate too high for the later phase of training (constant   lr-too-high, no-lr-decay
LR or a schedule that decays too late)
Optimizer state blew up / Data order changed                       (none)
N spike(s) happen in the first 10 % ... missing warmup             lr-too-high
Individual bad batches: corrupted samples, wrong labels, outliers  label-noise
Learning rate too high, so single steps overshoot                  lr-too-high
The learning rate is zero for the whole run                        lr-too-low
The model outputs the same prediction for every input (collapsed   code-bug
or not connected to the loss)
Weights are not updated: optimizer.step() missing, ...             code-bug
Learning rate far too low                                          lr-too-low
Labels are misaligned with inputs                                  label-noise
The model memorizes the training set                               overfitting
Usually harmless: dropout/augmentation ...                         (none)
Sometimes a red flag: the validation set is easier, or overlaps    distribution-mismatch
Learning rate too high or no warmup (grad_spikes)                  lr-too-high
Outlier batches                                                    (none)
Unstable layers (no normalization, attention logits growing)       exploding-gradient
Without LR decay the optimizer keeps bouncing around the minimum   no-lr-decay
=================================================================  ===============================================

A finding type not in these tables (another tool version) is kept in ``raw`` with code None.

Behaviour seen on the synthetic logs (``selftest``: 10 epochs x 42 steps, constant lr 1e-3)
--------------------------------------------------------------------------------------------

Output of ``selftest`` (cell: mapped codes [number of findings, mapped or not])::

    log          intended     losslint           trainspotter         runmedic
    healthy      -            - [0]              - [1]                L006 [1]
    nan          L001         L001 [2]           L001 [4]             L001 [1]
    diverging    L002         L002,L006 [2]      L002,L003 [4]        L002,L006 [2]
    oscillating  L004         L006 [1]           V001,L005,L006 [6]   L002,L006 [2]
    flat         L005 (L007)  L006 [1]           L003,L005 [5]        L002,L005,L007,L006 [3]
    stalled      L006         L006 [1]           - [2]                L006 [1]
    overfitting  V001         V001 [1]           V001 [2]             V001 [1]
    spiky        L003         L003 [1]           L003 [4]             L003 [1]

* trainspotter reports "No LR warmup detected" (warning, unmapped) on every log (constant lr) and
  "Eval metric too noisy" (unmapped) on nan, oscillating, flat and stalled; both count as findings.
  Its plateau detector is suppressed when the curve is flat near its own minimum, so it said
  nothing about the stalled log (fell to 1.2 and stayed there). On the flat log its spike
  detector fired twice on noise of sd 0.004; on the oscillating log it reported three plateaus
  (the first from step 2, hence L005) and an overfitting onset from the noisy val loss; on the
  diverging log its overfitting finding was downgraded by the tool itself (-> None).
* runmedic's constant_lr_plateau (info, -> L006, cause no-lr-decay) fired on healthy (converged at
  0.15, above its 5 %-of-start cut-off), diverging, oscillating, flat and stalled. Its divergence
  check (-> L002) fired on the flat log (EMA 2.303 -> 2.301 -> 2.303 read as "lost 83 % of the
  progress") and the oscillating one.
* losslint's stagnation (info, -> L006) fired on flat, oscillating, stalled and diverging (a rising
  loss also "improved < 1 %"). Its overfit_onset is info severity.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path(__file__).resolve().parent / ".tools"

# The clinic's CSV columns that the tools are pointed at.
STEP, LOSS, VAL_LOSS, LR = "step", "loss", "val_loss", "lr"


# --------------------------------------------------------------------------------------------- results


@dataclass
class ToolResult:
    """One tool on one log. ``codes``/``causes`` are ours, in the tool's order, de-duplicated.

    ``raw`` keeps every finding the tool reported (info level included): its ``id``, ``name``,
    ``severity`` and ``message`` as the tool gave them, ``code`` (ours, or None when nothing fits),
    ``also`` (further codes the same finding states, runmedic's ln(k) only) and, for runmedic,
    ``causes`` (each likely cause's text and the cause ids it maps to).
    """

    tool: str
    codes: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    n_findings: int = 0
    raw: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CsvInfo:
    """What the adapter needs to know about a log before it builds a tool's command line."""

    header: tuple[str, ...]
    filled: frozenset[str]  # columns with at least one non-empty cell


@dataclass(frozen=True)
class ToolSpec:
    name: str
    version: str
    script: str  # console script installed into the tool's venv
    argv: Callable[[Path, CsvInfo], list[str]]  # arguments after the script
    ok_returncodes: tuple[int, ...]  # exit codes that mean "ran, here is the report"
    parse: Callable[[Any], list[dict[str, Any]]]  # the tool's JSON -> raw findings with our code/causes
    codes: Mapping[str, str | None]  # finding type -> our symptom code (documentation; parse applies it)
    causes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # tool cause text prefix -> cause ids

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


# --------------------------------------------------------------------------------------------- losslint

LOSSLINT_CODES: dict[str, str | None] = {
    "nan_inf": "L001",  # only when the series is the train or eval loss; lr/val_acc/epoch -> None
    "divergence": "L002",
    "loss_spike": "L003",
    "stagnation": "L006",
    "overfit_onset": "V001",
    "step_backtrack": None,
    "parse": None,
}


def _losslint_argv(csv_path: Path, info: CsvInfo) -> list[str]:
    argv = ["check", str(csv_path), "--format", "json", "--color", "never"]
    for flag, col in (("--step-col", STEP), ("--loss-col", LOSS), ("--eval-loss-col", VAL_LOSS)):
        if col in info.header:  # losslint refuses an override that is not in the header
            argv += [flag, col]
    return argv


def _losslint_parse(doc: Any) -> list[dict[str, Any]]:
    out = []
    for f in doc["findings"]:
        check = f.get("check", "")
        code = LOSSLINT_CODES.get(check)
        details = f.get("details") or {}
        if check == "nan_inf" and details.get("series") not in ("loss", "eval_loss"):
            code = None  # a NaN in the lr or accuracy column is not a non-finite loss
        out.append(
            {
                "id": check,
                "name": check,
                "severity": f.get("severity"),
                "message": f.get("message"),
                "details": details,
                "code": code,
            }
        )
    return out


LOSSLINT = ToolSpec(
    name="losslint",
    version="0.4.1",
    script="losslint",
    argv=_losslint_argv,
    ok_returncodes=(0, 1),  # 1 = an error-severity finding (--fail-severity error); 2 = could not run
    parse=_losslint_parse,
    codes=LOSSLINT_CODES,
)

# ----------------------------------------------------------------------------------------- trainspotter

TRAINSPOTTER_CODES: dict[str, str | None] = {
    "divergence/Diverged (non-finite values)": "L001",
    "divergence/Diverged (sustained growth)": "L002",
    "spikes/Loss spike": "L003",
    "plateau/Plateau": "L006",  # L005 when the flat stretch starts within its first window (see _starts_flat)
    "overfitting/Overfitting onset": "V001",  # None when run_all downgraded it as explained by a divergence
    "grad_norm/Gradient-norm explosion": "G001",
    "grad_norm/Gradient clipping likely saturated": None,
    "lr_schedule/No LR warmup detected": None,
    "lr_schedule/LR increased after its peak": None,
    "lr_schedule/LR discontinuity": None,
    "throughput/Throughput regression": None,
    "eval_noise/Eval metric too noisy to rank checkpoints": None,
    "loss_floor/Suspiciously low loss early (heuristic)": None,
}


def _trainspotter_argv(csv_path: Path, info: CsvInfo) -> list[str]:
    return ["analyze", str(csv_path), "--format", "lightning", "--output", "json"]


def _starts_flat(finding: dict[str, Any], train: dict[str, Any]) -> bool:
    """A train-loss plateau that begins within the tool's first window of points: no fall came before it."""
    first, last, count = train.get("first_step"), train.get("last_step"), train.get("count")
    window = (finding.get("evidence") or {}).get("window")
    if None in (first, last, count, window, finding.get("step_start")) or count < 2:
        return False
    spacing = (last - first) / (count - 1) or 1
    return (finding["step_start"] - first) / spacing < window


def _trainspotter_parse(doc: Any) -> list[dict[str, Any]]:
    train = doc.get("run", {}).get("metrics", {}).get("train/loss") or {}
    out = []
    for f in doc["findings"]:
        key = f"{f.get('detector')}/{f.get('title')}"
        code = TRAINSPOTTER_CODES.get(key)
        if key == "plateau/Plateau" and f.get("metric") == "train/loss" and _starts_flat(f, train):
            code = "L005"  # flat from the start: no progress at all
        if f.get("detector") == "overfitting" and "(Downgraded:" in (f.get("message") or ""):
            code = None  # the tool itself says this eval rise is the divergence, not overfitting
        out.append(
            {
                "id": f.get("detector"),
                "name": f.get("title"),
                "severity": f.get("severity"),
                "message": f.get("message"),
                "metric": f.get("metric"),
                "steps": [f.get("step_start"), f.get("step_end")],
                "code": code,
            }
        )
    return out


TRAINSPOTTER = ToolSpec(
    name="trainspotter",
    version="0.2.6",
    script="trainspotter",
    argv=_trainspotter_argv,
    ok_returncodes=(0,),  # no --fail-on: 0 with a report; 2 = could not read the log
    parse=_trainspotter_parse,
    codes=TRAINSPOTTER_CODES,
)

# --------------------------------------------------------------------------------------------- runmedic

RUNMEDIC_CODES: dict[str, str | None] = {
    "non_finite": "L001",  # G001 when the non-finite series is the grad norm
    "divergence": "L002",
    "loss_spikes": "L003",
    "no_learning": "L005",  # also L007 when its evidence says the loss is ln(k) (uniform prediction)
    "constant_lr_plateau": "L006",
    "overfitting": "V001",
    "grad_spikes": "G001",
    "val_below_train": None,
    "input_bound": None,
    "slow_steps": None,
    "slowdown": None,
    "memory_growth": None,
    "log:*": None,  # stdout error patterns (OOM, NCCL, ...): never produced from a CSV
}

# runmedic's likely_causes are fixed English sentences in runmedic/checks.py; each is matched by its start.
RUNMEDIC_CAUSES: dict[str, tuple[str, ...]] = {
    # non_finite
    "The LR schedule never stops increasing": ("lr-too-high",),
    "NaN from the very first steps points to a bug": ("nonfinite-data", "numerically-unstable-loss"),
    "Exploding gradients: the learning rate is too high": ("exploding-gradient", "lr-too-high"),
    "Sudden blow-up with no visible lead-up": ("nonfinite-data", "numerically-unstable-loss"),
    "fp16 overflow under mixed precision": (),
    # divergence
    "Learning rate too high for the later phase of training": ("lr-too-high", "no-lr-decay"),
    "Optimizer state blew up": (),
    "Data order changed": (),
    # loss_spikes ("N spike(s) happen in the first 10% of training and the LR starts at its peak: missing warmup")
    "spike(s) happen in the first 10% of training": ("lr-too-high",),
    "Individual bad batches": ("label-noise",),
    "Learning rate too high, so single steps overshoot": ("lr-too-high",),
    # no_learning
    "The learning rate is zero for the whole run": ("lr-too-low",),
    "The model outputs the same prediction for every input": ("code-bug",),
    "Weights are not updated": ("code-bug",),
    "Learning rate far too low": ("lr-too-low",),
    "Labels are misaligned with inputs": ("label-noise",),
    # overfitting
    "The model memorizes the training set": ("overfitting",),
    # val_below_train
    "Usually harmless": (),
    "Sometimes a red flag: the validation set is easier": ("distribution-mismatch",),
    # grad_spikes
    "Learning rate too high or no warmup": ("lr-too-high",),
    "Outlier batches": (),
    "Unstable layers": ("exploding-gradient",),
    # constant_lr_plateau
    "Without LR decay": ("no-lr-decay",),
}

_LN_K = re.compile(r"loss ≈ ln\((\d+)\)")


def _runmedic_cause_ids(text: str) -> tuple[str, ...]:
    text = re.sub(r"^\d+ ", "", text)  # "3 spike(s) happen in ..." starts with a count
    for prefix, ids in RUNMEDIC_CAUSES.items():
        if text.startswith(prefix):
            return ids
    return ()


def _runmedic_argv(csv_path: Path, info: CsvInfo) -> list[str]:
    argv = ["diagnose", str(csv_path), "--json"]
    for flag, col in (("--train-loss", LOSS), ("--val-loss", VAL_LOSS), ("--lr", LR)):
        if col in info.filled:  # runmedic drops empty series and then rejects an override naming one
            argv += [flag, col]
    return argv


def _runmedic_parse(doc: Any) -> list[dict[str, Any]]:
    out = []
    for run in doc:  # one run per CSV file
        grad_norm = set(run.get("roles", {}).get("grad_norm", []))
        for f in run["findings"]:
            check = f.get("check", "")
            code = RUNMEDIC_CODES.get("log:*" if check.startswith("log:") else check)
            also: list[str] = []
            if check == "non_finite" and f.get("metric") in grad_norm:
                code = "G001"
            if check == "no_learning" and any(_LN_K.search(e) for e in f.get("evidence", [])):
                also.append("L007")
            item: dict[str, Any] = {
                "id": check,
                "name": f.get("title"),
                "severity": f.get("severity"),
                "message": "; ".join([f.get("title") or "", *f.get("evidence", [])]),
                "metric": f.get("metric"),
                "step": f.get("step"),
                "code": code,
                "causes": [{"text": c, "ids": list(_runmedic_cause_ids(c))} for c in f.get("likely_causes", [])],
            }
            if also:
                item["also"] = also
            out.append(item)
    return out


RUNMEDIC = ToolSpec(
    name="runmedic",
    version="0.1.1",
    script="runmedic",
    argv=_runmedic_argv,
    ok_returncodes=(0,),  # no --fail-on: 0 with a report; 1 with a message on stderr = could not run
    parse=_runmedic_parse,
    codes=RUNMEDIC_CODES,
    causes=RUNMEDIC_CAUSES,
)

TOOLS: dict[str, ToolSpec] = {t.name: t for t in (LOSSLINT, TRAINSPOTTER, RUNMEDIC)}


# ------------------------------------------------------------------------------------ install and run


def _venv(name: str, root: Path) -> Path:
    return root / name


def _bin(venv: Path, exe: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / exe


def available(name: str, root: Path = DEFAULT_ROOT) -> bool:
    """True when ``name`` is installed at its pinned version in its own venv under ``root``."""
    spec = TOOLS[name]
    venv = _venv(name, root)
    if not _bin(venv, spec.script).exists():
        return False
    return any(venv.glob(f"lib/python*/site-packages/{name}-{spec.version}.dist-info"))


def install(root: Path = DEFAULT_ROOT, names: list[str] | None = None) -> None:
    """Create one venv per tool under ``root`` and pip-install the pinned release into it.

    Idempotent: a tool already installed at its version is left alone. None of the three
    depends on torch (losslint and runmedic have no dependencies, trainspotter needs numpy
    only), so each is a plain ``pip install "pkg==ver"``; afterwards the venv is checked and
    the install fails if torch got into it anyway.
    """
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# venvs of third-party tools, made by benchmarks/clinic/tools.py install\n*\n")
    for name in names or list(TOOLS):
        spec = TOOLS[name]
        if available(name, root):
            print(f"{spec.requirement}: already installed in {_venv(name, root)}")
            continue
        venv = _venv(name, root)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        py = _bin(venv, "python")
        pip = [str(py), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        subprocess.run([*pip, "install", "--quiet", spec.requirement], check=True)
        torch = subprocess.run([*pip, "show", "--quiet", "torch"], capture_output=True)
        if torch.returncode == 0:
            raise RuntimeError(f"{spec.requirement} pulled torch into {venv}; install it with --no-deps instead")
        if not available(name, root):
            raise RuntimeError(f"{spec.requirement}: installed, but {spec.script} or its metadata is missing")
        print(f"{spec.requirement}: installed in {venv}")


def read_csv_info(csv_path: Path) -> CsvInfo:
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = tuple(h.strip() for h in next(reader, []))
        filled: set[str] = set()
        for row in reader:
            filled.update(h for h, cell in zip(header, row, strict=False) if cell.strip())
    return CsvInfo(header=header, filled=frozenset(filled))


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:limit]


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def run_tool(name: str, csv_path: Path, root: Path = DEFAULT_ROOT, timeout: float = 120) -> ToolResult:
    """Run one tool on one CSV log in its own venv (a subprocess) and map what it reports.

    Never raises for a tool failure: a crash, a timeout, an unreadable file or unparseable output
    comes back as ``ToolResult.error`` (one line) with no findings.
    """
    spec = TOOLS[name]
    csv_path = Path(csv_path)
    result = ToolResult(tool=name)
    start = time.perf_counter()
    try:
        if not available(name, root):
            result.error = f"{spec.requirement} is not installed under {root} (run: tools.py install)"
            return result
        try:
            info = read_csv_info(csv_path)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            result.error = f"cannot read {csv_path}: {err}"
            return result
        cmd = [str(_bin(_venv(name, root), spec.script)), *spec.argv(csv_path, info)]
        env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8", "PYTHONNOUSERSITE": "1"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, encoding="utf-8")
        except subprocess.TimeoutExpired:
            result.error = f"timed out after {timeout:g} s"
            return result
        if proc.returncode not in spec.ok_returncodes:
            reason = _one_line(proc.stderr) or _one_line(proc.stdout) or "no output"
            result.error = f"exit code {proc.returncode}: {reason}"
            return result
        try:
            raw = spec.parse(json.loads(proc.stdout))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            result.error = f"unparseable output ({type(err).__name__}: {err}): {_one_line(proc.stdout, 120)}"
            return result
        result.raw = raw
        result.n_findings = len(raw)
        result.codes = _dedupe([c for f in raw for c in [f["code"], *f.get("also", [])] if c])
        result.causes = _dedupe([i for f in raw for c in f.get("causes", []) for i in c["ids"]])
        return result
    finally:
        result.seconds = round(time.perf_counter() - start, 3)


# ------------------------------------------------------------------------------------- synthetic logs

STEPS_PER_EPOCH = 42
EPOCHS = 10

# What each synthetic log was made to show, in our codes (for the selftest table only).
SYNTHETIC_INTENT: dict[str, str] = {
    "healthy": "-",
    "nan": "L001",
    "diverging": "L002",
    "oscillating": "L004",
    "flat": "L005 (L007)",
    "stalled": "L006",
    "overfitting": "V001",
    "spiky": "L003",
}


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    if math.isnan(x) or math.isinf(x):
        return repr(x)  # 'nan', 'inf', as Python writes floats
    return f"{x:.6g}"


def _write_log(
    path: Path,
    train: list[float],
    val: list[tuple[float, float | None]],
    lr: float = 1e-3,
) -> Path:
    """Lightning-style sparse CSV: one row per step, one extra val row at each epoch's last step."""
    epochs = len(train) // STEPS_PER_EPOCH
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([STEP, "epoch", LOSS, LR, VAL_LOSS, "val_acc"])
        for e in range(epochs):
            for s in range(e * STEPS_PER_EPOCH, (e + 1) * STEPS_PER_EPOCH):
                w.writerow([s, e, _fmt(train[s]), _fmt(lr), "", ""])
            val_loss, val_acc = val[e]
            w.writerow([(e + 1) * STEPS_PER_EPOCH - 1, e, "", "", _fmt(val_loss), _fmt(val_acc)])
    return path


def synthetic_logs(directory: Path) -> dict[str, Path]:
    """Write one small CSV per behaviour in :data:`SYNTHETIC_INTENT` into ``directory``.

    10 epochs x 42 steps, constant lr 1e-3, deterministic (seeded stdlib ``random``). Every log
    is classification (val_acc filled) except ``diverging``, a regression run (val_acc empty).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = EPOCHS * STEPS_PER_EPOCH
    ends = [(e + 1) * STEPS_PER_EPOCH - 1 for e in range(EPOCHS)]
    logs: dict[str, Path] = {}

    def gauss(rng: random.Random, k: int, sd: float) -> list[float]:
        return [rng.gauss(0.0, sd) for _ in range(k)]

    # healthy: exponential decay to 0.15, val slightly above it, accuracy rising to ~0.97
    rng = random.Random(1)
    healthy = [0.15 + 2.15 * math.exp(-s / 70) * (1 + g) for s, g in enumerate(gauss(rng, n, 0.03))]
    healthy_val = [(0.2 + 2.1 * math.exp(-s / 70) + rng.gauss(0, 0.01), 0.97 - 0.87 * math.exp(-s / 70)) for s in ends]
    logs["healthy"] = _write_log(directory / "healthy.csv", healthy, healthy_val)

    # nan: healthy until step 60, NaN from there on; val NaN (accuracy at chance) after epoch 0
    nan_train = [v if s < 60 else math.nan for s, v in enumerate(healthy)]
    nan_val = [healthy_val[0]] + [(math.nan, 0.1)] * (EPOCHS - 1)
    logs["nan"] = _write_log(directory / "nan.csv", nan_train, nan_val)

    # diverging (regression): falls for 40 steps, then grows to ~100x its first value
    rng = random.Random(2)
    k = math.log(100 / 0.6) / (n - 40)
    div = [
        (1.0 - 0.01 * s if s < 40 else 0.6 * math.exp(k * (s - 40))) * (1 + g)
        for s, g in enumerate(gauss(rng, n, 0.05))
    ]
    div_val = [(1.05 * div[s] + rng.gauss(0, 0.02), None) for s in ends]
    logs["diverging"] = _write_log(directory / "diverging.csv", div, div_val)

    # oscillating: wide swings around 1.8 from the start, no downward trend
    rng = random.Random(3)
    osc = [max(0.05, 1.8 + 0.8 * math.sin(0.9 * s) + g) for s, g in enumerate(gauss(rng, n, 0.25))]
    osc_val = [(1.9 + rng.gauss(0, 0.3), 0.3 + rng.gauss(0, 0.05)) for _ in ends]
    logs["oscillating"] = _write_log(directory / "oscillating.csv", osc, osc_val)

    # flat: pinned at ln(10) (10-class chance level) from the first step
    rng = random.Random(4)
    flat = [math.log(10) + g for g in gauss(rng, n, 0.004)]
    flat_val = [(math.log(10) + rng.gauss(0, 0.002), 0.1 + rng.gauss(0, 0.01)) for _ in ends]
    logs["flat"] = _write_log(directory / "flat.csv", flat, flat_val)

    # stalled: falls quickly from 2.3, then stays at 1.2 (far above a good loss)
    rng = random.Random(5)
    stalled = [1.2 + 1.1 * math.exp(-s / 25) + g for s, g in enumerate(gauss(rng, n, 0.02))]
    stalled_val = [(1.25 + rng.gauss(0, 0.01), 0.6 + rng.gauss(0, 0.01)) for _ in ends]
    logs["stalled"] = _write_log(directory / "stalled.csv", stalled, stalled_val)

    # overfitting: train falls towards 0.02; val falls until epoch 5, then rises every epoch
    rng = random.Random(6)
    over = [0.02 + 2.2 * math.exp(-s / 60) * (1 + g) for s, g in enumerate(gauss(rng, n, 0.03))]
    over_val = []
    for e in range(EPOCHS):
        v = 0.5 + 1.8 * math.exp(-e / 1.3) + 0.12 * max(0, e - 5) + rng.gauss(0, 0.005)
        over_val.append((v, 0.9 - 0.02 * max(0, e - 5)))
    logs["overfitting"] = _write_log(directory / "overfitting.csv", over, over_val)

    # spiky: the healthy run with three isolated 12x spikes
    spiky = list(healthy)
    for s in (150, 233, 310):
        spiky[s] *= 12
    logs["spiky"] = _write_log(directory / "spiky.csv", spiky, healthy_val)
    return logs


# ------------------------------------------------------------------------------------------------ CLI


def selftest(root: Path = DEFAULT_ROOT) -> int:
    """Install what is missing, run every tool on every synthetic log, print a table."""
    missing = [name for name in TOOLS if not available(name, root)]
    if missing:
        install(root, missing)
    with tempfile.TemporaryDirectory(prefix="clinic-tools-") as tmp:
        logs = synthetic_logs(Path(tmp))
        results = {(t, log): run_tool(t, path, root) for log, path in logs.items() for t in TOOLS}
    width = 30
    print(f"{'log':<12} {'intended':<12} " + " ".join(f"{t:<{width}}" for t in TOOLS))
    for log in logs:
        cells = []
        for t in TOOLS:
            r = results[t, log]
            cell = f"ERROR {r.error}" if r.error else f"{','.join(r.codes) or '-'} [{r.n_findings}]"
            cells.append(f"{cell:<{width}}")
        print(f"{log:<12} {SYNTHETIC_INTENT[log]:<12} " + " ".join(cells))
    print("\ncell: mapped codes [number of findings, mapped or not]. Findings per cell (id/severity -> code):")
    for log in logs:
        for t in TOOLS:
            r = results[t, log]
            found = ", ".join(f"{f['id']}/{f['severity']}->{f['code']}" for f in r.raw) or "(none)"
            causes = f"  causes: {','.join(r.causes)}" if r.causes else ""
            print(f"  {log:<12} {t:<13} {found}{causes}")
    return 1 if any(r.error for r in results.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the tool venvs live")
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="create a venv per tool and install the pinned release")
    p_install.add_argument("tools", nargs="*", metavar="TOOL", help=f"any of {', '.join(TOOLS)} (default: all)")
    p_run = sub.add_parser("run", help="run one tool on one CSV log, print the ToolResult as JSON")
    p_run.add_argument("tool", choices=list(TOOLS))
    p_run.add_argument("csv", type=Path)
    p_run.add_argument("--timeout", type=float, default=120)
    sub.add_parser("selftest", help="run every tool on synthetic logs and print a table")
    args = parser.parse_args(argv)
    if args.command == "install":
        unknown = [t for t in args.tools if t not in TOOLS]
        if unknown:
            parser.error(f"unknown tool(s): {', '.join(unknown)}")
        install(args.root, args.tools or None)
        return 0
    if args.command == "run":
        print(json.dumps(run_tool(args.tool, args.csv, args.root, args.timeout).to_json(), indent=2))
        return 0
    return selftest(args.root)


if __name__ == "__main__":
    sys.exit(main())
