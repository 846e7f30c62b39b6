"""Dense (fully connected) layer: y = act(x W^T + b) with BLAS (sgemm split over the threads, blas.py)
or dot products (dots.py), then the epilogue loops (epilogue.py) over each row.

x (N, in), W (units, in) [PyTorch layout], b (units,), y (N, units); float32 C-contiguous.
"""
from __future__ import annotations

import numpy as np
from cnndsl.kernels.cpu.blas import pgemm_at
from cnndsl.kernels.cpu.byaddress import by_address
from cnndsl.kernels.cpu.common import I0, NO, ONE, YES, ZERO, kernel
from cnndsl.kernels.cpu.dots import gemm_nt_at
from cnndsl.kernels.cpu.epilogue import NO_ACTIVATION, epilogue


# Dense forward is x @ W^T with both operands contiguous along `in`: dot products (dots.py) beat
# BLAS there for a few rows (batch-1 inference: OpenBLAS's sgemm takes ~5x longer) and for long
# rows; BLAS wins on short rows with many images (measured: docs/performance.md).
DOTS_MAX_ROWS = 4
DOTS_MIN_IN = 256


@kernel
def dense_matmul(x, weight, y):
    """y = x W^T (overwritten)."""
    N, In = x.shape
    F = weight.shape[0]
    if N <= DOTS_MAX_ROWS or In >= DOTS_MIN_IN:
        gemm_nt_at(x, weight, NO, y)
        return
    pgemm_at(NO, YES, N, F, In, ONE, x.reshape(x.size), I0, In, weight.reshape(weight.size), I0, In, ZERO,
             y.reshape(y.size), I0, F)


# The GEMMs are called by address (byaddress.py): linked, their code was compiled again into each
# dense kernel (fused_dense_forward's module held dense_matmul, gemm_nt, its tiles and pgemm: 18
# functions). The epilogue stays a direct call: it raises ValueError for a wrong activation code,
# which a call by address would not pass on.
_dense_matmul_at = by_address(dense_matmul)


@kernel
def _dense_epilogue(y, bias, has_bias, act, alpha):
    """Row by row: the same epilogue loops, with the bias as a per-element "residual" row. Serial:
    y is small (vgg_small's largest, 128 x 256, is 32 K elements, some microseconds), and the
    `parallel=True` form cost 0.6 to 0.9 CPU s of every model's cold compile."""
    N, F = y.shape
    zero_bias = np.float32(0.0)
    for n in range(N):
        epilogue(y[n], y[n], zero_bias, bias[:F] if has_bias else y[n], has_bias, act, alpha)


@kernel
def fused_dense_forward(x, weight, bias, has_bias, act, alpha, y):
    """y = act(x W^T + b): one GEMM, then bias and activation in one pass over y."""
    _dense_matmul_at(x, weight, y)
    _dense_epilogue(y, bias, has_bias, act, np.float32(alpha))


def dense_forward(x, weight, bias, has_bias, y):
    """y = x W^T (+ b): fused_dense_forward with no activation, so that a network's plain and
    activated dense layers share one compiled kernel (a kernel of its own compiled its own copy of
    the GEMM and the bias loop: about 1 CPU s cold for LeNet-5's logits layer)."""
    fused_dense_forward(x, weight, bias, has_bias, NO_ACTIVATION, 0.0, y)


@kernel
def dense_backward_data(dy, weight, dx):
    """dx = dy @ W (overwritten)."""
    N, F = dy.shape
    In = weight.shape[1]
    pgemm_at(NO, NO, N, In, F, ONE, dy.reshape(dy.size), I0, F, weight.reshape(weight.size), I0, In, ZERO,
             dx.reshape(dx.size), I0, In)


@kernel
def dense_backward_weight(x, dy, has_bias, dweight, dbias):
    """dW = dy^T @ x, db = sum_n dy (overwritten; summed over the batch)."""
    N, F = dy.shape
    In = x.shape[1]
    pgemm_at(YES, NO, F, In, N, ONE, dy.reshape(dy.size), I0, F, x.reshape(x.size), I0, In, ZERO,
             dweight.reshape(dweight.size), I0, In)
    if has_bias:
        for f in range(F):
            dbias[f] = np.float32(0.0)
        for n in range(N):
            for f in range(F):
                dbias[f] += dy[n, f]
