"""``traindoctor run -m MODULE``, ``run -- LAUNCHER``'s bad input, and the boot hook that makes ranks watch.

The module runs are real tiny trainings in this process; the boot hook is run in fresh interpreters
that never import torch (fast): it must do nothing without ``TRAINDOCTOR=1``, never watch a launcher
or a ``python -c`` worker, and still run the ``sitecustomize`` it shadows.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from traindoctor.cli import main
from traindoctor.watch.distributed import boot_path, launcher_env, run_name

TRAIN = textwrap.dedent("""
    import json, sys
    import torch
    from torch import nn

    steps = int(sys.argv[sys.argv.index("--steps") + 1])
    torch.manual_seed(0)
    X = torch.randn(256, 4)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(steps):
        i = (step * 32) % 256
        loss = nn.functional.mse_loss(model(X[i:i + 32]), y[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    spec = globals().get("__spec__")
    with open("seen.json", "w") as fh:
        json.dump({"argv": sys.argv, "name": __name__, "spec": spec.name if spec else None,
                   "path0": sys.path[0]}, fh)
    if "--fail" in sys.argv:
        sys.exit(3)
""")


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    (tmp_path / "tpkg").mkdir()
    (tmp_path / "tpkg" / "__init__.py").write_text("")
    (tmp_path / "tpkg" / "train.py").write_text(TRAIN)
    (tmp_path / "tpkg" / "__main__.py").write_text("from tpkg import train  # noqa\n")
    (tmp_path / "nomain").mkdir()
    (tmp_path / "nomain" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "tpkg" or m.startswith("tpkg.")]:
        del sys.modules[name]


def test_run_m_runs_the_module_as_python_m_does(pkg, capsys):
    code = main(["run", "--json", "d.json", "-m", "tpkg.train", "--steps", "60", "--", "x"])
    assert code == 0
    seen = json.loads((pkg / "seen.json").read_text())
    assert seen["argv"] == [str(pkg / "tpkg" / "train.py"), "--steps", "60", "--", "x"]
    assert (seen["name"], seen["spec"], seen["path0"]) == ("__main__", "tpkg.train", str(pkg))
    d = json.loads((pkg / "d.json").read_text())
    assert d["source"]["source"] == "-m tpkg.train"
    assert not [f for f in d["findings"] if f["severity"] != "info"], d["findings"]
    stores = list((pkg / ".traindoctor" / "runs").glob("train-*.db"))
    assert len(stores) == 1
    from traindoctor.store import load_store

    assert len(load_store(stores[0]).get("loss")) == 60
    assert "run stored in" in capsys.readouterr().err


def test_run_m_package_main_and_exit_code(pkg):
    assert main(["run", "--no-store", "-mtpkg", "--steps", "25", "--fail"]) == 3
    seen = json.loads((pkg / "seen.json").read_text())
    assert seen["argv"][0] == str(pkg / "tpkg" / "__main__.py")


@pytest.mark.parametrize("argv, expect", [
    (["run", "-m", "nosuch.train"], "-m nosuch.train: no module named 'nosuch'"),
    (["run", "-m", "tpkg.nosuch"], "-m tpkg.nosuch: no module named 'tpkg.nosuch'"),
    (["run", "-m", "nomain"], "-m nomain: nomain is a package without a __main__ module"),
    (["run", "-m", "not a name"], "not a module name"),
    (["run", "--", "no-such-launcher-xyz", "train.py"], "no-such-launcher-xyz: unknown launcher: no such command"),
    (["run", "--", "./missing-launcher", "train.py"], "./missing-launcher: unknown launcher: no such file"),
    (["run", "--heal", "--", "torchrun", "train.py"], "--heal: healing treats one process"),
    (["run", "--overwrite", "--", "torchrun", "train.py"], "give --store DIR"),
])
def test_bad_input_is_one_line_and_exit_2(pkg, capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("traindoctor: error: ") and expect in err and "\n" not in err
    assert not (pkg / ".traindoctor").exists()  # nothing ran, nothing stored


@pytest.mark.parametrize("argv, expect", [
    (["run", "--"], "nothing after --"),
    (["run"], "give a training script, -m MODULE, or -- followed by a launcher command"),
    (["run", "-m"], "expected one argument"),
])
def test_missing_script_is_a_usage_error(capsys, argv, expect):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert expect in capsys.readouterr().err


def test_a_launcher_without_dashes_is_pointed_at_them(pkg, capsys, monkeypatch):
    bindir = pkg / "bin"
    bindir.mkdir()
    fake = bindir / "fakerun"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert main(["run", "fakerun", "train.py"]) == 2
    assert "put it after --: traindoctor run -- fakerun" in capsys.readouterr().err


def test_a_command_that_starts_no_rank_is_said_and_fails(pkg, capsys):
    code = main(["run", "--no-store", "--", sys.executable, "-c", "print('hello')"])
    assert code == 2
    err = capsys.readouterr().err
    assert "traindoctor: error: no rank of" in err and "RANK or LOCAL_RANK" in err


def test_run_dir_refuses_old_rank_stores(pkg, capsys):
    from traindoctor.store import RunStore

    (pkg / "old").mkdir()
    RunStore(pkg / "old" / "rank0.db", meta={"x": 1}).close()
    assert main(["run", "--store", "old", "--", sys.executable, "-c", "pass"]) == 2
    assert "already holds the run stores of ranks (rank0.db)" in capsys.readouterr().err
    assert (pkg / "old" / "rank0.db").exists()


def test_run_name():
    assert run_name(["torchrun", "--nproc-per-node", "2", "train.py", "--lr", "1"]) == "train"
    assert run_name(["torchrun", "--nproc-per-node", "2", "-m", "pkg.fit", "--x"]) == "fit"
    assert run_name(["accelerate", "launch", "a/b/go.py"]) == "go"
    assert run_name(["deepspeed"]) == "deepspeed"


# ------------------------------------------------------------------------------------------ the boot hook
def _boot_module():
    spec = importlib.util.spec_from_file_location("td_boot_under_test", Path(boot_path()) / "sitecustomize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # under another name: it does not boot
    return mod


@pytest.mark.parametrize("env, argv, orig, rank", [
    ({"TRAINDOCTOR": "1", "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}, ["train.py"], None, 1),
    ({"TRAINDOCTOR": "1", "LOCAL_RANK": "3"}, ["train.py"], None, 3),
    ({"TRAINDOCTOR": "1", "RANK": "0", "WORLD_SIZE": "2"}, ["-m"], ["python", "-u", "-m", "pkg.train", "--x"], 0),
    ({"TRAINDOCTOR": "1", "ACCELERATE_MIXED_PRECISION": "no"}, ["train.py"], None, 0),  # accelerate, one process
    ({"TRAINDOCTOR": "0", "RANK": "1"}, ["train.py"], None, None),
    ({"RANK": "1"}, ["train.py"], None, None),
    ({"TRAINDOCTOR": "1"}, ["train.py"], None, None),  # no rank: not a launched rank
    ({"TRAINDOCTOR": "1", "RANK": "1", "TRAINDOCTOR_WATCHING": "42"}, ["train.py"], None, None),  # a rank's child
    ({"TRAINDOCTOR": "1", "RANK": "1"}, ["-c", "--multiprocessing-fork"], None, None),  # a DataLoader worker
    ({"TRAINDOCTOR": "1", "RANK": "1"}, ["/venv/bin/torchrun", "train.py"], None, None),  # a launcher
    ({"TRAINDOCTOR": "1", "RANK": "1"}, ["-m"], ["python", "-m", "torch.distributed.run", "t.py"], None),
])
def test_which_processes_watch(env, argv, orig, rank):
    r = _boot_module().role(env, argv, orig or ["python", *argv])
    assert (r["rank"] if r else None) == rank
    if r is not None and argv == ["-m"]:
        assert (r["kind"], r["main"], r["world_size"]) == ("module", "pkg.train", 2)


def test_boot_hook_is_inert_for_non_ranks_and_chains_to_the_sitecustomize_it_shadows(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nopen(os.environ['MARK'], 'w').write('chained')\nVALUE = 7\n")
    probe = ("import sys, os, sitecustomize; print(sitecustomize.VALUE, 'torch' in sys.modules, "
             "os.environ.get('TRAINDOCTOR_WATCHING'), os.getpid())")
    (tmp_path / "probe.py").write_text(probe)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRAINDOCTOR")}
    for extra in ({"TRAINDOCTOR": "1"}, {"TRAINDOCTOR": "1", "RANK": "0", "WORLD_SIZE": "1"}, {}):
        mark = tmp_path / "mark"
        mark.unlink(missing_ok=True)
        env = {**base, **extra, "MARK": str(mark),
               "PYTHONPATH": os.pathsep.join([boot_path(), str(other)])}
        out = subprocess.run([sys.executable, "probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        watching = "RANK" in extra
        # the chained sitecustomize ran; torch is not imported by the hook; a rank marks its children
        value, torch_loaded, marked, pid = out.stdout.split()
        assert (value, torch_loaded, marked) == ("7", "False", pid if watching else "None")
        assert mark.read_text() == "chained"
        assert out.stderr == ""
    assert not (tmp_path / ".traindoctor").exists()  # no torch imported: nothing watched, nothing written


def test_launcher_env_puts_the_boot_first_and_keeps_the_users_path(tmp_path):
    env = launcher_env(tmp_path / "r", 5, base={"PYTHONPATH": "/mine", "TRAINDOCTOR_WATCHING": "9"})
    assert env["PYTHONPATH"] == boot_path() + os.pathsep + "/mine"
    assert (env["TRAINDOCTOR"], env["TRAINDOCTOR_CADENCE"], env["TRAINDOCTOR_DIR"]) == ("1", "5", str(tmp_path / "r"))
    assert "TRAINDOCTOR_WATCHING" not in env
    assert (Path(boot_path()) / "sitecustomize.py").is_file()


def test_boot_path_command(capsys):
    assert main(["boot-path"]) == 0
    assert capsys.readouterr().out.strip() == boot_path()


def _rank_store(path: Path, rank: int, losses: list[float]) -> None:
    from traindoctor.store import RunStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with RunStore(path, meta={"distributed": {"rank": rank, "world_size": 3}}) as st:
        st.add_points(("loss", i, v) for i, v in enumerate(losses))


def test_merge_reads_rank_stores_copied_from_several_machines(tmp_path, capsys):
    good = [2.0 * 0.98 ** i for i in range(60)]
    _rank_store(tmp_path / "job" / "nodeA" / "rank0.db", 0, good)
    _rank_store(tmp_path / "job" / "nodeB" / "rank1.db", 1, [*good[:30], *[float("nan")] * 30])
    assert main(["run", "--merge", str(tmp_path / "job"), "--json", str(tmp_path / "d.json")]) == 0
    d = json.loads((tmp_path / "d.json").read_text())
    assert [r["rank"] for r in d["source"]["ranks"]] == [0, 1]
    assert any("rank 2 left no run store" in n for n in d["notes"])  # world size 3
    (r001,) = [f for f in d["findings"] if f["code"] == "R001"]
    assert r001["evidence"]["rank"] == 1 and r001["step"] == 30
    assert any(f["message"].startswith("rank 1: loss is nan from step 30") for f in d["findings"])
    assert "traindoctor run --merge" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expect", [
    (["run", "--merge", "missing"], "--merge missing: not a directory"),
    (["run", "--merge", "."], "--merge .: holds no run store of a rank"),
])
def test_merge_bad_input(pkg, capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("traindoctor: error: ") and expect in err and "\n" not in err


def test_a_rank_that_cannot_be_watched_says_so_once_and_is_left_alone(tmp_path, monkeypatch, capsys):
    from traindoctor.store import RunStore
    from traindoctor.watch.distributed import start_rank

    blocker = tmp_path / "file"
    blocker.write_text("")
    role = {"rank": 3, "local_rank": 3, "world_size": 4, "kind": "script", "main": "train.py", "restart": 0}
    monkeypatch.setenv("TRAINDOCTOR_DIR", str(blocker / "sub"))
    hooks = sys.excepthook
    start_rank(role)
    assert "traindoctor: rank 3: not watched: cannot create" in capsys.readouterr().err
    RunStore(tmp_path / "rank3.db", meta={}).close()
    monkeypatch.setenv("TRAINDOCTOR_DIR", str(tmp_path))
    start_rank(role)  # an earlier run's store is never appended to
    err = capsys.readouterr().err
    assert "rank3.db already exists" in err and err.count("\n") == 1
    assert sys.excepthook is hooks  # nothing of the watch was installed


def test_a_launcher_that_cannot_start_is_one_line(pkg, capsys):
    bad = pkg / "notexec"
    bad.write_bytes(b"\x00\x01binary")
    bad.chmod(0o755)
    assert main(["run", "--no-store", "--", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("traindoctor: error: ") and "cannot start the launcher" in err
