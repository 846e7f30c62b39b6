"""Reference losses (NumPy). Each returns (loss, gradient w.r.t. the first argument); means over the batch."""
from __future__ import annotations

import numpy as np


def _log_softmax(z, axis):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def softmax_cross_entropy(logits, labels):
    """logits (N, K), labels int (N,): mean over N of -log softmax(logits)[label]."""
    n = logits.shape[0]
    lsm = _log_softmax(logits, 1)
    loss = -lsm[np.arange(n), labels].mean()
    d = np.exp(lsm)
    d[np.arange(n), labels] -= 1
    return float(loss), d / n


def pixel_cross_entropy(logits, labels, ignore_index=-1):
    """logits (N, K, H, W), labels (N, H, W): mean over the non-ignored pixels (all N*H*W when none is ignored)."""
    lsm = _log_softmax(logits, 1)
    valid = labels != ignore_index
    count = int(valid.sum())
    safe = np.where(valid, labels, 0)
    picked = np.take_along_axis(lsm, safe[:, None], axis=1)[:, 0]
    d = np.exp(lsm)
    onehot = np.zeros_like(d)
    np.put_along_axis(onehot, safe[:, None], 1, axis=1)
    d = (d - onehot) * valid[:, None]
    if count == 0:
        return 0.0, np.zeros_like(logits)
    return float(-(picked * valid).sum() / count), d / count


def mse(pred, target):
    d = pred - target
    return float((d * d).mean()), 2 * d / d.size


def smooth_l1(pred, target, beta):
    """PyTorch SmoothL1Loss: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta == 0: L1)."""
    d = pred - target
    a = np.abs(d)
    if beta == 0:
        return float(a.mean()), np.sign(d) / d.size
    loss = np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
    grad = np.where(a < beta, d / beta, np.sign(d))
    return float(loss.mean()), grad / d.size
