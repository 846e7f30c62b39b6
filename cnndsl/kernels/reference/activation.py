"""Reference activations (NumPy, float64): every element-wise activation by name, from its record
(cnndsl/kernels/activations.py), its gradient always from the input x (the oracle the kernels'
output-based gradients are checked against); prelu; softmax over axis 1 (vectors (N, K) or maps
(N, K, H, W))."""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.activations import BY_NAME


def activation(x, name: str, alpha: float = 0.0):
    """y = name(x)."""
    return BY_NAME[name].reference(x, alpha)


def activation_backward(x, dy, name: str, alpha: float = 0.0):
    """dL/dx of name at x."""
    return BY_NAME[name].reference_grad(x, dy, alpha)


def _channel(slope, ndim: int):
    return np.asarray(slope).reshape((1, -1) + (1,) * (ndim - 2))


def prelu(x, slope):
    return np.where(x > 0, x, _channel(slope, x.ndim) * x)


def prelu_backward(x, dy, slope):
    """(dx, dslope)."""
    neg = x <= 0
    dx = np.where(neg, _channel(slope, x.ndim) * dy, dy)
    axes = (0,) + tuple(range(2, x.ndim))
    return dx, np.where(neg, dy * x, 0.0).sum(axis=axes)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(y, dy):
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))
