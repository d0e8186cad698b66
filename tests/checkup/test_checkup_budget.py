"""The probe registry (one object per probe, the CLI's --skip read from it) and the time budget:
a slow model under a small budget finishes near the budget and the report names what was cut."""
from __future__ import annotations

import importlib
import pkgutil
import time

import pytest
import torch
from _pipes import digits, loader, run
from torch import nn

from traindoctor.checks import probes as probes_pkg
from traindoctor.checks.probes import DEFAULT_PROBES, PROBES, REGISTRY
from traindoctor.cli import _parser, main


def test_registry_lists_every_probe_with_a_documented_example():
    assert PROBES == tuple(REGISTRY) and set(DEFAULT_PROBES) < set(PROBES)
    for name, p in REGISTRY.items():
        assert p.name == name and p.title and isinstance(p.default, bool)
        module = importlib.import_module(type(p).__module__)
        assert ">>>" in (module.__doc__ or ""), name  # the docstring shows how to ask for it


def test_registry_is_every_public_probe_module_in_order():
    """The registry is found, not typed: one probe per public module of checks/probes/, in ``order``."""
    modules = sorted(m.name for m in pkgutil.iter_modules(probes_pkg.__path__) if not m.name.startswith("_"))
    assert sorted(type(p).__module__.rsplit(".", 1)[1] for p in REGISTRY.values()) == modules
    orders = [p.order for p in REGISTRY.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    # the order the checkup has always run them in
    assert PROBES == ("lr_range", "overfit", "repeat", "short_training", "gradcheck", "depth", "bisect")


def _skip_action():
    p = _parser()
    sub = next(a for a in p._actions if a.dest == "cmd")
    return next(a for a in sub.choices["checkup"]._actions if a.dest == "skip")


def test_cli_skip_choices_are_the_registry():
    """--skip's help names exactly the default probes, and every name it accepts skips something."""
    help_text = _skip_action().help
    named = [n for n in PROBES if f"{n}: " in help_text]
    assert named == list(DEFAULT_PROBES)
    assert DEFAULT_PROBES == tuple(n for n, p in REGISTRY.items() if p.default)


def test_cli_skip_of_an_opt_in_probe_is_refused(capsys):
    for name in (n for n in PROBES if n not in DEFAULT_PROBES):
        assert main(["checkup", "--skip", name, "train.py"]) == 2
        assert "nothing to skip" in capsys.readouterr().err


@pytest.mark.parametrize("name", DEFAULT_PROBES)
def test_each_default_probe_does_something(name):
    """probes=[name] records more than probes=[]: no name is accepted and ignored."""
    Xtr, ytr, _, _ = digits()
    base = run(nn.Sequential(nn.Linear(64, 10)), loader(Xtr[:256], ytr[:256]), nn.CrossEntropyLoss(), probes=[],
               steps=30)
    one = run(nn.Sequential(nn.Linear(64, 10)), loader(Xtr[:256], ytr[:256]), nn.CrossEntropyLoss(), probes=[name],
              steps=30)
    assert len(one.lines) > len(base.lines) and one.restored


class SlowNet(nn.Module):
    """A small conv net whose forward sleeps: a stand-in for a model too big to probe in full."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return self.net(x.view(-1, 1, 8, 8))


def test_slow_model_keeps_to_the_budget(capsys):
    Xtr, ytr, _, _ = digits()
    model = SlowNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = time.perf_counter()
    r = run(model, loader(Xtr[:512], ytr[:512]), nn.CrossEntropyLoss(), budget_s=5)
    took = time.perf_counter() - t
    assert took < 5 + 3, took  # the budget, plus a margin for a loaded machine
    cut = {ln.probe: ln.outcome for ln in r.lines if ln.probe.startswith("budget: ")}
    assert cut and all("for the budget" in o or "of its length" in o for o in cut.values())
    assert all("one training step ≈" in o for o in cut.values())
    assert r.run.meta["budget"]["seconds"] == 5 and r.run.meta["budget"]["step_s"] > 0.01
    assert r.restored and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    err = capsys.readouterr().err
    for title in (REGISTRY[n].title for n in DEFAULT_PROBES):
        assert f"traindoctor checkup: {title}" in err  # one progress line per probe, starting or skipped
    assert " done in " in err


def test_budget_none_and_bad_budget():
    Xtr, ytr, _, _ = digits()
    r = run(nn.Sequential(nn.Linear(64, 10)), loader(Xtr[:128], ytr[:128]), nn.CrossEntropyLoss(),
            probes=["overfit"], budget_s=None, steps=20)
    assert "budget" not in r.run.meta and not [ln for ln in r.lines if ln.probe.startswith("budget: ")]
    from traindoctor.errors import TrainDoctorError

    with pytest.raises(TrainDoctorError, match="budget_s"):
        run(nn.Sequential(nn.Linear(64, 10)), loader(Xtr[:128], ytr[:128]), nn.CrossEntropyLoss(), budget_s=0)
