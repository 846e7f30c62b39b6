"""NumPy references (float64) of global_maxpool, multiply, lrn, softmax_axis and bilinear
upsampling, forward and backward: the oracle the CPU and CUDA kernels are tested against, and
themselves checked by finite differences (tests/kernels/test_kernels_layers.py).

Shapes are batched: maps (N, C, H, W), vectors (N, F).
"""
from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------- global_maxpool

def global_maxpool(x):
    """(N, C, H, W) -> (N, C): the maximum of each plane."""
    x = np.asarray(x, np.float64)
    return x.reshape(x.shape[0], x.shape[1], -1).max(axis=2)


def global_maxpool_backward(x, dy):
    """dx: dy at the first maximum of each plane (row-major order), 0 elsewhere."""
    x = np.asarray(x, np.float64)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    idx = flat.argmax(axis=2)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, idx[:, :, None], np.asarray(dy, np.float64)[:, :, None], axis=2)
    return dx.reshape(x.shape)


# ---------------------------------------------------------------------------- multiply

def _broadcast(full_shape, small):
    """`small` (N, C) or (N, C, 1, 1) shaped to broadcast against a (N, C, H, W) tensor."""
    small = np.asarray(small, np.float64)
    return small.reshape(small.shape[:2] + (1,) * (len(full_shape) - 2))


def multiply(a, b):
    """a * b, element-wise; one of them may hold one value per channel ((N, C) or (N, C, 1, 1))
    against a map (N, C, H, W): it is broadcast over the pixels (a squeeze-and-excitation scale)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape == b.shape:
        return a * b
    if a.size >= b.size:
        return a * _broadcast(a.shape, b)
    return _broadcast(b.shape, a) * b


def multiply_backward(a, b, dy):
    """(da, db) of y = multiply(a, b): a broadcast operand gets the sum over the pixels."""
    a, b, dy = (np.asarray(t, np.float64) for t in (a, b, dy))
    if a.shape == b.shape:
        return dy * b, dy * a
    if a.size >= b.size:
        da = dy * _broadcast(a.shape, b)
        db = (dy * a).reshape(a.shape[0], a.shape[1], -1).sum(axis=2).reshape(b.shape)
        return da, db
    db = dy * _broadcast(b.shape, a)
    da = (dy * b).reshape(b.shape[0], b.shape[1], -1).sum(axis=2).reshape(a.shape)
    return da, db


# ---------------------------------------------------------------------------- lrn

def _lrn_scale(x, size, alpha, k):
    """s[c] = k + alpha/size * sum of x[j]^2 over j in [c - size//2, c + (size-1)//2] (zeros outside)."""
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    sq = x * x
    s = np.zeros_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c, ch + (size - 1) // 2 + 1)
        s[:, ch] = sq[:, lo:hi].sum(axis=1)
    return k + alpha / size * s


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalization across channels, as torch.nn.LocalResponseNorm:
    y[c] = x[c] / (k + alpha/size * sum of x[j]^2 over the `size` channels around c)^beta."""
    x = np.asarray(x, np.float64)
    return x * _lrn_scale(x, size, alpha, k) ** -beta


def lrn_backward(x, dy, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """dx[i] = dy[i] s[i]^-beta - 2 alpha beta / size * x[i] * sum over the channels c whose
    window holds i of dy[c] x[c] s[c]^(-beta-1)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    s = _lrn_scale(x, size, alpha, k)
    t = dy * x * s ** (-beta - 1)
    c = x.shape[1]
    acc = np.zeros_like(x)
    for i in range(c):  # c holds i when c - size//2 <= i <= c + (size-1)//2
        lo, hi = max(0, i - (size - 1) // 2), min(c, i + size // 2 + 1)
        acc[:, i] = t[:, lo:hi].sum(axis=1)
    return dy * s ** -beta - 2.0 * alpha * beta / size * x * acc


# ---------------------------------------------------------------------------- softmax along an axis

AXES = ("channels", "height", "width", "spatial")


def _lines(shape, axis):
    """(outer, length, inner) of a batched tensor viewed along `axis`."""
    if len(shape) == 2:
        return shape[0], shape[1], 1
    n, c, h, w = shape
    return {"channels": (n, c, h * w), "height": (n * c, h, w), "width": (n * c * h, w, 1),
            "spatial": (n * c, h * w, 1)}[axis]


def softmax_axis(x, axis="channels"):
    """exp(x) / sum(exp(x)) along `axis` (channels, height, width, or spatial: the H*W pixels of
    each channel together); the maximum is subtracted first."""
    x = np.asarray(x, np.float64)
    o, n, i = _lines(x.shape, axis)
    v = x.reshape(o, n, i)
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(x.shape)


def softmax_axis_backward(y, dy, axis="channels"):
    """dx = y * (dy - sum(dy * y)) along `axis`, from the forward output y."""
    y, dy = np.asarray(y, np.float64), np.asarray(dy, np.float64)
    o, n, i = _lines(y.shape, axis)
    yv, dv = y.reshape(o, n, i), dy.reshape(o, n, i)
    return (yv * (dv - (dv * yv).sum(axis=1, keepdims=True))).reshape(y.shape)


# ---------------------------------------------------------------------------- bilinear upsampling

def bilinear_source(out_size: int, in_size: int, scale: int, align_corners: bool):
    """For each output index: (i0, i1, weight of i1) along one axis, as PyTorch's
    F.interpolate(mode="bilinear", scale_factor=scale): align_corners=False maps output pixel
    centres, src = (dst + 0.5) / scale - 0.5 (clamped at 0); align_corners=True maps the corner
    pixels onto each other, src = dst * (in - 1) / (out - 1)."""
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(dst)
    else:
        src = np.maximum((dst + 0.5) / scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def upsample_bilinear(x, scale: int, align_corners: bool = False):
    """(N, C, H, W) -> (N, C, H*scale, W*scale) by bilinear interpolation."""
    x = np.asarray(x, np.float64)
    _, _, h, w = x.shape
    h0, h1, lh = bilinear_source(h * scale, h, scale, align_corners)
    w0, w1, lw = bilinear_source(w * scale, w, scale, align_corners)
    top = x[:, :, h0, :] * (1 - lh)[None, None, :, None] + x[:, :, h1, :] * lh[None, None, :, None]
    return top[:, :, :, w0] * (1 - lw) + top[:, :, :, w1] * lw


def upsample_bilinear_backward(dy, in_shape, scale: int, align_corners: bool = False):
    """dx of upsample_bilinear: every output's gradient spread back onto its four sources."""
    dy = np.asarray(dy, np.float64)
    n, c, h, w = in_shape
    h0, h1, lh = bilinear_source(h * scale, h, scale, align_corners)
    w0, w1, lw = bilinear_source(w * scale, w, scale, align_corners)
    rows = np.zeros((n, c, h * scale, w))
    np.add.at(rows, (slice(None), slice(None), slice(None), w0), dy * (1 - lw))
    np.add.at(rows, (slice(None), slice(None), slice(None), w1), dy * lw)
    dx = np.zeros((n, c, h, w))
    np.add.at(dx, (slice(None), slice(None), h0), rows * (1 - lh)[None, None, :, None])
    np.add.at(dx, (slice(None), slice(None), h1), rows * lh[None, None, :, None])
    return dx
