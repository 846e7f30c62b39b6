"""Activation kernels: every element-wise activation (one kernel pair, the code chooses), prelu,
and softmax (axis 1).

Any shape, float32 C-contiguous. Forward writes y; backward overwrites dx. Element-wise kernels
allow in-place use (y is x, dx is dy). The element-wise backward reads what the activation's
record says its gradient needs (cnndsl/kernels/activations.py): the forward OUTPUT y (relu,
sigmoid, elu, ...) or INPUT x (gelu, silu, hardswish, mish); softmax reads y, prelu x.
"""
from __future__ import annotations


import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import I0, PAR_MIN, kernel, parallel_kernel
from cnndsl.kernels.cpu.epilogue import activate_affine, activation_grad_loop
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

BLOCK = 4096  # elements per parallel work item


@kernel
def _forward_chunk(t, per, a, o, act, alpha):
    """Elements t*per .. of activation_forward (an item of parallel_items; per a multiple of BLOCK)."""
    lo = t * per
    hi = min(lo + per, a.size)
    activate_affine(a[lo:hi], o[lo:hi], np.float32(1.0), np.float32(0.0), act, alpha)


@kernel
def _backward_chunk(t, per, a, g, o, act, alpha):
    """Elements t*per .. of activation_backward (an item of parallel_items)."""
    lo = t * per
    hi = min(lo + per, a.size)
    activation_grad_loop(a[lo:hi], g[lo:hi], o[lo:hi], act, alpha)


_forward_items = parallel_items(_forward_chunk)
_backward_items = parallel_items(_backward_chunk)


@kernel
def activation_forward(x, act, alpha, y):
    """y = act(x), act an activation code."""
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    if a.size >= PAR_MIN:  # a chunk of whole BLOCKs per thread
        blocks = (a.size + BLOCK - 1) // BLOCK
        items, per = chunks(blocks)
        _forward_items(items, per * BLOCK, a, o, act, alpha)
    else:
        _forward_chunk(I0, a.size, a, o, act, alpha)


@kernel
def activation_backward(v, dy, act, alpha, dx):
    """dx = act'(.) * dy, v the forward output y or input x, as the activation's gradient needs."""
    a = v.reshape(v.size)
    g = dy.reshape(dy.size)
    o = dx.reshape(dx.size)
    if a.size >= PAR_MIN:
        blocks = (a.size + BLOCK - 1) // BLOCK
        items, per = chunks(blocks)
        _backward_items(items, per * BLOCK, a, g, o, act, alpha)
    else:
        _backward_chunk(I0, a.size, a, g, o, act, alpha)


@parallel_kernel
def prelu_forward(x, slope, y):
    """y = x where x > 0, slope[c] * x otherwise (c: axis 1)."""
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C) if N * C > 0 else 0
    a = x.reshape((N * C, S))
    o = y.reshape((N * C, S))
    z = np.float32(0.0)
    for r in prange(N * C):
        s = slope[r % C]
        for i in range(S):
            v = a[r, i]
            o[r, i] = v if v > z else s * v


@parallel_kernel
def prelu_backward(x, dy, slope, dx, dslope):
    """dx = dy where x > 0 else slope[c] * dy; dslope[c] = sum of dy * x where x <= 0 (overwritten).
    dx may be dy."""
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C) if N * C > 0 else 0
    a = x.reshape((N, C, S))
    g = dy.reshape((N, C, S))
    o = dx.reshape((N, C, S))
    z = np.float32(0.0)
    for c in prange(C):
        s = slope[c]
        acc = np.float32(0.0)
        for n in range(N):
            for i in range(S):
                v = a[n, c, i]
                gv = g[n, c, i]
                if v > z:
                    o[n, c, i] = gv
                else:
                    acc += gv * v
                    o[n, c, i] = s * gv
        dslope[c] = acc


@kernel
def softmax_col(a, o, n, s, K, S):
    """One softmax over k of a[n, k, s] into o[n, k, s] (a, o are (N, K, S)); returns the column's
    max m and sum t of exp(a - m), so that log-softmax is a - m - log(t) (the pixel loss's term)."""
    m = a[n, 0, s]
    for k in range(1, K):
        m = max(m, a[n, k, s])
    t = np.float32(0.0)
    for k in range(K):
        e = np.exp(a[n, k, s] - m)
        o[n, k, s] = e
        t += e
    inv = np.float32(1.0) / t
    for k in range(K):
        o[n, k, s] *= inv
    return m, t


@parallel_kernel
def softmax_forward(x, y):
    """Softmax over axis 1 of (N, K) or (N, K, H, W)."""
    N, K = x.shape[0], x.shape[1]
    S = x.size // (N * K) if N * K > 0 else 0
    a = x.reshape((N, K, S))
    o = y.reshape((N, K, S))
    if x.size >= PAR_MIN:
        for it in prange(N * S):
            softmax_col(a, o, it // S, it % S, K, S)
    else:
        for it in range(N * S):
            softmax_col(a, o, it // S, it % S, K, S)


@kernel
def _softmax_bwd_col(yy, g, o, n, s, K):
    t = np.float32(0.0)
    for k in range(K):
        t += yy[n, k, s] * g[n, k, s]
    for k in range(K):
        o[n, k, s] = yy[n, k, s] * (g[n, k, s] - t)


@parallel_kernel
def softmax_backward(y, dy, dx):
    """dx = y * (dy - sum_k dy*y), y: the softmax output."""
    N, K = y.shape[0], y.shape[1]
    S = y.size // (N * K) if N * K > 0 else 0
    yy = y.reshape((N, K, S))
    g = dy.reshape((N, K, S))
    o = dx.reshape((N, K, S))
    if y.size >= PAR_MIN:
        for it in prange(N * S):
            _softmax_bwd_col(yy, g, o, it // S, it % S, K)
    else:
        for it in range(N * S):
            _softmax_bwd_col(yy, g, o, it // S, it % S, K)
