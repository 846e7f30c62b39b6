"""CPU kernels of global_maxpool, multiply (with channel broadcasting), lrn and bilinear
upsampling, forward and backward (softmax_axis runs the softmax kernels of activation.py on a
(O, L, I) view). float32, C-contiguous; references in
cnndsl/kernels/reference/layers.py.

Layouts the launchers pass (cnndsl/backend/cpu/layers.py):
  global_maxpool  x (N, C, P) with P = H*W, y (N, C)
  multiply        the larger operand `a` (N, C, S), the other `b` (N, C, Sb) with Sb = S or 1
  lrn             x (N, C, S) (S = H*W, or 1 for vectors)
  bilinear        x (NC, H, W), y (NC, OH, OW); per-axis source tables from `bilinear_tables`
"""
from __future__ import annotations

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, PAR_MIN_WORK, kernel, parallel_kernel


# ---------------------------------------------------------------------------- global_maxpool

@kernel
def _max_of_plane(x, y, it):
    """y[n, c] = max of x[n, c, :], it = n * C + c."""
    C, P = x.shape[1], x.shape[2]
    n, c = it // C, it % C
    m = x[n, c, 0]
    for p in range(1, P):
        if x[n, c, p] > m:
            m = x[n, c, p]
    y[n, c] = m


@parallel_kernel
def global_maxpool_forward(x, y):
    """y[n, c] = max of x[n, c, :]."""
    N, C, P = x.shape
    if N * C * P >= PAR_MIN_WORK:
        for it in prange(np.int64(N * C)):
            _max_of_plane(x, y, it)
    else:
        for it in range(N * C):
            _max_of_plane(x, y, it)


@kernel
def _max_grad_plane(x, dy, dx, it):
    """dx[n, c, :] = dy[n, c] at the first maximum of x[n, c, :], 0 elsewhere; it = n * C + c."""
    C, P = x.shape[1], x.shape[2]
    n, c = it // C, it % C
    best, m = 0, x[n, c, 0]
    for p in range(P):
        dx[n, c, p] = np.float32(0.0)
        if x[n, c, p] > m:
            m = x[n, c, p]
            best = p
    dx[n, c, best] = dy[n, c]


@parallel_kernel
def global_maxpool_backward(x, dy, dx):
    """dx[n, c, p] = dy[n, c] at the first maximum p of x[n, c, :], 0 elsewhere (overwritten)."""
    N, C, P = x.shape
    if N * C * P >= PAR_MIN_WORK:
        for it in prange(np.int64(N * C)):
            _max_grad_plane(x, dy, dx, it)
    else:
        for it in range(N * C):
            _max_grad_plane(x, dy, dx, it)


# ---------------------------------------------------------------------------- multiply

@parallel_kernel
def multiply_forward(a, b, y):
    """y[n, c, s] = a[n, c, s] * b[n, c, s or 0]; also the gradient of the operand as large as y
    (a = dy, b = the other operand)."""
    N, C, S = a.shape
    broadcast = b.shape[2] == 1
    if N * C * S >= PAR_MIN:
        for it in prange(np.int64(N * C)):
            n, c = it // C, it % C
            for s in range(S):
                y[n, c, s] = a[n, c, s] * b[n, c, 0 if broadcast else s]
    else:
        for it in range(N * C):
            n, c = it // C, it % C
            for s in range(S):
                y[n, c, s] = a[n, c, s] * b[n, c, 0 if broadcast else s]


@parallel_kernel
def multiply_backward_reduce(dy, full, dx):
    """The gradient of the broadcast operand: dx[n, c] = sum over s of dy[n, c, s] * full[n, c, s]."""
    N, C, S = dy.shape
    if N * C * S >= PAR_MIN_WORK:
        for it in prange(np.int64(N * C)):
            n, c = it // C, it % C
            acc = np.float32(0.0)
            for s in range(S):
                acc += dy[n, c, s] * full[n, c, s]
            dx[n, c] = acc
    else:
        for it in range(N * C):
            n, c = it // C, it % C
            acc = np.float32(0.0)
            for s in range(S):
                acc += dy[n, c, s] * full[n, c, s]
            dx[n, c] = acc


# ---------------------------------------------------------------------------- lrn

@kernel
def _lrn_scale(x, n, s, size, alpha_n, k, out):
    """out[c] = k + alpha/size * sum of x[n, j, s]^2 over the window of c (a running sum)."""
    C = x.shape[1]
    half, rest = size // 2, (size - 1) // 2
    acc = np.float32(0.0)
    for j in range(0, min(C, rest + 1)):
        acc += x[n, j, s] * x[n, j, s]
    for c in range(C):
        out[c] = k + alpha_n * acc
        add = c + rest + 1
        if add < C:
            acc += x[n, add, s] * x[n, add, s]
        drop = c - half
        if drop >= 0:
            acc -= x[n, drop, s] * x[n, drop, s]


@parallel_kernel
def lrn_forward(x, size, alpha, beta, k, y):
    """y[n, c, s] = x[n, c, s] * (k + alpha/size * window sum of x^2)^-beta, x (N, C, S)."""
    N, C, S = x.shape
    alpha_n = np.float32(alpha / size)
    if N * C * S >= PAR_MIN_WORK:
        for it in prange(np.int64(N * S)):
            n, s = it // S, it % S
            scale = np.empty(C, np.float32)
            _lrn_scale(x, n, s, size, alpha_n, k, scale)
            for c in range(C):
                y[n, c, s] = x[n, c, s] * scale[c] ** (-beta)
    else:
        scale = np.empty(C, np.float32)
        for it in range(N * S):
            n, s = it // S, it % S
            _lrn_scale(x, n, s, size, alpha_n, k, scale)
            for c in range(C):
                y[n, c, s] = x[n, c, s] * scale[c] ** (-beta)


@kernel
def _lrn_grad_column(x, dy, n, s, size, alpha_n, beta, k, coef, scale, t, dx):
    """dx[n, :, s] of lrn_backward; scale and t are C-long scratch."""
    C = x.shape[1]
    lo_off, hi_off = (size - 1) // 2, size // 2
    _lrn_scale(x, n, s, size, alpha_n, k, scale)
    for c in range(C):
        t[c] = dy[n, c, s] * x[n, c, s] * scale[c] ** (-beta - np.float32(1.0))
    for i in range(C):
        acc = np.float32(0.0)
        for c in range(max(0, i - lo_off), min(C, i + hi_off + 1)):
            acc += t[c]
        dx[n, i, s] = dy[n, i, s] * scale[i] ** (-beta) - coef * x[n, i, s] * acc


@parallel_kernel
def lrn_backward(x, dy, size, alpha, beta, k, dx):
    """dx[i] = dy[i] s[i]^-beta - 2 alpha beta / size * x[i] * sum over the channels c whose
    window holds i of dy[c] x[c] s[c]^(-beta-1) (overwritten)."""
    N, C, S = x.shape
    alpha_n = np.float32(alpha / size)
    coef = np.float32(2.0 * alpha * beta / size)
    if N * C * S >= PAR_MIN_WORK:
        for it in prange(np.int64(N * S)):  # scratch per work item: the items run concurrently
            _lrn_grad_column(x, dy, it // S, it % S, size, alpha_n, beta, k, coef, np.empty(C, np.float32),
                             np.empty(C, np.float32), dx)
    else:
        scale = np.empty(C, np.float32)
        t = np.empty(C, np.float32)
        for it in range(N * S):
            _lrn_grad_column(x, dy, it // S, it % S, size, alpha_n, beta, k, coef, scale, t, dx)


# ---------------------------------------------------------------------------- bilinear upsampling

def bilinear_tables(out_size: int, in_size: int, scale: int, align_corners: bool):
    """(i0 int64, i1 int64, weight of i1 float32) per output index along one axis: the same
    arithmetic as the reference's bilinear_source, in float64, then rounded to float32."""
    from cnndsl.kernels.reference.layers import bilinear_source

    i0, i1, lam = bilinear_source(out_size, in_size, scale, align_corners)
    return (np.ascontiguousarray(i0, np.int64), np.ascontiguousarray(i1, np.int64),
            np.ascontiguousarray(lam, np.float32))


@kernel
def _bilinear_row(x, h0, h1, lh, w0, w1, lw, y, it):
    """Output row it = p * OH + i of bilinear_forward."""
    OH, OW = y.shape[1], y.shape[2]
    one = np.float32(1.0)
    p, i = it // OH, it % OH
    a, b, u = h0[i], h1[i], lh[i]
    for j in range(OW):
        c, d, v = w0[j], w1[j], lw[j]
        top = x[p, a, c] * (one - v) + x[p, a, d] * v
        bot = x[p, b, c] * (one - v) + x[p, b, d] * v
        y[p, i, j] = top * (one - u) + bot * u


@parallel_kernel
def bilinear_forward(x, h0, h1, lh, w0, w1, lw, y):
    """y[p, i, j] from the four source pixels of x (P, H, W) by the per-axis tables."""
    P, OH, OW = y.shape
    if P * OH * OW >= PAR_MIN:
        for it in prange(np.int64(P * OH)):
            _bilinear_row(x, h0, h1, lh, w0, w1, lw, y, it)
    else:
        for it in range(P * OH):
            _bilinear_row(x, h0, h1, lh, w0, w1, lw, y, it)


@kernel
def _bilinear_backward_plane(dy, h0, h1, lh, w0, w1, lw, dx, p):
    """Plane p of bilinear_backward: zeroed, then every output's gradient added to its sources."""
    OH, OW = dy.shape[1], dy.shape[2]
    one = np.float32(1.0)
    for a in range(dx.shape[1]):
        for c in range(dx.shape[2]):
            dx[p, a, c] = np.float32(0.0)
    for i in range(OH):
        a, b, u = h0[i], h1[i], lh[i]
        for j in range(OW):
            c, d, v = w0[j], w1[j], lw[j]
            g = dy[p, i, j]
            dx[p, a, c] += g * (one - u) * (one - v)
            dx[p, a, d] += g * (one - u) * v
            dx[p, b, c] += g * u * (one - v)
            dx[p, b, d] += g * u * v


@parallel_kernel
def bilinear_backward(dy, h0, h1, lh, w0, w1, lw, dx):
    """dx (P, H, W) = every output's gradient spread onto its four sources (overwritten); one
    plane per work item, so no two items write the same element."""
    P, OH, OW = dy.shape
    if P * OH * OW >= PAR_MIN:
        for p in prange(np.int64(P)):
            _bilinear_backward_plane(dy, h0, h1, lh, w0, w1, lw, dx, p)
    else:
        for p in range(P):
            _bilinear_backward_plane(dy, h0, h1, lh, w0, w1, lw, dx, p)
