"""Inverted dropout with a counter-based hash RNG (no mask storage).

Element i (flat C-order index into the whole batch tensor) is kept iff
k >= ceil(p * 2^24), where k is the top 24 bits of
splitmix64(base(seed, step) + (i + 1) * GOLDEN) — identical to
cnndsl.kernels.reference.dropout, bit for bit. Kept elements are scaled by
1 / (1 - p). The mask depends only on (seed, step, i), so dropout_backward
recomputes it: call it with the same p, seed and step as the forward. Give each
dropout layer its own seed (e.g. hash of the graph seed and the node id) and
pass the training step as `step`.

At inference dropout is the identity; the caller skips it or uses
dropout_inference (a copy).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, kernel, parallel_kernel
from cnndsl.kernels.cpu.hash import GOLDEN
from cnndsl.kernels.cpu.hash import mix as _mix
from cnndsl.kernels.cpu.tensor import copy

STEP_MUL = np.uint64(0xD6E8FEB86659FD93)
S40 = np.uint64(40)


@kernel
def _base(seed, step):
    return _mix(_mix(np.uint64(seed) * GOLDEN) ^ (np.uint64(step) * STEP_MUL))


@kernel
def _threshold(p):
    return np.uint64(math.ceil(p * 16777216.0))


@kernel
def _keep(base, thr, i):
    z = _mix(base + np.uint64(i + 1) * GOLDEN)
    return (z >> S40) >= thr


@parallel_kernel
def _apply(x, p, seed, step, y):
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    base = _base(seed, step)
    thr = _threshold(p)
    scale = np.float32(1.0 / (1.0 - p))
    z = np.float32(0.0)
    if a.size >= PAR_MIN // 4:
        for i in prange(a.size):  # np.int64: a prange index is uint64, and a second signature
            o[i] = a[i] * scale if _keep(base, thr, np.int64(i)) else z
    else:
        for i in range(a.size):
            o[i] = a[i] * scale if _keep(base, thr, i) else z


# Python functions, not kernels: as kernels each compiled (and linked _apply's parallel code into)
# a library of its own, for a call.
def dropout_forward(x, p, seed, step, y):
    """y = x * keep / (1 - p); p float in [0, 1), seed and step ints."""
    _apply(x, p, seed, step, y)


def dropout_backward(dy, p, seed, step, dx):
    """dx = dy * keep / (1 - p) with the mask of the forward of the same (p, seed, step)."""
    _apply(dy, p, seed, step, dx)


@parallel_kernel
def dropout_mask(p, seed, step, mask):
    """Writes the keep mask (uint8, 1 = kept) of any shape; for inspection or mask-storing callers."""
    o = mask.reshape(mask.size)
    base = _base(seed, step)
    thr = _threshold(p)
    for i in prange(o.size):
        o[i] = np.uint8(1) if _keep(base, thr, np.int64(i)) else np.uint8(0)


# At inference dropout is exactly the identity: a bit-exact copy (the same kernel as tensor.copy).
dropout_inference = copy
