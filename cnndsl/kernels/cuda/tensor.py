"""Structural kernels: concat along channels (and its gradient), nearest upsampling (and its
gradient). Flat float32 buffers, grid-stride loops over the smaller side's elements.
flatten/unflatten are not kernels: the memory plan makes them views. add and copy are in
elementwise.py.
"""
from __future__ import annotations

from cnndsl.kernels.cuda.common import F32, cuda, float32, int64, kernel


@kernel(F32, F32, int64, int64, int64, int64, int64)
def concat_forward(x, out, N, C, S, CT, offset):
    """out[:, offset:offset + C] = x, with x (N, C, S) and out (N, CT, S)."""
    per = C * S
    for i in range(cuda.grid(1), N * per, cuda.gridsize(1)):
        n = i // per
        out[(n * CT + offset) * S + (i - n * per)] = x[i]


@kernel(F32, F32, int64, int64, int64, int64, int64)
def concat_backward(dy, dx, N, C, S, CT, offset):
    """dx = dy[:, offset:offset + C] (overwritten)."""
    per = C * S
    for i in range(cuda.grid(1), N * per, cuda.gridsize(1)):
        n = i // per
        dx[i] = dy[(n * CT + offset) * S + (i - n * per)]


@kernel(F32, F32, int64, int64, int64, int64, int64)
def upsample_forward(x, y, NC, H, W, sh, sw):
    """y[nc, i, j] = x[nc, i // sh, j // sw], y (NC, H*sh, W*sw)."""
    OW = W * sw
    OHW = H * sh * OW
    for o in range(cuda.grid(1), NC * OHW, cuda.gridsize(1)):
        nc = o // OHW
        r = o - nc * OHW
        i = r // OW
        j = r - i * OW
        y[o] = x[(nc * H + i // sh) * W + j // sw]


@kernel(F32, F32, int64, int64, int64, int64, int64)
def upsample_backward(dy, dx, NC, H, W, sh, sw):
    """dx[nc, i, j] = sum of the sh x sw block of dy it was copied to (overwritten)."""
    OW = W * sw
    for t in range(cuda.grid(1), NC * H * W, cuda.gridsize(1)):
        nc = t // (H * W)
        r = t - nc * (H * W)
        i = r // W
        j = r - i * W
        acc = float32(0.0)
        for a in range(sh):
            row = (nc * H * sh + i * sh + a) * OW + j * sw
            for b in range(sw):
                acc += dy[row + b]
        dx[t] = acc
