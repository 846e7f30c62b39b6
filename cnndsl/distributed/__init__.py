"""Data-parallel training over MPI: see docs/distributed.md."""
from cnndsl.distributed.comm import LocalComm, MPIComm, get_comm, shard  # noqa: F401
