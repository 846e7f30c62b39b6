"""The counter hash (`cnndsl/kernels/hash.py`, shared with the CUDA kernels) compiled for the
CPU kernels: dropout masks and augmentation parameters."""
from __future__ import annotations

from cnndsl.kernels import hash as _hash
from cnndsl.kernels.cpu.common import kernel

GOLDEN = _hash.GOLDEN
mix = kernel(_hash.mix)
