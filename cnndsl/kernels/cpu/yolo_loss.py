"""The YOLO-style detection loss (formulas: cnndsl/kernels/reference/yolo_loss.py).

yolo_loss(z (N, B*P, GH, GW), t (same), boxes, noobj, coord, grad) returns the loss (a
Python float, sum over predictors and cells, mean over the batch) and OVERWRITES grad
(same shape as z) with dloss/dz. P = classes + 5: x, y, sqrt(w), sqrt(h), objectness,
class scores. Predictors whose target objectness is above 0.5 hold an object: box (squared
error of the sigmoids, times coord) and class (softmax cross-entropy) are trained only
there; objectness (BCE on the sigmoid) everywhere, times noobj where there is no object.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, kernel, parallel_kernel


@kernel
def _sample(z, t, g, n, boxes, per, S, noobj, coord, invn):
    # z, t, g viewed as (N, B*P, S); returns the loss of sample n (not divided by N)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    total = 0.0
    for b in range(boxes):
        base = b * per
        for s in range(S):
            zo = z[n, base + 4, s]
            to = t[n, base + 4, s]
            has = to > np.float32(0.5)
            w = one if has else noobj
            so = one / (one + np.exp(-zo))
            total += w * (max(zo, zero) - zo * to + math.log1p(math.exp(-abs(zo))))
            g[n, base + 4, s] = w * (so - to) * invn
            if not has:
                for k in range(4):
                    g[n, base + k, s] = zero
                for k in range(5, per):
                    g[n, base + k, s] = zero
                continue
            for k in range(4):
                sk = one / (one + np.exp(-z[n, base + k, s]))
                d = sk - t[n, base + k, s]
                total += coord * d * d
                g[n, base + k, s] = coord * np.float32(2.0) * d * sk * (one - sk) * invn
            m = z[n, base + 5, s]
            for k in range(6, per):
                m = max(m, z[n, base + k, s])
            e = zero
            tsum = zero
            for k in range(5, per):
                e += np.exp(z[n, base + k, s] - m)
                tsum += t[n, base + k, s]
            lse = np.float32(math.log(e)) + m
            for k in range(5, per):
                tk = t[n, base + k, s]
                zk = z[n, base + k, s]
                total += -tk * (zk - lse)
                g[n, base + k, s] = (np.exp(zk - lse) * tsum - tk) * invn
    return total


@parallel_kernel
def _all(z, t, g, boxes, per, noobj, coord, invn, sums):
    N, C, S = z.shape
    if z.size >= PAR_MIN:
        for n in prange(N):
            sums[n] = _sample(z, t, g, n, boxes, per, S, noobj, coord, invn)
    else:
        for n in range(N):
            sums[n] = _sample(z, t, g, n, boxes, per, S, noobj, coord, invn)


@kernel
def yolo_loss(z, t, boxes, noobj, coord, grad):
    N, C = z.shape[0], z.shape[1]
    S = z.size // (N * C)
    sums = np.empty(N, np.float64)
    _all(z.reshape((N, C, S)), t.reshape((N, C, S)), grad.reshape((N, C, S)), boxes, C // boxes,
         np.float32(noobj), np.float32(coord), np.float32(1.0 / N), sums)
    return sums.sum() / N
