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

    key  = mix(mix(mix(mix((seed + 1) * G) ^ epoch * E) ^ index * I) ^ op * O)
    u(k) = (mix(key + (k + 1) * G) >> 11) * 2**-53        in [0, 1)

`image_key`, `uniform`, `randint` are Numba functions (defined in kernels.py,
callable from Python with a np.uint64 key); `image_key_py`, `uniform_py`,
`randint_py` are their pure-Python twins (tests use them to predict draws).
"""
from __future__ import annotations

# The Numba functions live in kernels.py, on top of the shared splitmix64 finaliser
# (cnndsl/kernels/cpu/hash.py, which must never change).
from cnndsl.augment.kernels import image_key, randint, uniform  # noqa: F401

INV53 = 1.0 / 9007199254740992.0  # 2**-53


# ---- pure-Python twins (tests, debugging) ----------------------------------------
_MASK = (1 << 64) - 1


def _mix_py(z: int) -> int:
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def image_key_py(seed: int, epoch: int, index: int, op: int) -> int:
    h = _mix_py((((seed + 1) & _MASK) * 0x9E3779B97F4A7C15) & _MASK)
    h = _mix_py(h ^ (((epoch & _MASK) * 0xD6E8FEB86659FD93) & _MASK))
    h = _mix_py(h ^ (((index & _MASK) * 0xA0761D6478BD642F) & _MASK))
    return _mix_py(h ^ (((op & _MASK) * 0xE7037ED1A0B428DB) & _MASK))


def uniform_py(key: int, k: int) -> float:
    z = _mix_py(key + (k + 1) * 0x9E3779B97F4A7C15)
    return float(z >> 11) * INV53


def randint_py(key: int, k: int, n: int) -> int:
    return min(int(uniform_py(key, k) * n), n - 1)
