"""The communication interface of data-parallel training, and its two implementations.

Training needs four collective operations: a sum over ranks of the flat gradient
buffer (one call per step: every gradient lives in one buffer), a broadcast of
buffers and small objects from rank 0 (initial weights, optimizer state, the
position of a resumed run), a sum of scalars (metrics) and a barrier. `LocalComm`
is the single-process world and needs no MPI at all; `MPIComm` uses mpi4py,
imported only when asked for.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from cnndsl.diagnostics import CnnError, Diagnostic

# Variables that MPI launchers (MPICH/hydra, Open MPI, PMIx, Slurm) set in each rank.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS")


class LocalComm:
    """One process: every collective is the identity."""

    rank = 0
    size = 1
    local_size = 1

    def allreduce_sum_(self, buf: np.ndarray) -> None:
        pass

    def bcast_(self, buf: np.ndarray, root: int = 0) -> None:
        pass

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allreduce_scalars(self, values: list[float]) -> list[float]:
        return list(values)

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class MPIComm:
    """MPI through mpi4py (COMM_WORLD). In-place collectives on C-contiguous NumPy buffers."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError:
            raise CnnError([Diagnostic(
                "error", "--distributed mpi needs mpi4py and an MPI library, which are not installed",
                help="pip install 'cnndsl[mpi]' (mpi4py and the mpich wheel), or use the MPI of your cluster; "
                     "see docs/distributed.md", code="no-mpi")]) from None
        self._mpi = MPI
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self.local_size = self._comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        _check_world_size(self.size)

    def allreduce_sum_(self, buf: np.ndarray) -> None:
        self._comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)

    def bcast_(self, buf: np.ndarray, root: int = 0) -> None:
        self._comm.Bcast(buf, root=root)

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        return self._comm.bcast(obj, root=root)

    def allreduce_scalars(self, values: list[float]) -> list[float]:
        buf = np.asarray(values, np.float64)
        self._comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        return buf.tolist()

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank now: a rank that stops alone would leave the others waiting forever."""
        self._comm.Abort(code)


def _check_world_size(size: int) -> None:
    """A rank that sees a world of 1 while its launcher started several was started by a
    different MPI than the one mpi4py loaded: every rank would train alone."""
    for var in _LAUNCHER_SIZE_VARS:
        expected = os.environ.get(var)
        if expected and expected.isdigit() and int(expected) != size:
            raise CnnError([Diagnostic(
                "error", f"the launcher started {expected} processes ({var}) but MPI sees a world of {size}",
                help="mpiexec and mpi4py come from different MPI installations; use the mpiexec of the MPI "
                     "that mpi4py was built for (python -m mpi4py --mpi-library shows it)", code="mpi-world")])


def launched_by_mpi() -> bool:
    return any(os.environ.get(v) for v in _LAUNCHER_SIZE_VARS[:3])


def get_comm(kind: str = "auto"):
    """'none': one process; 'mpi': MPI (an error if unavailable); 'auto': MPI when an MPI launcher
    started this process, else one process."""
    if kind == "none":
        return LocalComm()
    if kind == "mpi" or (kind == "auto" and launched_by_mpi()):
        return MPIComm()
    return LocalComm()


def shard(n: int, rank: int, size: int) -> slice:
    """This rank's contiguous part of a batch of n samples (sizes differ by at most one)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))
