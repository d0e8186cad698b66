"""How the doctor writes a number, everywhere: in findings, fixes, the checkup's lines and its notes.

Four significant digits (``0.6931``, ``87.34``, ``0.0003162``, ``1.235e+05``): enough to tell the
chance loss ln 2 = 0.6931 from a loss near it, short enough to read. NaN and ±Inf are written as
Python writes them; anything that is not a number as ``str`` does.
"""
from __future__ import annotations

import math


def fmt(x: object) -> str:
    """``x`` with four significant digits (see the module docstring)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x) if abs(x) < 10**6 else f"{x:.4g}"
    return f"{x:.4g}" if math.isfinite(x) else str(x)
