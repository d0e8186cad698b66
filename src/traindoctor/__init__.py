"""traindoctor: why is my neural network not training — diagnosis with evidence, and fixes.

Public API, kept small:

- ``Doctor(model, optimizer)``: watch a training loop from inside (one line per step).
- ``diagnose(run)``: findings → ranked causes, on a ``Run`` from any source.
- ``load(path)``: a run store or a log file → ``Run``.
- ``checkup(model, loader, loss_fn, ...)``: examine a pipeline before a long run → ``CheckupReport``.

The types these return (``Diagnosis``, ``CauseScore``, ``Finding``, ``Run``, ``CheckupReport``) are
importable from here too.
"""
__version__ = "0.1.0"

from .diagnosis import CauseScore, Diagnosis, diagnose
from .findings import Finding
from .run import Run


def __getattr__(name: str):  # torch-dependent parts load on first use
    if name == "Doctor":
        from .watch.doctor import Doctor

        return Doctor
    if name == "load":
        from .logs import load

        return load
    if name == "checkup":
        from .checks.checkup import checkup

        return checkup
    if name == "tune":
        from .tuning import tune

        return tune
    if name == "CheckupReport":
        from .checks.checkup import CheckupReport

        return CheckupReport
    raise AttributeError(f"module 'traindoctor' has no attribute {name!r}")


__all__ = ["CauseScore", "CheckupReport", "Diagnosis", "Doctor", "Finding", "Run", "__version__", "checkup",
           "diagnose", "load", "tune"]
