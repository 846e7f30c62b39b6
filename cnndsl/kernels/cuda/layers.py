"""CUDA kernels of global_maxpool, multiply (with channel broadcasting), lrn and bilinear
upsampling, forward and backward (softmax_axis runs elementwise.softmax_* on an (O, L, I) view).
Flat float32 buffers, grid-stride loops; the layouts of cnndsl/kernels/cpu/layers.py.
"""
from __future__ import annotations

from cnndsl.kernels.cuda.common import F32, I64, cuda, device, div_mod, float32, int64, kernel


# ---------------------------------------------------------------------------- global_maxpool

@kernel(F32, F32, int64, int64)
def global_maxpool_forward(x, y, NC, P):
    """y[t] = max of x[t*P : (t+1)*P], one thread per plane."""
    for t in range(cuda.grid(1), NC, cuda.gridsize(1)):
        base = t * P
        m = x[base]
        for p in range(1, P):
            if x[base + p] > m:
                m = x[base + p]
        y[t] = m


@kernel(F32, F32, F32, int64, int64)
def global_maxpool_backward(x, dy, dx, NC, P):
    """dx = dy[t] at the first maximum of plane t, 0 elsewhere (overwritten), one thread per plane."""
    for t in range(cuda.grid(1), NC, cuda.gridsize(1)):
        base = t * P
        best = 0
        m = x[base]
        for p in range(P):
            dx[base + p] = float32(0.0)
            if x[base + p] > m:
                m = x[base + p]
                best = p
        dx[base + best] = dy[t]


# ---------------------------------------------------------------------------- multiply

@kernel(F32, F32, F32, int64, int64, int64)
def multiply_forward(a, b, y, NC, S, Sb):
    """y[t, s] = a[t, s] * b[t, s if Sb == S else 0], a and y (NC, S), b (NC, Sb)."""
    for i in range(cuda.grid(1), NC * S, cuda.gridsize(1)):
        if Sb == S:
            y[i] = a[i] * b[i]
        else:
            y[i] = a[i] * b[div_mod(i, S, NC * S)[0]]


@kernel(F32, F32, F32, int64, int64)
def multiply_backward_reduce(dy, full, dx, NC, S):
    """dx[t] = sum over s of dy[t, s] * full[t, s], one thread per (n, c)."""
    for t in range(cuda.grid(1), NC, cuda.gridsize(1)):
        base = t * S
        acc = float32(0.0)
        for s in range(S):
            acc += dy[base + s] * full[base + s]
        dx[t] = acc


# ---------------------------------------------------------------------------- lrn

@device
def _lrn_scale(x, n, c, s, C, S, size, alpha_n, k):
    """k + alpha/size * the sum of x[n, j, s]^2 over the window of channel c."""
    lo = c - size // 2  # (no min/max: the builtins do not compile for the real target here)
    if lo < 0:
        lo = 0
    hi = c + (size - 1) // 2 + 1
    if hi > C:
        hi = C
    acc = float32(0.0)
    for j in range(lo, hi):
        v = x[(n * C + j) * S + s]
        acc += v * v
    return k + alpha_n * acc


@kernel(F32, F32, int64, int64, int64, int64, float32, float32, float32)
def lrn_forward(x, y, N, C, S, size, alpha_n, beta, k):
    """y = x * scale^-beta, x (N, C, S); one thread per element."""
    for i in range(cuda.grid(1), N * C * S, cuda.gridsize(1)):
        n, r = div_mod(i, C * S, N * C * S)
        c, s = div_mod(r, S, N * C * S)
        y[i] = x[i] * _lrn_scale(x, n, c, s, C, S, size, alpha_n, k) ** (-beta)


@kernel(F32, F32, F32, int64, int64, int64, int64, float32, float32, float32)
def lrn_backward(x, dy, dx, N, C, S, size, alpha_n, beta, k):
    """dx[i] = dy[i] s[i]^-beta - 2 alpha_n beta x[i] * sum over the channels c whose window holds
    i of dy[c] x[c] s[c]^(-beta-1); one thread per element (dx overwritten, not aliasing x or dy)."""
    for i in range(cuda.grid(1), N * C * S, cuda.gridsize(1)):
        n, r = div_mod(i, C * S, N * C * S)
        ch, s = div_mod(r, S, N * C * S)
        acc = float32(0.0)
        lo = ch - (size - 1) // 2
        if lo < 0:
            lo = 0
        hi = ch + size // 2 + 1
        if hi > C:
            hi = C
        for c in range(lo, hi):
            j = (n * C + c) * S + s
            acc += dy[j] * x[j] * _lrn_scale(x, n, c, s, C, S, size, alpha_n, k) ** (-beta - float32(1.0))
        own = _lrn_scale(x, n, ch, s, C, S, size, alpha_n, k) ** (-beta)
        dx[i] = dy[i] * own - float32(2.0) * alpha_n * beta * x[i] * acc


# ---------------------------------------------------------------------------- bilinear upsampling

@kernel(F32, F32, I64, I64, F32, I64, I64, F32, int64, int64, int64, int64, int64)
def bilinear_forward(x, y, h0, h1, lh, w0, w1, lw, P, H, W, OH, OW):
    """y (P, OH, OW) from x (P, H, W) by the per-axis source tables; one thread per output."""
    one = float32(1.0)
    for o in range(cuda.grid(1), P * OH * OW, cuda.gridsize(1)):
        p = o // (OH * OW)
        r = o - p * OH * OW
        i = r // OW
        j = r - i * OW
        a = (p * H + h0[i]) * W
        b = (p * H + h1[i]) * W
        u = lh[i]
        v = lw[j]
        top = x[a + w0[j]] * (one - v) + x[a + w1[j]] * v
        bot = x[b + w0[j]] * (one - v) + x[b + w1[j]] * v
        y[o] = top * (one - u) + bot * u


@kernel(F32, F32, I64, I64, F32, I64, I64, F32, int64, int64, int64, int64, int64)
def bilinear_backward(dy, dx, h0, h1, lh, w0, w1, lw, P, H, W, OH, OW):
    """dx (P, H, W) = each output's gradient spread onto its four sources (overwritten): one
    thread per input plane, so no two threads write one element and the sums are deterministic."""
    one = float32(1.0)
    for p in range(cuda.grid(1), P, cuda.gridsize(1)):
        for t in range(H * W):
            dx[p * H * W + t] = float32(0.0)
        for i in range(OH):
            a = (p * H + h0[i]) * W
            b = (p * H + h1[i]) * W
            u = lh[i]
            for j in range(OW):
                v = lw[j]
                g = dy[(p * OH + i) * OW + j]
                dx[a + w0[j]] += g * (one - u) * (one - v)
                dx[a + w1[j]] += g * (one - u) * v
                dx[b + w0[j]] += g * u * (one - v)
                dx[b + w1[j]] += g * u * v
