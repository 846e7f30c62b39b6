"""Pooling kernels: max (with saved argmax), average, L2; forward and backward.

One thread per output element forward (grid-stride over N*C*OH*OW). Backward kernels
gather: one thread per INPUT element sums over the windows that contain it (at most
ceil(KH/sh) x ceil(KW/sw) of them), so overlapping windows need no atomics and the result
is deterministic. Windows as in the CPU kernels: pads (pt, pl), dilation (dh, dw); avg and
L2 divide by the number of non-padding elements; maxpool's idx holds the flat ih*W + iw of
the first maximum in row-major window order (-1, and -inf, for a window without input).
Global average pooling is `reduce.channel_sum` (forward) and `global_avgpool_backward`.

Arguments after the buffers: N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw.
"""
from __future__ import annotations

import math

import numpy as np

from cnndsl.kernels.cuda.common import F32, I32, cuda, device, div_mod, float32, int64, kernel

_GEO = (int64,) * 14
NEG_INF = np.float32(-np.inf)
L2_EPS = np.float32(1e-30)
AVG, L2 = 0, 1


@kernel(F32, F32, I32, *_GEO)
def maxpool_forward(x, y, idx, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw):
    total = N * C * OH * OW
    for o in range(cuda.grid(1), total, cuda.gridsize(1)):
        rest, ow = div_mod(o, OW, total)
        nc, oh = div_mod(rest, OH, total)
        base = nc * H * W
        best = NEG_INF
        arg = -1
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            if ih >= 0 and ih < H:
                for kw in range(KW):
                    iw = ow * sw - pl + kw * dw
                    if iw >= 0 and iw < W:
                        v = x[base + ih * W + iw]
                        if arg < 0 or v > best:
                            best = v
                            arg = ih * W + iw
        y[o] = best
        idx[o] = arg


@device
def _window_of(t, k, s, d, pad, OUT):
    """The output index whose window has tap k at input position t, or -1."""
    q = t + pad - k * d
    if q < 0:
        return -1
    o, r = div_mod(q, s, q + 1)
    if r != 0 or o >= OUT:
        return -1
    return o


@kernel(F32, I32, F32, *_GEO)
def maxpool_backward(dy, idx, dx, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw):
    """dx[i] = sum of dy over the windows whose saved argmax is i."""
    total = N * C * H * W
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        rest, iw = div_mod(i, W, total)
        nc, ih = div_mod(rest, H, total)
        me = ih * W + iw
        acc = float32(0.0)
        for kh in range(KH):
            oh = _window_of(ih, kh, sh, dh, pt, OH)
            if oh >= 0:
                for kw in range(KW):
                    ow = _window_of(iw, kw, sw, dw, pl, OW)
                    if ow >= 0:
                        o = (nc * OH + oh) * OW + ow
                        if idx[o] == me:
                            acc += dy[o]
        dx[i] = acc


@device
def _count(o, s, pad, k_, d, size):
    """Input elements (not padding) along one axis of the window of output o."""
    c = 0
    for k in range(k_):
        t = o * s - pad + k * d
        if t >= 0 and t < size:
            c += 1
    return c


@kernel(F32, F32, *_GEO, int64)
def avg_l2_forward(x, y, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, kind):
    """kind AVG: mean of the window's input elements; L2: sqrt of the mean of their squares."""
    total = N * C * OH * OW
    for o in range(cuda.grid(1), total, cuda.gridsize(1)):
        rest, ow = div_mod(o, OW, total)
        nc, oh = div_mod(rest, OH, total)
        base = nc * H * W
        acc = float32(0.0)
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            if ih >= 0 and ih < H:
                for kw in range(KW):
                    iw = ow * sw - pl + kw * dw
                    if iw >= 0 and iw < W:
                        v = x[base + ih * W + iw]
                        acc += v * v if kind == L2 else v
        cnt = _count(oh, sh, pt, KH, dh, H) * _count(ow, sw, pl, KW, dw, W)
        m = acc / float32(cnt if cnt > 0 else 1)
        y[o] = math.sqrt(m) if kind == L2 else m


@kernel(F32, F32, F32, F32, *_GEO, int64)
def avg_l2_backward(x, y, dy, dx, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, kind):
    """AVG: dx = sum of dy / count; L2: dx = sum of dy * x / (count * max(y, 1e-30))."""
    total = N * C * H * W
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        rest, iw = div_mod(i, W, total)
        nc, ih = div_mod(rest, H, total)
        acc = float32(0.0)
        for kh in range(KH):
            oh = _window_of(ih, kh, sh, dh, pt, OH)
            if oh >= 0:
                ch = _count(oh, sh, pt, KH, dh, H)
                for kw in range(KW):
                    ow = _window_of(iw, kw, sw, dw, pl, OW)
                    if ow >= 0:
                        o = (nc * OH + oh) * OW + ow
                        cnt = float32(ch * _count(ow, sw, pl, KW, dw, W))
                        if kind == L2:
                            yo = y[o]
                            acc += dy[o] / (cnt * (yo if yo > L2_EPS else L2_EPS))
                        else:
                            acc += dy[o] / cnt
        dx[i] = acc * x[i] if kind == L2 else acc


@kernel(F32, F32, int64, float32)
def global_avgpool_backward(dy, dx, S, inv):
    """dx[n, c, s] = dy[n, c] / S over the flat (N*C, S) map (inv = 1/S)."""
    n = dx.size
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = dy[div_mod(i, S, n)[0]] * inv
