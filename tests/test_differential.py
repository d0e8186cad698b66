"""The differential diagnosis: each cause defined once, rules declare what they point at, the run's own
facts rule causes out (said in words), hazards that did not hurt are info, confidences come from the
calibrated model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.calibration import Model
from traindoctor.catalogue import CAUSES, SYMPTOMS
from traindoctor.causes import Cause, all_causes
from traindoctor.diagnosis import diagnose
from traindoctor.explain import explain, ruled_out_doc
from traindoctor.findings import Finding
from traindoctor.rules import Rule, all_rules, rule, symptoms_of
from traindoctor.run import Event, Run


def test_every_cause_is_defined_once_and_every_rule_declares_known_causes():
    causes = all_causes()
    assert set(causes) == set(CAUSES)  # one class per catalogue id, no more, no less
    for code, r in all_rules().items():
        assert code in SYMPTOMS
        assert r.causes, f"{code} declares no cause"
        assert set(r.causes) <= set(CAUSES), code
    # the symptom → cause links shown to users are the rules' declarations
    for cid in CAUSES:
        for code in symptoms_of(cid):
            assert cid in all_rules()[code].causes


def test_every_rule_out_is_explained():
    """A cause that can be ruled out says when, in its own docstring (explain and docs show it)."""
    for c in all_causes().values():
        if type(c).against is not Cause.against:
            assert ruled_out_doc(c), f"{c.id}: against() has no docstring"
            assert "Ruled out when:" in explain(c.id)


def test_a_rule_cannot_name_a_cause_it_did_not_declare():
    with pytest.raises(KeyError, match="unknown cause ids: no-such-cause"):
        rule("L001", "error", causes=("no-such-cause",))(lambda run, r: [])
    r = Rule("L001", "nonfinite-loss", "error", lambda run: [], ("lr-too-high",))
    with pytest.raises(ValueError, match="does not declare"):
        r.finding(step=0, step_end=0, message="x", causes=[("nonfinite-data", 0.9)])


def _stalled_run(lr_values):
    """A loss that falls, then sits at 60 % of where it began for most of the run."""
    steps = np.arange(600)
    loss = np.where(steps < 150, 2.3 - 0.9 * steps / 150, 1.4) + 0.01 * np.sin(steps)
    pts = [("loss", int(s), float(v)) for s, v in zip(steps, loss)]
    pts += [("lr", int(s), float(v)) for s, v in zip(range(0, 600, 50), lr_values)]
    return Run.from_points(pts, meta={"optimizer": {"class": "SGD", "momentum": 0.9, "weight_decay": 0}})


def test_a_decayed_learning_rate_rules_out_no_lr_decay():
    flat = diagnose(_stalled_run([0.1] * 12))
    assert "L006" in {f.code for f in flat.findings}
    assert "no-lr-decay" in [c.id for c in flat.causes]
    decayed = diagnose(_stalled_run([0.1] * 4 + [0.05] * 4 + [0.02] * 4))
    assert "no-lr-decay" not in [c.id for c in decayed.causes]
    out = {r.id: r for r in decayed.ruled_out}
    assert "no-lr-decay" in out and "0.1 → 0.02" in out["no-lr-decay"].reasons[0]
    j = decayed.to_json()
    assert {"id": "no-lr-decay", "title": "LR never decays", "reasons": out["no-lr-decay"].reasons,
            "evidence": ["L006"]} in j["ruled_out"]


def _chance_run(events, meta):
    """Loss pinned at ln 10 for 300 steps."""
    pts = [("loss", s, math.log(10) + 0.001 * math.sin(s)) for s in range(300)]
    return Run.from_points(pts, events=events, meta={"loss_kind": "cross_entropy", "num_classes": 10, **meta})


def _graph(head_op, loss="cross_entropy", modules=("Linear", "ReLU", "Linear")):
    return Event(0, "model_graph", {
        "modules": [{"name": str(i), "type": t} for i, t in enumerate(modules)],
        "sequence": ["linear@0", "relu@1", "linear@2", loss],
        "stacked_linear": [],
        "losses": [{"function": loss, "kind": {"nll_loss": "nll"}.get(loss, loss), "head": {"op": head_op, "module": "2"},
                    "target": {"kind": "class indices"}}]})


def test_the_first_step_trace_rules_out_a_double_softmax_and_a_wrong_output_activation():
    d = diagnose(_chance_run([_graph("logits")], {}))
    assert "L007" in {f.code for f in d.findings}
    offered = [c.id for c in d.causes]
    ruled = {r.id: r.reasons[0] for r in d.ruled_out}
    for cid in ("double-softmax", "wrong-output-activation", "wrong-loss-function"):
        assert cid not in offered and cid in ruled
    assert "raw logits" in ruled["double-softmax"]
    # log_softmax → nll_loss is the fused pairing too
    d2 = diagnose(_chance_run([_graph("log_softmax", loss="nll_loss")], {"loss_kind": "nll"}))
    assert "double-softmax" in {r.id for r in d2.ruled_out}


def test_a_balanced_data_profile_rules_out_class_imbalance():
    prof = Event(20, "data_profile", {"split": "train", "samples": 640,
                                      "classes": {"counts": {str(k): 64 for k in range(10)}}})
    d = diagnose(_chance_run([prof], {}))
    assert "class-imbalance" not in [c.id for c in d.causes]
    assert "balanced" in {r.id: r.reasons[0] for r in d.ruled_out}["class-imbalance"]


def test_adamw_default_decay_is_not_over_regularisation():
    f = all_causes()["over-regularization"]
    from traindoctor.causes.facts import Facts

    run = Run(events=[_graph("logits")], meta={"optimizer": {"class": "AdamW", "weight_decay": 0.01}, "lr": 1e-3})
    assert f.against(Facts(run, []))  # decoupled 0.01 at lr 1e-3, no dropout
    run.meta["optimizer"] = {"class": "SGD", "weight_decay": 0.5}
    assert not f.against(Facts(run, []))


def test_functional_relus_are_declared_not_measured_and_dying_relu_needs_other_evidence():
    g = _graph("logits", modules=("Linear", "Linear"))
    g.data["sequence"] = ["linear@0", "relu", "linear@1", "cross_entropy"]
    d = diagnose(_chance_run([g], {}))
    assert any("dead units (A001) were not measured" in s for s in d.not_judged)
    assert "dying-relu" not in [c.id for c in d.causes]
    assert "not measured" in {r.id: r.reasons[0] for r in d.ruled_out}["dying-relu"]


def test_a_hazard_that_did_not_hurt_is_info_and_a_warning_when_it_did():
    rules = all_rules()
    assert rules["M002"].hazard and rules["D002"].hazard and not rules["M001"].hazard
    from traindoctor.diagnosis import consequences

    hazard = Finding("D002", "unnormalized-inputs", "warning", None, None, "raw", {}, [("unnormalized-input", 0.8)])
    consequences([hazard])
    assert hazard.severity == "info"
    hazard = Finding("D002", "unnormalized-inputs", "warning", None, None, "raw", {}, [("unnormalized-input", 0.8)])
    effect = Finding("L004", "oscillation", "warning", 0, 99, "swings", {}, [("unnormalized-input", 0.15)])
    consequences([hazard, effect])
    assert hazard.severity == "warning"


def test_the_confidence_model_explains_itself():
    m = Model.from_json({"form": "per_code", "intercept": -3.0, "code_weight": {"M009": 6.0, "L005": 2.0}})
    assert m.fitted
    sup = [(0.9, "M009"), (0.3, "L005"), (0.2, "L005")]
    p = m.confidence("wrong-output-activation", sup)
    assert 0 < p < 1
    terms = dict(m.explain("wrong-output-activation", sup))
    assert math.isclose(1 / (1 + math.exp(-sum(terms.values()))), p, rel_tol=1e-9)
    # without calibration: the noisy-OR; Platt scaling keeps its ranking
    assert math.isclose(Model().confidence("x", [(0.5, "A"), (0.5, "B")]), 0.75)
    platt = Model.from_json({"form": "platt", "a": 1.5, "b": -1.0})
    lo, hi = platt.confidence("x", [(0.3, "A")]), platt.confidence("x", [(0.3, "A"), (0.6, "B")])
    assert lo < hi and math.isclose(hi, 1 / (1 + math.exp(-(1.5 * math.log(0.72 / 0.28) - 1.0))))
