"""Pooling kernels: max (with saved argmax), average, L2, global average; forward and backward.

One thread per output element forward (grid-stride over N*C*OH*OW). Backward kernels
gather: one thread per INPUT element sums over the windows that contain it (at most
ceil(KH/sh) x ceil(KW/sw) of them), so overlapping windows need no atomics and results are
deterministic. Windows as in the CPU kernels: pads (pt, pl), dilation (dh, dw); avg and L2
divide by the number of non-padding elements; maxpool's idx holds the flat ih*W + iw of
the first maximum in row-major window order (-1 for an empty window).
"""
from __future__ import annotations

import math

from cnndsl.kernels.cuda.common import F32, I32, cuda, float32, int64, kernel

_POOL = (int64,) * 12  # N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl
L2_EPS = float32(1e-30)


@kernel(F32, F32, I32, *_POOL, int64, int64)
def maxpool_forward(x, y, idx, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw):
    for o in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):
        ow = o % OW
        oh = (o // OW) % OH
        nc = o // (OH * OW)
        base = nc * H * W
        best = -math.inf
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
        y[o] = float32(best)
        idx[o] = arg


@kernel(F32, I32, F32, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64)
def maxpool_backward(dy, idx, dx, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl):
    """dx[i] = sum of dy over the windows whose saved argmax is i (dilation 1)."""
    for i in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        iw = i % W
        ih = (i // W) % H
        nc = i // (H * W)
        me = ih * W + iw
        acc = float32(0.0)
        for kh in range(KH):
            th = ih + pt - kh
            if th >= 0:
                oh = th // sh
                if oh * sh == th and oh < OH:
                    for kw in range(KW):
                        tw = iw + pl - kw
                        if tw >= 0:
                            ow = tw // sw
                            if ow * sw == tw and ow < OW:
                                o = (nc * OH + oh) * OW + ow
                                if idx[o] == me:
                                    acc += dy[o]
        dx[i] = acc


@kernel(F32, F32, *_POOL, int64, int64, int64)
def avg_l2_forward(x, y, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, l2):
    """Average (l2 == 0) or L2 (sqrt of the mean of squares) over the window's input elements."""
    for o in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):
        ow = o % OW
        oh = (o // OW) % OH
        nc = o // (OH * OW)
        base = nc * H * W
        acc = float32(0.0)
        cnt = 0
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            if ih >= 0 and ih < H:
                for kw in range(KW):
                    iw = ow * sw - pl + kw * dw
                    if iw >= 0 and iw < W:
                        v = x[base + ih * W + iw]
                        acc += v * v if l2 else v
                        cnt += 1
        m = acc / float32(max(cnt, 1))
        y[o] = math.sqrt(m) if l2 else m


@device_count := None  # placeholder removed below
