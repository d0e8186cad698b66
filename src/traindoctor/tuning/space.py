"""The search space: ``--param`` specs parsed, each parameter suggested through Optuna, and narrowed.

Syntax (the CLI's ``--param NAME=SPEC``, and the strings :func:`~traindoctor.tune.tune` accepts)::

    lr=log:1e-5:1          a float on a log scale (low > 0)
    dropout=0.1:0.7        a float, uniform
    layers=int:1:4         an integer, uniform
    batch=intlog:16:512    an integer on a log scale
    opt=choice:adam,sgd    one of a list (numbers in it are read as numbers)

The seeds say to search learning rates and regularisation strengths on a log scale: a bare ``LO:HI``
whose bounds are positive and span three decades or more is refused with the advice to write ``log:``.

:meth:`Param.narrowed` is the fine stage: the range the best trials of the coarse stage occupy, padded
by a quarter of its width (a quarter of a decade on a log scale), never outside the original range.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import TrainDoctorError

KINDS = ("float", "log", "int", "intlog", "choice")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class SpaceError(TrainDoctorError):
    """A parameter spec that cannot be read; the message names it and says what is wrong."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # one of KINDS
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def log(self) -> bool:
        return self.kind in ("log", "intlog")

    def distribution(self) -> Any:
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind in ("int", "intlog"):
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind in ("int", "intlog"):
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]

    def spec(self) -> str:
        """The parameter as the CLI writes it (``lr=log:1e-05:1``)."""
        if self.kind == "choice":
            return f"{self.name}=choice:" + ",".join(str(c) for c in self.choices)
        head = "" if self.kind == "float" else f"{self.kind}:"
        return f"{self.name}={head}{self.low:g}:{self.high:g}"

    def width(self) -> float:
        """The range's width on its own scale (decades for a log scale)."""
        if self.kind == "choice":
            return float(len(self.choices))
        assert self.low is not None and self.high is not None
        return math.log10(self.high / self.low) if self.log else self.high - self.low

    def narrowed(self, values: Sequence[Any]) -> Param:
        """The fine stage's range around ``values`` (the best trials' values of this parameter)."""
        if self.kind == "choice":
            kept = tuple(c for c in self.choices if c in set(values))
            return replace(self, choices=kept or self.choices)
        vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
        if not vals:
            return self
        assert self.low is not None and self.high is not None
        if self.log:
            lo, hi = math.log10(min(vals)), math.log10(max(vals))
            pad = max(0.25 * (hi - lo), 0.25)
            low, high = 10 ** max(math.log10(self.low), lo - pad), 10 ** min(math.log10(self.high), hi + pad)
        else:
            lo, hi = min(vals), max(vals)
            pad = max(0.25 * (hi - lo), 0.05 * (self.high - self.low))
            low, high = max(self.low, lo - pad), min(self.high, hi + pad)
        if self.kind in ("int", "intlog"):
            low, high = math.floor(low), math.ceil(high)
            if low == high:
                low, high = max(int(self.low), low - 1), min(int(self.high), high + 1)
        return replace(self, low=low, high=high)

    def following(self, values: Sequence[Any], base: Param) -> Param:
        """This range widened to hold a window of its own width centred on the median of ``values`` (the
        best fine trials' values), within ``base``; a choice, or no usable value, leaves it as it is."""
        vals = sorted(float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))
                      and (not self.log or float(v) > 0))
        if self.kind == "choice" or not vals or None in (self.low, self.high, base.low, base.high):
            return self
        assert self.low is not None and self.high is not None and base.low is not None and base.high is not None
        f = math.log10 if self.log else float
        lo, hi, c = f(self.low), f(self.high), f(vals[len(vals) // 2])
        half = (hi - lo) / 2
        low, high = max(f(base.low), min(lo, c - half)), min(f(base.high), max(hi, c + half))
        if self.log:
            low, high = 10 ** low, 10 ** high
        if self.kind in ("int", "intlog"):
            low, high = math.floor(low), math.ceil(high)
        return replace(self, low=low, high=high)


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise SpaceError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise SpaceError(f"{what}: {text!r} is not a finite number")
    return v


def _choice(text: str) -> Any:
    t = text.strip()
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            continue
    return {"true": True, "false": False, "none": None}.get(t.lower(), t)


def parse_param(text: str) -> Param:
    """``NAME=SPEC`` (see the module docstring) as a :class:`Param`; :class:`SpaceError` otherwise."""
    name, eq, spec = text.partition("=")
    name = name.strip()
    where = f"--param {text}"
    if not eq or not spec.strip():
        raise SpaceError(f"{where}: give NAME=SPEC, e.g. lr=log:1e-5:1, dropout=0.1:0.7, layers=int:1:4, "
                         "opt=choice:adam,sgd")
    if not _NAME.match(name):
        raise SpaceError(f"{where}: {name!r} is not a parameter name (letters, digits, _ . -)")
    return parse_spec(name, spec.strip(), where)


def parse_spec(name: str, spec: str, where: str | None = None) -> Param:
    where = where or f"{name}={spec}"
    head, _, rest = spec.partition(":")
    kind = head.lower() if head.lower() in KINDS else None
    if kind == "choice":
        items = [c for c in rest.split(",") if c.strip()]
        if len(items) < 1:
            raise SpaceError(f"{where}: choice: needs at least one value, e.g. choice:adam,sgd")
        return Param(name, "choice", choices=tuple(dict.fromkeys(_choice(c) for c in items)))
    parts = (rest if kind else spec).split(":")
    if kind is None and head and not re.match(r"^[-+0-9.eE]+$", head):
        raise SpaceError(f"{where}: unknown kind {head!r}; use log:, int:, intlog:, choice: or LOW:HIGH")
    if len(parts) != 2:
        raise SpaceError(f"{where}: give LOW:HIGH after the kind, e.g. {name}=log:1e-5:1")
    low, high = (_number(p, where) for p in parts)
    kind = kind or "float"
    if low > high:
        raise SpaceError(f"{where}: the low end {parts[0]} is above the high end {parts[1]}")
    if low == high:
        raise SpaceError(f"{where}: the range is a single value ({parts[0]}); a fixed value is not a search")
    if kind in ("log", "intlog") and low <= 0:
        raise SpaceError(f"{where}: a log scale needs a positive low end, got {parts[0]}")
    if kind in ("int", "intlog") and (low != int(low) or high != int(high)):
        raise SpaceError(f"{where}: int: needs whole-number bounds, got {parts[0]}:{parts[1]}")
    if kind == "float" and low > 0 and high / low >= 1000:
        raise SpaceError(f"{where}: the range spans {math.log10(high / low):.0f} decades on a linear scale, where "
                         f"uniform sampling puts nearly every trial in the top decade; search it as {name}=log:"
                         f"{parts[0]}:{parts[1]}")
    return Param(name, kind, low, high)


def as_space(space: Mapping[str, Any] | Sequence[Any]) -> list[Param]:
    """The API's ``space``: a mapping ``name -> spec string | (low, high) | [choices] | Param``, or a list of
    ``NAME=SPEC`` strings / Params."""
    out: list[Param] = []
    items: list[tuple[str | None, Any]]
    if isinstance(space, Mapping):
        items = list(space.items())
    else:
        items = [(None, v) for v in space]
    for name, v in items:
        if isinstance(v, Param):
            out.append(v if name is None else replace(v, name=name))
        elif name is None and isinstance(v, str):
            out.append(parse_param(v))
        elif isinstance(v, str):
            out.append(parse_spec(str(name), v))
        elif isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            kind = "int" if all(isinstance(x, int) for x in v) else "float"
            out.append(parse_spec(str(name), f"{kind}:{v[0]}:{v[1]}" if kind == "int" else f"{v[0]}:{v[1]}"))
        elif isinstance(v, list) and v:
            out.append(Param(str(name), "choice", choices=tuple(v)))
        else:
            raise SpaceError(f"space[{name!r}]: {v!r} is not a spec; give 'log:1e-5:1', (low, high) or [choices]")
    names = [p.name for p in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SpaceError(f"parameter {sorted(dup)[0]!r} is given twice")
    if not out:
        raise SpaceError("the search space is empty: give at least one parameter")
    return out
