"""Batch normalization over axis 1 of (N, C, H, W) or (N, F) (float32 C-contiguous).

Training forward: per channel, batch mean and biased variance (sums in float64)
normalize x; saves mean and inv_std = 1/sqrt(var + eps) for the backward, and
updates running_mean / running_var IN PLACE with the PyTorch convention
    running = (1 - momentum) * running + momentum * batch_stat
where running_var uses the UNBIASED batch variance var * M / (M - 1), M = N*H*W
(the biased one if M == 1).
Inference forward: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
Backward (training statistics): dx, dgamma, dbeta, all overwritten.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, kernel, parallel_kernel


@kernel
def _train_channel(a, o, c, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd):
    N, _, S = a.shape
    M = N * S
    acc = 0.0
    for n in range(N):
        s = np.float32(0.0)
        for i in range(S):
            s += a[n, c, i]
        acc += s
    mean = acc / M
    mf = np.float32(mean)
    acc2 = 0.0
    for n in range(N):
        s = np.float32(0.0)
        for i in range(S):
            d = a[n, c, i] - mf
            s += d * d
        acc2 += s
    var = acc2 / M
    inv = 1.0 / np.sqrt(var + eps)
    save_mean[c] = mf
    save_invstd[c] = np.float32(inv)
    unbiased = var * M / (M - 1) if M > 1 else var
    running_mean[c] = np.float32((1.0 - momentum) * running_mean[c] + momentum * mean)
    running_var[c] = np.float32((1.0 - momentum) * running_var[c] + momentum * unbiased)
    scale = np.float32(inv) * gamma[c]
    shift = beta[c] - mf * scale
    for n in range(N):
        for i in range(S):
            o[n, c, i] = a[n, c, i] * scale + shift


@parallel_kernel
def batchnorm_train_forward(x, gamma, beta, eps, momentum, running_mean, running_var, y, save_mean, save_invstd):
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C)
    a = x.reshape((N, C, S))
    o = y.reshape((N, C, S))
    if x.size >= PAR_MIN and C > 1:
        for c in prange(C):
            _train_channel(a, o, c, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd)
    else:
        for c in range(C):
            _train_channel(a, o, c, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd)


@kernel
def _infer_channel(a, o, c, gamma, beta, running_mean, running_var, eps):
    N, _, S = a.shape
    scale = np.float32(gamma[c] / np.sqrt(np.float64(running_var[c]) + eps))
    shift = beta[c] - running_mean[c] * scale
    for n in range(N):
        for i in range(S):
            o[n, c, i] = a[n, c, i] * scale + shift


@parallel_kernel
def batchnorm_inference_forward(x, gamma, beta, running_mean, running_var, eps, y):
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C)
    a = x.reshape((N, C, S))
    o = y.reshape((N, C, S))
    if x.size >= PAR_MIN and C > 1:
        for c in prange(C):
            _infer_channel(a, o, c, gamma, beta, running_mean, running_var, eps)
    else:
        for c in range(C):
            _infer_channel(a, o, c, gamma, beta, running_mean, running_var, eps)


@kernel
def _bwd_channel(a, g, o, c, gamma, save_mean, save_invstd, dgamma, dbeta):
    N, _, S = a.shape
    M = N * S
    mf = save_mean[c]
    inv = save_invstd[c]
    sdy = 0.0
    sdyx = 0.0
    for n in range(N):
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        for i in range(S):
            gv = g[n, c, i]
            s1 += gv
            s2 += gv * (a[n, c, i] - mf)
        sdy += s1
        sdyx += s2
    dbeta[c] = np.float32(sdy)
    dgamma[c] = np.float32(sdyx * inv)
    # dx = gamma*inv * (dy - mean(dy) - xhat * mean(dy*xhat))
    k = np.float32(gamma[c] * inv)
    mdy = np.float32(sdy / M)
    mdyx = np.float32(sdyx * inv * inv / M)  # mean(dy*xhat) * inv
    for n in range(N):
        for i in range(S):
            o[n, c, i] = k * (g[n, c, i] - mdy - (a[n, c, i] - mf) * mdyx)


@parallel_kernel
def batchnorm_backward(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta):
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C)
    a = x.reshape((N, C, S))
    g = dy.reshape((N, C, S))
    o = dx.reshape((N, C, S))
    if x.size >= PAR_MIN and C > 1:
        for c in prange(C):
            _bwd_channel(a, g, o, c, gamma, save_mean, save_invstd, dgamma, dbeta)
    else:
        for c in range(C):
            _bwd_channel(a, g, o, c, gamma, save_mean, save_invstd, dgamma, dbeta)
