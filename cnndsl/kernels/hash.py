"""splitmix64's finaliser: the one hash behind every counter-based random draw
(dropout masks, augmentation parameters), so results depend only on counters, never on
RNG state, thread count or batch composition. Written once here, in the subset both Numba
targets compile: the CPU kernels use it as `cnndsl.kernels.cpu.hash.mix`, the CUDA dropout
as a device function (`cnndsl/kernels/cuda/elementwise.py`), so both draw the same masks.

It must never change: runs are reproducible across versions only while it stays the
same. (Numba's cache would not notice an edit here either: it only tracks the file that
defines each kernel; cnndsl/kernel_cache.py's fingerprint of every file under kernels/ does.)
"""
from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
S30 = np.uint64(30)
S27 = np.uint64(27)
S31 = np.uint64(31)


def mix(z):
    """The finaliser of a uint64 `z` (plain Python: each backend compiles it)."""
    z = (z ^ (z >> S30)) * M1
    z = (z ^ (z >> S27)) * M2
    return z ^ (z >> S31)
