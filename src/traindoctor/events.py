"""Typed facts: what the sources record, as the rules read it.

Sources write ``Event(step, kind, data)`` with plain JSON ``data`` (the store keeps it as is). Here
each event kind has a frozen dataclass with its fields typed; :meth:`Fact.from_json` is the one place
that reads a payload tolerantly — a store from another version, a hand-made Run, an odd model: a
missing key or a value of the wrong type reads as None (unknown), NaN and Inf stay numbers, unknown
keys are ignored — so the rules read fields instead of guarding every ``dict.get``. A payload that is
not a mapping gives no fact. :meth:`Fact.to_json` writes the payload back: the keys it was read from,
in their order, so evidence that quotes a measurement quotes what the source wrote.

:class:`RunMeta` is the same for the run's metadata, and :class:`NotJudged` says what could not be
judged, with a ``scope`` the reports decide by. No torch here: the judging half imports this.
"""
from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

Json = Mapping[str, Any]
R = TypeVar("R", bound="Record")
F = TypeVar("F", bound="Fact")


def real(x: object) -> bool:
    """A real number (not a bool); NaN and Inf included."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def finite(x: object) -> bool:
    return real(x) and math.isfinite(x)  # type: ignore[arg-type]


def _plain(v: object) -> object:
    """A field's value as JSON: tuples as lists, nested facts as their payload."""
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return dict(v)
    return v


def _coerce(tp: Any, x: object) -> object:
    """``x`` as type ``tp`` (one of the few a fact's fields use), or None when it is not one."""
    if get_origin(tp) in (Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    if x is None or tp is Any:
        return x
    if tp is float:
        return x if real(x) else None
    if tp is int:
        return x if isinstance(x, int) and not isinstance(x, bool) else None
    if tp is str:
        return x if isinstance(x, str) else None
    if tp is bool:
        return x if isinstance(x, bool) else None
    if get_origin(tp) is Mapping:
        return dict(x) if isinstance(x, Mapping) else None
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(x) if x else None  # an empty payload is no record, as an empty mapping was falsy
    if get_origin(tp) is tuple:
        if not isinstance(x, (list, tuple)):
            return None
        item = get_args(tp)[0]
        vals = [_coerce(item, v) for v in x]
        # a list of records keeps the records that parse; a list of values keeps its length
        if get_origin(item) is Mapping or (isinstance(item, type) and issubclass(item, Record)):
            return tuple(v for v in vals if v is not None)
        return tuple(vals)
    raise TypeError(f"no reading for field type {tp!r}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_OWN = ("step", "read_from")


@dataclass(frozen=True)
class Record:
    """Typed fields read from a JSON mapping (an event's data, or a record nested in it)."""

    # the payload's keys this record was read from, in order: what to_json writes back
    read_from: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def _read(cls, data: object) -> dict[str, Any] | None:
        if not isinstance(data, Mapping):
            return None
        hints = _hints(cls)
        vals = {f.name: _coerce(hints[f.name], data[f.name]) for f in fields(cls)
                if f.name not in _OWN and f.name in data}
        vals.update(cls.normalise(data, vals))
        return {"read_from": tuple(k for k in data if k in vals), **vals}

    @classmethod
    def from_json(cls: type[R], data: object) -> R | None:
        """The record in ``data``, read tolerantly; None when ``data`` is not a mapping."""
        vals = cls._read(data)
        return None if vals is None else cls(**vals)

    @classmethod
    def normalise(cls, data: Json, vals: dict[str, Any]) -> dict[str, Any]:
        """Field values read another way than by their type (nested traced JSON cleaned)."""
        return {}

    def to_json(self) -> dict[str, Any]:
        """The payload: the keys read, then any other field that is known."""
        out = {n: _plain(getattr(self, n)) for n in self.read_from}
        for f in fields(self):
            if f.name not in _OWN and f.name not in out and getattr(self, f.name) is not None:
                out[f.name] = _plain(getattr(self, f.name))
        return out


@dataclass(frozen=True)
class Fact(Record):
    """One recorded event: ``kind`` is the event kind it is read from, ``step`` the event's step."""

    kind: ClassVar[str] = ""
    step: int = 0

    @classmethod
    def from_json(cls: type[F], data: object, step: int = 0) -> F | None:  # type: ignore[override]
        vals = cls._read(data)
        return None if vals is None else cls(step=step, **vals)


# ------------------------------------------------------------------------------------ the script
@dataclass(frozen=True)
class Crash(Fact):
    """The script raised (live) or a checkup phase did."""

    kind: ClassVar[str] = "crash"
    type: str | None = None
    message: str | None = None
    where: Any = None
    line: Any = None

    @property
    def text(self) -> str:
        """``type: message``, as a crash's message patterns are matched."""
        return f"{self.type or ''}: {self.message or ''}"


@dataclass(frozen=True)
class Exit(Fact):
    kind: ClassVar[str] = "exit"
    code: Any = None


@dataclass(frozen=True)
class Interrupted(Fact):
    kind: ClassVar[str] = "interrupted"
    type: str | None = None


@dataclass(frozen=True)
class DoctorError(Fact):
    """A part of traindoctor failed and was contained."""

    kind: ClassVar[str] = "doctor_error"
    part: str | None = None
    message: Any = None


# ------------------------------------------------------------------------------------ healing
@dataclass(frozen=True)
class Treatment(Fact):
    """What healing did at a step: the symptom, the cause it treated, the change and the roll-back."""

    kind: ClassVar[str] = "treatment"
    code: str | None = None
    cause: str | None = None
    source: str | None = None  # what named the cause (the diagnosis, the batch's inputs, …)
    action: str | None = None
    changes: Mapping[str, Any] | None = None  # what changed: {"lr": [old, new], …}
    rolled_back_to: int | None = None
    quarantined: tuple[int, ...] | None = None  # sample ids skipped for good
    treatment: int | None = None  # how many times this cause has been treated, this one included
    loss: Any = None
    best_step: int | None = None
    best_val_loss: float | None = None
    verified: Mapping[str, Any] | None = None  # a replay's measured effect, when the fix was verified


@dataclass(frozen=True)
class HealStopped(Fact):
    """Healing gave up: the symptom came back past the cap on treatments."""

    kind: ClassVar[str] = "heal_stopped"
    code: str | None = None
    cause: str | None = None
    treatments: Mapping[str, Any] | None = None
    rolled_back_to: int | None = None
    message: str | None = None


# ------------------------------------------------------------------------------------ the loss
@dataclass(frozen=True)
class BadRows(Record):
    """Rows of a tensor that held NaN/Inf: their batch positions and dataset ids."""

    tensor: str | None = None
    name: str | None = None
    type: str | None = None
    positions: tuple[Any, ...] | None = None
    count: float | None = None
    batch_size: Any = None
    sample_ids: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class NonfiniteLoss(Fact):
    """The first non-finite loss and where it came from (the batch, the weights, a module, the loss)."""

    kind: ClassVar[str] = "nonfinite_loss"
    value: float | None = None
    dtype: str | None = None
    batch_ids_known: bool | None = None
    input_nonfinite: BadRows | None = None
    weights_nonfinite: tuple[str, ...] | None = None
    first_module: BadRows | None = None
    in_loss: Any = None
    bisect: Any = None
    source: Any = None
    loss_graph: Any = None


@dataclass(frozen=True)
class Config(Fact):
    """A loss wired wrongly, seen in the autograd graph (``double_softmax``, ``sigmoid_bce`` …)."""

    kind: ClassVar[str] = "config"
    fault: str | None = None
    graph: tuple[Any, ...] | None = None
    module: str | None = None
    through: Any = None


# ------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class ModuleRef(Record):
    name: str | None = None
    type: str | None = None


_NUM_KEYS = {"min", "max", "distinct", "zero_fraction", "first_groups"}
_SHAPE_KEYS = {"pred_shape", "shape", "dims"}
_LIST_KEYS = {"losses", "handwritten", "stacked_linear", "input_ops", "log_calls", "between", "values"}
_DICT_KEYS = {"head", "target", "prob", "first", "second", "defined", "call"}
_RECORD_LISTS = ("losses", "handwritten", "stacked_linear")


def _sane(x: object, key: str = "") -> object:
    """A traced record with numbers where numbers go, int lists for shapes, dicts and lists where
    those go; anything else (another version's store, an odd model) is dropped."""
    if isinstance(x, Mapping):
        out = {}
        for k, v in x.items():
            if k in _NUM_KEYS and not finite(v):
                continue
            if k in _SHAPE_KEYS and not (isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                                    for i in v)):
                continue
            if k in _LIST_KEYS and not isinstance(v, list):
                continue
            if k in _DICT_KEYS and not isinstance(v, Mapping):
                continue
            out[k] = _sane(v, k)
        return out
    if isinstance(x, list):
        return [_sane(v, key) for v in x if key not in _RECORD_LISTS or isinstance(v, Mapping)]
    return x


@dataclass(frozen=True)
class ModelGraph(Fact):
    """The first training step, traced: modules and operations, each loss call with what fed it
    (``head``) and its targets, hand-written log-likelihoods, weight layers stacked with nothing
    between. The per-loss records are traced JSON, cleaned here."""

    kind: ClassVar[str] = "model_graph"
    operations: Any = None
    truncated: Any = None
    modules: tuple[ModuleRef, ...] | None = None
    sequence: tuple[Any, ...] | None = None
    losses: tuple[Json, ...] | None = None
    handwritten: tuple[Json, ...] | None = None
    stacked_linear: tuple[Json, ...] | None = None
    input_ops: tuple[Any, ...] | None = None
    forward_site: Json | None = None
    loss_site: Json | None = None

    @classmethod
    def normalise(cls, data: Json, vals: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(_sane(list(vals[k]), k)) for k in _RECORD_LISTS if vals.get(k) is not None}  # type: ignore[arg-type]

    @property
    def module_types(self) -> set[str | None]:
        return {m.type for m in self.modules or ()}

    @property
    def op_names(self) -> set[str]:
        return {str(s).split("@", 1)[0] for s in self.sequence or ()}


@dataclass(frozen=True)
class InitLayer(Record):
    """One weight layer's starting scale and the reference scales."""

    name: str | None = None
    type: str | None = None
    fan_in: Any = None
    fan_out: int | None = None
    std: float | None = None
    mean: float | None = None
    default_std: float | None = None
    xavier_std: float | None = None
    kaiming_std: float | None = None
    activation: Any = None
    last: bool | None = None
    output_std: float | None = None


@dataclass(frozen=True)
class InitScale(Fact):
    """Each weight layer's scale at the start, against the default, Kaiming and Xavier scales."""

    kind: ClassVar[str] = "init_scale"
    layers: tuple[InitLayer, ...] | None = None
    measured: bool | None = None


@dataclass(frozen=True)
class Peak(Record):
    name: str | None = None
    type: str | None = None
    absmax: float | None = None
    dtype: Any = None


@dataclass(frozen=True)
class Precision(Fact):
    """The parameters' dtypes and the largest outputs per module against the low-precision range."""

    kind: ClassVar[str] = "precision"
    param_dtypes: Json | None = None
    declared: str | None = None
    absmax: tuple[Peak, ...] | None = None
    overall_absmax: float | None = None
    nonfinite_modules: tuple[Any, ...] | None = None
    loss_value: float | None = None
    loss_reduction: Any = None
    batch_size: Any = None


@dataclass(frozen=True)
class StateDictLoad(Fact):
    """A ``load_state_dict`` call: how many of the model's tensors it filled."""

    kind: ClassVar[str] = "state_dict_load"
    module: str | None = None
    keys: int | None = None
    loaded: int | None = None
    missing: tuple[Any, ...] | None = None
    unexpected: tuple[Any, ...] | None = None
    strict: Any = None
    before_training: bool | None = None
    where: Any = None

    @property
    def early(self) -> bool:
        """Loaded before training began (unknown counts as before, as older stores did not say)."""
        return self.before_training is not False


@dataclass(frozen=True)
class FrozenInit(Fact):
    """Frozen tensors that still hold the default random initialisation."""

    kind: ClassVar[str] = "frozen_init"
    params: tuple[Any, ...] | None = None
    layers: tuple[Json, ...] | None = None
    count: Any = None
    numel: Any = None


# ------------------------------------------------------------------------------------ gradients
@dataclass(frozen=True)
class NoGrad(Fact):
    """Parameters with no gradient at a sampled step."""

    kind: ClassVar[str] = "no_grad"
    params: tuple[Any, ...] | None = None
    count: Any = None
    requires_grad_false: tuple[Any, ...] | None = None
    of: Any = None


@dataclass(frozen=True)
class StaleGrad(Fact):
    """Parameters whose ``.grad`` still held the last step's gradient when backward began."""

    kind: ClassVar[str] = "stale_grad"
    count: Any = None
    of: Any = None
    params: tuple[Any, ...] | None = None
    where: Any = None


@dataclass(frozen=True)
class Hessian(Fact):
    """The extreme eigenvalues of the loss's Hessian where training stalled."""

    kind: ClassVar[str] = "hessian"
    max_eigenvalue: float | None = None
    min_eigenvalue: float | None = None
    iterations: Any = None


# ------------------------------------------------------------------------------------ data
_PROFILE_NUMBERS = ("count", "min", "max", "mean", "std", "rms", "max_abs_mean", "max_std", "min_std")


def _clean_stats(sub: object) -> dict[str, Any]:
    """Input or target statistics with every numeric field a number: a missing or non-numeric
    value reads as 0, so a rule judges nothing rather than raising."""
    if not isinstance(sub, Mapping):
        return {}
    out = dict(sub)
    for k in _PROFILE_NUMBERS:
        if k in out and not real(out[k]):
            out[k] = 0.0
    for k in ("min", "max", "mean", "std", "rms"):
        out.setdefault(k, 0.0)
    return out


@dataclass(frozen=True)
class DataProfile(Fact):
    """The data seen by the model: input and target statistics, class counts, the batch order.
    A live run records the first batch (``first_batch``) and then the whole first-batches window."""

    kind: ClassVar[str] = "data_profile"
    split: str | None = None
    samples: Any = None
    batches: Any = None
    batch_size: Any = None
    first_batch: bool | None = None
    ids: Any = None
    loss_kind: str | None = None
    inputs: Json | None = None
    targets: Json | None = None
    classes: Json | None = None
    num_outputs: Any = None
    order: Json | None = None
    input_samples: Any = None
    live: bool | None = None
    output_shape: Any = None

    @classmethod
    def normalise(cls, data: Json, vals: dict[str, Any]) -> dict[str, Any]:
        return {p: _clean_stats(data[p]) for p in ("inputs", "targets") if data.get(p) is not None}

    @property
    def train(self) -> bool:
        """A profile of the training data (one that names no split is one)."""
        return self.split in (None, "train")

    @property
    def class_counts(self) -> dict[str, Any]:
        counts = (self.classes or {}).get("counts")
        return dict(counts) if isinstance(counts, Mapping) else {}


@dataclass(frozen=True)
class DataNonfinite(Fact):
    """Samples holding NaN/Inf found by a scan of the data."""

    kind: ClassVar[str] = "data_nonfinite"
    split: str | None = None
    where: Any = None
    count: Any = None
    sample_ids: tuple[Any, ...] | None = None
    ids: Any = None
    samples_scanned: Any = None
    scan: Any = None
    complete: Any = None
    source: Any = None
    array: Any = None
    live: bool | None = None
    first_batch: bool | None = None


@dataclass(frozen=True)
class LabelDomain(Fact):
    """Targets the loss cannot take (class index out of range, wrong dtype, wrong shape …)."""

    kind: ClassVar[str] = "label_domain"
    split: str | None = None
    problem: str | None = None
    loss_kind: Any = None
    output_shape: tuple[Any, ...] | None = None
    target_dtype: Any = None
    ids: Any = None
    count: Any = None
    sample_ids: tuple[Any, ...] | None = None
    values: tuple[Any, ...] | None = None
    num_outputs: Any = None
    target_shape: Any = None
    expected_shape: Any = None
    first_batch: bool | None = None
    live: bool | None = None

    @property
    def classes(self) -> Any:
        """The model's number of outputs: the recorded count, else the first output dimension."""
        return self.num_outputs or (self.output_shape or (None,))[0]


@dataclass(frozen=True)
class DataLeakage(Fact):
    """Validation samples whose bytes also occur in the training data."""

    kind: ClassVar[str] = "data_leakage"
    train_samples: float | None = None
    val_samples: float | None = None
    duplicates: float | None = None
    fraction_of_val: float | None = None
    train_internal_duplicates: float | None = None
    val_ids: tuple[Any, ...] | None = None
    train_ids: tuple[Any, ...] | None = None
    eval_samples_of_training_data: Any = None
    live: bool | None = None
    train_complete: Any = None
    train_source: Any = None


@dataclass(frozen=True)
class InputShift(Fact):
    """How far the validation inputs' feature statistics moved from the training inputs'."""

    kind: ClassVar[str] = "input_shift"
    live: bool | None = None
    median_shift_sd: float | None = None
    noise_sd: float | None = None
    median_abs_log_std_ratio: float | None = None
    noise_log_std: float | None = None
    features: Any = None
    features_total: Any = None
    mean_shift_sd: Any = None
    median_std_ratio: Any = None
    most_shifted: Any = None
    train_samples: Any = None
    val_samples: Any = None


@dataclass(frozen=True)
class EvalTrainMode(Fact):
    """Validation ran with dropout or BatchNorm modules in training mode."""

    kind: ClassVar[str] = "eval_train_mode"
    modules: tuple[Any, ...] | None = None
    types: tuple[Any, ...] | None = None
    where: Any = None
    loss: Any = None


# ------------------------------------------------------------------------------------ probes
@dataclass(frozen=True)
class FitTry(Record):
    lr: Any = None
    steps: Any = None
    initial_loss: Any = None
    final_loss: Any = None
    eval_mode_loss: Any = None
    best_loss: Any = None
    target: Any = None
    fitted: Any = None


@dataclass(frozen=True)
class FitProbe(Fact):
    """Can the model fit one sample, or ten (``variant``)? Adam at a few learning rates."""

    kind: ClassVar[str] = "fit_probe"
    variant: str | None = None
    samples: Any = None
    sample_ids: tuple[Any, ...] | None = None
    optimizer: Any = None
    floor: Any = None
    tolerance: Any = None
    fitted: Any = None
    initial_loss: float | None = None
    best_loss: Any = None
    target: Any = None
    tries: tuple[FitTry, ...] | None = None
    params_trained: Any = None


@dataclass(frozen=True)
class DepthProbe(Fact):
    """The model against a shallower variant of itself, trained the same short time."""

    kind: ClassVar[str] = "depth_probe"
    steps: Any = None
    optimizer: Any = None
    how: Any = None
    deep: Json | None = None
    shallow: Json | None = None


@dataclass(frozen=True)
class GradCheck(Fact):
    """A custom autograd function's backward against finite differences, in float64."""

    kind: ClassVar[str] = "gradcheck"
    function: Any = None
    module: Any = None
    passed: bool | None = None
    directional_rel_error: Any = None
    skipped: Any = None
    inputs: Any = None
    message: Any = None
    input_shapes: Any = None


@dataclass(frozen=True)
class InputBaseline(Fact):
    """The loss after a short training on the real inputs and on inputs zeroed."""

    kind: ClassVar[str] = "input_baseline"
    steps: Any = None
    optimizer: Any = None
    lr: Any = None
    initial_loss: Any = None
    real_input_loss: float | None = None
    zero_input_loss: float | None = None
    zero_input_initial_loss: Any = None
    evaluated_on: Any = None
    trained_on: Any = None
    evaluated_samples: Any = None
    real_training_loss: Any = None
    zero_training_loss: Any = None


@dataclass(frozen=True)
class LabelOutliers(Fact):
    """Training samples whose loss stays far above the rest after a short training."""

    kind: ClassVar[str] = "label_outliers"
    samples: Any = None
    median_loss: Any = None
    threshold: float | None = None
    above_threshold: Any = None
    candidates: tuple[Json, ...] | None = None
    trained_steps: Any = None
    learned: bool | None = None
    loss_kind: Any = None
    num_classes: Any = None
    initial_loss: Any = None
    final_loss: Any = None
    max_loss: Any = None
    mean_loss: Any = None
    q90_loss: Any = None


@dataclass(frozen=True)
class LrRangeTest(Fact):
    """The loss over an exponential learning-rate sweep, and the rates it suggests."""

    kind: ClassVar[str] = "lr_range_test"
    optimizer: Any = None
    suggested_lr: float | None = None
    rule: Any = None
    min_loss_lr: float | None = None
    diverged_at_lr: float | None = None
    user_lr: float | None = None
    start_lr: Any = None
    end_lr: Any = None
    num_iter: Any = None
    points: Any = None
    smooth_f: Any = None
    diverge_th: Any = None
    first_loss: Any = None
    min_loss: Any = None


# ------------------------------------------------------------------------------------ the run
def _opt_dict(x: object) -> dict[str, Any]:
    return dict(x) if isinstance(x, Mapping) else {}


@dataclass(frozen=True)
class RunMeta:
    """The run's metadata as the rules read it; ``Run.meta`` stays the stored dict."""

    loss_kind: str | None = None
    num_classes: int | None = None
    lr: float | None = None
    optimizer: Json = field(default_factory=dict)
    optimizers_stepping: int | None = None
    framework: str | None = None
    framework_args: Json = field(default_factory=dict)
    input_stats: Json | None = None
    batch_size: int | None = None

    @classmethod
    def from_json(cls, meta: object) -> RunMeta:
        m = meta if isinstance(meta, Mapping) else {}
        hints = _hints(cls)
        vals = {f.name: _coerce(hints[f.name], m.get(f.name)) for f in fields(cls)}
        vals["optimizer"] = _opt_dict(m.get("optimizer"))
        vals["framework_args"] = _opt_dict(m.get("framework_args"))
        return cls(**vals)

    @property
    def opt_class(self) -> str | None:
        c = self.optimizer.get("class")
        return c if isinstance(c, str) else None


# ------------------------------------------------------------------------------------ not judged
class NotJudged(str):
    """Something the run lacks for some rules to judge, or a check that was blind: today's sentence
    (it is a ``str``, so the ``not_judged`` list and its JSON stay the same) with the ``scope`` the
    reports decide by: ``loss`` (the loss itself too thin to judge the run, which is then "not
    judged", never "healthy"), ``validation``, ``metric``, ``gradients``, ``players``, ``loss_kind``,
    ``activations``, or ``checkup`` (a check the checkup skipped)."""

    SCOPES: ClassVar[tuple[str, ...]] = ("loss", "validation", "metric", "gradients", "players", "loss_kind",
                                         "activations", "checkup")

    def __new__(cls, scope: str, reason: str) -> NotJudged:
        if scope not in cls.SCOPES:
            raise ValueError(f"not-judged scope must be one of {', '.join(cls.SCOPES)}, not {scope!r}")
        self = super().__new__(cls, reason)
        self._scope = scope
        return self

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return (self._scope, str(self))

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def reason(self) -> str:
        return str(self)

    def to_json(self) -> dict[str, str]:
        return {"scope": self._scope, "reason": str(self)}


FACTS: dict[str, type[Fact]] = {c.kind: c for c in (
    Crash, Exit, Interrupted, DoctorError, NonfiniteLoss, Config, ModelGraph, InitScale, Precision, StateDictLoad,
    FrozenInit, NoGrad, StaleGrad, Hessian, DataProfile, DataNonfinite, LabelDomain, DataLeakage, InputShift,
    EvalTrainMode, FitProbe, DepthProbe, GradCheck, InputBaseline, LabelOutliers, LrRangeTest, Treatment,
    HealStopped)}
