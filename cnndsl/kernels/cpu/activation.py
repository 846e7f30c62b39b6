"""Activation kernels: relu, leaky_relu, tanh, sigmoid, softmax (axis 1).

Any shape, float32 C-contiguous. Forward writes y; backward overwrites dx.
Elementwise kernels allow in-place use (y is x, dx is dy). Backward kernels take
whatever is cheaper: relu/tanh/sigmoid the forward OUTPUT y, leaky_relu the
forward INPUT x (alpha may be <= 0), softmax the output y.
"""
from __future__ import annotations


import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, kernel, parallel_kernel


@parallel_kernel
def relu_forward(x, y):
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    z = np.float32(0.0)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = max(a[i], z)
    else:
        for i in range(a.size):
            o[i] = max(a[i], z)


@parallel_kernel
def relu_backward(y, dy, dx):
    """dx = dy where y > 0 (y: the relu output; same as x > 0)."""
    a = y.reshape(y.size)
    g = dy.reshape(dy.size)
    o = dx.reshape(dx.size)
    z = np.float32(0.0)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = g[i] if a[i] > z else z
    else:
        for i in range(a.size):
            o[i] = g[i] if a[i] > z else z


@parallel_kernel
def leaky_relu_forward(x, alpha, y):
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    al = np.float32(alpha)
    z = np.float32(0.0)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            v = a[i]
            o[i] = v if v > z else al * v
    else:
        for i in range(a.size):
            v = a[i]
            o[i] = v if v > z else al * v


@parallel_kernel
def leaky_relu_backward(x, dy, alpha, dx):
    """dx = dy where x > 0 else alpha * dy (x: the forward input)."""
    a = x.reshape(x.size)
    g = dy.reshape(dy.size)
    o = dx.reshape(dx.size)
    al = np.float32(alpha)
    z = np.float32(0.0)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = g[i] if a[i] > z else al * g[i]
    else:
        for i in range(a.size):
            o[i] = g[i] if a[i] > z else al * g[i]


@parallel_kernel
def tanh_forward(x, y):
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = np.tanh(a[i])
    else:
        for i in range(a.size):
            o[i] = np.tanh(a[i])


@parallel_kernel
def tanh_backward(y, dy, dx):
    """dx = dy * (1 - y^2), y: the tanh output."""
    a = y.reshape(y.size)
    g = dy.reshape(dy.size)
    o = dx.reshape(dx.size)
    one = np.float32(1.0)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = g[i] * (one - a[i] * a[i])
    else:
        for i in range(a.size):
            o[i] = g[i] * (one - a[i] * a[i])


@kernel
def _sigmoid(v):
    one = np.float32(1.0)
    if v >= np.float32(0.0):
        return one / (one + np.exp(-v))
    e = np.exp(v)
    return e / (one + e)


@parallel_kernel
def sigmoid_forward(x, y):
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = _sigmoid(a[i])
    else:
        for i in range(a.size):
            o[i] = _sigmoid(a[i])


@parallel_kernel
def sigmoid_backward(y, dy, dx):
    """dx = dy * y * (1 - y), y: the sigmoid output."""
    a = y.reshape(y.size)
    g = dy.reshape(dy.size)
    o = dx.reshape(dx.size)
    one = np.float32(1.0)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = g[i] * a[i] * (one - a[i])
    else:
        for i in range(a.size):
            o[i] = g[i] * a[i] * (one - a[i])


@kernel
def _softmax_col(a, o, n, s, K, S):
    # one softmax over k of a[n, k, s]; a, o are (N, K, S)
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


@parallel_kernel
def softmax_forward(x, y):
    """Softmax over axis 1 of (N, K) or (N, K, H, W)."""
    N, K = x.shape[0], x.shape[1]
    S = x.size // (N * K) if N * K > 0 else 0
    a = x.reshape((N, K, S))
    o = y.reshape((N, K, S))
    if x.size >= PAR_MIN:
        for it in prange(N * S):
            _softmax_col(a, o, it // S, it % S, K, S)
    else:
        for it in range(N * S):
            _softmax_col(a, o, it // S, it % S, K, S)


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
