"""splitmix64's finaliser: the one hash behind every counter-based random draw
(dropout masks, augmentation parameters), so results depend only on counters, never on
RNG state, thread count or batch composition.

It must never change: runs are reproducible across versions only while it stays the
same. (Numba's cache would not notice an edit here either: it only tracks the file that
defines each kernel, so a change would need the caches cleared.)
"""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.cpu.common import kernel

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
S30 = np.uint64(30)
S27 = np.uint64(27)
S31 = np.uint64(31)


@kernel
def mix(z):
    z = (z ^ (z >> S30)) * M1
    z = (z ^ (z >> S27)) * M2
    return z ^ (z >> S31)
