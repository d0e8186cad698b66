"""Turn a :class:`Spec` into a standalone training script, written the way people write them.

A script is assembled from sections: the task's data and model (``tasks.py``), then the parts
every task shares, each in several styles drawn per run — standardisation, the loader (a
``DataLoader`` or hand-sliced index batches), the loss (``nn`` module or functional, mean or sum
reduction), the optimizer and schedule, the training loop (``zero_grad`` first or last, clipping,
bfloat16 autocast, float16 with ``GradScaler``), the evaluation loop (batched under
``no_grad``, the whole split at once, ``inference_mode``, or computed by hand and only printed)
and a plain CSV log. Fault knobs change exactly the lines a real mistake would change.

The scripts never import traindoctor. They write ``log.csv`` (Lightning-style sparse rows:
``step,epoch,loss,lr,val_loss,val_acc``) and ``outcome.json`` (final metrics) into the working
directory.

Two knobs no fault operator sets add the fixes a user would reach for, for the repair benchmark
(``repair.py``; off by default, so every other script is unchanged): ``baseline_nan_plateau``
(Keras' TerminateOnNaN as a PyTorch user writes it: stop training at the first non-finite loss, before
its backward; plus ``ReduceLROnPlateau`` on the validation loss, unless the script already has one)
and ``baseline_clip`` (Lightning's ``gradient_clip_val``: ``clip_grad_norm_`` of all parameters at
that norm before every optimizer step, in place of the script's own clip).
"""
from __future__ import annotations

import textwrap

from .spec import Spec

KINDS = ("multiclass", "binary", "regression", "multilabel", "lm", "autoencoder", "multitask")


def _i(code: str, n: int) -> str:
    return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * n)


def hpk(spec: Spec, name: str, default=None):
    """A hyperparameter as the run uses it: the fault's override, else the drawn value."""
    return spec.knobs[name] if name in spec.knobs else spec.hp.get(name, default)


def _num(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------------------------------- data
def data_faults(spec: Spec, kind: str) -> str:
    """Numpy-level faults on Xtr, ytr, Xva, yva (after the task loaded them, before scaling)."""
    out = []
    classes = kind in ("multiclass", "binary")
    if spec.k("train_subset"):
        out.append(f"Xtr, ytr = Xtr[:{spec.k('train_subset')}], ytr[:{spec.k('train_subset')}]")
    if classes and spec.k("imbalance"):
        keep = spec.k("imbalance")
        out.append(textwrap.dedent(f"""\
            # keep the data as collected: the rare classes are rare
            major = np.bincount(ytr).argmax()
            keep = (ytr == major) | (rng.random(len(ytr)) < {keep})
            Xtr, ytr = Xtr[keep], ytr[keep]"""))
    if spec.k("leak"):
        out.append(textwrap.dedent(f"""\
            # more training data: add part of the held-out pool (the same pool validation is drawn from)
            extra = rng.choice(len(Xva), int({spec.k('leak')} * len(Xva)), replace=False)
            Xtr, ytr = np.concatenate([Xtr, Xva[extra]]), np.concatenate([ytr, yva[extra]])"""))
    if spec.k("label_shuffle"):
        f = spec.k("label_shuffle")
        if f >= 1:
            out.append("ytr = ytr[rng.permutation(len(ytr))]  # labels loaded from a separately sorted file")
        else:
            out.append(textwrap.dedent(f"""\
                noisy = rng.random(len(ytr)) < {f}
                ytr = ytr.copy()
                ytr[noisy] = rng.permutation(ytr[noisy])"""))
    if spec.k("label_offset"):
        out.append("ytr, yva = ytr + 1, yva + 1  # class ids as in the source file (1-based)")
    if spec.k("sort_labels"):
        out.append("order = np.argsort(ytr, kind='stable')  # grouped by class as in the source folders\n"
                   "Xtr, ytr = Xtr[order], ytr[order]")
    return "\n".join(out)


def scaling(spec: Spec, kind: str, x_scaling: str) -> str:
    out = []
    raw = spec.k("raw_inputs")
    if x_scaling != "none":
        if raw:
            out.append(f"Xtr, Xva = Xtr * {_num(raw['scale'])} + {_num(raw['offset'])}, Xva * {_num(raw['scale'])} + "
                       f"{_num(raw['offset'])}")
        elif x_scaling == "feature":
            if spec.hp.get("scaler") == "sklearn":
                out.append("scaler = StandardScaler().fit(Xtr)")
                if spec.k("val_shift") == "unscaled":
                    out.append("Xtr = scaler.transform(Xtr)")
                else:
                    out.append("Xtr, Xva = scaler.transform(Xtr), scaler.transform(Xva)")
            else:
                out.append("mu, sd = Xtr.mean(0), Xtr.std(0)\nsd[sd == 0] = 1.0  # constant features stay as they are")
                if spec.k("val_shift") == "unscaled":
                    out.append("Xtr = (Xtr - mu) / sd")
                else:
                    out.append("Xtr, Xva = (Xtr - mu) / sd, (Xva - mu) / sd")
        elif x_scaling == "global":
            out.append("mu, sd = Xtr.mean(), Xtr.std()")
            if spec.k("val_shift") == "unscaled":
                out.append("Xtr = (Xtr - mu) / sd")
            else:
                out.append("Xtr, Xva = (Xtr - mu) / sd, (Xva - mu) / sd")
        shift = spec.k("val_shift")
        if isinstance(shift, (int, float)) and not isinstance(shift, bool):
            out.append(f"Xva = Xva * {_num(1 + shift / 2)} + {_num(shift)}  # validation from the second site's scanner")
    if spec.k("nan_rows"):
        out.append(textwrap.dedent(f"""\
            Xtr = Xtr.copy()
            bad_rows = rng.choice(len(Xtr), {spec.k('nan_rows')}, replace=False)
            Xtr.reshape(len(Xtr), -1)[bad_rows, 0] = np.nan  # missing readings"""))
    if kind in ("regression", "multitask"):
        rt = spec.k("raw_targets")
        y = "ytr" if kind == "regression" else "rtr"
        yv = "yva" if kind == "regression" else "rva"
        if rt:
            out.append(f"{y}, {yv} = {y} * {_num(rt['scale'])} + {_num(rt['offset'])}, {yv} * {_num(rt['scale'])} + "
                       f"{_num(rt['offset'])}")
        elif not spec.k("aux_unscaled"):
            out.append(f"ym, ys = {y}.mean(), {y}.std()\n{y}, {yv} = ({y} - ym) / ys, ({yv} - ym) / ys")
    return "\n".join(out)


def tensors(spec: Spec, kind: str) -> str:
    xdt = "torch.long" if kind == "lm" else "torch.float32"
    if kind in ("multiclass",):
        ydt = "torch.long"
    elif kind == "lm":
        ydt = "torch.long"
    else:
        ydt = "torch.float32"
    lines = [f"Xtr, Xva = torch.tensor(Xtr, dtype={xdt}), torch.tensor(Xva, dtype={xdt})"]
    if kind == "binary" and spec.hp.get("binary_head") == "two":
        ydt = "torch.long"
    if kind == "autoencoder":
        lines.append("ytr, yva = Xtr, Xva")
    elif kind == "multitask":
        lines.append("ytr, yva = torch.tensor(ytr, dtype=torch.long), torch.tensor(yva, dtype=torch.long)")
        lines.append("rtr, rva = torch.tensor(rtr, dtype=torch.float32), torch.tensor(rva, dtype=torch.float32)")
    else:
        lines.append(f"ytr, yva = torch.tensor(ytr, dtype={ydt}), torch.tensor(yva, dtype={ydt})")
    if spec.k("fp16"):
        lines.append("Xtr, Xva = Xtr.half(), Xva.half()")
        if kind in ("regression", "autoencoder"):
            lines.append("ytr, yva = ytr.half(), yva.half()")
    return "\n".join(lines)


def batch_size(spec: Spec) -> int:
    return int(spec.k("batch_size") or spec.hp["batch_size"])


def epochs(spec: Spec) -> int:
    return int(spec.k("epochs") or spec.hp["epochs"])


def loader(spec: Spec, kind: str) -> str:
    bs = batch_size(spec)
    shuffle = not spec.k("sort_labels")
    lines = []
    if spec.hp.get("loop") == "manual":
        lines.append(f"batch_size = {bs}\nn_train = len(Xtr)")
    else:
        ds = "TensorDataset(Xtr, ytr, rtr)" if kind == "multitask" else "TensorDataset(Xtr, ytr)"
        gen = f", generator=torch.Generator().manual_seed({spec.seed})" if shuffle else ""
        lines.append(f"train_loader = DataLoader({ds}, batch_size={bs}, shuffle={shuffle}{gen})")
    if spec.hp.get("eval") == "loop":
        vds = "TensorDataset(Xva, yva, rva)" if kind == "multitask" else "TensorDataset(Xva, yva)"
        lines.append(f"val_loader = DataLoader({vds}, batch_size={max(bs, 64)})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- model faults
def init_fault(spec: Spec) -> str:
    init = spec.k("init")
    out = []
    if init == "zeros":
        out.append(textwrap.dedent("""\
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                    nn.init.zeros_(m.weight)
                    nn.init.zeros_(m.bias)"""))
    elif isinstance(init, dict):
        out.append(textwrap.dedent(f"""\
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                    nn.init.normal_(m.weight, mean=0.0, std={_num(init['std'])})"""))
    elif spec.hp.get("init") == "small":
        out.append(textwrap.dedent("""\
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.1)  # start small, let Adam find the scale
                    nn.init.zeros_(m.bias)"""))
    elif spec.hp.get("init") in ("kaiming", "xavier"):
        fn = "nn.init.kaiming_normal_(m.weight, nonlinearity='relu')" if spec.hp["init"] == "kaiming" \
            else "nn.init.xavier_uniform_(m.weight)"
        out.append(textwrap.dedent(f"""\
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    {fn}
                    nn.init.zeros_(m.bias)"""))
    if spec.k("dead_bias"):
        out.append(textwrap.dedent(f"""\
            hidden = [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]
            for m in hidden:
                nn.init.constant_(m.bias, {-abs(spec.k('dead_bias'))})  # "start the units off" """))
    if spec.k("fp16"):
        out.append("model = model.half()")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- loss
def loss_setup(spec: Spec, kind: str, n_out: int) -> str:
    """Defines ``loss_fn`` (a module or a function of (out, y))."""
    red = hpk(spec, "reduction", "mean")
    functional = spec.hp.get("style") == "functional"
    override = spec.k("loss")
    r = "" if red == "mean" else f", reduction='{red}'"
    if override == "mse_on_labels":
        return f"loss_fn = nn.MSELoss({'' if red == 'mean' else repr(red)})"
    if override == "sigmoid_bce":
        return f"loss_fn = nn.BCELoss({'' if red == 'mean' else 'reduction=' + repr(red)})"
    if override == "nll_raw":
        return f"loss_fn = nn.NLLLoss({'' if red == 'mean' else 'reduction=' + repr(red)})"
    if override == "keras_ce":
        return ("def loss_fn(p, y):  # categorical cross-entropy as in the Keras original\n"
                "    return -(F.one_hot(y, p.shape[1]) * torch.log(p + 1e-7)).sum(1).mean()")
    if kind in ("multiclass", "lm") or (kind == "binary" and spec.hp.get("binary_head") == "two"):
        return "loss_fn = F.cross_entropy" if functional and red == "mean" else f"loss_fn = nn.CrossEntropyLoss({r.lstrip(', ')})"
    if kind in ("binary", "multilabel"):
        return "loss_fn = F.binary_cross_entropy_with_logits" if functional and red == "mean" \
            else f"loss_fn = nn.BCEWithLogitsLoss({r.lstrip(', ')})"
    if kind in ("regression", "autoencoder"):
        if spec.hp.get("reg_loss") == "huber":
            return f"loss_fn = nn.HuberLoss({r.lstrip(', ')})"
        return "loss_fn = F.mse_loss" if functional and red == "mean" else f"loss_fn = nn.MSELoss({r.lstrip(', ')})"
    if kind == "multitask":
        w = spec.k("aux_weight", 1.0)
        return ("ce, mse = nn.CrossEntropyLoss(), nn.MSELoss()\n"
                "def loss_fn(out, y, r):\n"
                f"    return ce(out[:, :-1], y) + {_num(w)} * mse(out[:, -1], r)")
    raise ValueError(kind)


def loss_call(spec: Spec, kind: str, out: str, y: str, r: str = "rb") -> str:
    override = spec.k("loss")
    if override == "mse_on_labels":
        return f"loss_fn({out}.squeeze(1), {y}.float())"
    if override == "sigmoid_bce" and kind == "multiclass":
        return f"loss_fn({out}, F.one_hot({y}, {out}.shape[1]).float())"
    if kind == "lm":
        return f"loss_fn({out}.reshape(-1, {out}.shape[-1]), {y}.reshape(-1))"
    if kind == "binary" and spec.hp.get("binary_head") != "two":
        return f"loss_fn({out}.squeeze(1), {y})"
    if kind == "multitask":
        return f"loss_fn({out}, {y}, {r})"
    return f"loss_fn({out}, {y})"


def correct_expr(spec: Spec, kind: str, out: str, y: str) -> str | None:
    """Number of correct predictions in a batch (None where accuracy means nothing)."""
    if spec.k("loss") == "mse_on_labels":
        return f"({out}.squeeze(1).round() == {y}).sum().item()"
    if kind == "multiclass" or (kind == "binary" and spec.hp.get("binary_head") == "two"):
        return f"({out}.argmax(1) == {y}).sum().item()"
    if kind == "binary":
        return f"(({out}.squeeze(1) > 0).float() == {y}).sum().item()"
    if kind == "multilabel":
        return f"(({out} > 0).float() == {y}).float().mean(1).sum().item()"
    if kind == "multitask":
        return f"({out}[:, :-1].argmax(1) == {y}).sum().item()"
    return None


# ---------------------------------------------------------------------------------------- optimizer
def optimizer(spec: Spec) -> str:
    hp = {**spec.hp, **{k: spec.knobs[k] for k in ("opt", "lr") if k in spec.knobs}}
    lr = float(hp["lr"]) * float(spec.k("lr_mult", 1.0))
    wd = spec.k("wd", hp.get("wd", 0.0))
    params = "[p for p in model.parameters() if p.requires_grad]" if hp.get("params") == "trainable" \
        or spec.k("bad_checkpoint") else "model.parameters()"
    w = f", weight_decay={_num(wd)}" if wd else ""
    o = hp["opt"]
    if o == "sgd":
        return f"opt = torch.optim.SGD({params}, lr={_num(lr)}{w})"
    if o == "momentum":
        return f"opt = torch.optim.SGD({params}, lr={_num(lr)}, momentum=0.9{w})"
    if o == "nesterov":
        return f"opt = torch.optim.SGD({params}, lr={_num(lr)}, momentum=0.9, nesterov=True{w})"
    if o == "adam":
        eps = spec.k("adam_eps")
        e = f", eps={_num(eps)}" if eps else ""
        return f"opt = torch.optim.Adam({params}, lr={_num(lr)}{e}{w})"
    if o == "adamw":
        eps = spec.k("adam_eps")
        e = f", eps={_num(eps)}" if eps else ""
        return f"opt = torch.optim.AdamW({params}, lr={_num(lr)}{e}{w})"
    if o == "rmsprop":
        return f"opt = torch.optim.RMSprop({params}, lr={_num(lr)}{w})"
    if o == "adagrad":
        return f"opt = torch.optim.Adagrad({params}, lr={_num(lr)}{w})"
    raise ValueError(o)


def scheduler(spec: Spec, steps_per_epoch: str) -> tuple[str, str, str]:
    """(setup, per-step line, per-epoch line)."""
    sched = hpk(spec, "schedule", "none")
    ep = epochs(spec)
    spike = spec.k("lr_spike")
    if spike:
        a, b, m = spike["start"], spike["end"], spike["mult"]
        setup = textwrap.dedent(f"""\
            total_steps = {ep} * {steps_per_epoch}
            def lr_factor(i):  # a second warm phase meant to escape the plateau
                return {_num(m)} if {a} * total_steps <= i < {b} * total_steps else 1.0
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)""")
        return setup, "sched.step()", ""
    if sched == "none":
        return "", "", ""
    if sched == "step":
        return f"sched = torch.optim.lr_scheduler.StepLR(opt, step_size={max(1, ep // 3)}, gamma=0.3)", "", "sched.step()"
    if sched == "exp":
        return "sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)", "", "sched.step()"
    if sched == "cosine":
        return (f"sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max={ep} * {steps_per_epoch})",
                "sched.step()", "")
    if sched == "warmup":
        return (f"sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.05, total_iters=2 * {steps_per_epoch})",
                "sched.step()", "")
    if sched == "warmup_cosine":
        return (textwrap.dedent(f"""\
            warm = {steps_per_epoch}
            sched = torch.optim.lr_scheduler.SequentialLR(opt, [
                torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warm),
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max={ep} * {steps_per_epoch} - warm)],
                milestones=[warm])"""), "sched.step()", "")
    if sched == "onecycle":
        lr = float(spec.hp["lr"]) * float(spec.k("lr_mult", 1.0))
        return (f"sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr={_num(lr)}, total_steps={ep} * {steps_per_epoch})",
                "sched.step()", "")
    if sched == "restarts":
        return (f"sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=max(1, {ep} // 3) * {steps_per_epoch})",
                "sched.step()", "")
    if sched == "plateau":
        return "sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)", "", "sched.step(val_loss)"
    raise ValueError(sched)


# ---------------------------------------------------------------------------------------- loops
def train_step(spec: Spec, kind: str) -> str:
    """Body of the inner loop: xb, yb (and rb) in hand; leaves ``loss``."""
    prec = hpk(spec, "precision", "fp32")
    zero_first = spec.hp.get("loop") != "loader_zero_after"
    zero = "" if spec.k("no_zero_grad") else ("opt.zero_grad()" if spec.hp.get("loop") != "manual" else "model.zero_grad()")
    call = loss_call(spec, kind, "out", "yb")
    lines = []
    if zero and zero_first:
        lines.append(zero)
    if prec == "bf16":
        lines += ["with torch.autocast('cpu', dtype=torch.bfloat16):",
                  "    out = model(xb)",
                  f"    loss = {call}"]
    elif prec == "fp16_scaler":
        lines += ["with torch.autocast('cpu', dtype=torch.float16):",
                  "    out = model(xb)",
                  f"    loss = {call}"]
    else:
        lines += ["out = model(xb)", f"loss = {call}"]
    if spec.k("baseline_nan_plateau"):  # TerminateOnNaN
        lines += ["if not math.isfinite(loss.item()):",
                  "    print(f'step {step}: invalid loss {loss.item()}, terminating training')",
                  "    stop_training = True",
                  "    break"]
    clip = spec.k("baseline_clip") or hpk(spec, "clip")
    if prec == "fp16_scaler":
        lines.append("scaler.scale(loss).backward()")
        if clip:
            lines += ["scaler.unscale_(opt)", f"torch.nn.utils.clip_grad_norm_(model.parameters(), {_num(clip)})"]
        lines += ["scaler.step(opt)", "scaler.update()"]
    else:
        lines.append("loss.backward()")
        if clip:
            lines.append(f"torch.nn.utils.clip_grad_norm_(model.parameters(), {_num(clip)})")
        lines.append("opt.step()")
    if zero and not zero_first:
        lines.append("opt.zero_grad(set_to_none=True)")
    return "\n".join(lines)


def evaluate_fn(spec: Spec, kind: str) -> str:
    """``def evaluate() -> (val_loss, val_acc or None)`` in the run's evaluation style."""
    style = spec.hp.get("eval", "full")
    to_eval = "" if spec.k("eval_train_mode") else "model.eval()"
    red = hpk(spec, "reduction", "mean")
    correct = correct_expr(spec, kind, "out", "yb")
    fp = spec.k("fp16")
    cast = ".float()" if fp else ""
    if style == "loop":
        per = ("total += " + loss_call(spec, kind, "out", "yb", "rb") + ".item()") if red == "sum" else \
            ("total += " + loss_call(spec, kind, "out", "yb", "rb") + ".item() * len(xb)")
        denom = "n" if kind != "lm" or red != "sum" else "n * yva.shape[1]"
        unpack = "xb, yb, rb" if kind == "multitask" else "xb, yb"
        body = textwrap.dedent(f"""\
            def evaluate():
                {to_eval}
                total, correct, n = 0.0, 0, 0
                with torch.no_grad():
                    for {unpack} in val_loader:
                        out = model(xb){cast}
                        {per}
                        {'correct += ' + correct if correct else 'pass'}
                        n += len(xb)
                model.train()
                return total / {denom}, {'correct / n' if correct else 'None'}""")
        return body
    if style in ("full", "inference"):
        ctx = "torch.inference_mode()" if style == "inference" else "torch.no_grad()"
        r = "rva" if kind == "multitask" else ""
        call = loss_call(spec, kind, "out", "yva", r)
        c = correct_expr(spec, kind, "out", "yva")
        n = "len(yva)"
        if red == "sum":
            denom = "yva.numel()" if kind in ("lm", "autoencoder", "multilabel") else n
            vl = f"{call}.item() / {denom}"
        else:
            vl = f"{call}.item()"
        return textwrap.dedent(f"""\
            def evaluate():
                {to_eval}
                with {ctx}:
                    out = model(Xva){cast}
                    val_loss = {vl}
                    acc = {c + ' / ' + n if c else 'None'}
                model.train()
                return val_loss, acc""")
    if style == "manual":
        # no torch loss function: the loss is computed by hand and only printed
        if (kind == "multiclass" or (kind == "binary" and spec.hp.get("binary_head") == "two")) and not spec.k("loss"):
            vl = "-out.log_softmax(1).gather(1, yva[:, None]).mean().item()"
        elif spec.k("loss"):
            vl = loss_call(spec, kind, "out", "yva") + ".item()"
        elif kind == "binary":
            vl = "(torch.clamp(out.squeeze(1), min=0) - out.squeeze(1) * yva + torch.log1p(torch.exp(-out.squeeze(1).abs()))).mean().item()"
        elif kind in ("regression", "autoencoder"):
            vl = "((out.squeeze(-1) - yva) ** 2).mean().item()" if kind == "regression" else "((out - yva) ** 2).mean().item()"
        else:
            vl = loss_call(spec, kind, "out", "yva", "rva") + ".item()"
        c = correct_expr(spec, kind, "out", "yva")
        return textwrap.dedent(f"""\
            def evaluate():
                {to_eval}
                with torch.no_grad():
                    out = model(Xva){cast}
                    val_loss = {vl}
                    acc = {c + ' / len(yva)' if c else 'None'}
                model.train()
                return val_loss, acc""")
    raise ValueError(style)


PRINTS = (
    'print(f"epoch {epoch}: train_loss={train_loss:.4f} val_loss={val_loss:.4f}" + (f" val_acc={val_acc:.4f}" if val_acc is not None else ""))',
    'print(f"[{epoch + 1}/{EPOCHS}] loss {train_loss:.4f} | val loss {val_loss:.4f}" + (f" | val acc {100 * val_acc:.2f}%" if val_acc is not None else ""))',
    'print("epoch", epoch, "train", round(train_loss, 4), "val_loss", round(val_loss, 4), "val_acc", None if val_acc is None else round(val_acc, 4))',
)


def loop(spec: Spec, kind: str, extra_step: str = "") -> str:
    """The epoch loop: trains, logs every step to log.csv, evaluates and prints every epoch."""
    manual = spec.hp.get("loop") == "manual"
    steps_per_epoch = "len(train_loader)" if not manual else "((n_train + batch_size - 1) // batch_size)"
    s_setup, s_step, s_epoch = scheduler(spec, steps_per_epoch)
    prec = hpk(spec, "precision", "fp32")
    lines = [optimizer(spec)]
    if s_setup:
        lines.append(s_setup)
    plateau = bool(spec.k("baseline_nan_plateau")) and "ReduceLROnPlateau" not in s_setup
    if plateau:
        lines.append("plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=2)")
    if prec == "fp16_scaler":
        lines.append("scaler = torch.amp.GradScaler('cpu')")
    lines.append(f"EPOCHS = {epochs(spec)}")
    lines.append(evaluate_fn(spec, kind))
    lines.append("log = open('log.csv', 'w', newline='')\nw = csv.writer(log)\n"
                 "w.writerow(['step', 'epoch', 'loss', 'lr', 'val_loss', 'val_acc'])")
    if manual:
        perm = "torch.arange(n_train)" if spec.k("sort_labels") else "torch.randperm(n_train)"
        unpack = ("    idx = perm[i:i + batch_size]\n    xb, yb = Xtr[idx], ytr[idx]" +
                  ("\n    rb = rtr[idx]" if kind == "multitask" else ""))
        head = f"perm = {perm}\nfor i in range(0, n_train, batch_size):\n{unpack}"
    else:
        head = "for xb, yb, rb in train_loader:" if kind == "multitask" else "for xb, yb in train_loader:"
    body = train_step(spec, kind)
    if extra_step:
        body += "\n" + extra_step
    if s_step:
        body += "\n" + s_step
    body += ("\nlv = loss.item()\nrunning += lv\ncount += 1\n"
             "w.writerow([step, epoch, lv, opt.param_groups[0]['lr'], '', ''])\nstep += 1")
    pr = PRINTS[spec.seed % len(PRINTS)]
    epoch_end = textwrap.dedent(f"""\
        train_loss = running / max(count, 1)
        val_loss, val_acc = evaluate()
        w.writerow([step - 1, epoch, '', '', val_loss, '' if val_acc is None else val_acc])
        log.flush()
        {pr}""")
    if s_epoch:
        epoch_end += "\n" + s_epoch
    if plateau:
        epoch_end += "\nplateau.step(val_loss)"
    if spec.k("baseline_nan_plateau"):
        epoch_end += "\nif stop_training:\n    break"
    if manual:
        inner = head + "\n" + _i(body, 4)
    else:
        inner = head + "\n" + _i(body, 4)
    lines.append(("stop_training = False\n" if spec.k("baseline_nan_plateau") else "") + textwrap.dedent("""\
        step = 0
        final = {}
        for epoch in range(EPOCHS):
            model.train()
            running, count = 0.0, 0""") + "\n" + _i(inner, 4) + "\n" + _i(epoch_end, 4))
    lines.append(textwrap.dedent("""\
        log.close()
        with open('outcome.json', 'w') as fh:
            json.dump({'train_loss': train_loss, 'val_loss': val_loss, 'val_acc': val_acc, 'steps': step}, fh)"""))
    return "\n\n".join(lines)


HEADER = """\
import csv
import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
"""


def render(spec: Spec) -> str:
    """The whole script for ``spec``."""
    from .tasks import TASKS

    task = TASKS[spec.task]
    kind = task.kind
    parts = [f'"""{task.doc}"""', HEADER + task.imports(spec)]
    parts.append(f"torch.manual_seed({spec.seed})\nnp.random.seed({spec.seed})\nrng = np.random.default_rng({spec.seed})")
    if task.assets:
        parts.append(task.asset_paths(spec))
    parts.append(task.data(spec))
    df = data_faults(spec, kind)
    if df:
        parts.append(df)
    sc = scaling(spec, kind, task.x_scaling)
    if sc:
        parts.append(sc)
    parts.append(tensors(spec, kind))
    parts.append(loader(spec, kind))
    parts.append(task.model(spec))
    fi = init_fault(spec)
    if fi:
        parts.append(fi)
    parts.append(loss_setup(spec, kind, task.n_out(spec)))
    parts.append(loop(spec, kind, task.extra_step(spec)))
    return "\n\n".join(p.strip("\n") for p in parts if p) + "\n"
