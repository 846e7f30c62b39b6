"""Reference inverted dropout with the counter-based hash RNG shared with the CPU kernel.

For element i (flat C-order index into the whole batch tensor):
    z = splitmix64(mix(seed, step) + (i + 1) * GOLDEN);  k = z >> 40  (24 random bits)
    keep  <=>  k >= ceil(p * 2**24)     (i.e. u = k / 2**24 >= p)
    y = x / (1 - p) where kept, else 0
so the mask depends only on (seed, step, i): backward recomputes it.
"""
from __future__ import annotations

import math

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
STEP_MUL = np.uint64(0xD6E8FEB86659FD93)


def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def dropout_threshold(p: float) -> int:
    return int(math.ceil(p * 16777216.0))


_U64 = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """_mix of one value, in Python integers."""
    z = ((z ^ (z >> 30)) * int(M1)) & _U64
    z = ((z ^ (z >> 27)) * int(M2)) & _U64
    return z ^ (z >> 31)


def dropout_base(seed: int, step: int) -> np.uint64:
    """The mask's base for (seed, step): mix(mix(seed * GOLDEN) ^ step * STEP_MUL), modulo 2**64.
    In Python integers: the CUDA backend computes it on the host for every dropout launch of a
    training step, and the same in NumPy uint64 scalars (with errstate) took 20 to 26 us a call on
    the 2-core EPYC, against 2 us. tests/cuda/test_kernels.py checks it against _mix on uint64
    arrays; the CPU kernel computes it in Numba (the masks are compared bit for bit)."""
    mixed = _mix_int((seed & _U64) * int(GOLDEN) & _U64)
    return np.uint64(_mix_int(mixed ^ ((step & _U64) * int(STEP_MUL) & _U64)))


def dropout_keep_mask(shape, p, seed, step):
    size = int(np.prod(shape))
    i = np.arange(1, size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _mix(dropout_base(seed, step) + i * GOLDEN)
    k = z >> np.uint64(40)
    return (k >= np.uint64(dropout_threshold(p))).reshape(shape)


def dropout(x, p, seed, step):
    keep = dropout_keep_mask(x.shape, p, seed, step)
    return np.where(keep, x / (1 - p), 0).astype(x.dtype)


def dropout_backward(dy, p, seed, step):
    keep = dropout_keep_mask(dy.shape, p, seed, step)
    return np.where(keep, dy / (1 - p), 0).astype(dy.dtype)
