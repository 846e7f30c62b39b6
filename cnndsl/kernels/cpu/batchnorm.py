"""Batch normalization over axis 1 of (N, C, H, W) or (N, F) (float32 C-contiguous).

Training forward: per channel, batch mean and biased variance (sums in float64)
normalize x; saves mean and inv_std = 1/sqrt(var + eps) for the backward, and
updates running_mean / running_var IN PLACE with the PyTorch convention
    running = (1 - momentum) * running + momentum * batch_stat
where running_var uses the UNBIASED batch variance var * M / (M - 1), M = N*H*W
(the biased one if M == 1).
Inference forward: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
Backward (training statistics): dx, dgamma, dbeta, all overwritten.

The fused_batchnorm variants take `act` (the code of cnndsl/ops/fused/epilogue.py: 0 none,
1 relu, 2 leaky_relu, 3 sigmoid, 4 tanh) and alpha: the forward writes act(x * scale + shift)
row by row (the fused conv's activation loops, epilogue.py); the backward differentiates the
activation from the output y on the fly, dz = act'(y) * dy, in both of its sweeps, so dz is
never stored. The plain kernels are the same loops with act 0.
"""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.cpu.common import I0, PAR_MIN, kernel
from cnndsl.kernels.cpu.epilogue import NO_ACTIVATION, activate_affine, activation_grad_loop
from cnndsl.kernels.cpu.parallel import chunks, parallel_items


@kernel
def _affine_rows(a, o, c, scale, shift, act, alpha):
    """o[n, c] = act(a[n, c] * scale + shift) for every n, with the fused conv's activation loops."""
    for n in range(a.shape[0]):
        activate_affine(a[n, c], o[n, c], scale, shift, act, alpha)


@kernel
def _train_channel(a, o, c, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd,
                   act, alpha):
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
    _affine_rows(a, o, c, scale, beta[c] - mf * scale, act, alpha)


@kernel
def _train_channels(t, per, a, o, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd, act,
                    alpha):
    """Channels t*per .. of the training forward (an item of parallel.parallel_items)."""
    for c in range(t * per, min((t + 1) * per, a.shape[1])):
        _train_channel(a, o, c, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd, act,
                       alpha)


_train_items = parallel_items(_train_channels)


@kernel
def fused_batchnorm_train_forward(x, gamma, beta, eps, momentum, running_mean, running_var, act, alpha, y,
                                  save_mean, save_invstd):
    """y = act(batchnorm(x)) with the batch statistics; saves them and updates the running ones."""
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C)
    a = x.reshape((N, C, S))
    o = y.reshape((N, C, S))
    al = np.float32(alpha)
    if x.size >= PAR_MIN and C > 1:  # a chunk of channels per thread (parallel.py)
        items, per = chunks(C)
        _train_items(items, per, a, o, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd,
                     act, al)
    else:
        _train_channels(I0, C, a, o, gamma, beta, eps, momentum, running_mean, running_var, save_mean, save_invstd,
                        act, al)


@kernel
def batchnorm_train_forward(x, gamma, beta, eps, momentum, running_mean, running_var, y, save_mean, save_invstd):
    fused_batchnorm_train_forward(x, gamma, beta, eps, momentum, running_mean, running_var, NO_ACTIVATION,
                                  np.float32(0.0), y, save_mean, save_invstd)


@kernel
def _infer_channel(a, o, c, gamma, beta, running_mean, running_var, eps, act, alpha):
    scale = np.float32(gamma[c] / np.sqrt(np.float64(running_var[c]) + eps))
    _affine_rows(a, o, c, scale, beta[c] - running_mean[c] * scale, act, alpha)


@kernel
def _infer_channels(t, per, a, o, gamma, beta, running_mean, running_var, eps, act, alpha):
    """Channels t*per .. of the inference forward (an item of parallel.parallel_items)."""
    for c in range(t * per, min((t + 1) * per, a.shape[1])):
        _infer_channel(a, o, c, gamma, beta, running_mean, running_var, eps, act, alpha)


_infer_items = parallel_items(_infer_channels)


@kernel
def fused_batchnorm_inference_forward(x, gamma, beta, running_mean, running_var, eps, act, alpha, y):
    """y = act(batchnorm(x)) with the running statistics."""
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C)
    a = x.reshape((N, C, S))
    o = y.reshape((N, C, S))
    al = np.float32(alpha)
    if x.size >= PAR_MIN and C > 1:
        items, per = chunks(C)
        _infer_items(items, per, a, o, gamma, beta, running_mean, running_var, eps, act, al)
    else:
        _infer_channels(I0, C, a, o, gamma, beta, running_mean, running_var, eps, act, al)


@kernel
def batchnorm_inference_forward(x, gamma, beta, running_mean, running_var, eps, y):
    fused_batchnorm_inference_forward(x, gamma, beta, running_mean, running_var, eps, NO_ACTIVATION, np.float32(0.0), y)


@kernel
def _bwd_channel(a, yv, g, act, alpha, o, c, gamma, save_mean, save_invstd, dgamma, dbeta):
    """Both sweeps read dz = act'(y) * dy, recomputed a row at a time from (y, dy) into a row buffer
    instead of stored. The row goes through epilogue.activation_grad_loop, whose dispatch on the
    code is outside its loop: with the per-element grad_from_output (a branch per registered
    activation on every element, and no vectorizing), vgg_small's batchnorm gradients took 163 of
    its 280 ms training step (2 threads, quiet)."""
    N, _, S = a.shape
    M = N * S
    mf = save_mean[c]
    inv = save_invstd[c]
    dz = np.empty(S, np.float32)
    sdy = 0.0
    sdyx = 0.0
    for n in range(N):
        activation_grad_loop(yv[n, c], g[n, c], dz, act, alpha)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        for i in range(S):
            s1 += dz[i]
            s2 += dz[i] * (a[n, c, i] - mf)
        sdy += s1
        sdyx += s2
    dbeta[c] = np.float32(sdy)
    dgamma[c] = np.float32(sdyx * inv)
    # dx = gamma*inv * (dy - mean(dy) - xhat * mean(dy*xhat))
    k = np.float32(gamma[c] * inv)
    mdy = np.float32(sdy / M)
    mdyx = np.float32(sdyx * inv * inv / M)  # mean(dy*xhat) * inv
    for n in range(N):
        activation_grad_loop(yv[n, c], g[n, c], dz, act, alpha)
        for i in range(S):
            o[n, c, i] = k * (dz[i] - mdy - (a[n, c, i] - mf) * mdyx)


@kernel
def _bwd_channels(t, per, a, yv, g, act, alpha, o, gamma, save_mean, save_invstd, dgamma, dbeta):
    """Channels t*per .. of the backward (an item of parallel.parallel_items)."""
    for c in range(t * per, min((t + 1) * per, a.shape[1])):
        _bwd_channel(a, yv, g, act, alpha, o, c, gamma, save_mean, save_invstd, dgamma, dbeta)


_bwd_items = parallel_items(_bwd_channels)


@kernel
def fused_batchnorm_backward(x, y, dy, act, alpha, gamma, save_mean, save_invstd, dx, dgamma, dbeta):
    """batchnorm_backward of dz = act'(y) * dy, y the fused forward's output (dz never stored)."""
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C)
    a = x.reshape((N, C, S))
    yv = y.reshape((N, C, S))
    g = dy.reshape((N, C, S))
    o = dx.reshape((N, C, S))
    al = np.float32(alpha)
    if x.size >= PAR_MIN and C > 1:
        items, per = chunks(C)
        _bwd_items(items, per, a, yv, g, act, al, o, gamma, save_mean, save_invstd, dgamma, dbeta)
    else:
        _bwd_channels(I0, C, a, yv, g, act, al, o, gamma, save_mean, save_invstd, dgamma, dbeta)


@kernel
def batchnorm_backward(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta):
    fused_batchnorm_backward(x, dy, dy, NO_ACTIVATION, np.float32(0.0), gamma, save_mean, save_invstd, dx, dgamma,
                             dbeta)
