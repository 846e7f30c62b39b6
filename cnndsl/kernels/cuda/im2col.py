"""Convolutions and dense layers as cuBLAS GEMMs (blas.py) around gather kernels: the "cublas"
candidate of gemm.py's launches (tune.py measures it against the Numba tiles; groups of 1).

Per chunk of `nb` images (the columns buffer kept under COL_CAP floats), P = OH*OW, CK = C*KH*KW:

  FWD         col_n (CK x P) = im2col(x_n)             y_n (F x P) = W (F x CK) @ col_n     [batched over n]
              then y = act(y + bias) in place; a residual is copied into y first and the GEMM adds to it
  BWD_DATA    dcol_n (CK x P) = W^T @ dy_n              [batched over n]
              then dx = col2im(dcol) (+ bias: conv_transpose's forward), a gather, no atomics
  BWD_WEIGHT  col (CK x nb*P), dyt (F x nb*P): both im2col in image-interleaved columns
              dW (F x CK) = dyt @ col^T, added over the chunks in order (beta 1 after the first);
              or split: each chunk's columns in equal parts, one batched GEMM into partial sums,
              summed in split order at the end (weight_splits: tune.py's candidates)

A 1x1 conv of stride 1 without padding needs no im2col in FWD and BWD_DATA (x_n is col_n), and a
dense layer (1x1 maps) is one plain GEMM per mode. Every sum is in a fixed order: the result is
deterministic for a given GPU and cuBLAS, as the split Numba kernels are.
"""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.cuda import blas
from cnndsl.kernels.cuda.common import (F32, NONE, TARGET_BLOCKS, activate, boolean, channel_of, cuda, div_mod, float32, grid1d,
                                        int64, kernel)
from cnndsl.kernels.cuda.elementwise import copy
from cnndsl.kernels.cuda.igemm import BWD_DATA, BWD_WEIGHT, FWD
from cnndsl.kernels.geometry import ConvGeometry

# The largest columns buffer of one chunk, in floats (256 MiB): vgg_small's stage-1 weight
# gradient at batch 256 (288 x 262,144 columns plus 32 x 262,144 of dy) takes two chunks.
COL_CAP = 1 << 26


@kernel(F32, F32, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64,
        int64, int64, int64)
def im2col(x, col, n0, nb, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, rs, ns):
    """col[r * rs + (n - n0) * ns + p] = x[n, c, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw] (0 outside
    the input) for the images n0 <= n < n0 + nb, r = (c*KH + kh)*KW + kw, p = oh*OW + ow: with
    (rs, ns) = (P, CK*P) each image's CK x P matrix in turn, with (nb*P, P) the images' columns
    side by side."""
    P = OH * OW
    CK = C * KH * KW
    total = nb * CK * P
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        t, p = div_mod(i, P, total)
        r, nn = div_mod(t, nb, total)
        oh, ow = div_mod(p, OW, total)
        ck, kw = div_mod(r, KW, total)
        c, kh = div_mod(ck, KH, total)
        ih = oh * sh - pt + kh * dh
        iw = ow * sw - pl + kw * dw
        v = float32(0.0)
        if 0 <= ih < H and 0 <= iw < W:
            v = x[(((n0 + nn) * C + c) * H + ih) * W + iw]
        col[r * rs + nn * ns + p] = v


@kernel(F32, F32, boolean, F32, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64,
        int64, int64, int64)
def col2im(dcol, bias, has_bias, dx, n0, nb, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw):
    """dx[n, c, h, w] = the sum over the taps (kh, kw) that read x[n, c, h, w] in the forward of
    dcol[((n - n0)*CK + (c*KH + kh)*KW + kw) * P + oh*OW + ow] (each image's CK x P matrix in
    turn), in tap order (+ bias[c]), for n0 <= n < n0 + nb."""
    P = OH * OW
    total = nb * C * H * W
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        t, w = div_mod(i, W, total)
        t2, h = div_mod(t, H, total)
        nn, c = div_mod(t2, C, total)
        v = float32(0.0)
        base = (nn * C + c) * KH * KW
        for kh in range(KH):
            th = h + pt - kh * dh
            if th < 0:
                break
            oh, rh = div_mod(th, sh, total)
            if rh != 0 or oh >= OH:
                continue
            for kw in range(KW):
                tw = w + pl - kw * dw
                if tw < 0:
                    break
                ow, rw = div_mod(tw, sw, total)
                if rw == 0 and ow < OW:
                    v += dcol[((base + kh * KW + kw) * P) + oh * OW + ow]
        if has_bias:
            v += bias[c]
        dx[((n0 + nn) * C + c) * H * W + h * W + w] = v


@kernel(F32, F32, boolean, int64, float32, int64, int64, int64)
def bias_act(y, bias, has_bias, act, alpha, N, F, S):
    """y[n, f, s] = act(y[n, f, s] (+ bias[f])) in place."""
    total = N * F * S
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        v = y[i]
        if has_bias:
            v += bias[channel_of(i, S, F, total)]
        y[i] = activate(v, act, alpha)


# -- host side -----------------------------------------------------------------------------


def usable(geo: ConvGeometry) -> tuple[bool, str]:
    """(True, "") where this module computes `geo`'s passes; else (False, why)."""
    if geo.G != 1:
        return False, "grouped convolution"
    return blas.available()


def _unit(geo: ConvGeometry) -> bool:
    """A 1x1 conv of stride 1 without padding: x_n is its own columns matrix."""
    return (geo.KH == 1 and geo.KW == 1 and geo.sh == 1 and geo.sw == 1
            and geo.pt == 0 and geo.pb == 0 and geo.pl == 0 and geo.pr == 0)


def _matrix(geo: ConvGeometry) -> bool:
    """A dense layer (1x1 maps, a 1x1 kernel): x is (N, C), w (F, C), y (N, F)."""
    return geo.dense_like and _unit(geo)


def _ck(geo: ConvGeometry) -> int:
    return geo.C * geo.KH * geo.KW


def chunk(geo: ConvGeometry, mode: int) -> int:
    """Images per chunk: the columns buffer (and BWD_WEIGHT's dy columns) under COL_CAP floats."""
    P = geo.OH * geo.OW
    per = (_ck(geo) + (geo.F if mode == BWD_WEIGHT else 0)) * P
    return max(1, min(geo.N, COL_CAP // max(1, per)))


def workspace(geo: ConvGeometry, mode: int, splits: int = 1) -> int:
    """Floats of workspace a launch of `mode` needs (0: none); a weight gradient split `splits`
    ways also keeps its partial sums there."""
    if _matrix(geo) or (mode != BWD_WEIGHT and _unit(geo)):
        return 0
    P = geo.OH * geo.OW
    part = splits * geo.F * _ck(geo) if mode == BWD_WEIGHT and splits > 1 else 0
    return chunk(geo, mode) * (_ck(geo) + (geo.F if mode == BWD_WEIGHT else 0)) * P + part


def weight_splits(geo: ConvGeometry) -> list[int]:
    """The reduction splits worth measuring for a weight gradient on cuBLAS (besides none): its
    result is small (F x C*KH*KW) and its reduction long (N*OH*OW), so one GEMM may leave the GPU
    short of blocks. Enough splits for TARGET_BLOCKS output tiles of 64 x 64 (a guess at cuBLAS's;
    it may split on its own, hence measured against no split), and half as many; each split at
    least 256 long in the first chunk."""
    if _matrix(geo):
        return []
    tiles = -(-geo.F // 64) * -(-_ck(geo) // 64)
    s0 = min(64, TARGET_BLOCKS // tiles)
    first = chunk(geo, BWD_WEIGHT) * geo.OH * geo.OW
    return sorted({s for s in (s0, s0 // 2) if s >= 2 and first >= 256 * s})


def _launch(k, n: int, *args):
    return k[grid1d(n)], args


def _im2col_step(x, col, geo: ConvGeometry, n0: int, nb: int, interleaved: bool):
    P = geo.OH * geo.OW
    rs, ns = (nb * P, P) if interleaved else (P, _ck(geo) * P)
    return _launch(im2col, nb * _ck(geo) * P, x, col, n0, nb, geo.C, geo.H, geo.W, geo.OH, geo.OW, geo.KH, geo.KW,
                   geo.sh, geo.sw, geo.pt, geo.pl, geo.dh, geo.dw, rs, ns)


def _needs_epilogue(has_bias: bool, act: int) -> bool:
    return bool(has_bias) or int(act) != NONE


def forward(x, w, bias, has_bias, y, geo: ConvGeometry, res, act: int, alpha: float, ws) -> list:
    """The steps (kernel launches as (configured kernel, args), GEMMs as callables) of
    y = act(conv(x, w) (+ bias) (+ res)); ws: a workspace of workspace(geo, FWD) floats."""
    steps, beta = [], 0.0
    if res is not None:
        if blas.address(res) != blas.address(y):  # an in-place residual is already in y
            steps.append(_launch(copy, y.size, res, y, y.size))
        beta = 1.0
    N, F = geo.N, geo.F
    if _matrix(geo):  # y (N x F) = x (N x C) @ w^T
        steps.append(blas.sgemm(False, True, N, F, geo.C, x, geo.C, w, geo.C, y, F, beta))
    else:
        P, CK, nb = geo.OH * geo.OW, _ck(geo), chunk(geo, FWD)
        unit = _unit(geo)
        for n0 in range(0, N, nb):
            m = min(nb, N - n0)
            if unit:
                b, b_off = x, n0 * CK * P
            else:
                steps.append(_im2col_step(x, ws, geo, n0, m, interleaved=False))
                b, b_off = ws, 0
            steps.append(blas.sgemm(False, False, F, P, CK, w, CK, b, P, y, P, beta, b_off=b_off, c_off=n0 * F * P,
                                   batch=m, sa=0, sb=CK * P, sc=F * P))
    if _needs_epilogue(has_bias, act):
        S = y.size // (N * F)
        steps.append(_launch(bias_act, y.size, y, bias, has_bias, int(act), np.float32(alpha), N, F, S))
    return steps


def backward_data(dy, w, bias, has_bias, dx, geo: ConvGeometry, ws) -> list:
    """The steps of dx = conv^T(dy, w) (+ bias over dx's channels); ws as for forward."""
    N, F, C = geo.N, geo.F, geo.C
    if _matrix(geo):  # dx (N x C) = dy (N x F) @ w (F x C)
        steps = [blas.sgemm(False, False, N, C, F, dy, F, w, C, dx, C)]
        if has_bias:
            steps.append(_launch(bias_act, dx.size, dx, bias, True, NONE, np.float32(0.0), N, C, 1))
        return steps
    P, CK, nb = geo.OH * geo.OW, _ck(geo), chunk(geo, BWD_DATA)
    unit, steps = _unit(geo), []
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        out, c_off = (dx, n0 * C * P) if unit else (ws, 0)
        steps.append(blas.sgemm(True, False, CK, P, F, w, CK, dy, P, out, P, b_off=n0 * F * P, c_off=c_off,
                               batch=m, sa=0, sb=F * P, sc=CK * P))
        if not unit:
            steps.append(_launch(col2im, m * C * geo.H * geo.W, ws, bias, has_bias, dx, n0, m, C, geo.H, geo.W,
                                 geo.OH, geo.OW, geo.KH, geo.KW, geo.sh, geo.sw, geo.pt, geo.pl, geo.dh, geo.dw))
    if unit and has_bias:
        steps.append(_launch(bias_act, dx.size, dx, bias, True, NONE, np.float32(0.0), N, C, geo.H * geo.W))
    return steps


def backward_weight(x, dy, dw, ws, geo: ConvGeometry, splits: int = 1, reduce_kernel=None) -> list:
    """The steps of dw = dL/dweight (overwritten); ws: workspace(geo, BWD_WEIGHT, splits) floats.
    splits > 1 (convs): each chunk's reduction in `splits` equal parts, one strided-batched GEMM
    into as many partial sums (the rest of the chunk added to the first), summed in split order
    at the end by `reduce_kernel` (gemm.splitk_reduce)."""
    N, F, C = geo.N, geo.F, geo.C
    if _matrix(geo):  # dw (F x C) = dy^T (F x N) @ x (N x C)
        return [blas.sgemm(True, False, F, C, N, dy, F, x, C, dw, C)]
    P, CK, nb = geo.OH * geo.OW, _ck(geo), chunk(geo, BWD_WEIGHT)
    dyt_off = nb * CK * P  # col (CK x m*P) at ws[0:], dyt (F x m*P) after the largest chunk's col
    part_off = nb * (CK + F) * P  # the partial sums after both
    if splits > 1 and nb * P < splits:
        raise ValueError(f"{splits} splits of a reduction of {nb * P}: the first chunk's parts would be empty")
    steps = []
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        cols = m * P
        beta = 0.0 if n0 == 0 else 1.0
        steps.append(_im2col_step(x, ws, geo, n0, m, interleaved=True))
        # dyt[f, (n - n0)*P + p] = dy[n, f, p]: the columns of a 1x1 identity conv over dy
        steps.append(_launch(im2col, m * F * P, dy, ws[dyt_off:], n0, m, F, geo.OH, geo.OW, geo.OH, geo.OW, 1, 1,
                             1, 1, 0, 0, 1, 1, cols, P))
        if splits <= 1:
            steps.append(blas.sgemm(False, True, F, CK, cols, ws, cols, ws, cols, dw, CK, beta, a_off=dyt_off))
            continue
        kc = cols // splits
        if kc:  # weight_splits keeps the first chunk's parts non-empty; a last, shorter chunk may not be
            steps.append(blas.sgemm(False, True, F, CK, kc, ws, cols, ws, cols, ws, CK, beta, a_off=dyt_off,
                                    c_off=part_off, batch=splits, sa=kc, sb=kc, sc=F * CK))
        if cols > kc * splits:
            done = kc * splits
            steps.append(blas.sgemm(False, True, F, CK, cols - done, ws, cols, ws, cols, ws, CK, 1.0,
                                    a_off=dyt_off + done, b_off=done, c_off=part_off))
    if splits > 1:
        total = F * CK
        steps.append(_launch(reduce_kernel, total, ws[part_off:part_off + splits * total], dw, total, splits))
    return steps
