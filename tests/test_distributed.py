"""Data-parallel training over MPI: same weights as one process, broadcast, resume, failures.

Run with mpiexec from the `mpich` wheel (`pip install mpi4py mpich`); skipped where MPI is absent.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnndsl.data.digits import digits_dataset
from cnndsl.diagnostics import CnnError
from cnndsl.io.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent
# the mpich wheel installs mpiexec beside the interpreter
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))


def _has_mpi4py() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


_skip_without_mpi = pytest.mark.skipif(
    not (_has_mpi4py() and MPIEXEC), reason="MPI not installed: pip install mpi4py mpich (see docs/distributed.md)")


def needs_mpi(test):
    """Multi-process tests: their own run (`pytest -m mpi`), skipped where MPI is absent."""
    return pytest.mark.mpi(_skip_without_mpi(test))

NET = """
network Tiny(classes = 10) {{
  input image: 1x28x28
  conv 4 kernel=5 stride=2 padding=same relu
  maxpool 2
  flatten
  dense 16 relu
  dense classes -> logits
}}
train {{
  epochs 2
  batch 32
  seed 3
  optimizer {optimizer}
  loss logits cross_entropy
}}
"""
OPTIMIZERS = {"sgd": "sgd lr=0.1 momentum=0.9", "adam": "adam lr=0.003"}


def _env():
    # one Numba thread per rank: several ranks share the 2 cores
    return dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1")


def _train(tmp_path, ranks: int, *args, optimizer="sgd", timeout=300):
    model = tmp_path / f"{optimizer}.cnn"
    model.write_text(NET.format(optimizer=OPTIMIZERS[optimizer]))
    cli = ["-m", "cnndsl", "train", str(model), "--data", str(tmp_path.parent / "data.npz"), "--no-progress", *args]
    if ranks == 1:
        cmd = [sys.executable, *cli, "--distributed", "none"]
    else:
        cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", *cli, "--distributed", "mpi"]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    ds = digits_dataset("all").subset(np.arange(320))  # 256 to train (8 batches of 32), 64 held out
    np.savez(base / "data.npz", x=ds.x, y=ds.y)
    return base


def _weights(run_dir: Path) -> dict:
    return load_weights(run_dir / "weights.safetensors")[0]


@needs_mpi
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_and_four_ranks_end_with_the_weights_of_one_process(data_dir, optimizer):
    runs = {}
    for ranks in (1, 2, 4):
        out = data_dir / f"{optimizer}-{ranks}"
        out.mkdir()
        r = _train(out, ranks, "--out", str(out / "run"), optimizer=optimizer)
        assert r.returncode == 0, r.stderr
        runs[ranks] = _weights(out / "run")
    for ranks in (2, 4):
        for name, value in runs[1].items():
            np.testing.assert_allclose(runs[ranks][name], value, atol=1e-5, rtol=0,
                                       err_msg=f"{ranks} ranks, {optimizer}, {name}")


@needs_mpi
def test_resume_on_two_ranks_equals_an_uninterrupted_run(data_dir):
    base = data_dir / "resume"
    base.mkdir()
    assert _train(base, 2, "--out", str(base / "whole")).returncode == 0
    assert _train(base, 2, "--out", str(base / "split"), "--epochs", "1").returncode == 0
    r = _train(base, 2, "--resume", str(base / "split"), "--epochs", "2")  # resume restores epochs 1
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    whole, split = _weights(base / "whole"), _weights(base / "split")
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name], err_msg=name)


@needs_mpi
def test_batch_that_does_not_split_over_the_ranks_is_a_clear_error(data_dir):
    base = data_dir / "badbatch"
    base.mkdir()
    r = _train(base, 2, "--out", str(base / "run"), "--batch", "33", timeout=120)
    assert r.returncode != 0
    assert "does not split over 2 processes" in r.stderr
    assert "Traceback" not in r.stderr


SCRIPT = """
import os, sys, signal
sys.path.insert(0, {root!r})
import numpy as np, cnndsl
from cnndsl.distributed import MPIComm
from cnndsl.data.dataset import Dataset
from cnndsl.train.trainer import Trainer
comm = MPIComm()
program = cnndsl.loads(open({model!r}).read())
model = cnndsl.compile(program, seed=comm.rank)        # a different initialization on every rank
data = np.load({data!r})
ds = Dataset(data["x"][:256], data["y"][:256])
trainer = Trainer(model, ds, ds, model.config, {out!r}, progress=False, comm=comm)
weights = model.store.params.data.astype(np.float64)
# one file per rank: the ranks' stdout lines can interleave in mpiexec's merged stream
with open(os.path.join({base!r}, f"checksum-{{comm.rank}}.txt"), "w") as f:
    f.write(repr(float(weights.sum())) + " " + repr(float((weights ** 2).sum())))
def on_epoch(record):
    if comm.rank == 1 and {mode!r} == "raise":
        raise RuntimeError("rank 1 fails on purpose")
    if comm.rank == 1 and {mode!r} == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
trainer.fit(on_epoch=on_epoch)
"""


def _script(data_dir, mode: str) -> list[str]:
    base = data_dir / f"script-{mode}"
    base.mkdir()
    model = base / "net.cnn"
    model.write_text(NET.format(optimizer=OPTIMIZERS["sgd"]).replace("epochs 2", "epochs 5"))
    script = base / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT), model=str(model), data=str(data_dir / "data.npz"),
                                    out=str(base / "run"), mode=mode, base=str(base)))
    return [MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", str(script)]


@needs_mpi
def test_weights_are_equal_on_every_rank_after_the_initial_broadcast(data_dir):
    r = subprocess.run(_script(data_dir, "none"), capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    base = data_dir / "script-none"
    sums = [(base / f"checksum-{rank}.txt").read_text().split() for rank in (0, 1)]
    assert sums[0] == sums[1]


@needs_mpi
@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_failing_rank_ends_the_whole_job_quickly(data_dir, mode):
    start = time.time()
    r = subprocess.run(_script(data_dir, mode), capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode != 0
    assert time.time() - start < 60
    if mode == "raise":
        assert "rank 1 fails on purpose" in r.stderr


def test_mpi_without_mpi4py_says_what_to_install(monkeypatch):
    from cnndsl.distributed import get_comm

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(CnnError) as err:
        get_comm("mpi")
    assert "pip install 'cnndsl[mpi]'" in err.value.diagnostics[0].help


def test_shards_cover_the_batch_without_overlap():
    from cnndsl.distributed import shard

    for n in (1, 5, 32, 33):
        for size in (1, 2, 3, 4):
            parts = [shard(n, r, size) for r in range(size)]
            covered = np.concatenate([np.arange(n)[p] for p in parts])
            np.testing.assert_array_equal(covered, np.arange(n))
            lengths = [p.stop - p.start for p in parts]
            assert max(lengths) - min(lengths) <= 1
