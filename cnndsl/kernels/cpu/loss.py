"""Fused, numerically stable losses. Each returns the loss (a Python float, mean over
the batch) and OVERWRITES the gradient buffer (same shape as the prediction).

softmax_cross_entropy(logits (N, K), labels int64 (N,), dlogits)
    loss = mean_n [logsumexp(z_n) - z_n[y_n]],  dlogits = (softmax - onehot) / N
pixel_cross_entropy(logits (N, K, H, W), labels int64 (N, H, W), dlogits)
    the same per pixel; pixels labelled -1 are ignored (zero loss and gradient) and the
    mean is over the non-ignored pixels (N*H*W when none is ignored; loss 0 if all are).
mse(pred, target, grad): mean over all elements of (p - t)^2, grad = 2 (p - t) / size
smooth_l1(pred, target, beta, grad): PyTorch SmoothL1Loss, mean over all elements:
    0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta;  beta == 0 is plain L1.
A label outside [0, K) (other than pixel cross-entropy's -1) raises ValueError naming the first
one: it would index the gradient buffer out of bounds (issue 13: a label of 10^7 crashed training,
one of 10^5 wrote elsewhere and reported a loss of -2.25e28). The data loaders reject such labels with a located error first; this
check keeps memory safe for any other caller, for one pass over the N (or N*H*W) labels: no
difference beyond noise measured (CE on (64, 10): 2.7 us; pixel CE on (8, 3, 64, 64): 0.7-0.9 ms).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.activation import softmax_col
from cnndsl.kernels.cpu.common import I0, PAR_MIN, kernel, parallel_kernel


@kernel
def _first_bad_label(labels, lo, hi):
    """Index of the first of the (flat) labels outside [lo, hi), or -1."""
    for i in range(labels.size):
        if labels[i] < lo or labels[i] >= hi:
            return i
    return -1


# The label checks run before the compiled losses and raise from Python: a message built inside a
# kernel (str() of ints, concatenation) compiled about a dozen of Numba's string functions into it
# (about 1 CPU s cold, measured with compile_events).
def softmax_cross_entropy(logits, labels, dlogits):
    N, K = logits.shape
    bad = _first_bad_label(labels, I0, np.int64(K))  # I0: see common.I0
    if bad >= 0:
        raise ValueError(f"cross-entropy label {labels[bad]} of sample {bad} is outside [0, {K}), the range of the "
                         "logits' classes")
    return _softmax_cross_entropy(logits, labels, dlogits)


@kernel
def _softmax_cross_entropy(logits, labels, dlogits):
    N, K = logits.shape
    invn = np.float32(1.0 / N)
    total = 0.0
    for n in range(N):
        m = logits[n, 0]
        for k in range(1, K):
            m = max(m, logits[n, k])
        s = np.float32(0.0)
        for k in range(K):
            e = np.exp(logits[n, k] - m)
            dlogits[n, k] = e
            s += e
        lab = labels[n]
        total += np.float64(math.log(s)) + np.float64(m) - np.float64(logits[n, lab])
        inv = invn / s
        for k in range(K):
            dlogits[n, k] *= inv
        dlogits[n, lab] -= invn
    return total / N


@kernel
def _pixel_ce_plane(a, lab, d, n, K, S):
    # returns (sum of losses, count) over the S pixels of sample n; fills d[n]
    total = 0.0
    cnt = 0
    z = np.float32(0.0)
    for s in range(S):
        y = lab[n, s]
        if y < 0:
            for k in range(K):
                d[n, k, s] = z
            continue
        m, t = softmax_col(a, d, n, s, K, S)
        d[n, y, s] -= np.float32(1.0)
        total += np.float64(math.log(t)) + np.float64(m) - np.float64(a[n, y, s])
        cnt += 1
    return total, cnt


@parallel_kernel
def _pixel_ce(a, lab, d, sums, counts):
    N, K, S = a.shape
    if a.size >= PAR_MIN:
        for n in prange(N):
            t, c = _pixel_ce_plane(a, lab, d, n, K, S)
            sums[n] = t
            counts[n] = c
    else:
        for n in range(N):
            t, c = _pixel_ce_plane(a, lab, d, n, K, S)
            sums[n] = t
            counts[n] = c


@parallel_kernel
def _scale(d, f):
    o = d.reshape(d.size)
    if o.size >= PAR_MIN:
        for i in prange(o.size):
            o[i] *= f
    else:
        for i in range(o.size):
            o[i] *= f


def pixel_cross_entropy(logits, labels, dlogits):
    N, K = logits.shape[0], logits.shape[1]
    S = logits.size // (N * K)
    flat = labels.reshape(N * S)
    # np.int64, not a literal (see common.I0); checked here, not in the prange: see kernel_cache.py
    bad = _first_bad_label(flat, np.int64(-1), np.int64(K))
    if bad >= 0:
        raise ValueError(f"pixel cross-entropy label {flat[bad]} of sample {bad // S}, pixel {bad % S} is outside "
                         f"[0, {K}) and is not -1 (ignored)")
    return _pixel_cross_entropy(logits, labels, dlogits)


@kernel
def _pixel_cross_entropy(logits, labels, dlogits):
    N, K = logits.shape[0], logits.shape[1]
    S = logits.size // (N * K)
    a = logits.reshape((N, K, S))
    lab = labels.reshape((N, S))
    d = dlogits.reshape((N, K, S))
    sums = np.empty(N, np.float64)
    counts = np.empty(N, np.int64)
    _pixel_ce(a, lab, d, sums, counts)
    total = sums.sum()
    cnt = counts.sum()
    if cnt == 0:
        _scale(d, np.float32(0.0))
        return 0.0
    _scale(d, np.float32(1.0 / cnt))
    return total / cnt


@kernel
def mse(pred, target, grad):
    p = pred.reshape(pred.size)
    t = target.reshape(target.size)
    g = grad.reshape(grad.size)
    M = p.size
    f = np.float32(2.0 / M)
    total = 0.0
    s = np.float32(0.0)
    for i in range(M):
        d = p[i] - t[i]
        s += d * d
        g[i] = f * d
        if (i & 4095) == 4095:
            total += s
            s = np.float32(0.0)
    total += s
    return total / M


@kernel
def smooth_l1(pred, target, beta, grad):
    p = pred.reshape(pred.size)
    t = target.reshape(target.size)
    g = grad.reshape(grad.size)
    M = p.size
    invm = np.float32(1.0 / M)
    b = np.float32(beta)
    half_b = np.float32(0.5 * beta)
    ib = np.float32(1.0 / beta) if beta > 0 else np.float32(0.0)
    z = np.float32(0.0)
    total = 0.0
    s = np.float32(0.0)
    for i in range(M):
        d = p[i] - t[i]
        a = abs(d)
        if a < b:
            s += np.float32(0.5) * d * d * ib
            g[i] = d * ib * invm
        else:
            s += a - half_b
            g[i] = (invm if d > z else (-invm if d < z else z))
        if (i & 4095) == 4095:
            total += s
            s = np.float32(0.0)
    total += s
    return total / M
