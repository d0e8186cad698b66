"""The configuration rules (M001–M003, M008–M010, D001–D007) survive any facts: NaN/Inf values,
missing fields, empty lists, wrong types — the traced facts of an odd model must never break a
diagnosis."""
from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traindoctor.diagnosis import diagnose, evaluate
from traindoctor.report import to_json_text
from traindoctor.run import Event, Run

NUM = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6),
                st.sampled_from([math.nan, math.inf, -math.inf, 0, 1, 255]))
OPS = st.sampled_from(["relu", "sigmoid", "softmax", "log_softmax", "tanh", "logits", "none", "input", "relu6",
                       "softplus", "hardsigmoid", "log", "weird", ""])
KINDS = st.sampled_from(["cross_entropy", "nll", "bce", "bce_logits", "mse", "l1", "huber", "kl_div", None, "x"])
SHAPE = st.one_of(st.none(), st.lists(st.integers(0, 40), max_size=4))
TARGET = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["int64", "float32", "bool", "bfloat16", ""]), "shape": SHAPE, "min": NUM, "max": NUM,
    "distinct": NUM, "integer_valued": st.booleans(), "values": st.lists(NUM, max_size=4),
    "cast_from": st.sampled_from(["int64", "uint8", None]), "one_hot": st.booleans(), "multi_hot": st.booleans(),
    "rows_sum_to_one": st.one_of(st.none(), st.booleans())})
HEAD = st.fixed_dictionaries({"op": OPS}, optional={
    "function": OPS, "module": st.one_of(st.none(), st.text(max_size=5)), "module_type": st.one_of(st.none(), st.text(max_size=8)),
    "in_model": st.booleans(), "zero_fraction": NUM, "min": NUM, "max": NUM,
    "defined": st.fixed_dictionaries({"where": st.text(max_size=10)}), "call": st.just({})})
LOSS = st.fixed_dictionaries({"kind": KINDS, "head": HEAD, "target": TARGET}, optional={
    "function": st.text(max_size=8), "pred_shape": SHAPE, "loss_module": st.one_of(st.none(), st.text(max_size=8)),
    "where": st.text(max_size=12)})
HAND = st.fixed_dictionaries({"prob_op": OPS, "target": TARGET}, optional={
    "prob": HEAD, "complement": st.booleans(), "clamped": st.booleans(), "log_calls": st.lists(st.just({}), max_size=2)})
PAIR = st.fixed_dictionaries({"first": st.just({"module": "a"}), "second": st.just({"module": "b"})}, optional={
    "dims": st.lists(st.integers(0, 500), max_size=4), "between": st.lists(st.text(max_size=6), max_size=3),
    "first_groups": NUM})
GRAPH = st.fixed_dictionaries({}, optional={
    "losses": st.lists(LOSS, max_size=3), "handwritten": st.lists(HAND, max_size=2),
    "stacked_linear": st.lists(PAIR, max_size=3), "input_ops": st.lists(OPS, max_size=4),
    "forward_site": st.just({"where": "t.py:1"})})
PROFILE = st.fixed_dictionaries({"split": st.just("train")}, optional={
    "inputs": st.fixed_dictionaries({}, optional={"count": NUM, "dtype": st.sampled_from(["float32", "int64"]),
                                                  "min": NUM, "max": NUM, "mean": NUM, "std": NUM, "rms": NUM,
                                                  "integer_valued": st.booleans(), "max_std": NUM, "min_std": NUM,
                                                  "max_abs_mean": NUM}),
    "targets": st.fixed_dictionaries({}, optional={"kind": st.sampled_from(["continuous", "class_index", None]),
                                                   "count": NUM, "rms": NUM, "mean": NUM, "std": NUM, "min": NUM,
                                                   "max": NUM}),
    "samples": NUM, "loss_kind": KINDS, "live": st.booleans()})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs=st.lists(GRAPH, max_size=2), profiles=st.lists(PROFILE, max_size=2))
def test_configuration_rules_never_raise(graphs, profiles):
    events = [Event(0, "model_graph", g) for g in graphs] + [Event(0, "data_profile", p) for p in profiles]
    run = Run(meta={"loss_kind": "cross_entropy"}, events=events)
    findings, internal = evaluate(run)
    assert internal == [], internal
    doc = json.loads(to_json_text(diagnose(run)))
    assert doc["schema"] == "traindoctor/1"
