"""Reference activations (NumPy). softmax is over axis 1 (vectors (N, K) or maps (N, K, H, W))."""
from __future__ import annotations

import numpy as np


def relu(x):
    return np.maximum(x, 0)


def relu_backward(x, dy):
    return np.where(x > 0, dy, 0)


def leaky_relu(x, alpha):
    return np.where(x > 0, x, alpha * x)


def leaky_relu_backward(x, dy, alpha):
    return np.where(x > 0, dy, alpha * dy)


def tanh(x):
    return np.tanh(x)


def tanh_backward(y, dy):
    return dy * (1 - y * y)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def sigmoid_backward(y, dy):
    return dy * y * (1 - y)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(y, dy):
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))
