"""Numba CPU kernels (float32, batched NCHW / (N, F), outputs preallocated by the caller).

Modules: conv, pool, activation, dropout, batchnorm, dense, tensor, loss; shared
Numba options in common. See cnndsl/kernels/README.md for the full table of
signatures. Importing compiles nothing: kernels compile (or load from the Numba
cache) on first call.
"""
from cnndsl import kernel_cache

kernel_cache.install_locator()  # before any kernel is defined: the cache subfolders (kernel_cache.py)
kernel_cache.keep_reload_init()  # before any kernel is loaded (microkernel's C entries need it)
kernel_cache.skip_prelink_passes()  # before any kernel is compiled; only with CNNDSL_PRELINK_PASSES=0

from cnndsl.kernels.cpu import (  # noqa: E402,F401
    activation, batchnorm, common, conv, dense, dropout, loss, pool, tensor)
