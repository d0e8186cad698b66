"""The clinic's base tasks: what people train, each rendered as the data and model sections of a script.

A task knows its data (scikit-learn's bundled datasets or generated data, never a download),
its kind (multiclass, binary, regression, multilabel, lm, autoencoder, multitask), how its
inputs are scaled, and how to write its model in the styles drawn per run: an ``nn.Sequential``,
a class with ``nn`` modules, or a class whose ``forward`` calls ``F.relu``/``torch.tanh``. The
model honours the fault knobs that concern it (output activation, missing nonlinearity, detach,
frozen BatchNorm statistics, dropout, width and depth) and ``hp_space`` says which
hyperparameters make sense for it when healthy runs are drawn.
"""
from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .spec import Spec

ACT_MODULE = {"relu": "nn.ReLU()", "tanh": "nn.Tanh()", "gelu": "nn.GELU()", "leaky_relu": "nn.LeakyReLU(0.01)",
              "sigmoid": "nn.Sigmoid()", "elu": "nn.ELU()"}
ACT_FN = {"relu": "F.relu", "tanh": "torch.tanh", "gelu": "F.gelu", "leaky_relu": "F.leaky_relu",
          "sigmoid": "torch.sigmoid", "elu": "F.elu"}
OUT_MODULE = {"relu": "nn.ReLU()", "sigmoid": "nn.Sigmoid()", "softmax": "nn.Softmax(dim=1)", "tanh": "nn.Tanh()",
              "log_softmax": "nn.LogSoftmax(dim=1)"}
OUT_FN = {"relu": "F.relu({})", "sigmoid": "torch.sigmoid({})", "softmax": "F.softmax({}, dim=1)",
          "tanh": "torch.tanh({})", "log_softmax": "F.log_softmax({}, dim=1)"}


def dd(s: str) -> str:
    return textwrap.dedent(s).strip("\n")


@dataclass
class Task:
    name: str
    kind: str
    doc: str
    data_code: str
    n_in: str  # expression for the input width (after the data section)
    n_classes: int | None  # outputs of the head (classes, labels, 1 for regression)
    model_fn: Callable[[Spec, Task], str]
    x_scaling: str = "feature"  # "feature" | "global" | "none"
    extra_imports: str = ""
    hp_space: dict[str, Any] = field(default_factory=dict)
    supports: frozenset[str] = frozenset()
    assets: tuple[str, ...] = ()
    held_out_only: bool = False

    def imports(self, spec: Spec) -> str:
        imp = self.extra_imports
        if spec.hp.get("scaler") == "sklearn":
            imp += "\nfrom sklearn.preprocessing import StandardScaler"
        return imp.strip("\n")

    def asset_paths(self, spec: Spec) -> str:
        return ""

    def data(self, spec: Spec) -> str:
        return dd(self.data_code)

    def model(self, spec: Spec) -> str:
        return self.model_fn(spec, self)

    def n_out(self, spec: Spec) -> int:
        if spec.k("loss") == "mse_on_labels":
            return 1
        if self.kind == "binary" and spec.hp.get("binary_head") == "two":
            return 2
        return int(self.n_classes or 1)

    def extra_step(self, spec: Spec) -> str:
        return ""


# ---------------------------------------------------------------------------------------- model writers
def _head_act(spec: Spec) -> str | None:
    oa = spec.k("out_act")
    if oa:
        return oa
    loss = spec.k("loss")
    if loss in ("sigmoid_bce",):
        return "sigmoid"
    if loss == "keras_ce":
        return "softmax"
    return None


def mlp(spec: Spec, task: Task, n_in: str | None = None, n_out: int | None = None) -> str:
    """An MLP in one of three styles, with the knobs that concern it."""
    hp = spec.hp
    width = int(spec.k("width") or hp.get("width", 64))
    depth = int(spec.k("depth") or hp.get("depth", 2))  # hidden layers
    act = spec.k("act") or hp.get("act", "relu")
    p = spec.k("dropout", hp.get("dropout", 0.0))
    norm = hp.get("norm", "none")
    style = hp.get("style", "nn")
    if spec.k("detach") or spec.k("bn_frozen"):
        style = "class"
    n_in = n_in or task.n_in
    n_out = n_out if n_out is not None else task.n_out(spec)
    no_nonlin = bool(spec.k("no_nonlin"))
    head_act = _head_act(spec)
    sizes = [n_in] + [str(width)] * depth
    if style == "nn":
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers.append(f"nn.Linear({a}, {b})")
            if norm == "bn":
                layers.append(f"nn.BatchNorm1d({b})")
            elif norm == "ln":
                layers.append(f"nn.LayerNorm({b})")
            if not no_nonlin:
                layers.append(ACT_MODULE[act])
            if p:
                layers.append(f"nn.Dropout({p})")
        layers.append(f"nn.Linear({sizes[-1]}, {n_out})")
        if head_act:
            layers.append(OUT_MODULE[head_act])
        body = ",\n".join("    " + x for x in layers)
        return f"model = nn.Sequential(\n{body},\n)"
    # class styles: nn modules as attributes ("class") or functional activations ("functional")
    functional = style == "functional"
    init = ["super().__init__()"]
    init.append(f"self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip({sizes[:-1]!r}, {sizes[1:]!r})])"
                .replace("'", ""))
    if norm == "bn":
        init.append(f"self.norms = nn.ModuleList([nn.BatchNorm1d({width}) for _ in range({depth})])")
    elif norm == "ln":
        init.append(f"self.norms = nn.ModuleList([nn.LayerNorm({width}) for _ in range({depth})])")
    if not functional and not no_nonlin:
        init.append(f"self.act = {ACT_MODULE[act]}")
    if p:
        init.append(f"self.drop = nn.Dropout({p})")
    init.append(f"self.head = nn.Linear({width}, {n_out})")
    fwd = ["h = x", "for i, layer in enumerate(self.layers):", "    h = layer(h)"]
    if norm != "none":
        fwd.append("    h = self.norms[i](h)")
    if not no_nonlin:
        fwd.append(f"    h = {ACT_FN[act]}(h)" if functional else "    h = self.act(h)")
    if p:
        fwd.append("    h = self.drop(h)")
    if spec.k("detach"):
        fwd.append("h = h.detach()  # features are fixed; only the head learns")
    fwd.append("out = self.head(h)")
    if head_act:
        fwd.append(f"out = {OUT_FN[head_act].format('out')}" if functional else "out = self.out_act(out)")
        if not functional:
            init.append(f"self.out_act = {OUT_MODULE[head_act]}")
    fwd.append("return out")
    cls = "\n".join(["class Net(nn.Module):", "    def __init__(self):"] + ["        " + x for x in init] + ["",
                     "    def forward(self, x):"] + ["        " + x for x in fwd])
    cls += "\n\nmodel = Net()"
    if spec.k("bn_frozen") and norm == "bn":
        cls += "\nfor m in model.norms:\n    m.momentum = 0.0  # keep the statistics of the first batch"
    return cls


def residual_mlp(spec: Spec, task: Task) -> str:
    hp = spec.hp
    width = int(spec.k("width") or hp.get("width", 64))
    depth = int(spec.k("depth") or hp.get("depth", 3))
    p = spec.k("dropout", hp.get("dropout", 0.1))
    norm = "nn.BatchNorm1d" if hp.get("norm") == "bn" else "nn.LayerNorm"
    act = ACT_MODULE[spec.k("act") or hp.get("act", "gelu")] if not spec.k("no_nonlin") else "nn.Identity()"
    head_act = _head_act(spec)
    head = f"self.head = nn.Linear({width}, {task.n_out(spec)})"
    ret = "return self.head(h)" if not head_act else f"return {OUT_FN[head_act].format('self.head(h)')}"
    bn_fix = ""
    if spec.k("bn_frozen") and norm == "nn.BatchNorm1d":
        bn_fix = ("\nfor m in model.modules():\n    if isinstance(m, nn.BatchNorm1d):\n"
                  "        m.momentum = 0.0  # statistics frozen at their initial values")
    det = "\n                h = h.detach()  # pretrained trunk stays as it is" if spec.k("detach") else ""
    return dd(f"""
        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.norm = {norm}(d)
                self.fc1 = nn.Linear(d, 2 * d)
                self.act = {act}
                self.drop = nn.Dropout({p})
                self.fc2 = nn.Linear(2 * d, d)

            def forward(self, x):
                return x + self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


        class ResNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.inp = nn.Linear({task.n_in}, {width})
                self.blocks = nn.Sequential(*[Block({width}) for _ in range({depth})])
                self.norm = {norm}({width})
                {head}

            def forward(self, x):
                h = self.norm(self.blocks(self.inp(x))){det}
                {ret}


        model = ResNet()""") + bn_fix


def cnn(spec: Spec, task: Task) -> str:
    hp = spec.hp
    c = int(spec.k("width") or hp.get("width", 16))
    act = spec.k("act") or hp.get("act", "relu")
    a = ACT_MODULE[act] if not spec.k("no_nonlin") else None
    bn = hp.get("norm") == "bn"
    p = spec.k("dropout", hp.get("dropout", 0.0))
    head_act = _head_act(spec)
    feats = [f"nn.Conv2d(1, {c}, 3, padding=1)"] + ([f"nn.BatchNorm2d({c})"] if bn else []) + ([a] if a else []) + \
        ["nn.MaxPool2d(2)", f"nn.Conv2d({c}, {2 * c}, 3, padding=1)"] + ([f"nn.BatchNorm2d({2 * c})"] if bn else []) + \
        ([a] if a else [])
    cls_layers = ["nn.Flatten()"] + ([f"nn.Dropout({p})"] if p else []) + [f"nn.Linear({2 * c} * 16, {task.n_out(spec)})"]
    if head_act:
        cls_layers.append(OUT_MODULE[head_act])
    if spec.k("detach") or spec.k("bn_frozen"):
        fwd = "h = self.features(x)" + (".detach()  # reuse the features as they are" if spec.k("detach") else "")
        out = dd(f"""
            class ConvNet(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.features = nn.Sequential({', '.join(feats)})
                    self.classifier = nn.Sequential({', '.join(cls_layers)})

                def forward(self, x):
                    {fwd}
                    return self.classifier(h)


            model = ConvNet()""")
        if spec.k("bn_frozen") and bn:
            out += ("\nfor m in model.modules():\n    if isinstance(m, nn.BatchNorm2d):\n"
                    "        m.momentum = 0.0  # keep the pretrained statistics")
        return out
    body = ",\n".join("    " + x for x in feats + cls_layers)
    return f"model = nn.Sequential(\n{body},\n)"


def rnn(spec: Spec, task: Task) -> str:
    hp = spec.hp
    h = int(spec.k("width") or hp.get("width", 32))
    cell = spec.k("cell") or hp.get("cell", "GRU")
    layers = int(hp.get("depth", 1))
    head_act = _head_act(spec)
    ret = "self.head(h[-1])" if not head_act else OUT_FN[head_act].format("self.head(h[-1])")
    if cell == "LSTM":
        call = "_, (h, _) = self.rnn(x)"
    else:
        call = "_, h = self.rnn(x)"
    det = "\n                h = h.detach()" if spec.k("detach") else ""
    extra = ", nonlinearity='tanh'" if cell == "RNN" else ""
    return dd(f"""
        class SeqNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.{cell}({task.n_in}, {h}, num_layers={layers}, batch_first=True{extra})
                self.head = nn.Linear({h}, {task.n_out(spec)})

            def forward(self, x):
                {call}{det}
                return {ret}


        model = SeqNet()""")


def transformer_lm(spec: Spec, task: Task) -> str:
    hp = spec.hp
    d = int(spec.k("width") or hp.get("width", 32))
    layers = int(spec.k("depth") or hp.get("depth", 2))
    p = spec.k("dropout", hp.get("dropout", 0.0))
    head_act = _head_act(spec)
    ret = "self.head(h)" if not head_act else OUT_FN[head_act].replace("dim=1", "dim=-1").format("self.head(h)")
    return dd(f"""
        class TinyGPT(nn.Module):
            def __init__(self, vocab, d={d}, n_layers={layers}, ctx=T):
                super().__init__()
                self.tok = nn.Embedding(vocab, d)
                self.pos = nn.Parameter(torch.zeros(1, ctx, d))
                layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=4 * d, dropout={p}, batch_first=True,
                                                   norm_first=True)
                self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
                self.ln = nn.LayerNorm(d)
                self.head = nn.Linear(d, vocab)
                self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(ctx))

            def forward(self, idx):
                t = idx.shape[1]
                h = self.tok(idx) + self.pos[:, :t]
                h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
                h = self.ln(h)
                return {ret}


        model = TinyGPT(V)""")


def autoencoder(spec: Spec, task: Task) -> str:
    hp = spec.hp
    w = int(spec.k("width") or hp.get("width", 32))
    code = int(hp.get("code", 8))
    act = spec.k("act") or hp.get("act", "relu")
    a = ACT_MODULE[act] if not spec.k("no_nonlin") else None
    enc = [f"nn.Linear({task.n_in}, {w})"] + ([a] if a else []) + [f"nn.Linear({w}, {code})"]
    dec = [f"nn.Linear({code}, {w})"] + ([a] if a else []) + [f"nn.Linear({w}, {task.n_in})"]
    if spec.k("out_act"):
        dec.append(OUT_MODULE[spec.k("out_act")])
    return dd(f"""
        class AutoEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = nn.Sequential({', '.join(enc)})
                self.decoder = nn.Sequential({', '.join(dec)})

            def forward(self, x):
                z = self.encoder(x){'.detach()' if spec.k('detach') else ''}
                return self.decoder(z)


        model = AutoEncoder()""")


def finetune_model(spec: Spec, task: Task) -> str:
    hp = spec.hp
    freeze = hp.get("freeze", True) or spec.k("bad_checkpoint")
    state = "torch.load('backbone.pt')"
    if spec.k("bad_checkpoint"):
        # a checkpoint saved from nn.DataParallel: every key has a 'module.' prefix
        load = dd("""
            state = torch.load('backbone.pt')
            state = {'module.' + k: v for k, v in state.items()}  # as saved by the training server
            backbone.load_state_dict(state, strict=False)""")
    else:
        load = f"backbone.load_state_dict({state})"
    frz = dd("""
        for p in backbone.parameters():
            p.requires_grad = False""") if freeze else ""
    head_act = _head_act(spec)
    ret = "self.head(self.backbone(x))" if not head_act else OUT_FN[head_act].format("self.head(self.backbone(x))")
    head = dd(f"""
        class FineTuned(nn.Module):
            def __init__(self, backbone):
                super().__init__()
                self.backbone = backbone
                self.head = nn.Linear(32, {task.n_out(spec)})

            def forward(self, x):
                return {ret}


        model = FineTuned(backbone)""")
    trunk = "backbone = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU())"
    return "\n".join(x for x in (trunk, load, frz) if x) + "\n\n\n" + head


# ---------------------------------------------------------------------------------------- data sections
DIGITS = """\
from_digits = load_digits()
X, y = from_digits.data.astype(np.float32), from_digits.target
Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed}, stratify=y)
"""


class T(Task):
    def data(self, spec: Spec) -> str:
        return dd(self.data_code).replace("{seed}", str(spec.seed))


SKL = "from sklearn.datasets import {0}\nfrom sklearn.model_selection import train_test_split"

CLS_SPACE = {"width": [32, 64, 128], "depth": [1, 2, 3], "batch_size": [16, 32, 64], "epochs": [8, 12, 16]}
MLP_SUPPORTS = frozenset({"out_act", "no_nonlin", "detach", "dropout", "width", "depth", "act", "init", "dead_bias",
                          "bn_frozen"})


def _tasks() -> list[Task]:
    return [
        T("digits_mlp", "multiclass", "Handwritten digits (8x8), an MLP.", DIGITS, "64", 10, mlp,
          extra_imports=SKL.format("load_digits"), hp_space=dict(CLS_SPACE), supports=MLP_SUPPORTS),
        T("digits_cnn", "multiclass", "Handwritten digits as 1x8x8 images, a small CNN.", DIGITS +
          "Xtr, Xva = Xtr.reshape(-1, 1, 8, 8), Xva.reshape(-1, 1, 8, 8)\n", "64", 10, cnn, x_scaling="global",
          extra_imports=SKL.format("load_digits"),
          hp_space={"width": [8, 16], "batch_size": [32, 64], "epochs": [6, 8, 10]},
          supports=frozenset({"out_act", "no_nonlin", "detach", "dropout", "width", "init", "bn_frozen"})),
        T("digits_bn_cnn", "multiclass", "Digits, a CNN with BatchNorm and dropout.", DIGITS +
          "Xtr, Xva = Xtr.reshape(-1, 1, 8, 8), Xva.reshape(-1, 1, 8, 8)\n", "64", 10,
          lambda s, t: cnn(Spec(s.task, s.seed, {**s.hp, "norm": "bn", "dropout": s.hp.get("dropout", 0.25)},
                                s.fault, s.severity, s.knobs), t),
          x_scaling="global", extra_imports=SKL.format("load_digits"),
          hp_space={"width": [8, 16], "batch_size": [32, 64], "epochs": [6, 8, 10]},
          supports=frozenset({"out_act", "no_nonlin", "dropout", "width", "init", "bn_frozen", "detach"})),
        T("cancer_mlp", "binary", "Breast cancer (Wisconsin) tabular data, binary classifier.", """
            X, y = load_breast_cancer(return_X_y=True)
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.3, random_state={seed}, stratify=y)
        """, "30", 1, mlp, extra_imports=SKL.format("load_breast_cancer"),
          hp_space={"width": [16, 32, 64], "depth": [1, 2], "batch_size": [16, 32], "epochs": [15, 20, 30],
                    "binary_head": ["one", "two"]}, supports=MLP_SUPPORTS),
        T("wine_mlp", "multiclass", "Wine cultivars (13 chemical measurements), a small MLP.", """
            X, y = load_wine(return_X_y=True)
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.3, random_state={seed}, stratify=y)
        """, "13", 3, mlp, extra_imports=SKL.format("load_wine"),
          hp_space={"width": [16, 32], "depth": [1, 2], "batch_size": [8, 16], "epochs": [30, 40, 60]},
          supports=MLP_SUPPORTS, held_out_only=True),
        T("blobs_mlp", "multiclass", "Generated Gaussian blobs in 20 dimensions, 5 classes.", """
            X, y = make_blobs(n_samples=2000, centers=5, n_features=20, cluster_std=4.0, random_state={seed})
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed})
        """, "20", 5, mlp, extra_imports=SKL.format("make_blobs"), hp_space=dict(CLS_SPACE), supports=MLP_SUPPORTS),
        T("moons_mlp", "binary", "Two interleaving moons with noise, two-logit classifier.", """
            X, y = make_moons(n_samples=1600, noise=0.25, random_state={seed})
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed})
        """, "2", 1, mlp, extra_imports=SKL.format("make_moons"),
          hp_space={"width": [32, 64], "depth": [2, 3], "batch_size": [16, 32, 64], "epochs": [12, 16, 20],
                    "binary_head": ["two", "one"]}, supports=MLP_SUPPORTS),
        T("circles_mlp", "binary", "Concentric circles, a deeper narrow MLP.", """
            X, y = make_circles(n_samples=1600, noise=0.08, factor=0.5, random_state={seed})
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed})
        """, "2", 1, mlp, extra_imports=SKL.format("make_circles"),
          hp_space={"width": [16, 32], "depth": [3, 4, 6], "batch_size": [16, 32], "epochs": [15, 20],
                    "act": ["tanh", "relu"]}, supports=MLP_SUPPORTS),
        T("classif_resnet", "multiclass", "Generated 10-class tabular data, a residual MLP with normalisation and "
          "dropout.", """
            X, y = make_classification(n_samples=3000, n_features=40, n_informative=20, n_classes=10,
                                       n_clusters_per_class=1, class_sep=1.5, random_state={seed})
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed})
        """, "40", 10, residual_mlp, extra_imports=SKL.format("make_classification"),
          hp_space={"width": [32, 64], "depth": [2, 3], "batch_size": [32, 64], "epochs": [8, 10, 12],
                    "norm": ["ln", "bn"]},
          supports=frozenset({"out_act", "no_nonlin", "dropout", "width", "depth", "init", "bn_frozen", "detach"})),
        T("diabetes_reg", "regression", "Diabetes progression (10 features), an MLP regressor.", """
            X, y = load_diabetes(return_X_y=True)
            y = y.astype(np.float64)
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed})
            ytr, yva = ytr[:, None], yva[:, None]
        """, "10", 1, mlp, extra_imports=SKL.format("load_diabetes"),
          hp_space={"width": [32, 64], "depth": [1, 2], "batch_size": [16, 32], "epochs": [20, 30, 40],
                    "reg_loss": ["mse", "huber"]}, supports=MLP_SUPPORTS),
        T("friedman_reg", "regression", "Friedman #1 generated regression, an MLP regressor.", """
            X, y = make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state={seed})
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed})
            ytr, yva = ytr[:, None], yva[:, None]
        """, "10", 1, mlp, extra_imports=SKL.format("make_friedman1"),
          hp_space={"width": [32, 64], "depth": [2, 3], "batch_size": [32, 64], "epochs": [15, 20, 25]},
          supports=MLP_SUPPORTS, held_out_only=True),
        T("multilabel_mlp", "multilabel", "Generated multi-label data (5 labels), BCE-with-logits.", """
            X, y = make_multilabel_classification(n_samples=2000, n_features=30, n_classes=5, n_labels=2,
                                                  random_state={seed})
            Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state={seed})
        """, "30", 5, mlp, extra_imports=SKL.format("make_multilabel_classification"),
          hp_space={"width": [32, 64], "depth": [1, 2], "batch_size": [32, 64], "epochs": [10, 15]},
          supports=MLP_SUPPORTS),
        T("digits_autoencoder", "autoencoder", "Digits autoencoder (64 → 8 → 64), reconstruction MSE.", DIGITS,
          "64", 64, autoencoder, extra_imports=SKL.format("load_digits"),
          hp_space={"width": [32, 48], "batch_size": [32, 64], "epochs": [10, 15, 20]},
          supports=frozenset({"no_nonlin", "detach", "width", "act", "init", "dead_bias"})),
        T("seq_gru", "multiclass", "Noisy sine sequences (length 24), classify the frequency band; a GRU.", """
            n, t = 1500, 24
            band = rng.integers(0, 3, n)
            freq = (band + 1) * 0.25 + rng.normal(0, 0.03, n)
            phase = rng.uniform(0, 2 * np.pi, n)
            steps = np.arange(t)
            X = np.stack([np.sin(freq[:, None] * steps + phase[:, None]),
                          np.cos(freq[:, None] * steps + phase[:, None])], -1) + rng.normal(0, 0.3, (n, t, 2))
            y = band
            Xtr, Xva, ytr, yva = X[:1100], X[1100:], y[:1100], y[1100:]
        """, "2", 3, rnn, x_scaling="global",
          hp_space={"width": [32, 48], "batch_size": [32], "epochs": [12, 16], "cell": ["GRU"]},
          supports=frozenset({"out_act", "width", "init", "detach", "cell"})),
        T("seq_lstm", "binary", "Sequences of 30 noisy values: is the second half's mean above the first's? An LSTM.", """
            n, t = 1500, 30
            X = rng.normal(0, 1, (n, t, 1)) + np.linspace(-1, 1, t)[None, :, None] * rng.normal(0, 0.5, (n, 1, 1))
            y = (X[:, t // 2:, 0].mean(1) > X[:, :t // 2, 0].mean(1)).astype(np.float64)
            Xtr, Xva, ytr, yva = X[:1100], X[1100:], y[:1100], y[1100:]
        """, "1", 1, rnn, x_scaling="global",
          hp_space={"width": [16, 32], "batch_size": [32, 64], "epochs": [10, 15], "cell": ["LSTM"],
                    "binary_head": ["one"]},
          supports=frozenset({"out_act", "width", "init", "detach", "cell"}), held_out_only=True),
        T("rnn_sum", "regression", "Running-sum regression over 40 steps with a vanilla RNN.", """
            n, t = 1500, 40
            X = rng.normal(0, 1, (n, t, 1))
            y = X[:, :, 0].sum(1, keepdims=True) / np.sqrt(t)
            Xtr, Xva, ytr, yva = X[:1100], X[1100:], y[:1100], y[1100:]
        """, "1", 1, rnn, x_scaling="none",
          hp_space={"width": [16, 32], "batch_size": [32, 64], "epochs": [10, 15], "cell": ["RNN", "GRU"]},
          supports=frozenset({"width", "init", "detach", "cell"})),
        T("char_transformer", "lm", "A tiny causal transformer on generated text (character level).", """
            words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "red", "big", "sun"]
            chars = sorted(set(" ".join(words) + "."))
            stoi = {c: i for i, c in enumerate(chars)}
            V, T = len(chars), 24
            nxt = rng.dirichlet(np.full(len(words), 0.3), len(words))
            w, text = rng.integers(len(words)), []
            for _ in range(9000):
                text.append(words[w])
                w = rng.choice(len(words), p=nxt[w])
            data = np.array([stoi[c] for c in " ".join(text)])
            cut = int(0.8 * len(data))  # validation text after the training text: no shared windows
            def windows(part, n):
                starts = rng.integers(0, len(part) - T - 1, n)
                return np.stack([part[s:s + T] for s in starts]), np.stack([part[s + 1:s + T + 1] for s in starts])
            Xtr, ytr = windows(data[:cut], 1200)
            Xva, yva = windows(data[cut:], 400)
        """, "V", None, transformer_lm, x_scaling="none",
          hp_space={"width": [32, 48], "depth": [1, 2], "batch_size": [32, 64], "epochs": [4, 6, 8]},
          supports=frozenset({"width", "depth", "dropout", "init", "out_act"})),
        T("finetune_digits", "multiclass", "Fine-tune a pretrained digits backbone (loaded from disk) on a new split.",
          DIGITS + "Xtr, ytr = Xtr[:400], ytr[:400]  # a small labelled set: the point of fine-tuning\n", "64", 10,
          finetune_model, extra_imports=SKL.format("load_digits"), assets=("backbone.pt",),
          hp_space={"batch_size": [16, 32], "epochs": [15, 20, 25], "freeze": [True, False]},
          supports=frozenset({"out_act", "bad_checkpoint"})),
        T("multitask_mlp", "multitask", "Digits: class plus a regression target (pixel mass), two heads on one "
          "trunk.", DIGITS + dd("""
            rtr, rva = Xtr.sum(1), Xva.sum(1)
            """) + "\n", "64", 11, mlp, extra_imports=SKL.format("load_digits"),
          hp_space={"width": [64, 128], "depth": [1, 2], "batch_size": [32, 64], "epochs": [8, 12]},
          supports=frozenset({"width", "depth", "init", "aux_unscaled"})),
    ]


TASKS: dict[str, Task] = {t.name: t for t in _tasks()}
