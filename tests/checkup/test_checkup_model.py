"""Model and loss checks (M001, M002, M003, L009, M007) and the probes (M004, M005, M006, M011,
M012, V007, bisection) on real tiny faulty pipelines, each next to a healthy one."""
from __future__ import annotations

import torch
from _pipes import DATA_ONLY, digits, digits_pipeline, loader, mlp, run
from torch import nn


def test_m001_double_softmax_and_m004_cannot_overfit():
    Xtr, ytr, _, _ = digits()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1))
    r = run(model, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=["overfit"])
    assert r.finding("M001").evidence["module"] == "3"
    m4 = r.finding("M004")
    assert m4 is not None and m4.evidence["probes"][0]["best_loss"] > 1.4  # the 1.46 floor of CE on probabilities
    assert r.causes[0].id == "double-softmax"


def test_m002_sigmoid_into_bceloss():
    Xtr, ytr, _, _ = digits()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    r = run(model, loader(Xtr, (ytr >= 5).float().unsqueeze(1)), nn.BCELoss(), probes=DATA_ONLY)
    assert "M002" in r.codes and r.finding("M002").evidence["module"] == "3"
    healthy = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
    r = run(healthy, loader(Xtr, (ytr >= 5).float().unsqueeze(1)), nn.BCEWithLogitsLoss(), probes=DATA_ONLY)
    assert r.findings == []


def test_m003_init_scale_and_l009_initial_loss():
    Xtr, ytr, _, _ = digits()
    model = mlp(hidden=128, depth=3)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0)  # "gaussian init" without the 1/sqrt(fan_in)
    r = run(model, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    f = r.finding("M003")
    assert f is not None and f.evidence["layers"][0]["verdict"] == "large"
    assert f.evidence["drift"] > 100
    l9 = r.finding("L009")
    assert l9 is not None and l9.evidence["first_loss"] > 10 * l9.evidence["expected"]
    assert r.causes[0].id == "bad-initialization"
    # shrinking: a deep stack initialised at std 0.01
    model = mlp(hidden=64, depth=8)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
    f = run(model, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY).finding("M003")
    assert f is not None and f.evidence["drift"] < 1e-4
    # PyTorch's default init, Xavier and Kaiming: silent
    for init in (None, nn.init.xavier_uniform_, lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")):
        model = mlp(hidden=64, depth=3)
        if init is not None:
            for m in model:
                if isinstance(m, nn.Linear):
                    init(m.weight)
        r = run(model, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
        assert "M003" not in r.codes and "L009" not in r.codes


def test_m007_float16_overflow_risk():
    Xtr, ytr, _, _ = digits(standardize=False)
    big = Xtr * 1000  # raw values on a large scale
    model = mlp(hidden=256).half()
    r = run(model, loader(big.half(), ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    f = r.finding("M007")
    assert f is not None and f.evidence["dtype"] == "float16" and f.evidence["module"] is not None
    # the same activations in float32, declared to train under float16 autocast
    r = run(mlp(hidden=256), loader(big, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY, amp_dtype=torch.float16)
    assert "M007" in r.codes
    # float32 and nothing declared: not judged; declared float16 on standardised data: silent
    assert "M007" not in run(mlp(hidden=256), loader(big, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY).codes
    model, tl, loss, vl, opt = digits_pipeline()
    assert "M007" not in run(model, tl, loss, probes=DATA_ONLY, amp_dtype="float16").codes


class WrongSwish(torch.autograd.Function):
    """x·sigmoid(x) whose backward forgets the sigmoid's derivative."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class RightSwish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s))


class SwishNet(nn.Module):
    def __init__(self, fn):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fn = nn.Linear(64, 32), nn.Linear(32, 10), fn

    def forward(self, x):
        return self.fc2(self.fn.apply(self.fc1(x)))


def test_m006_gradient_check_of_custom_autograd_functions():
    Xtr, ytr, _, _ = digits()
    r = run(SwishNet(WrongSwish), loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=["gradcheck"])
    f = r.finding("M006")
    assert f is not None and f.evidence["function"].endswith("WrongSwish") and f.evidence["module"] == "SwishNet"
    assert f.evidence["directional_rel_error"] > 0.05
    assert r.causes[0].id == "code-bug"
    r = run(SwishNet(RightSwish), loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=["gradcheck"])
    assert r.findings == [] and r.run.events_of("gradcheck")[0].data["passed"] is True
    assert not hasattr(RightSwish, "apply") or "apply" not in RightSwish.__dict__  # our wrapper removed


class IgnoresInput(nn.Module):
    """A refactor left the input unused: the head sees a constant."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.body(torch.zeros_like(x))))


def test_m011_input_independent_baseline():
    Xtr, ytr, _, _ = digits()
    r = run(IgnoresInput(), loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=["overfit", "short_training"])
    f = r.finding("M011")
    assert f is not None and f.evidence["real_input_loss"] >= 0.95 * f.evidence["zero_input_loss"]
    assert "M004" in r.codes  # and it cannot fit 10 samples either
    assert r.causes[0].id == "code-bug"
    # labels shuffled apart from their inputs: nothing to learn from the inputs
    g = torch.Generator().manual_seed(0)
    r = run(mlp(), loader(Xtr, ytr[torch.randperm(len(ytr), generator=g)]), nn.CrossEntropyLoss(),
            probes=["short_training"])
    assert "M011" in r.codes and any(c.id == "label-noise" for c in r.causes)


def test_m005_deep_sigmoid_stack_against_its_shallow_variant():
    Xtr, ytr, _, _ = digits()
    deep = mlp(hidden=64, depth=10, act=nn.Sigmoid)
    opt = torch.optim.SGD(deep.parameters(), lr=0.1)
    r = run(deep, loader(Xtr, ytr), nn.CrossEntropyLoss(), opt=opt, probes=DATA_ONLY, shallow="auto")
    f = r.finding("M005")
    assert f is not None and f.evidence["deep"]["final_loss"] > 2 * f.evidence["shallow"]["final_loss"]
    assert "removed 9 hidden block" in f.evidence["how"]
    assert any(c.id == "optimization-difficulty" for c in r.causes)
    healthy = mlp(hidden=64, depth=3)
    r = run(healthy, loader(Xtr, ytr), nn.CrossEntropyLoss(), opt=torch.optim.Adam(healthy.parameters()),
            probes=DATA_ONLY, shallow="auto")
    assert "M005" not in r.codes and r.run.events_of("depth_probe")


def test_v007_batchnorm_statistics_frozen():
    Xtr, ytr, _, _ = digits(standardize=False)
    torch.manual_seed(0)
    frozen = nn.Sequential(nn.BatchNorm1d(64, momentum=0.0), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    r = run(frozen, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=["short_training"])
    assert "V007" in r.codes
    assert any(c.id == "batchnorm-misuse" for c in r.causes)
    torch.manual_seed(0)
    ok = nn.Sequential(nn.BatchNorm1d(64), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
    r = run(ok, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=["short_training"])
    assert "V007" not in r.codes


def test_m012_learning_rate_against_the_range_test():
    model, tl, loss, vl, _ = digits_pipeline()
    r = run(model, tl, loss, opt=torch.optim.SGD(model.parameters(), lr=30.0), probes=["lr_range"])
    f = r.finding("M012")
    assert f is not None and f.severity == "error" and r.causes[0].id == "lr-too-high"
    sug = r.suggested_lr
    assert any(f"{sug:.3g}" in fx for fx in r.causes[0].fixes)  # the measured LR, not a rule of thumb
    r = run(model, tl, loss, opt=torch.optim.SGD(model.parameters(), lr=1e-6), probes=["lr_range"])
    assert r.finding("M012") is not None and r.causes[0].id == "lr-too-low"
    r = run(model, tl, loss, opt=torch.optim.Adam(model.parameters(), lr=1e-3), probes=["lr_range"])
    assert r.findings == []


def test_bisection_names_the_samples_of_a_nonfinite_batch():
    """Finite inputs that overflow inside the model: the bisection replays the batch per sample
    and names them, with the first module whose output is non-finite (A004)."""
    Xtr, ytr, _, _ = digits()
    Xtr[[40, 41]] = 3e38
    r = run(mlp(), loader(Xtr, ytr, shuffle=False), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    ev = r.run.events_of("nonfinite_loss")[0].data
    assert ev["bisect"]["sample_ids"] == [40, 41]
    assert ev["first_module"]["name"] == "0" and ev["first_module"]["sample_ids"] == [40, 41]
    assert "A004" in r.codes and "L001" in r.codes and "D001" not in r.codes


def test_nonfinite_step_replays_the_batch_the_training_saw():
    """Given the step where a real run's loss went NaN, the checkup rebuilds that batch from the
    seeded loader and names the sample — the same one the live monitor named."""
    Xtr, ytr, _, _ = digits()
    Xtr[777] = float("nan")
    model = mlp()
    tl = loader(Xtr, ytr, seed=3)
    # where does the training meet sample 777?
    g_state = tl.generator.get_state()
    step = next(i for i, (x, _) in enumerate(tl) if not torch.isfinite(x).all())
    tl.generator.set_state(g_state)
    r = run(model, tl, nn.CrossEntropyLoss(), probes=DATA_ONLY, nonfinite_step=step)
    ev = [e for e in r.run.events_of("nonfinite_loss") if e.step == step][0].data
    assert ev["bisect"]["sample_ids"] == [777] and ev["input_nonfinite"]["sample_ids"] == [777]
    assert torch.equal(tl.generator.get_state(), g_state)  # the loader's generator is put back


def test_m008_m009_m010_the_same_trace_as_a_live_run():
    """A checkup traces its first loss with the live monitor's StepTrace: same codes, same evidence."""
    Xtr, ytr, _, _ = digits()
    torch.manual_seed(0)
    relu_out = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10), nn.ReLU())
    r = run(relu_out, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    assert r.finding("M009").evidence["module"] == "3" and r.causes[0].id == "wrong-output-activation"
    stacked = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 10))
    r = run(stacked, loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    assert r.finding("M010").evidence["pairs"][0]["dims"] == [64, 128, 10]
    one_out = mlp(out=1)
    r = run(one_out, loader(Xtr, ytr), lambda out, y: nn.functional.mse_loss(out.squeeze(1), y.float()),
            probes=DATA_ONLY)
    assert r.finding("M008") is not None and r.finding("M008").evidence["loss"] == "F.mse_loss"
