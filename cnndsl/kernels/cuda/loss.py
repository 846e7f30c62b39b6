"""Fused losses: each writes dL/dprediction (times the loss weight) and per-row or
per-element loss terms; `reduce.sum_to` then writes the loss value into a small device
array of loss values (read back once per run). Same formulas as cnndsl/kernels/cpu/loss.py;
labels are int64, -1 is ignored by pixel cross-entropy. A label outside [0, K) (and not that -1)
would index the gradient out of bounds: its row or pixel gets a zero gradient and a NaN loss term
instead, so the loss is NaN and training stops as on any non-finite loss (a kernel cannot raise;
the CPU kernels raise ValueError, and the data loaders reject such labels before either runs).
"""
from __future__ import annotations

import math

from cnndsl.kernels.cuda.common import F32, I64, cuda, div_mod, float32, int64, kernel
from cnndsl.kernels.cuda.elementwise import softmax_column


@kernel(F32, I64, F32, F32, int64, int64, float32)
def cross_entropy_rows(logits, labels, d, terms, N, K, gscale):
    """Row n of (N, K): terms[n] = logsumexp(z) - z[label]; d = (softmax - onehot) * gscale
    (gscale = weight / N)."""
    for n in range(cuda.grid(1), N, cuda.gridsize(1)):
        base = n * K
        lab = labels[n]
        if lab < 0 or lab >= K:
            for k in range(K):
                d[base + k] = float32(0.0)
            terms[n] = float32(math.nan)
            continue
        m = logits[base]
        for k in range(1, K):
            v = logits[base + k]
            if v > m:
                m = v
        s = float32(0.0)
        for k in range(K):
            e = math.exp(logits[base + k] - m)
            d[base + k] = e
            s += e
        inv = gscale / s
        for k in range(K):
            d[base + k] *= inv
        d[base + lab] -= gscale
        terms[n] = math.log(s) + m - logits[base + lab]


@kernel(F32, I64, F32, F32, F32, int64, int64, int64)
def pixel_cross_entropy_terms(logits, labels, d, terms, valid, N, K, S):
    """Per pixel (n, s) of (N, K, S): softmax - onehot into d (unscaled), the loss term and a
    valid flag (0 for label -1, whose gradient is 0; a label outside [0, K): NaN term)."""
    for it in range(cuda.grid(1), N * S, cuda.gridsize(1)):
        n, s = div_mod(it, S, N * S)
        base = n * K * S + s
        y = labels[it]
        if y < 0 or y >= K:
            for k in range(K):
                d[base + k * S] = float32(0.0)
            terms[it] = float32(0.0) if y == -1 else float32(math.nan)
            valid[it] = float32(0.0) if y == -1 else float32(1.0)
            continue
        m, t = softmax_column(logits, d, base, K, S)
        d[base + y * S] -= float32(1.0)
        terms[it] = math.log(t) + m - logits[base + y * S]
        valid[it] = float32(1.0)


@kernel(F32, F32, float32, F32, int64, int64)
def pixel_cross_entropy_finish(d, totals, weight, values, idx, n):
    """d *= weight / count and values[idx] = weight * loss_sum / count, from
    totals = (loss_sum, count); loss 0 and zero gradient when every pixel is ignored."""
    cnt = totals[1]
    f = weight / cnt if cnt > float32(0.0) else float32(0.0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        d[i] *= f
    if cuda.grid(1) == 0:
        values[idx] = totals[0] * f


@kernel(F32, F32, F32, F32, float32, int64)
def mse_terms(pred, target, g, terms, gscale, n):
    """terms = (p - t)^2; g = gscale * (p - t) with gscale = 2 * weight / n."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        d = pred[i] - target[i]
        terms[i] = d * d
        g[i] = gscale * d


@kernel(F32, F32, float32, F32, F32, float32, int64)
def smooth_l1_terms(pred, target, beta, g, terms, gscale, n):
    """PyTorch SmoothL1: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta 0: L1);
    g = gscale * dloss/dd with gscale = weight / n."""
    z = float32(0.0)
    half = float32(0.5)
    ib = float32(1.0) / beta if beta > z else z
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        d = pred[i] - target[i]
        a = math.fabs(d)
        if a < beta:
            terms[i] = half * d * d * ib
            g[i] = d * ib * gscale
        else:
            terms[i] = a - half * beta
            g[i] = gscale if d > z else (-gscale if d < z else z)
