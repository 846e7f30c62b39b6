"""Pooling kernels: maxpool2d, avgpool2d, l2pool2d, global_avgpool (forward and backward).

x (N, C, H, W) -> y (N, C, OH, OW), float32 C-contiguous; output size taken from y.
Window (KH, KW), stride (sh, sw), dilation (dh, dw), padding pad_top/pad_left; taps
outside the input are -inf for max, and are left out of the average (the divisor
is the number of NON-padding elements in the window) for avg and l2.

maxpool2d_forward also writes `idx` (N, C, OH, OW) int32: the flat index ih*W + iw
of the first maximum (row-major window order) inside the input plane; -1 if the
window holds only padding (then y = -inf; cannot happen with the op's padding
limits). maxpool2d_backward scatters dy through idx.

l2pool2d: y = sqrt(sum x^2 / count); backward dx = dy * x / (count * max(y, L2_EPS))
with L2_EPS = 1e-30: y == 0 only when every x in the window is 0, so the guard
gives the subgradient 0 instead of 0/0.

Backward kernels overwrite dx. Parallel over the N*C planes (each owns its dx plane).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import I0, PAR_MIN, kernel, parallel_kernel
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

L2_EPS = np.float32(1e-30)


@kernel
def _range(o, s, p, k, d, size):
    """Taps t in [lo, hi) with 0 <= o*s - p + t*d < size."""
    start = o * s - p
    lo = 0
    if start < 0:
        lo = (-start + d - 1) // d
    hi = k
    lim = (size - start + d - 1) // d
    if lim < hi:
        hi = lim
    if hi < lo:
        hi = lo
    return start, lo, hi


@kernel
def _maxpool_plane(xp, kh, kw, sh, sw, pt, pl, dh, dw, yp, ip):
    H, W = xp.shape
    OH, OW = yp.shape
    for oh in range(OH):
        h0, a0, a1 = _range(oh, sh, pt, kh, dh, H)
        for ow in range(OW):
            w0, b0, b1 = _range(ow, sw, pl, kw, dw, W)
            best = np.float32(-np.inf)
            bi = -1
            for a in range(a0, a1):
                ih = h0 + a * dh
                for b in range(b0, b1):
                    iw = w0 + b * dw
                    v = xp[ih, iw]
                    if v > best or bi < 0:
                        best = v
                        bi = ih * W + iw
            yp[oh, ow] = np.float32(best)
            ip[oh, ow] = bi


@kernel
def _maxpool_plane_2x2(xp, yp, ip):
    """The common 2x2 / stride 2 / unpadded window, with the four taps compared in the same
    (row-major, first maximum wins) order as _maxpool_plane."""
    W = xp.shape[1]
    OH, OW = yp.shape
    for oh in range(OH):
        r0 = xp[2 * oh]
        r1 = xp[2 * oh + 1]
        yr = yp[oh]
        ir = ip[oh]
        base = 2 * oh * W
        for ow in range(OW):
            j = 2 * ow
            best = r0[j]
            bi = base + j
            if r0[j + 1] > best:
                best = r0[j + 1]
                bi = base + j + 1
            if r1[j] > best:
                best = r1[j]
                bi = base + W + j
            if r1[j + 1] > best:
                best = r1[j + 1]
                bi = base + W + j + 1
            yr[ow] = best
            ir[ow] = bi


@kernel
def _maxpool_planes(t, per, x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, idx):
    """Planes t*per .. (p = n*C + c) of the general max pool (an item of parallel_items)."""
    C = x.shape[1]
    for it in range(t * per, min((t + 1) * per, x.shape[0] * C)):
        n, c = it // C, it % C
        _maxpool_plane(x[n, c], kh, kw, sh, sw, pad_top, pad_left, dh, dw, y[n, c], idx[n, c])


_maxpool_items = parallel_items(_maxpool_planes)


@kernel
def _maxpool_forward(x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, idx):
    planes = x.shape[0] * x.shape[1]
    if planes * y.shape[2] * y.shape[3] * kh * kw >= PAR_MIN:  # a chunk of planes per thread
        items, per = chunks(planes)
        _maxpool_items(items, per, x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, idx)
    else:
        _maxpool_planes(I0, planes, x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, idx)


@kernel
def _maxpool_2x2_planes(t, per, x, y, idx):
    """Planes t*per .. of the 2x2 max pool (an item of parallel_items)."""
    C = x.shape[1]
    for it in range(t * per, min((t + 1) * per, x.shape[0] * C)):
        n, c = it // C, it % C
        _maxpool_plane_2x2(x[n, c], y[n, c], idx[n, c])


_maxpool_2x2_items = parallel_items(_maxpool_2x2_planes)


@kernel
def _maxpool_2x2_forward(x, y, idx):
    planes = x.shape[0] * x.shape[1]
    if planes * y.shape[2] * y.shape[3] * 4 >= PAR_MIN:
        items, per = chunks(planes)
        _maxpool_2x2_items(items, per, x, y, idx)
    else:
        _maxpool_2x2_planes(I0, planes, x, y, idx)


def maxpool2d_forward(x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, idx):
    """y and idx of the max pool. The 2x2 / stride 2 windows that tile the plane (no padding, no
    dilation: every example network's pool) take their own kernel, chosen here rather than inside
    one kernel, so that a network of such pools never compiles the general loop (and the general
    one never compiles the 2x2 one)."""
    if (kh == 2 and kw == 2 and sh == 2 and sw == 2 and pad_top == 0 and pad_left == 0 and dh == 1 and dw == 1
            and 2 * y.shape[2] <= x.shape[2] and 2 * y.shape[3] <= x.shape[3]):
        _maxpool_2x2_forward(x, y, idx)
    else:
        _maxpool_forward(x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, idx)


@kernel
def _maxpool_bwd_plane(dyp, ip, dxp):
    H, W = dxp.shape
    OH, OW = dyp.shape
    flat = dxp.reshape(H * W)
    for i in range(H * W):
        flat[i] = np.float32(0.0)
    for oh in range(OH):
        for ow in range(OW):
            j = ip[oh, ow]
            if j >= 0:
                flat[j] += dyp[oh, ow]


@kernel
def _maxpool_bwd_planes(t, per, dy, idx, dx):
    """Planes t*per .. of maxpool2d_backward (an item of parallel_items)."""
    C = dx.shape[1]
    for it in range(t * per, min((t + 1) * per, dx.shape[0] * C)):
        _maxpool_bwd_plane(dy[it // C, it % C], idx[it // C, it % C], dx[it // C, it % C])


_maxpool_bwd_items = parallel_items(_maxpool_bwd_planes)


@kernel
def maxpool2d_backward(dy, idx, dx):
    planes = dx.shape[0] * dx.shape[1]
    if planes * dx.shape[2] * dx.shape[3] >= PAR_MIN:
        items, per = chunks(planes)
        _maxpool_bwd_items(items, per, dy, idx, dx)
    else:
        _maxpool_bwd_planes(I0, planes, dy, idx, dx)


@kernel
def _avg_plane(xp, kh, kw, sh, sw, pt, pl, dh, dw, yp, squared):
    H, W = xp.shape
    OH, OW = yp.shape
    for oh in range(OH):
        h0, a0, a1 = _range(oh, sh, pt, kh, dh, H)
        for ow in range(OW):
            w0, b0, b1 = _range(ow, sw, pl, kw, dw, W)
            s = np.float32(0.0)
            for a in range(a0, a1):
                ih = h0 + a * dh
                for b in range(b0, b1):
                    v = xp[ih, w0 + b * dw]
                    if squared:
                        s += v * v
                    else:
                        s += v
            cnt = (a1 - a0) * (b1 - b0)
            if cnt > 0:
                s = s / np.float32(cnt)
            if squared:
                s = np.sqrt(s)
            yp[oh, ow] = s


@parallel_kernel
def _avg_fwd(x, kh, kw, sh, sw, pt, pl, dh, dw, y, squared):
    N, C = x.shape[0], x.shape[1]
    planes = N * C
    if planes * y.shape[2] * y.shape[3] * kh * kw >= PAR_MIN:
        for it in prange(planes):
            _avg_plane(x[it // C, it % C], kh, kw, sh, sw, pt, pl, dh, dw, y[it // C, it % C], squared)
    else:
        for it in range(planes):
            _avg_plane(x[it // C, it % C], kh, kw, sh, sw, pt, pl, dh, dw, y[it // C, it % C], squared)


@kernel
def _avg_bwd_plane(xp, yp, dyp, kh, kw, sh, sw, pt, pl, dh, dw, dxp, squared):
    H, W = dxp.shape
    OH, OW = dyp.shape
    for i in range(H):
        for j in range(W):
            dxp[i, j] = np.float32(0.0)
    for oh in range(OH):
        h0, a0, a1 = _range(oh, sh, pt, kh, dh, H)
        for ow in range(OW):
            w0, b0, b1 = _range(ow, sw, pl, kw, dw, W)
            cnt = (a1 - a0) * (b1 - b0)
            if cnt == 0:
                continue
            if squared:
                g = dyp[oh, ow] / (np.float32(cnt) * max(yp[oh, ow], L2_EPS))
                for a in range(a0, a1):
                    ih = h0 + a * dh
                    for b in range(b0, b1):
                        iw = w0 + b * dw
                        dxp[ih, iw] += g * xp[ih, iw]
            else:
                g = dyp[oh, ow] / np.float32(cnt)
                for a in range(a0, a1):
                    ih = h0 + a * dh
                    for b in range(b0, b1):
                        dxp[ih, w0 + b * dw] += g


@parallel_kernel
def _avg_bwd(x, y, dy, kh, kw, sh, sw, pt, pl, dh, dw, dx, squared):
    N, C = dx.shape[0], dx.shape[1]
    planes = N * C
    if planes * dy.shape[2] * dy.shape[3] * kh * kw >= PAR_MIN:
        for it in prange(planes):
            n, c = it // C, it % C
            _avg_bwd_plane(x[n, c], y[n, c], dy[n, c], kh, kw, sh, sw, pt, pl, dh, dw, dx[n, c], squared)
    else:
        for it in range(planes):
            n, c = it // C, it % C
            _avg_bwd_plane(x[n, c], y[n, c], dy[n, c], kh, kw, sh, sw, pt, pl, dh, dw, dx[n, c], squared)


@kernel
def avgpool2d_forward(x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y):
    _avg_fwd(x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, False)


@kernel
def avgpool2d_backward(dy, kh, kw, sh, sw, pad_top, pad_left, dh, dw, dx):
    """dx overwritten; needs only dy (dx's shape gives the input size)."""
    _avg_bwd(dx, dy, dy, kh, kw, sh, sw, pad_top, pad_left, dh, dw, dx, False)


@kernel
def l2pool2d_forward(x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y):
    _avg_fwd(x, kh, kw, sh, sw, pad_top, pad_left, dh, dw, y, True)


@kernel
def l2pool2d_backward(x, y, dy, kh, kw, sh, sw, pad_top, pad_left, dh, dw, dx):
    """dx overwritten; needs the forward input x and output y. dx must not alias x."""
    _avg_bwd(x, y, dy, kh, kw, sh, sw, pad_top, pad_left, dh, dw, dx, True)


@kernel
def _gap_planes(t, per, x, y):
    """Planes t*per .. of global_avgpool_forward (an item of parallel.parallel_items)."""
    C = x.shape[1]
    P = x.shape[2] * x.shape[3]
    inv = np.float32(1.0) / np.float32(P)
    for it in range(t * per, min((t + 1) * per, x.shape[0] * C)):
        xp = x[it // C, it % C].reshape(P)
        s = np.float32(0.0)
        for p in range(P):
            s += xp[p]
        y[it // C, it % C] = s * inv


_gap_items = parallel_items(_gap_planes)


@kernel
def global_avgpool_forward(x, y):
    """(N, C, H, W) -> (N, C): mean over H*W (float32 partial sums per plane)."""
    planes = x.shape[0] * x.shape[1]
    if x.size >= PAR_MIN:  # a chunk of planes per thread (parallel.py)
        items, per = chunks(planes)
        _gap_items(items, per, x, y)
    else:
        _gap_planes(I0, planes, x, y)


@kernel
def _gap_bwd_planes(t, per, dy, dx):
    """Planes t*per .. of global_avgpool_backward (an item of parallel.parallel_items)."""
    C = dx.shape[1]
    P = dx.shape[2] * dx.shape[3]
    inv = np.float32(1.0) / np.float32(P)
    for it in range(t * per, min((t + 1) * per, dx.shape[0] * C)):
        dp = dx[it // C, it % C].reshape(P)
        g = dy[it // C, it % C] * inv
        for p in range(P):
            dp[p] = g


_gap_bwd_items = parallel_items(_gap_bwd_planes)


@kernel
def global_avgpool_backward(dy, dx):
    """dx[n, c, :, :] = dy[n, c] / (H*W) (overwritten)."""
    planes = dx.shape[0] * dx.shape[1]
    if dx.size >= PAR_MIN:
        items, per = chunks(planes)
        _gap_bwd_items(items, per, dy, dx)
    else:
        _gap_bwd_planes(I0, planes, dy, dx)
