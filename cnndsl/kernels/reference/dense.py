"""Reference dense layer: y = x W^T + b, W (units, in_features)."""
from __future__ import annotations


def dense(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


def dense_backward(x, w, dy):
    """(dx, dW, db)."""
    return dy @ w, dy.T @ x, dy.sum(axis=0)
