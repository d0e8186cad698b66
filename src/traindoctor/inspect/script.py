"""A user's training script, run as ``python SCRIPT.py`` would run it (``traindoctor run`` watches it;
``traindoctor checkup`` runs it to its first loss)."""
from __future__ import annotations

import builtins
import importlib.machinery
import io
import os
import sys
import types
from pathlib import Path

from ..errors import TrainDoctorError


def check_script(script: str | os.PathLike[str]) -> Path:
    """The script as a path, or a one-line error saying why it cannot be a training script."""
    path = Path(script)
    if not path.exists():
        raise TrainDoctorError(f"{script}: no such script")
    if path.is_dir():
        raise TrainDoctorError(f"{script}: is a directory, expected a Python training script")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise TrainDoctorError(f"{script}: cannot read ({exc.strerror})") from exc
    if b"\0" in head:
        raise TrainDoctorError(f"{script}: is a binary file, expected a Python training script")
    return path


def run_as_main(path: str | os.PathLike[str]) -> None:
    """Execute ``path`` as ``python PATH`` does: as module ``__main__``, with the absolute ``__file__``
    Python 3.9+ gives the main script (``sys.argv`` and ``sys.path[0]`` are the caller's to set).

    Unlike ``runpy.run_path`` this leaves ``sys.argv[0]`` as typed, and a SyntaxError in the script
    comes from here alone, with no ``<frozen runpy>`` frame to hide.
    """
    fname = os.fspath(path)
    if not os.path.isabs(fname):  # joined, not normalised: python's own __file__ keeps "./"
        fname = os.path.join(os.getcwd(), fname)
    with io.open_code(fname) as fh:
        source = fh.read()
    # dont_inherit: this module's ``from __future__ import annotations`` is not the script's
    code = compile(source, fname, "exec", dont_inherit=True)
    mod = types.ModuleType("__main__")
    mod.__dict__.update(__file__=fname, __cached__=None, __package__=None, __spec__=None, __builtins__=builtins,
                        __loader__=importlib.machinery.SourceFileLoader("__main__", fname))
    had = "__main__" in sys.modules
    old_main = sys.modules.get("__main__")
    sys.modules["__main__"] = mod
    try:
        exec(code, mod.__dict__)
    finally:
        if had:
            sys.modules["__main__"] = old_main  # type: ignore[assignment]
        else:
            sys.modules.pop("__main__", None)
