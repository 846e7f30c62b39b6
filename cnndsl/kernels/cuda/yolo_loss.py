"""The YOLO-style detection loss on the GPU (formulas: cnndsl/kernels/reference/yolo_loss.py;
the CPU kernel: cnndsl/kernels/cpu/yolo_loss.py). One thread per predictor of a cell writes the
gradient of its P = classes + 5 channels and its loss term; `reduce.sum_to` adds the terms.
"""
from __future__ import annotations

import math

from cnndsl.kernels.cuda.common import F32, cuda, div_mod, float32, int64, kernel


@kernel(F32, F32, F32, F32, int64, int64, int64, int64, float32, float32, float32)
def yolo_terms(z, t, d, terms, N, B, P, S, noobj, coord, gscale):
    """z, t, d flat (N, B*P, S). terms[(n*B + b)*S + s] = the loss of predictor b of cell s
    of sample n; d = its gradient times gscale (= weight / N)."""
    one = float32(1.0)
    zero = float32(0.0)
    for it in range(cuda.grid(1), N * B * S, cuda.gridsize(1)):
        nb, s = div_mod(it, S, N * B * S)
        base = nb * P * S + s  # channel c of this predictor at base + c * S
        zo = z[base + 4 * S]
        to = t[base + 4 * S]
        has = to > float32(0.5)
        w = one if has else noobj
        so = one / (one + math.exp(-zo))
        term = w * ((zo if zo > zero else zero) - zo * to + math.log1p(math.exp(-math.fabs(zo))))
        d[base + 4 * S] = w * (so - to) * gscale
        if not has:
            for k in range(4):
                d[base + k * S] = zero
            for k in range(5, P):
                d[base + k * S] = zero
            terms[it] = term
            continue
        for k in range(4):
            sk = one / (one + math.exp(-z[base + k * S]))
            e = sk - t[base + k * S]
            term += coord * e * e
            d[base + k * S] = coord * float32(2.0) * e * sk * (one - sk) * gscale
        m = z[base + 5 * S]
        for k in range(6, P):
            v = z[base + k * S]
            if v > m:
                m = v
        tot = zero
        tsum = zero
        for k in range(5, P):
            tot += math.exp(z[base + k * S] - m)
            tsum += t[base + k * S]
        lse = math.log(tot) + m
        for k in range(5, P):
            zk = z[base + k * S]
            tk = t[base + k * S]
            term -= tk * (zk - lse)
            d[base + k * S] = (math.exp(zk - lse) * tsum - tk) * gscale
        terms[it] = term
