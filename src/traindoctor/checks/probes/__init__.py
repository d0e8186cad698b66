"""The checkup's active probes, one module each, and the registry that lists them.

Each probe is a :class:`~._base.Probe`: a ``name`` (what ``probes=`` and ``--skip`` take), a
``title`` (its report line), whether it runs by ``default``, a ``cost`` in training steps for
the time budget, and ``run(ctx)``. :func:`~._base.run_probe` runs every one of them inside the
bitwise roll-back of :mod:`..state`. The CLI's ``--skip`` choices and help text are read from
:data:`REGISTRY`, so a name cannot be accepted without a probe behind it. ``_experiments``
holds the measuring functions the probes share (LR sweep, fitting, short training, bisection).

Adding a probe: a module here with a :class:`Probe` subclass (docstring with an example, an
``order`` saying where it runs) — the registry finds it by scanning this package — and a rule in
``rules/probes.py`` that judges the event it records. A probe module imports torch and the measuring functions inside
``run``: the CLI reads this registry to build its parser, and ``traindoctor --help`` must not
load torch.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from ._base import Budget, Probe, ProbeContext, progress, run_probe


def _discover() -> dict[str, Probe]:
    """Every concrete :class:`Probe` defined in a public module of this package, by ``order``."""
    found: dict[type, None] = {}
    for m in pkgutil.iter_modules(__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{m.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Probe) and obj.__module__ == mod.__name__ \
                    and not inspect.isabstract(obj):
                found[obj] = None
    probes = sorted((cls() for cls in found), key=lambda p: (p.order, p.name))
    names = [p.name for p in probes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RuntimeError(f"two probes share the name {dup[0]!r}")
    return {p.name: p for p in probes}


#: every probe, in the order the checkup runs them
REGISTRY: dict[str, Probe] = _discover()

#: every probe name ``checkup(probes=...)`` accepts
PROBES: tuple[str, ...] = tuple(REGISTRY)
#: the probes a checkup runs when ``probes=`` is not given (the CLI's ``--skip`` choices)
DEFAULT_PROBES: tuple[str, ...] = tuple(n for n, p in REGISTRY.items() if p.default)


_EXPERIMENTS = ("SAFE_LR", "LRRange", "Pipeline", "bisect_nonfinite", "derive_shallow", "fit_probe", "initial_loss",
                "label_outliers", "loss_floor", "lr_range_test", "mean_loss", "per_sample_losses", "repeated_sample",
                "short_training", "shuffled_batches", "tiny_batch", "train_curve")


def __getattr__(name: str) -> Any:
    """The measuring functions of ``_experiments``, loaded (with torch) on first use: the CLI
    reads the registry to build its parser and must not pay for importing torch."""
    if name in _EXPERIMENTS:
        from . import _experiments

        return getattr(_experiments, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def skip_help() -> str:
    """The ``--skip`` help text, from the registry (the opt-in probes say what asks for them)."""
    on = "; ".join(f"{n}: {REGISTRY[n].help}" for n in DEFAULT_PROBES)
    off = ", ".join(n for n in PROBES if n not in DEFAULT_PROBES)
    return f"skip a probe (repeatable) — {on}. Off unless asked for: {off}"


__all__ = [
    "DEFAULT_PROBES", "PROBES", "REGISTRY", "SAFE_LR", "Budget", "LRRange", "Pipeline", "Probe", "ProbeContext",
    "bisect_nonfinite", "derive_shallow", "fit_probe", "initial_loss", "label_outliers", "loss_floor",
    "lr_range_test", "mean_loss", "per_sample_losses", "progress", "repeated_sample", "run_probe", "short_training",
    "shuffled_batches", "skip_help", "tiny_batch", "train_curve",
]
