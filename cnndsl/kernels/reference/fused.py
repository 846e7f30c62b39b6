"""Reference fused ops (NumPy, any float dtype): compositions of the existing references.

    fused_conv2d = activation(conv2d(x, w, b) + residual)
    fused_dense  = activation(dense(x, w, b))
    fused_batchnorm = activation(batchnorm(x)), training (batch statistics) or inference (running ones);
    its backward is batchnorm's, of dz = the activation's gradient at z (recomputed from x and the
    saved statistics)
    fold_batchnorm(w, b, ...) -> (w', b') such that layer(x; w', b') = batchnorm_inference(layer(x; w, b))
"""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.reference import activation as A
from cnndsl.kernels.reference import batchnorm as B
from cnndsl.kernels.reference import conv as C
from cnndsl.kernels.reference import dense as D


def apply_activation(z, activation: str, alpha: float):
    return A.activation(z, activation, alpha)


def fused_conv2d(x, w, b, residual, activation, alpha, stride, pads, dilation, groups):
    z = C.conv2d(x, w, b, stride, pads, dilation, groups)
    if residual is not None:
        z = z + residual
    return apply_activation(z, activation, alpha)


def fused_dense(x, w, b, activation, alpha):
    return apply_activation(D.dense(x, w, b), activation, alpha)


def fold_batchnorm(w, b, gamma, beta, running_mean, running_var, eps):
    """Scale each output channel (axis 0 of w) by s = gamma / sqrt(var + eps); b' = (b - mean) * s + beta."""
    s = gamma / np.sqrt(running_var + eps)
    b0 = np.zeros_like(gamma) if b is None else b
    return w * s.reshape((-1,) + (1,) * (w.ndim - 1)), (b0 - running_mean) * s + beta


def fused_batchnorm_train(x, gamma, beta, eps, momentum, running_mean, running_var, activation, alpha):
    """(y, mean, inv_std, new_running_mean, new_running_var) with y = activation(batchnorm_train(x))."""
    z, *saved = B.batchnorm_train(x, gamma, beta, eps, momentum, running_mean, running_var)
    return (apply_activation(z, activation, alpha), *saved)


def fused_batchnorm_inference(x, gamma, beta, running_mean, running_var, eps, activation, alpha):
    return apply_activation(B.batchnorm_inference(x, gamma, beta, running_mean, running_var, eps), activation, alpha)


def fused_batchnorm_backward(x, y, dy, gamma, beta, mean, inv_std, activation, alpha):
    """(dx, dgamma, dbeta): batchnorm's backward of dz = the activation's gradient at z, the batchnorm's
    output recomputed from x, the saved statistics, gamma and beta (y is not needed; kept for the
    kernels' argument order)."""
    shape = [1] * x.ndim
    shape[1] = -1
    r = lambda a: np.asarray(a).reshape(shape)  # noqa: E731
    xhat = (x - r(mean)) * r(inv_std)
    z = xhat * r(gamma) + r(beta)
    return B.batchnorm_backward(x, A.activation_backward(z, dy, activation, alpha), gamma, mean, inv_std)
