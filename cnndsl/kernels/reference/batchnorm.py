"""Reference batch normalization over axis 1 of (N, C, H, W) or (N, F).

Training: batch mean and biased variance normalize; running statistics follow
PyTorch: running = (1 - m) * running + m * batch, with the UNBIASED batch
variance (times M / (M - 1), M = elements per channel; when M == 1 the biased one).
"""
from __future__ import annotations

import numpy as np


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bc(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batchnorm_train(x, gamma, beta, eps, momentum, running_mean, running_var):
    """(y, mean, inv_std, new_running_mean, new_running_var); the inputs are not modified."""
    ax = _axes(x)
    m = x.size // x.shape[1]
    mean = x.mean(axis=ax)
    var = ((x - _bc(mean, x)) ** 2).mean(axis=ax)
    inv_std = 1 / np.sqrt(var + eps)
    y = (x - _bc(mean, x)) * _bc(inv_std * gamma, x) + _bc(beta, x)
    unbiased = var * m / (m - 1) if m > 1 else var
    new_rm = (1 - momentum) * running_mean + momentum * mean
    new_rv = (1 - momentum) * running_var + momentum * unbiased
    return y, mean, inv_std, new_rm, new_rv


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps):
    return (x - _bc(running_mean, x)) / np.sqrt(_bc(running_var, x) + eps) * _bc(gamma, x) + _bc(beta, x)


def batchnorm_backward(x, dy, gamma, mean, inv_std):
    """(dx, dgamma, dbeta) of training-mode batchnorm (batch statistics)."""
    ax = _axes(x)
    xhat = (x - _bc(mean, x)) * _bc(inv_std, x)
    dgamma = (dy * xhat).sum(axis=ax)
    dbeta = dy.sum(axis=ax)
    dxhat = dy * _bc(gamma, x)
    dx = _bc(inv_std, x) * (dxhat - _bc(dxhat.mean(axis=ax), x) - xhat * _bc((dxhat * xhat).mean(axis=ax), x))
    return dx, dgamma, dbeta
