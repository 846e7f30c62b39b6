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

from cnndsl.kernels.cpu.common import I0, I1, PAR_MIN, kernel
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

I2 = np.int64(2)


def flatten(x: np.ndarray) -> np.ndarray:
    """A view (N, -1) of a C-contiguous x; no data is copied."""
    return x.reshape(x.shape[0], -1)


def flatten_backward(dy: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """A view of dy with the input's shape; no data is copied."""
    return dy.reshape(x_shape)


@kernel
def _elementwise(t, per, op, x, z, o):
    """Elements t*per .. of op 0: o = x, 1: o = x + z, 2: o += x (an item of parallel_items; one
    item kernel for the three, compiled once per signature)."""
    # unsigned indices: an index Numba cannot prove non-negative gets the wrap-around select,
    # which left these loops scalar (add2 of 4 M elements: 4.5 ms instead of 0.5 to 0.8)
    lo = np.uint64(t * per)
    hi = np.uint64(min((t + 1) * per, o.size))
    if op == 0:
        for i in range(lo, hi):
            o[i] = x[i]
    elif op == 1:
        for i in range(lo, hi):
            o[i] = x[i] + z[i]
    else:
        for i in range(lo, hi):
            o[i] += x[i]


_elementwise_items = parallel_items(_elementwise)


@kernel
def _elementwise_all(op, x, z, o):
    if o.size >= PAR_MIN:  # a chunk of elements per thread (parallel.py)
        items, per = chunks(o.size)
        _elementwise_items(items, per, op, x, z, o)
    else:
        _elementwise(I0, o.size, op, x, z, o)


@kernel
def copy(x, y):
    """y[...] = x (any shape, same size)."""
    a = x.reshape(x.size)
    _elementwise_all(I0, a, a, y.reshape(y.size))


@kernel
def add2(a, b, out):
    """out = a + b (out may alias a or b)."""
    _elementwise_all(I1, a.reshape(a.size), b.reshape(b.size), out.reshape(out.size))


@kernel
def add_accumulate(acc, x):
    """acc += x (for the 3rd, 4th... input of an n-ary add, and for gradient accumulation)."""
    a = x.reshape(x.size)
    _elementwise_all(I2, a, a, acc.reshape(acc.size))


@kernel
def _copy_rows(t, per, src, src_base, dst, dst_base, width):
    """Rows t*per .. of _copy_columns (an item of parallel_items)."""
    for n in range(t * per, min((t + 1) * per, src.shape[0])):
        for i in range(width):
            dst[n, dst_base + i] = src[n, src_base + i]


_copy_rows_items = parallel_items(_copy_rows)


@kernel
def _copy_columns(src, src_base, dst, dst_base, width):
    """dst[n, dst_base:dst_base + width] = src[n, src_base:src_base + width] for every row n of
    the (N, *) matrices: a block of channels of a concat, into its output or out of its gradient."""
    N = src.shape[0]
    if N * width >= PAR_MIN:  # a chunk of rows per thread (parallel.py)
        items, per = chunks(N)
        _copy_rows_items(items, per, src, src_base, dst, dst_base, width)
    else:
        _copy_rows(I0, N, src, src_base, dst, dst_base, width)


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


@kernel
def _up_planes(t, per, x, sh, sw, y):
    """Planes t*per .. (it = n*C + c) of upsample_nearest_forward (an item of parallel_items)."""
    C = x.shape[1]
    for it in range(t * per, min((t + 1) * per, x.shape[0] * C)):
        _up_plane(x[it // C, it % C], sh, sw, y[it // C, it % C])


_up_items = parallel_items(_up_planes)


@kernel
def upsample_nearest_forward(x, sh, sw, y):
    """y (N, C, H*sh, W*sw): y[n, c, i, j] = x[n, c, i // sh, j // sw]."""
    planes = x.shape[0] * x.shape[1]
    if y.size >= PAR_MIN:  # a chunk of planes per thread (parallel.py)
        items, per = chunks(planes)
        _up_items(items, per, x, sh, sw, y)
    else:
        _up_planes(I0, planes, x, sh, sw, y)


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


@kernel
def _up_bwd_planes(t, per, dy, sh, sw, dx):
    """Planes t*per .. (it = n*C + c) of upsample_nearest_backward (an item of parallel_items)."""
    C = dx.shape[1]
    for it in range(t * per, min((t + 1) * per, dx.shape[0] * C)):
        _up_bwd_plane(dy[it // C, it % C], sh, sw, dx[it // C, it % C])


_up_bwd_items = parallel_items(_up_bwd_planes)


@kernel
def upsample_nearest_backward(dy, sh, sw, dx):
    """dx[n, c, i, j] = sum of the sh x sw block of dy it was copied to (overwritten)."""
    planes = dx.shape[0] * dx.shape[1]
    if dy.size >= PAR_MIN:  # a chunk of planes per thread (parallel.py)
        items, per = chunks(planes)
        _up_bwd_items(items, per, dy, sh, sw, dx)
    else:
        _up_bwd_planes(I0, planes, dy, sh, sw, dx)
