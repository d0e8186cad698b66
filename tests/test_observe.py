"""Observing changes nothing: the same seeded run with and without the doctor ends bitwise equal.

The script below is built to catch a doctor that touches the run: dropout and a global-RNG
shuffle (a replay that consumed random numbers would shift them), BatchNorm (a replay that
updated running statistics would show), and a NaN sample mid-run (which triggers the one-off
replay of the failing forward pass).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.nn as nn
    torch.manual_seed(0)
    X = torch.randn(256, 20); y = (X[:, 0] > 0).long()
    if "--nan" in sys.argv:
        X[77] = 3e38  # finite input, but the first Linear overflows: a NaN born inside the model
    model = nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(6):
        perm = torch.randperm(256)
        for i in range(0, 256, 16):
            idx = perm[i:i + 16]
            opt.zero_grad()
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
        print(f"epoch {epoch} loss {loss.item():.6f}")
    torch.save({"state": model.state_dict(), "rng": torch.get_rng_state()}, sys.argv[1])
    """
)


def _run(cmd, cwd):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)
    return p


def _bytes(path):
    d = torch.load(path)
    return {k: v.numpy().tobytes() for k, v in d["state"].items()}, d["rng"].numpy().tobytes()


def test_bitwise_identical_with_and_without_the_doctor(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    for extra in ([], ["--nan"]):
        bare = _run([sys.executable, str(script), str(tmp_path / "bare.pt"), *extra], tmp_path)
        watched = _run([sys.executable, "-m", "traindoctor", "run", "--no-store", "--cadence", "1",
                        str(script), str(tmp_path / "watched.pt"), *extra], tmp_path)
        assert bare.returncode == 0 and watched.returncode == 0, watched.stderr
        assert bare.stdout == watched.stdout  # the script's own output, untouched
        assert _bytes(tmp_path / "bare.pt") == _bytes(tmp_path / "watched.pt")
        if extra:
            assert "L001" in watched.stderr and "A004" in watched.stderr  # the replay ran


def test_exit_code_of_the_script_is_kept(tmp_path):
    script = tmp_path / "bye.py"
    script.write_text("import sys\nprint('hello')\nsys.exit(3)\n")
    p = _run([sys.executable, "-m", "traindoctor", "run", "--no-store", str(script)], tmp_path)
    assert p.returncode == 3 and p.stdout == "hello\n"


def test_script_sees_its_own_argv_and_main(tmp_path):
    script = tmp_path / "args.py"
    script.write_text("import sys\nif __name__ == '__main__':\n    print(sys.argv[1:], sys.argv[0].endswith('args.py'))\n")
    p = _run([sys.executable, "-m", "traindoctor", "run", "--no-store", str(script), "--lr", "3", "x"], tmp_path)
    assert p.returncode == 0 and p.stdout == "['--lr', '3', 'x'] True\n"


def test_printed_validation_metrics_are_read_and_stdout_is_untouched(tmp_path):
    import io

    from traindoctor.watch.launcher import watch_script

    script = tmp_path / "printed.py"
    script.write_text(textwrap.dedent(
        """
        import torch, torch.nn as nn
        torch.manual_seed(0)
        X = torch.randn(256, 10); y = (X[:, 0] > 0).long()
        m = nn.Linear(10, 2); opt = torch.optim.SGD(m.parameters(), 0.1)
        for ep in range(3):
            for i in range(0, 256, 32):
                opt.zero_grad()
                out = m(X[i:i + 32])
                loss = -torch.log_softmax(out, 1).gather(1, y[i:i + 32, None]).mean()  # by hand: no loss function
                loss.backward(); opt.step()
            print(f"epoch {ep}: val_acc={50 + 10 * ep:.1f}%  Validation loss: {1 / (ep + 1):.3f}")
        """))
    r = watch_script(script, [], store="", err=io.StringIO())
    acc, vl = r.run.get("val_accuracy"), r.run.get("val_loss")
    assert list(acc.values) == [0.5, 0.6, 0.7] and list(acc.steps) == [7, 15, 23]
    assert list(vl.values) == [1.0, 0.5, 0.333]
    bare = _run([sys.executable, str(script)], tmp_path)
    watched = _run([sys.executable, "-m", "traindoctor", "run", "--no-store", str(script)], tmp_path)
    assert bare.stdout == watched.stdout


AMP_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(0)
    X = torch.randn(512, 20); y = (X[:, 0] > 0).long()
    if "--nan" in sys.argv:
        X[300, 4] = float("nan")  # a NaN sample: the dataset scan names it, the replay runs, the scaler skips
    model = nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")
    loader = DataLoader(TensorDataset(X, y), batch_size=16, shuffle=True)  # global-RNG shuffle
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(3):
        for xb, yb in loader:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_fn(model(xb), yb)
            (scaler.scale(loss) / 2).backward()
            scaler.step(opt)
            scaler.update()
        print(f"epoch {epoch} loss {loss.item():.6f} scale {scaler.get_scale()}")
    torch.save({"state": model.state_dict(), "rng": torch.get_rng_state()}, sys.argv[1])
    """
)


def test_bitwise_identical_under_a_grad_scaler_and_a_dataset_scan(tmp_path):
    """GradScaler.scale is wrapped and the loader's TensorDataset is scanned in a thread: same bits."""
    script = tmp_path / "amp.py"
    script.write_text(AMP_SCRIPT)
    for extra in ([], ["--nan"]):
        bare = _run([sys.executable, str(script), str(tmp_path / "bare.pt"), *extra], tmp_path)
        watched = _run([sys.executable, "-m", "traindoctor", "run", "--no-store", "--cadence", "1",
                        str(script), str(tmp_path / "watched.pt"), *extra], tmp_path)
        assert bare.returncode == 0 and watched.returncode == 0, watched.stderr
        assert bare.stdout == watched.stdout
        assert _bytes(tmp_path / "bare.pt") == _bytes(tmp_path / "watched.pt")
        if extra:
            assert "traindoctor: D001" in watched.stderr and "[300]" in watched.stderr
