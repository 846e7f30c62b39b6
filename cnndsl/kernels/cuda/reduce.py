"""Reductions: per-channel sums (bias gradients, global average pooling), batchnorm, scalar sums.

Per-channel kernels run one block of RB threads per channel (grid-stride over channels):
each thread sums a strided share of the channel's N*S elements in float32, then the block
adds the RB partial sums as a tree in shared memory (RB is a power of two). Launch them
with `channel_grid(C)`. Layout (N, C, S) flat, S = H*W (1 for vectors).

The batchnorm kernels also serve fused_batchnorm: `act` (the code of cnndsl/ops/fused/epilogue.py,
0 none) and alpha apply the activation as the output is written, and the backward recomputes
dz = act'(y) * dy from the forward output y where it reads dy (plain batchnorm: act 0, y = dy).
"""
from __future__ import annotations

import math

from cnndsl.kernels.cuda.common import (F32, MAX_BLOCKS, RB, activate, cuda, device, float32, grad_from_output, int64,
                                        kernel)


def channel_grid(c: int) -> tuple[int, int]:
    return max(1, min(c, MAX_BLOCKS)), RB


@device
def _block_sum(part, tid):
    """The sum of part[0:RB] (each thread's partial sum, part[tid] written by thread tid) into
    part[0], as a tree; every thread of the block calls it and may read part[0] after it."""
    cuda.syncthreads()
    step = RB // 2
    while step > 0:
        if tid < step:
            part[tid] += part[tid + step]
        cuda.syncthreads()
        step //= 2


@device
def _channel_partial(x, N, C, S, c, tid):
    """Thread tid's strided share of the sum over n, s of x[n, c, s] ((N, C, S) flat)."""
    acc = float32(0.0)
    for i in range(tid, N * S, RB):
        n = i // S
        acc += x[(n * C + c) * S + (i - n * S)]
    return acc


@kernel(F32, int64, int64, int64, float32, F32)
def channel_sum(x, N, C, S, scale, out):
    """out[c] = scale * sum over n, s of x[n, c, s]."""
    part = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        part[tid] = _channel_partial(x, N, C, S, c, tid)
        _block_sum(part, tid)
        if tid == 0:
            out[c] = part[0] * scale
        cuda.syncthreads()


@kernel(F32, int64, float32, F32, int64)
def sum_to(x, n, scale, out, idx):
    """out[idx] = scale * sum(x[:n]); launch with one block of RB threads."""
    part = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    acc = float32(0.0)
    for i in range(tid, n, RB):
        acc += x[i]
    part[tid] = acc
    _block_sum(part, tid)
    if tid == 0:
        out[idx] = part[0] * scale


# -- batchnorm ------------------------------------------------------------------------------


@kernel(F32, int64, int64, int64, F32, F32, float32, float32, F32, F32, F32, F32, F32, F32)
def bn_train_stats(x, N, C, S, gamma, beta, eps, momentum, running_mean, running_var,
                   save_mean, save_invstd, scale, shift):
    """Batch mean and biased variance per channel (two passes); saves mean and 1/sqrt(var + eps),
    updates the running statistics (unbiased variance, PyTorch convention) and writes the
    per-channel affine y = x * scale + shift."""
    part = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    M = N * S
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        part[tid] = _channel_partial(x, N, C, S, c, tid)
        _block_sum(part, tid)
        mean = part[0] / float32(M)
        cuda.syncthreads()
        acc = float32(0.0)
        for i in range(tid, M, RB):
            n = i // S
            d = x[(n * C + c) * S + (i - n * S)] - mean
            acc += d * d
        part[tid] = acc
        _block_sum(part, tid)
        if tid == 0:
            var = part[0] / float32(M)
            inv = float32(1.0) / math.sqrt(var + eps)
            save_mean[c] = mean
            save_invstd[c] = inv
            unbiased = var * float32(M) / float32(M - 1) if M > 1 else var
            keep = float32(1.0) - momentum
            running_mean[c] = keep * running_mean[c] + momentum * mean
            running_var[c] = keep * running_var[c] + momentum * unbiased
            sc = inv * gamma[c]
            scale[c] = sc
            shift[c] = beta[c] - mean * sc
        cuda.syncthreads()


@kernel(F32, F32, F32, F32, float32, F32, F32, int64)
def bn_inference_coeffs(gamma, beta, running_mean, running_var, eps, scale, shift, C):
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        sc = gamma[c] / math.sqrt(running_var[c] + eps)
        scale[c] = sc
        shift[c] = beta[c] - running_mean[c] * sc


@kernel(F32, F32, F32, int64, float32, F32, int64, int64, int64)
def channel_affine(x, scale, shift, act, alpha, y, C, S, n):
    """y = act(x * scale[c] + shift[c]) over (N, C, S) flat, n = N*C*S elements."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = (i // S) % C
        y[i] = activate(x[i] * scale[c] + shift[c], act, alpha)


@kernel(F32, F32, F32, int64, float32, int64, int64, int64, F32, F32, F32, F32, F32, F32)
def bn_backward_reduce(x, dy, y, act, alpha, N, C, S, gamma, save_mean, save_invstd, dgamma, dbeta, coef):
    """With g = act'(y) * dy: dbeta = sum g, dgamma = sum g * xhat per channel, and the coefficients of
    dx = k * (g - mdy - (x - mean) * mdyx) into coef[c], coef[C + c], coef[2C + c]."""
    p1 = cuda.shared.array(RB, float32)
    p2 = cuda.shared.array(RB, float32)
    tid = cuda.threadIdx.x
    M = N * S
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        mean = save_mean[c]
        a1 = float32(0.0)
        a2 = float32(0.0)
        for i in range(tid, M, RB):
            n = i // S
            j = (n * C + c) * S + (i - n * S)
            g = grad_from_output(dy[j], y[j], act, alpha)
            a1 += g
            a2 += g * (x[j] - mean)
        p1[tid] = a1
        p2[tid] = a2
        _block_sum(p1, tid)
        _block_sum(p2, tid)
        if tid == 0:
            inv = save_invstd[c]
            sdy = p1[0]
            sdyx = p2[0]
            dbeta[c] = sdy
            dgamma[c] = sdyx * inv
            coef[c] = gamma[c] * inv
            coef[C + c] = sdy / float32(M)
            coef[2 * C + c] = sdyx * inv * inv / float32(M)
        cuda.syncthreads()


@kernel(F32, F32, F32, int64, float32, F32, F32, F32, int64, int64, int64)
def bn_backward_apply(x, dy, y, act, alpha, dx, save_mean, coef, C, S, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = (i // S) % C
        g = grad_from_output(dy[i], y[i], act, alpha)
        dx[i] = coef[c] * (g - coef[C + c] - (x[i] - save_mean[c]) * coef[2 * C + c])
