"""Counter-based random draws for augmentations: no RNG state, only a hash.

Every random number an augmentation uses is a pure function of

    (seed, epoch, index, op, k)

where `index` is the image's index *within the data set* (not within the
batch), `op` is the position of the augmentation in the pipeline and `k`
numbers the draws of one op on one image (k = 0 is always the "apply it?"
draw against `p`). So the augmented image of sample i in epoch e is the same
whatever the batch size, the shuffle order, the thread count, or whether the
run was resumed mid-epoch.

The hash is splitmix64's finaliser chained over the fields:

    key  = mix(mix(mix(mix(seed * G) ^ epoch * E) ^ index * I) ^ op * O)
    u(k) = (mix(key + (k + 1) * G) >> 11) * 2**-53        in [0, 1)

`image_key`, `uniform` are Numba functions callable from kernels and from
Python; `uniform_py` is the same in pure Python (used by tests to predict draws).
"""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.cpu.common import kernel

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
EPOCH_MUL = np.uint64(0xD6E8FEB86659FD93)
INDEX_MUL = np.uint64(0xA0761D6478BD642F)
OP_MUL = np.uint64(0xE7037ED1A0B428DB)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
S30 = np.uint64(30)
S27 = np.uint64(27)
S31 = np.uint64(31)
S11 = np.uint64(11)
INV53 = 1.0 / 9007199254740992.0  # 2**-53


@kernel
def _mix(z):
    z = (z ^ (z >> S30)) * M1
    z = (z ^ (z >> S27)) * M2
    return z ^ (z >> S31)


@kernel
def image_key(seed, epoch, index, op):
    """The 64-bit key of one (seed, epoch, image index, op) — all int64 arguments."""
    h = _mix(np.uint64(seed) * GOLDEN)
    h = _mix(h ^ (np.uint64(epoch) * EPOCH_MUL))
    h = _mix(h ^ (np.uint64(index) * INDEX_MUL))
    return _mix(h ^ (np.uint64(op) * OP_MUL))


@kernel
def uniform(key, k):
    """Draw number k (int) of `key`: a float64 uniform in [0, 1)."""
    z = _mix(key + np.uint64(k + 1) * GOLDEN)
    return np.float64(z >> S11) * INV53


@kernel
def randint(key, k, n):
    """Draw number k of `key` as an integer uniform in [0, n) (n >= 1)."""
    i = np.int64(uniform(key, k) * n)
    return i if i < n else n - 1


# ---- pure-Python twins (tests, debugging) ----------------------------------------
_MASK = (1 << 64) - 1


def _mix_py(z: int) -> int:
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def image_key_py(seed: int, epoch: int, index: int, op: int) -> int:
    h = _mix_py((seed & _MASK) * 0x9E3779B97F4A7C15)
    h = _mix_py(h ^ (((epoch & _MASK) * 0xD6E8FEB86659FD93) & _MASK))
    h = _mix_py(h ^ (((index & _MASK) * 0xA0761D6478BD642F) & _MASK))
    return _mix_py(h ^ (((op & _MASK) * 0xE7037ED1A0B428DB) & _MASK))


def uniform_py(key: int, k: int) -> float:
    z = _mix_py(key + (k + 1) * 0x9E3779B97F4A7C15)
    return float(z >> 11) * INV53


def randint_py(key: int, k: int, n: int) -> int:
    return min(int(uniform_py(key, k) * n), n - 1)
