"""Elementwise CUDA kernels: activations and their gradients, add, copy, scale, dropout.

Flat float32 buffers of n elements, grid-stride loops (launch with `grid1d(n)`); in-place
use (y is x, dx is dy) is allowed. Every element-wise activation is one kernel pair branching on
its code (cnndsl/kernels/activations.py); backward kernels take what the CPU ones take: what the
activation's gradient reads, its forward output y or input x.

Dropout uses the counter-based hash of cnndsl/kernels/cpu/dropout.py bit for bit: element
i is kept iff (splitmix64(base + (i + 1) * GOLDEN) >> 40) >= threshold, with `base` and
`threshold` computed on the host by `dropout_base` / `dropout_threshold` (the reference's
functions), so CPU and GPU masks are identical.
"""
from __future__ import annotations

import math

import numpy as np

from cnndsl.kernels.cuda.common import (F32, U8, activate, activation_grad, boolean, channel_of, cuda, device, div_mod,
                                        float32, int64, kernel, uint64)
from cnndsl.kernels.hash import GOLDEN
from cnndsl.kernels.hash import mix as hash_mix
from cnndsl.kernels.reference.dropout import dropout_base  # also the launcher's, every step

# -- activations ----------------------------------------------------------------------------


@kernel(F32, F32, int64, float32, int64)
def activation_forward(x, y, act, alpha, n):
    """y = act(x), act an activation code (cnndsl/kernels/activations.py)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = activate(x[i], act, alpha)


@kernel(F32, F32, F32, int64, float32, int64)
def activation_backward(v, dy, dx, act, alpha, n):
    """dx = act'(.) * dy from v, the forward output y or input x as the activation's gradient needs."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = activation_grad(dy[i], v[i], act, alpha)


@kernel(F32, F32, F32, int64, int64, int64)
def prelu_forward(x, slope, y, N, C, S):
    """y = x where x > 0, slope[c] * x otherwise; x is (N, C, S) flat."""
    z = float32(0.0)
    for i in range(cuda.grid(1), N * C * S, cuda.gridsize(1)):
        v = x[i]
        y[i] = v if v > z else slope[channel_of(i, S, C, N * C * S)] * v


@kernel(F32, F32, F32, F32, int64, int64, int64)
def prelu_backward_data(x, dy, slope, dx, N, C, S):
    """dx = dy where x > 0, slope[c] * dy otherwise (dx may be dy)."""
    z = float32(0.0)
    for i in range(cuda.grid(1), N * C * S, cuda.gridsize(1)):
        g = dy[i]
        dx[i] = g if x[i] > z else slope[channel_of(i, S, C, N * C * S)] * g


@kernel(F32, F32, F32, int64, int64, int64)
def prelu_backward_slope(x, dy, dslope, N, C, S):
    """dslope[c] = sum over n, s of dy * x where x <= 0: one thread per channel (C is small)."""
    z = float32(0.0)
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        acc = float32(0.0)
        for n in range(N):
            base = (n * C + c) * S
            for s in range(S):
                v = x[base + s]
                if v <= z:
                    acc += dy[base + s] * v
        dslope[c] = acc


@device
def softmax_column(x, y, base, K, S):
    """Softmax of the column x[base + k * S], k < K, into y at the same places; returns the
    column's max m and sum t of exp(x - m), so that log-softmax is x - m - log(t)."""
    m = x[base]
    for k in range(1, K):
        v = x[base + k * S]
        if v > m:
            m = v
    t = float32(0.0)
    for k in range(K):
        e = math.exp(x[base + k * S] - m)
        y[base + k * S] = e
        t += e
    inv = float32(1.0) / t
    for k in range(K):
        y[base + k * S] *= inv
    return m, t


@kernel(F32, F32, int64, int64, int64)
def softmax_forward(x, y, N, K, S):
    """Softmax over axis 1 of (N, K, S): one thread per (n, s) column."""
    for it in range(cuda.grid(1), N * S, cuda.gridsize(1)):
        n = div_mod(it, S, N * S)[0]
        softmax_column(x, y, n * K * S + it - n * S, K, S)


@kernel(F32, F32, F32, int64, int64, int64)
def softmax_backward(y, dy, dx, N, K, S):
    """dx = y * (dy - sum_k dy * y), per (n, s) column."""
    for it in range(cuda.grid(1), N * S, cuda.gridsize(1)):
        n, s = div_mod(it, S, N * S)
        base = n * K * S + s
        t = float32(0.0)
        for k in range(K):
            t += y[base + k * S] * dy[base + k * S]
        for k in range(K):
            dx[base + k * S] = y[base + k * S] * (dy[base + k * S] - t)


# -- arithmetic -----------------------------------------------------------------------------


@kernel(F32, F32, int64)
def copy(x, y, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = x[i]


@kernel(F32, F32, F32, int64)
def add2(a, b, out, n):
    """out = a + b (out may alias a or b)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = a[i] + b[i]


@kernel(F32, F32, int64)
def add_accumulate(acc, x, n):
    """acc += x."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        acc[i] += x[i]


@kernel(F32, float32, int64)
def scale(x, f, n):
    """x *= f."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        x[i] *= f


@kernel(F32, float32, int64)
def fill(x, v, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        x[i] = v


# -- dropout ----------------------------------------------------------------------------------

S40 = np.uint64(40)
ONE_U = np.uint64(1)
_mix = device(hash_mix)  # the CPU kernels' hash (cnndsl/kernels/hash.py): the same masks


@device
def _keep(base, thr, i):
    z = _mix(base + (uint64(i) + ONE_U) * GOLDEN)
    return (z >> S40) >= thr


@kernel(F32, uint64, uint64, float32, F32, int64)
def dropout_apply(x, base, thr, scale_, y, n):
    """y = x * scale_ where kept else 0 (forward, and backward with dy/dx)."""
    z = float32(0.0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = x[i] * scale_ if _keep(base, thr, i) else z


@kernel(uint64, uint64, U8, int64)
def dropout_mask(base, thr, mask, n):
    """mask[i] = 1 where element i is kept (for tests and inspection)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        mask[i] = 1 if _keep(base, thr, i) else 0


def dropout_params(p: float, seed: int, step: int) -> tuple[np.uint64, np.uint64, np.float32]:
    """(base, threshold, scale) on the host, exactly as the CPU kernel computes them."""
    pf = float(np.float32(p))
    return (dropout_base(seed, step), np.uint64(math.ceil(pf * 16777216.0)), np.float32(1.0 / (1.0 - pf)))


# -- folded batchnorm (inference fusion) ------------------------------------------------------


@kernel(F32, F32, boolean, F32, F32, F32, F32, float32, F32, F32, int64, int64)
def fold_batchnorm(weight, bias, has_bias, gamma, beta, running_mean, running_var, eps, w_out, b_out, F, K):
    """w_out[f, k] = weight[f, k] * s[f], b_out[f] = (bias[f] - mean[f]) * s[f] + beta[f],
    s = gamma / sqrt(var + eps); weight (F, K) flat, axis 0 the output channel."""
    for i in range(cuda.grid(1), F * K, cuda.gridsize(1)):
        f = i // K
        s = gamma[f] / math.sqrt(running_var[f] + eps)
        w_out[i] = weight[i] * s
        if i - f * K == 0:
            b0 = bias[f] if has_bias else float32(0.0)
            b_out[f] = (b0 - running_mean[f]) * s + beta[f]
