"""The typed facts between the sources and the rules (traindoctor.events): each kind reads its
event's data tolerantly and writes it back unchanged, a Run hands them out, and the not-judged
entries carry a scope while staying the sentences the reports and the JSON show."""
from __future__ import annotations

import copy
import json
import math
import pickle

import pytest

from traindoctor.diagnosis import diagnose
from traindoctor.events import (
    FACTS,
    Config,
    Crash,
    DataProfile,
    FitProbe,
    InitScale,
    LabelDomain,
    LrRangeTest,
    ModelGraph,
    NonfiniteLoss,
    NotJudged,
    RunMeta,
)
from traindoctor.report.jsonout import to_json_text
from traindoctor.report.summary import verdict
from traindoctor.run import Event, Run

# one payload per kind, shaped as its source writes it
PAYLOADS: dict[str, dict] = {
    "crash": {"type": "ValueError", "message": "Expected more than 1 value per channel", "where": "t.py:3", "line": 3},
    "exit": {"code": 3},
    "interrupted": {"type": "KeyboardInterrupt"},
    "doctor_error": {"part": "forensics", "message": "boom"},
    "nonfinite_loss": {"value": float("nan"), "dtype": "float16", "batch_ids_known": True,
                       "input_nonfinite": {"tensor": "input[0]", "positions": [1, 4], "count": 2, "batch_size": 8,
                                           "sample_ids": [17, 40]},
                       "weights_nonfinite": ["fc.weight"], "in_loss": True},
    "config": {"fault": "double_softmax", "graph": ["SoftmaxBackward0", "LogSoftmaxBackward0", "NllLossBackward0"],
               "module": None},
    "model_graph": {"operations": 12, "truncated": False, "modules": [{"name": "net.0", "type": "Linear"}],
                    "sequence": ["linear@net.0", "relu"], "losses": [{"kind": "cross_entropy", "function": "cross_entropy",
                                                                      "pred_shape": [8, 10], "head": {"op": "logits"}}],
                    "handwritten": [], "stacked_linear": [], "input_ops": ["div"], "forward_site": {"where": "t.py:9"}},
    "init_scale": {"layers": [{"name": "fc", "type": "Linear", "fan_in": 4, "fan_out": 2, "std": 0.3, "mean": 0.0,
                               "default_std": 0.29, "xavier_std": 0.58, "kaiming_std": 0.71, "activation": "relu",
                               "last": True, "output_std": None}], "measured": True},
    "precision": {"param_dtypes": {"float16": 3}, "declared": "float16",
                  "absmax": [{"name": "fc", "type": "Linear", "absmax": 70000.0, "dtype": "float16"}],
                  "overall_absmax": 70000.0, "nonfinite_modules": [], "loss_reduction": "sum", "batch_size": 8,
                  "loss_value": 3.0},
    "state_dict_load": {"module": "net", "keys": 10, "loaded": 0, "missing": ["a"], "unexpected": ["b"],
                        "strict": False, "before_training": True, "where": "t.py:4"},
    "frozen_init": {"params": ["fc.weight"], "layers": [{"name": "fc.weight", "std": 0.1}], "count": 1, "numel": 8},
    "no_grad": {"params": ["fc.bias"], "count": 1, "requires_grad_false": [], "of": 2},
    "stale_grad": {"count": 2, "of": 2, "params": ["fc.weight", "fc.bias"], "where": "t.py:7"},
    "hessian": {"max_eigenvalue": 2.0, "min_eigenvalue": -0.5, "iterations": 20},
    "data_profile": {"split": "train", "samples": 64, "first_batch": False, "loss_kind": "cross_entropy",
                     "inputs": {"count": 64, "min": 0.0, "max": 255.0, "mean": 120.0, "std": 60.0, "rms": 130.0},
                     "targets": {"count": 64, "min": 0.0, "max": 9.0, "mean": 4.5, "std": 2.8, "rms": 5.3},
                     "classes": {"counts": {"0": 40, "1": 24}}, "order": {"batches": 4}},
    "data_nonfinite": {"split": "train", "where": "inputs", "count": 1, "sample_ids": [3], "ids": "index",
                       "samples_scanned": 64, "live": True},
    "label_domain": {"split": "train", "problem": "index_out_of_range", "loss_kind": "cross_entropy",
                     "output_shape": [10], "target_dtype": "int64", "ids": "index", "count": 2,
                     "sample_ids": [5, 9], "values": [10, 11]},
    "data_leakage": {"train_samples": 100, "val_samples": 20, "duplicates": 5, "fraction_of_val": 0.25,
                     "train_internal_duplicates": 0, "val_ids": [1], "train_ids": [2]},
    "input_shift": {"live": True, "median_shift_sd": 2.0, "noise_sd": 0.1, "median_abs_log_std_ratio": 0.0,
                    "noise_log_std": 0.1, "features": 4},
    "eval_train_mode": {"modules": ["drop"], "types": ["Dropout"], "where": "t.py:5", "loss": "cross_entropy"},
    "fit_probe": {"variant": "tiny_batch", "samples": 10, "fitted": False, "initial_loss": 2.3, "best_loss": 2.2,
                  "target": 0.1, "tries": [{"lr": 0.001, "steps": 50, "fitted": False}]},
    "depth_probe": {"steps": 100, "optimizer": "SGD", "how": "dropped 2 blocks", "deep": {"final_loss": 2.0},
                    "shallow": {"final_loss": 0.5}},
    "gradcheck": {"function": "MyFn", "module": "net", "passed": False, "directional_rel_error": 0.5},
    "input_baseline": {"steps": 100, "real_input_loss": 2.3, "zero_input_loss": 2.3, "evaluated_on": "held-out"},
    "label_outliers": {"samples": 100, "median_loss": 0.1, "threshold": 3.0, "above_threshold": 4,
                       "candidates": [{"id": 3, "label": 1, "loss": 5.0}], "learned": True},
    "lr_range_test": {"optimizer": "Adam", "suggested_lr": 0.003, "rule": "steepest", "min_loss_lr": 0.01,
                      "diverged_at_lr": 0.1, "user_lr": 1.0, "first_loss": None},
    "treatment": {"code": "L001", "cause": "lr-too-high", "source": "diagnosis",
                  "action": "lower the learning rate ×0.1", "changes": {"lr": [0.5, 0.05]}, "rolled_back_to": 0,
                  "quarantined": [], "treatment": 1, "loss": "nan"},
    "heal_stopped": {"code": "L001", "cause": "lr-too-high", "treatments": {"lr-too-high": 3},
                     "rolled_back_to": 50, "message": "L001 at step 90: treated 3 times; healing stopped"},
}


def test_every_event_kind_rules_read_has_a_fact_and_an_example():
    assert set(PAYLOADS) == set(FACTS)


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_round_trip_writes_back_what_the_source_wrote(kind):
    cls = FACTS[kind]
    fact = cls.from_json(PAYLOADS[kind], step=7)
    assert fact is not None and fact.kind == kind and fact.step == 7
    # repr: NaN != NaN, and the key order is part of what is written back
    assert repr(fact.to_json()) == repr(PAYLOADS[kind])
    again = cls.from_json(json.loads(json.dumps(fact.to_json())), step=7)
    assert repr(again) == repr(fact)  # repr: NaN is not equal to itself


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
@pytest.mark.parametrize("garbage", [None, 3, "text", [], [1, 2], {}])
def test_garbage_payload_gives_no_fact_or_an_empty_one(kind, garbage):
    fact = FACTS[kind].from_json(garbage)
    if isinstance(garbage, dict):
        assert fact is not None and fact.to_json() == {}
    else:
        assert fact is None


def test_wrong_types_read_as_unknown_and_unknown_keys_are_ignored():
    f = LrRangeTest.from_json({"suggested_lr": "fast", "user_lr": True, "min_loss_lr": float("inf"),
                               "shiny_new_key": 1})
    assert f is not None
    assert f.suggested_lr is None and f.user_lr is None  # a string, a bool: not numbers
    assert f.min_loss_lr == math.inf  # Inf stays a number; the rule decides what it means
    assert "shiny_new_key" not in f.to_json()
    lay = InitScale.from_json({"layers": [{"name": 3, "fan_out": 2.5, "std": "x"}, "not a layer", {}]})
    assert lay is not None and lay.layers is not None and len(lay.layers) == 1  # the non-mappings, the empty one: gone
    assert (lay.layers[0].name, lay.layers[0].fan_out, lay.layers[0].std) == (None, None, None)
    crash = Crash.from_json({"message": ["not", "text"]})
    assert crash is not None and crash.message is None and crash.text == ": "


def test_traced_graph_and_profile_are_cleaned_once_here():
    g = ModelGraph.from_json({"losses": [{"kind": "cross_entropy", "pred_shape": [8, "x"],
                                          "head": {"op": "relu", "zero_fraction": float("nan")}}, "junk"],
                              "modules": [{"type": "ReLU"}, 5], "sequence": ["relu@net.1", 7], "handwritten": "no"})
    assert g is not None and g.losses == ({"kind": "cross_entropy", "head": {"op": "relu"}},)
    assert g.handwritten is None and g.module_types == {"ReLU"} and g.op_names == {"relu", "7"}
    p = DataProfile.from_json({"split": "train", "inputs": {"count": "many", "mean": None}, "targets": 5})
    assert p is not None and p.train
    assert p.inputs == {"count": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0, "std": 0.0, "rms": 0.0}
    assert p.targets == {}
    assert DataProfile.from_json({"classes": {"counts": [1, 2]}}).class_counts == {}  # type: ignore[union-attr]


def test_old_label_domain_stores_without_num_outputs_read_the_output_shape():
    assert LabelDomain.from_json({"output_shape": [10]}).classes == 10  # type: ignore[union-attr]
    assert LabelDomain.from_json({"num_outputs": 4, "output_shape": [10]}).classes == 4  # type: ignore[union-attr]


def test_run_facts_reads_every_event_of_the_kind_and_sees_events_added_later():
    run = Run(events=[Event(0, "config", {"fault": "sigmoid_bce", "module": "net.2"}),
                      Event(1, "config", "not a mapping"),  # type: ignore[arg-type]
                      Event(2, "crash", {"type": "RuntimeError"})])
    assert [(c.step, c.fault, c.module) for c in run.facts(Config)] == [(0, "sigmoid_bce", "net.2")]
    run.events.append(Event(5, "config", {"fault": "log_softmax_unfused"}))
    assert [c.fault for c in run.facts(Config)] == ["sigmoid_bce", "log_softmax_unfused"]
    assert run.facts(FitProbe) == []
    assert len(run.events_of("config")) == 3  # the raw events stay as stored


def test_nested_records_and_an_empty_one():
    nf = NonfiniteLoss.from_json({"first_module": {"name": "net.3", "type": "Linear", "sample_ids": [1]},
                                  "input_nonfinite": {}})
    assert nf is not None and nf.input_nonfinite is None  # empty: no record, as an empty mapping was falsy
    assert nf.first_module is not None and (nf.first_module.name, nf.first_module.sample_ids) == ("net.3", (1,))


def test_run_meta_is_read_tolerantly():
    m = RunMeta.from_json({"loss_kind": "cross_entropy", "num_classes": True, "lr": "0.1", "optimizer": ["SGD"],
                           "optimizers_stepping": 2, "framework_args": {"max_grad_norm": 1.0}})
    assert (m.loss_kind, m.num_classes, m.lr, m.optimizer, m.opt_class) == ("cross_entropy", None, None, {}, None)
    assert m.optimizers_stepping == 2 and m.framework_args == {"max_grad_norm": 1.0}
    assert RunMeta.from_json(None) == RunMeta()
    assert Run(meta={"optimizer": {"class": "AdamW"}}).info.opt_class == "AdamW"


def test_not_judged_is_the_sentence_with_a_scope():
    n = NotJudged("loss", "only 3 finite loss points: too few to judge trends (need 20)")
    assert n == "only 3 finite loss points: too few to judge trends (need 20)" and str(n) == n.reason
    assert n.scope == "loss" and n.to_json() == {"scope": "loss", "reason": str(n)}
    assert copy.deepcopy(n).scope == "loss" and pickle.loads(pickle.dumps(n)).scope == "loss"
    with pytest.raises(ValueError):
        NotJudged("everything", "x")


def test_a_thin_run_is_not_judged_by_scope_and_its_json_keeps_the_sentences():
    run = Run.from_points([("loss", i, 1.0) for i in range(3)])
    d = diagnose(run)
    assert d.verdict == "not judged"
    assert [n.scope for n in d.not_judged][:1] == ["loss"]
    assert verdict(d) == "not judged: only 3 finite loss points"
    doc = json.loads(to_json_text(d))
    assert doc["not_judged"] == [str(n) for n in d.not_judged]
    assert all(isinstance(s, str) for s in doc["not_judged"])
    assert doc["not_judged_detail"] == [{"scope": n.scope, "reason": str(n)} for n in d.not_judged]
    assert "only 3 finite loss points: too few to judge trends (need 20)" in d.not_judged


def test_a_run_long_enough_is_judged_whatever_else_it_lacks():
    d = diagnose(Run.from_points([("loss", i, 2.0 * 0.97 ** i) for i in range(60)]))
    assert d.judged and all(n.scope != "loss" for n in d.not_judged)
