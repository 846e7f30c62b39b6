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

from cnndsl.kernels.cpu.common import I0, PAR_MIN, kernel, parallel_kernel
from cnndsl.kernels.cpu.hash import GOLDEN
from cnndsl.kernels.cpu.hash import mix as _mix
from cnndsl.kernels.cpu.parallel import chunks, parallel_items
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


@kernel
def _apply_chunk(t, per, a, o, base, thr, scale):
    """Elements t*per .. of _apply (an item of parallel_items)."""
    z = np.float32(0.0)
    # unsigned indices, as in tensor._elementwise (signed: 5.8 to 8.7 us instead of 1.6 for 64 x 120)
    for i in range(np.uint64(t * per), np.uint64(min((t + 1) * per, a.size))):
        o[i] = a[i] * scale if _keep(base, thr, np.int64(i)) else z


_apply_items = parallel_items(_apply_chunk)


@kernel
def _apply(x, p, seed, step, y):
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    base = _base(seed, step)
    thr = _threshold(p)
    scale = np.float32(1.0 / (1.0 - p))
    if a.size >= PAR_MIN // 4:  # a chunk of elements per thread
        items, per = chunks(a.size)
        _apply_items(items, per, a, o, base, thr, scale)
    else:
        _apply_chunk(I0, a.size, a, o, base, thr, scale)


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
