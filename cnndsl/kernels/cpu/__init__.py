"""Numba CPU kernels (float32, batched NCHW / (N, F), outputs preallocated by the caller).

Modules: conv, pool, activation, dropout, batchnorm, dense, tensor, loss; shared
Numba options in common. See cnndsl/kernels/README.md for the full table of
signatures. Importing compiles nothing: kernels compile (or load from the Numba
cache) on first call.
"""
from cnndsl.kernels.cpu import (  # noqa: F401
    activation, batchnorm, common, conv, dense, dropout, loss, pool, tensor)
