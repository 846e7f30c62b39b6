"""Shared Numba options for the CPU kernels (see docs/performance.md).

Every kernel is compiled with

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")            # serial
    @njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)

FASTMATH leaves out ``nnan`` and ``ninf`` on purpose: the trainer detects NaN/Inf,
so the compiler must not assume they cannot happen.

Kernels that are mostly memory-bound switch between a serial loop and a
``prange`` loop at run time (``n >= PAR_MIN``), so tiny tensors do not pay the
fork/join cost of a parallel region.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import config as _numba_config

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# Minimum number of elements (elementwise kernels) before a prange region is used.
PAR_MIN = 1 << 15
# Minimum amount of "work items x inner size" for per-(n, c) parallel loops.
PAR_MIN_WORK = 1 << 14

# NUMBA_BOUNDSCHECK=1 (read by Numba at its import): kernels that hand raw pointers to BLAS, which
# Numba's bounds checks cannot see, then check the extents themselves (`if BOUNDSCHECK:` is a
# compile-time constant: no cost otherwise). kernel_cache.py keeps the two builds' caches apart.
BOUNDSCHECK = bool(_numba_config.BOUNDSCHECK)

F32 = np.float32
ZERO = np.float32(0.0)
ONE = np.float32(1.0)
# Constants one kernel passes to another. Numba types a literal argument (`0`, `1`, `False`) as
# Literal[int](0) or Literal[bool](False) and compiles the callee once per combination: blas.gemm
# compiled 15 times for LeNet-5 (its flags and offsets). NumPy scalars are plain int64 / bool.
NO = np.bool_(False)
YES = np.bool_(True)
I0 = np.int64(0)
I1 = np.int64(1)


def kernel(fn=None, *, parallel: bool = False, inline: bool = False):
    """njit with the project-wide options; `@kernel`, `@kernel(parallel=True)` or `@kernel(inline=True)`
    (inlined into its callers by Numba itself: for a helper called per row, whose size keeps LLVM
    from inlining it and whose slice arguments then cost a reference count each call).

    Every kernel keeps Numba's C entry (its cfunc wrapper), although only the kernels called by
    address use it: leaving it out of the others saved LeNet-5's cold first step about 1 CPU s,
    but Numba caches an @overload's implementation per the caller's compile flags
    (numba/core/typing/templates.py, `_get_impl`, 0.68), so kernels with and without the entry
    compiled every overload they share twice (min, max, np.empty, the activation dispatch:
    tests/test_compile_signatures.py caught it)."""
    opts = dict(cache=True, fastmath=set(FASTMATH), error_model="numpy")
    if parallel:
        opts["parallel"] = True
    if inline:
        opts["inline"] = "always"
    if fn is None:
        return njit(**opts)
    return njit(**opts)(fn)


def parallel_kernel(fn):
    """Shorthand for `kernel(parallel=True)`."""
    return kernel(fn, parallel=True)


# Row copies at an offset. An index Numba cannot prove non-negative (`dst[o + j]`, o an argument)
# gets the negative-index wrap-around select, and LLVM then leaves the loop scalar: a 4 MB copy
# ran in 0.60 ms that way and in 0.09 ms with unsigned indices (Zen 5, one thread; a slice
# assignment per row, `dst[o:o + n] = src[s:s + n]`, cost 0.21 ms, its overlap test and views).
# These index with np.uint64: no wrap-around, and under NUMBA_BOUNDSCHECK=1 a negative offset is
# still caught (it becomes a huge index). Inlined by Numba: as calls, the padding of resnet_tiny's
# 3x3 convs took 0.11 to 0.17 ms instead of 0.07 to 0.10 (64x16x32x32 to 64x64x8x8).

@kernel(inline=True)
def copy_row(src, s0, dst, d0, n):
    """dst[d0 + j] = src[s0 + j] for j < n (1-D arrays, offsets >= 0)."""
    for j in range(n):
        dst[np.uint64(d0 + j)] = src[np.uint64(s0 + j)]


@kernel(inline=True)
def add_row(src, s0, res, r0, dst, d0, n):
    """dst[d0 + j] = src[s0 + j] + res[r0 + j] for j < n (1-D arrays, offsets >= 0)."""
    for j in range(n):
        dst[np.uint64(d0 + j)] = src[np.uint64(s0 + j)] + res[np.uint64(r0 + j)]


@kernel(inline=True)
def fill_row(dst, d0, n, value):
    """dst[d0 + j] = value for j < n (a 1-D array, d0 >= 0)."""
    for j in range(n):
        dst[np.uint64(d0 + j)] = value
