"""Dense (fully connected) layer: y = x W^T + b with BLAS (np.dot -> OpenBLAS sgemm).

x (N, in), W (units, in) [PyTorch layout], b (units,), y (N, units); float32 C-contiguous.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, kernel, parallel_kernel


@parallel_kernel
def _add_row_bias(y, b):
    N, F = y.shape
    if N * F >= PAR_MIN:
        for n in prange(N):
            for f in range(F):
                y[n, f] += b[f]
    else:
        for n in range(N):
            for f in range(F):
                y[n, f] += b[f]


@kernel
def dense_forward(x, weight, bias, has_bias, y):
    np.dot(x, weight.T, y)
    if has_bias:
        _add_row_bias(y, bias)


@kernel
def dense_backward_data(dy, weight, dx):
    """dx = dy @ W (overwritten)."""
    np.dot(dy, weight, dx)


@kernel
def dense_backward_weight(x, dy, has_bias, dweight, dbias):
    """dW = dy^T @ x, db = sum_n dy (overwritten; summed over the batch)."""
    np.dot(dy.T, x, dweight)
    if has_bias:
        N, F = dy.shape
        for f in range(F):
            dbias[f] = np.float32(0.0)
        for n in range(N):
            for f in range(F):
                dbias[f] += dy[n, f]
