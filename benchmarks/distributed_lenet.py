"""LeNet-5 training images/s on 1 and 2 MPI ranks, and the time of one all-reduce of its gradient.

    pip install mpi4py mpich
    python benchmarks/distributed_lenet.py        # prints a table, writes benchmarks/results/distributed_lenet.json

Each run trains 3 epochs of examples/lenet5.cnn (no augmentation) on the bundled digits and
reports the images/s of the last epoch from metrics.json (the first one includes compiling).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "lenet5.cnn"
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))

ALLREDUCE = """
import time, numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
buf = np.ones(61706, np.float32)          # LeNet-5's parameter count
for _ in range(20):
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
comm.Barrier()
t0 = time.perf_counter()
for _ in range(200):
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
if comm.rank == 0:
    print((time.perf_counter() - t0) / 200 * 1e6)
"""


def train_images_per_s(ranks: int, out: Path) -> float:
    cli = ["-m", "cnndsl", "train", str(MODEL), "--epochs", "3", "--no-augment", "--no-progress", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if ranks == 1:
        cmd = [sys.executable, *cli, "--distributed", "none"]
    else:
        cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", *cli, "--distributed", "mpi"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return json.loads((out / "metrics.json").read_text())[-1]["images_per_s"]


def allreduce_us(ranks: int) -> float:
    out = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, "-c", ALLREDUCE], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip())


def main() -> None:
    if MPIEXEC is None:
        sys.exit("mpiexec not found: pip install mpi4py mpich")
    result = {"load_average_at_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in (1, 2):
            result[f"train_images_per_s_{ranks}_ranks"] = train_images_per_s(ranks, Path(tmp) / f"r{ranks}")
    result["allreduce_lenet_gradient_us_2_ranks"] = allreduce_us(2)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "distributed_lenet.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:<40} {value:,.1f}")


if __name__ == "__main__":
    main()
