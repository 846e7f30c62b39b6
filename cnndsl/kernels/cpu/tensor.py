"""Structural ops: add (n-ary via add2 + add_accumulate), concat along channels,
nearest upsampling, flatten, copy.

float32 C-contiguous; vectors (N, F) and maps (N, C, H, W) alike where it makes sense.

flatten is NOT a kernel: (N, C, H, W) -> (N, C*H*W) is a free reshape, `flatten`
returns a VIEW of its input (no copy) and `flatten_backward` a view of dy, so
the memory planner must treat the output as an alias of the input buffer.

add backward: the gradient of every input is dy itself (alias it or copy it).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, kernel, parallel_kernel


def flatten(x: np.ndarray) -> np.ndarray:
    """A view (N, -1) of a C-contiguous x; no data is copied."""
    return x.reshape(x.shape[0], -1)


def flatten_backward(dy: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """A view of dy with the input's shape; no data is copied."""
    return dy.reshape(x_shape)


@parallel_kernel
def copy(x, y):
    """y[...] = x (any shape, same size)."""
    a = x.reshape(x.size)
    o = y.reshape(y.size)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] = a[i]
    else:
        for i in range(a.size):
            o[i] = a[i]


@parallel_kernel
def add2(a, b, out):
    """out = a + b (out may alias a or b)."""
    x = a.reshape(a.size)
    z = b.reshape(b.size)
    o = out.reshape(out.size)
    if x.size >= PAR_MIN:
        for i in prange(x.size):
            o[i] = x[i] + z[i]
    else:
        for i in range(x.size):
            o[i] = x[i] + z[i]


@parallel_kernel
def add_accumulate(acc, x):
    """acc += x (for the 3rd, 4th... input of an n-ary add, and for gradient accumulation)."""
    o = acc.reshape(acc.size)
    a = x.reshape(x.size)
    if a.size >= PAR_MIN:
        for i in prange(a.size):
            o[i] += a[i]
    else:
        for i in range(a.size):
            o[i] += a[i]


@parallel_kernel
def _copy_columns(src, src_base, dst, dst_base, width):
    """dst[n, dst_base:dst_base + width] = src[n, src_base:src_base + width] for every row n of
    the (N, *) matrices: a block of channels of a concat, into its output or out of its gradient."""
    N = src.shape[0]
    if N * width >= PAR_MIN:
        for n in prange(N):
            for i in range(width):
                dst[n, dst_base + i] = src[n, src_base + i]
    else:
        for n in range(N):
            for i in range(width):
                dst[n, dst_base + i] = src[n, src_base + i]


@kernel
def concat_forward(x, c_offset, out):
    """out[:, c_offset:c_offset + C] = x; call once per input (axis 1, maps or vectors)."""
    N, C = x.shape[0], x.shape[1]
    S = x.size // (N * C) if N * C > 0 else 0
    _copy_columns(x.reshape((N, C * S)), 0, out.reshape((N, out.shape[1] * S)), c_offset * S, C * S)


@kernel
def concat_backward(dy, c_offset, dx):
    """dx = dy[:, c_offset:c_offset + C] (overwritten); C = dx.shape[1]."""
    N, C = dx.shape[0], dx.shape[1]
    S = dx.size // (N * C) if N * C > 0 else 0
    _copy_columns(dy.reshape((N, dy.shape[1] * S)), c_offset * S, dx.reshape((N, C * S)), 0, C * S)


@kernel
def _up_plane(xp, sh, sw, yp):
    H, W = xp.shape
    for i in range(H):
        for a in range(sh):
            for j in range(W):
                v = xp[i, j]
                for b in range(sw):
                    yp[i * sh + a, j * sw + b] = v


@parallel_kernel
def upsample_nearest_forward(x, sh, sw, y):
    """y (N, C, H*sh, W*sw): y[n, c, i, j] = x[n, c, i // sh, j // sw]."""
    N, C = x.shape[0], x.shape[1]
    if y.size >= PAR_MIN:
        for it in prange(N * C):
            _up_plane(x[it // C, it % C], sh, sw, y[it // C, it % C])
    else:
        for it in range(N * C):
            _up_plane(x[it // C, it % C], sh, sw, y[it // C, it % C])


@kernel
def _up_bwd_plane(dyp, sh, sw, dxp):
    H, W = dxp.shape
    for i in range(H):
        for j in range(W):
            s = np.float32(0.0)
            for a in range(sh):
                for b in range(sw):
                    s += dyp[i * sh + a, j * sw + b]
            dxp[i, j] = s


@parallel_kernel
def upsample_nearest_backward(dy, sh, sw, dx):
    """dx[n, c, i, j] = sum of the sh x sw block of dy it was copied to (overwritten)."""
    N, C = dx.shape[0], dx.shape[1]
    if dy.size >= PAR_MIN:
        for it in prange(N * C):
            _up_bwd_plane(dy[it // C, it % C], sh, sw, dx[it // C, it % C])
    else:
        for it in range(N * C):
            _up_bwd_plane(dy[it // C, it % C], sh, sw, dx[it // C, it % C])
