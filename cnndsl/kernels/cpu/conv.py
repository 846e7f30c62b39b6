"""conv2d and conv_transpose2d: forward and backward CPU kernels (im2col + BLAS).

Layouts (all float32, C-contiguous):
    conv2d:            x (N, C, H, W), weight (F, C/groups, KH, KW), bias (F,), y (N, F, OH, OW)
    conv_transpose2d:  x (N, C, H, W), weight (C, F/groups, KH, KW), bias (F,), y (N, F, OH, OW)

Padding: the kernels take pad_top / pad_left only; the output size is read from
the output (or input-gradient) array, so asymmetric 'same' padding and
floor/ceil rounding need nothing else: taps that land outside the input read
zeros (forward) or are dropped (backward).

Algorithm: images are processed in chunks of `nb`. Per chunk and group, the
input windows are unfolded ("im2col", a parallel copy) into `col` laid out as
(K, nb*P) with K = Cg*KH*KW and P = OH*OW, and the product with the weight
matrix (Fg, K) is one sgemm split over the threads (blas.pgemm). With nb == 1
the GEMM writes straight into y; with nb > 1 it writes into `tmp` (Fg, nb*P).
Either way a parallel epilogue (epilogue.py) then adds the bias, for fused_conv
the residual and the activation, and for fused_conv_pool pools 2x2, plane by
plane: `gemm_forward` is the one forward core of all three ops. Backward data
is W^T @ dY followed by col2im (scatter-add, parallel over the (n, c) planes, so
there are no write races); backward weight is dY @ col^T accumulated over the
chunks, as dot products (dots.gemm_nt), from the forward's kept columns when
training kept them (keep_col / col_ready).

Direct path (nb == 0): plain loops, parallel over (n, f) output planes (forward),
(n, c) input planes (backward data) and (f, c) weight slices (backward weight),
no scratch and no BLAS; chosen by the workspace helpers for depthwise-style
convs (one input channel per group, several groups), where a GEMM per group
would have a single-row K.

Workspaces: `col` and `tmp` are 1-D float32 scratch buffers, sized by
`conv2d_workspace` / `conv_transpose2d_workspace` (plain Python helpers). They
hold nothing between calls and may be shared by all convs of a graph.
conv_transpose2d is the adjoint of conv2d and reuses the same cores with the
roles of x and y swapped.
"""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.cpu.blas import pgemm
from cnndsl.kernels.cpu.common import I0, I1, NO, ONE, PAR_MIN, YES, ZERO, kernel
from cnndsl.kernels.cpu.dots import gemm_nt
from cnndsl.kernels.cpu.epilogue import NO_ACTIVATION, chunk_epilogue, chunk_pool_epilogue
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

_NO_BIAS = np.zeros(1, np.float32)

# GEMM width (nb * P columns) the chunking aims for, and the scratch budget.
TARGET_COLUMNS = 8192
WORKSPACE_BUDGET_BYTES = 64 << 20


# ----------------------------------------------------------------------------
# workspace sizing (plain Python; called once per layer when the graph is built)

def _chunk(n: int, k: int, p: int, f: int, budget_bytes: int) -> int:
    nb = max(1, min(n, -(-TARGET_COLUMNS // p)))
    per_image = 4 * (k * p + f * p)
    nb = max(1, min(nb, budget_bytes // max(per_image, 1)))
    return nb


def use_direct(cg: int, ow: int, groups: int = 1) -> bool:
    """The direct-loop path (nb = 0) for depthwise-style convs (one input channel per group, many
    groups) with rows long enough to vectorize, where a GEMM per group would have a single-row K;
    im2col + GEMM otherwise. (A first layer with one input channel also runs faster as a GEMM once
    training reuses the forward's unfolded input: measured on LeNet's first conv.)"""
    return cg == 1 and groups > 1 and ow >= 16


def conv2d_workspace(n: int, c: int, f: int, kh: int, kw: int, groups: int, oh: int, ow: int,
                     budget_bytes: int = WORKSPACE_BUDGET_BYTES) -> tuple[int, int, int]:
    """(nb, col_len, tmp_len) for conv2d_forward / _backward_data / _backward_weight.

    nb = 0 selects the direct loops (no scratch needed; lengths are 1); nb >= 1 is the number
    of images per im2col + GEMM chunk. Allocate `col = np.empty(col_len, np.float32)` and
    `tmp = np.empty(tmp_len, np.float32)`. Any nb in [0, n] with buffers of
    col_len >= K*nb*P and tmp_len >= F*nb*P (K = C/groups*KH*KW, P = OH*OW) is valid.
    """
    if use_direct(c // groups, ow, groups):
        return 0, 1, 1
    k = (c // groups) * kh * kw
    p = oh * ow
    nb = _chunk(n, k, p, f, budget_bytes)
    return nb, k * nb * p, f * nb * p


def saved_col_len(n: int, c: int, kh: int, kw: int, oh: int, ow: int) -> int:
    """Elements of a col buffer that keeps the whole batch unfolded (conv2d_forward keep_col):
    (C/groups * KH * KW) x (N * OH * OW) per group."""
    return c * kh * kw * n * oh * ow


def conv_transpose2d_workspace(n: int, c: int, f: int, kh: int, kw: int, groups: int, h: int, w: int,
                               budget_bytes: int = WORKSPACE_BUDGET_BYTES) -> tuple[int, int, int]:
    """(nb, col_len, tmp_len) for conv_transpose2d_*; c = input channels, (h, w) = INPUT size."""
    # conv_transpose is the adjoint of a conv whose input has f channels and whose output is x.
    if use_direct(f // groups, w, groups):
        return 0, 1, 1
    k = (f // groups) * kh * kw
    p = h * w
    nb = _chunk(n, k, p, c, budget_bytes)
    return nb, k * nb * p, c * nb * p


# ----------------------------------------------------------------------------
# parallel data-movement helpers

@kernel
def _im2col_item(x, n0, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2, item, nbb):
    # item = r * nbb + b, r = (c*KH + kh)*KW + kw
    r = item // nbb
    b = item - r * nbb
    kw_ = r % KW
    kh_ = (r // KW) % KH
    c = r // (KW * KH)
    H = x.shape[2]
    W = x.shape[3]
    P = OH * OW
    base = b * P
    off_w = kw_ * dw - pl
    ow_lo = min(OW, max(0, (-off_w + sw - 1) // sw))
    ow_hi = min(OW, (W - off_w + sw - 1) // sw)
    if ow_hi < ow_lo:
        ow_hi = ow_lo
    xp = x[n0 + b, c0 + c]
    row = col2[r]
    zero = np.float32(0.0)
    for oh in range(OH):
        ih = oh * sh - pt + kh_ * dh
        o = base + oh * OW
        if ih < 0 or ih >= H:
            for ow in range(OW):
                row[o + ow] = zero
        else:
            for ow in range(ow_lo):
                row[o + ow] = zero
            if sw == 1:
                for ow in range(ow_lo, ow_hi):
                    row[o + ow] = xp[ih, ow + off_w]
            else:
                for ow in range(ow_lo, ow_hi):
                    row[o + ow] = xp[ih, ow * sw + off_w]
            for ow in range(ow_hi, OW):
                row[o + ow] = zero


@kernel
def _im2col_plane(x, n, c, cl, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2, b):
    """Unfold the input plane x[n, c] into its KH*KW rows of col2 (local channel cl, image slot b):
    one pass per plane reads it from cache KH*KW times, and every output row segment is a
    slice copy, which pays once rows are long (see WIDE_ROWS)."""
    H = x.shape[2]
    W = x.shape[3]
    P = OH * OW
    xp = x[n, c]
    zero = np.float32(0.0)
    for kh_ in range(KH):
        for kw_ in range(KW):
            row = col2[(cl * KH + kh_) * KW + kw_, b * P:(b + 1) * P]
            off, lo, hi = _ow_range(kw_, dw, pl, sw, OW, W)
            for oh in range(OH):
                ih = oh * sh - pt + kh_ * dh
                seg = row[oh * OW:(oh + 1) * OW]
                if ih < 0 or ih >= H:
                    for j in range(OW):
                        seg[j] = zero
                    continue
                xr = xp[ih]
                for j in range(lo):
                    seg[j] = zero
                if sw == 1:
                    src = xr[lo + off:hi + off]
                    dst = seg[lo:hi]
                    for j in range(hi - lo):
                        dst[j] = src[j]
                else:
                    for j in range(lo, hi):
                        seg[j] = xr[j * sw + off]
                for j in range(hi, OW):
                    seg[j] = zero


# Output rows at least this wide are unfolded plane by plane (_im2col_plane); narrower ones
# row by row (_im2col_item), which measured faster for LeNet's 10-wide second conv.
WIDE_ROWS = 16


@kernel
def _im2col_units(t, per, x, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2, planes):
    """Units t*per .. of _im2col (an item of parallel_items): planes (b, c) when `planes`, else
    rows ((c*KH + kh)*KW + kw, b)."""
    units = nbb * Cg if planes else Cg * KH * KW * nbb
    for it in range(t * per, min((t + 1) * per, units)):
        if planes:
            b = it // Cg
            _im2col_plane(x, n0 + b, c0 + it - b * Cg, it - b * Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2, b)
        else:
            _im2col_item(x, n0, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2, it, nbb)


_im2col_items = parallel_items(_im2col_units)


# The im2col path's loops run on the shared parallel loop (parallel.py), not prange: as
# parallel=True kernels, _im2col alone took 2.9 to 3.0 self CPU s to compile in the cold first
# step of mobilenet_tiny, unet_tiny, inception_tiny, detector and nin, and the conv family
# 10.9 to 12.2 CPU s of their 35 to 45 (compile_time.py, Xeon, 2026-12-03 14:29).
@kernel
def _im2col(x, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2):
    planes = OW >= WIDE_ROWS
    units = nbb * Cg if planes else Cg * KH * KW * nbb
    if nbb * Cg * KH * KW * OH * OW >= PAR_MIN:
        items, per = chunks(units)
        _im2col_items(items, per, x, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2, planes)
    else:
        _im2col_units(I0, units, x, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col2, planes)


@kernel
def _col2im_item(col2, n0, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, dx, item):
    # item = b * Cg + c: owns the plane dx[n0 + b, c0 + c]; zeroes it, then adds every tap.
    b = item // Cg
    c = item - b * Cg
    H = dx.shape[2]
    W = dx.shape[3]
    P = OH * OW
    dp = dx[n0 + b, c0 + c]
    zero = np.float32(0.0)
    for i in range(H):
        for j in range(W):
            dp[i, j] = zero
    for kh_ in range(KH):
        for kw_ in range(KW):
            row = col2[(c * KH + kh_) * KW + kw_]
            off_w = kw_ * dw - pl
            ow_lo = max(0, (-off_w + sw - 1) // sw)
            ow_hi = min(OW, (W - off_w + sw - 1) // sw)
            for oh in range(OH):
                ih = oh * sh - pt + kh_ * dh
                if ih < 0 or ih >= H:
                    continue
                o = b * P + oh * OW
                if sw == 1:
                    for ow in range(ow_lo, ow_hi):
                        dp[ih, ow + off_w] += row[o + ow]
                else:
                    for ow in range(ow_lo, ow_hi):
                        dp[ih, ow * sw + off_w] += row[o + ow]


@kernel
def _col2im_units(t, per, col2, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, dx):
    """Planes t*per .. of _col2im (an item of parallel_items)."""
    for it in range(t * per, min((t + 1) * per, nbb * Cg)):
        _col2im_item(col2, n0, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, dx, it)


_col2im_items = parallel_items(_col2im_units)


@kernel
def _col2im(col2, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, dx):
    units = nbb * Cg
    if units * dx.shape[2] * dx.shape[3] * KH * KW >= PAR_MIN:
        items, per = chunks(units)
        _col2im_items(items, per, col2, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, dx)
    else:
        _col2im_units(I0, units, col2, n0, nbb, c0, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, dx)


@kernel
def _gather_item(dy, n0, f0, Fg, t2, item):
    bb = item // Fg
    f = item - bb * Fg
    P = dy.shape[2] * dy.shape[3]
    src = dy[n0 + bb, f0 + f].reshape(P)
    dst = t2[f]
    o = bb * P
    for p in range(P):
        dst[o + p] = src[p]


@kernel
def _gather_units(t, per, dy, n0, nbb, f0, Fg, t2):
    """Planes t*per .. of _gather (an item of parallel_items)."""
    for it in range(t * per, min((t + 1) * per, nbb * Fg)):
        _gather_item(dy, n0, f0, Fg, t2, it)


_gather_items = parallel_items(_gather_units)


@kernel
def _gather(dy, n0, nbb, f0, Fg, t2):
    """t2[f, bb*P:(bb+1)*P] = dy[n0+bb, f0+f, :]."""
    units = nbb * Fg
    if units * dy.shape[2] * dy.shape[3] >= PAR_MIN:
        items, per = chunks(units)
        _gather_items(items, per, dy, n0, nbb, f0, Fg, t2)
    else:
        _gather_units(I0, units, dy, n0, nbb, f0, Fg, t2)


@kernel
def _add_bias_planes(t, per, y, n0, nbb, b):
    """Planes t*per .. of _add_bias_chunk (an item of parallel_items)."""
    F = y.shape[1]
    P = y.shape[2] * y.shape[3]
    for it in range(t * per, min((t + 1) * per, nbb * F)):
        yp = y[n0 + it // F, it % F].reshape(P)
        bv = b[it % F]
        for p in range(P):
            yp[p] += bv


_add_bias_items = parallel_items(_add_bias_planes)


@kernel
def _add_bias_chunk(y, n0, nbb, b):
    units = nbb * y.shape[1]
    if units * y.shape[2] * y.shape[3] >= PAR_MIN:
        items, per = chunks(units)
        _add_bias_items(items, per, y, n0, nbb, b)
    else:
        _add_bias_planes(I0, units, y, n0, nbb, b)


@kernel
def _bias_grad_channels(t, per, dy, db):
    """Channels t*per .. of bias_grad (an item of parallel_items)."""
    N = dy.shape[0]
    P = dy.shape[2] * dy.shape[3]
    for f in range(t * per, min((t + 1) * per, dy.shape[1])):
        acc = 0.0
        for n in range(N):
            row = dy[n, f].reshape(P)
            s = np.float32(0.0)
            for p in range(P):
                s += row[p]
            acc += s
        db[f] = np.float32(acc)


_bias_grad_items = parallel_items(_bias_grad_channels)


@kernel
def bias_grad(dy, db):
    """db[f] = sum over n, h, w of dy[n, f] (accumulated in float64)."""
    F = dy.shape[1]
    if dy.size >= PAR_MIN:  # a chunk of channels per thread
        items, per = chunks(F)
        _bias_grad_items(items, per, dy, db)
    else:
        _bias_grad_channels(I0, F, dy, db)


# ----------------------------------------------------------------------------
# direct (no im2col, no BLAS) path for small channel counts: nb == 0

@kernel
def _ow_range(kw_, dw, pl, sw, OW, W):
    off_w = kw_ * dw - pl
    ow_lo = min(OW, max(0, (-off_w + sw - 1) // sw))
    ow_hi = min(OW, (W - off_w + sw - 1) // sw)
    if ow_hi < ow_lo:
        ow_hi = ow_lo
    return off_w, ow_lo, ow_hi


@kernel
def _add_tap(big, small, wv, kh_, kw_, sh, sw, pt, pl, dh, dw, transposed):
    """One tap (kh_, kw_) of weight wv between an input plane `big` (H, W) and an output plane
    `small` (OH, OW), over the outputs whose input pixel (oh*sh - pt + kh_*dh, ow*sw - pl + kw_*dw)
    lies inside: small[oh, ow] += wv * big[ih, iw] (the forward), or, `transposed`,
    big[ih, iw] += wv * small[oh, ow] (the gradient with respect to the input). One geometry for
    both directions; unit-stride rows go through slices, which Numba vectorizes."""
    H = big.shape[0]
    W = big.shape[1]
    OH = small.shape[0]
    OW = small.shape[1]
    off_w, ow_lo, ow_hi = _ow_range(kw_, dw, pl, sw, OW, W)
    for oh in range(OH):
        ih = oh * sh - pt + kh_ * dh
        if ih < 0 or ih >= H:
            continue
        br = big[ih]
        sr = small[oh]
        if sw == 1:
            bs = br[ow_lo + off_w:ow_hi + off_w]
            ss = sr[ow_lo:ow_hi]
            if transposed:
                for j in range(ow_hi - ow_lo):
                    bs[j] += wv * ss[j]
            else:
                for j in range(ow_hi - ow_lo):
                    ss[j] += wv * bs[j]
        elif transposed:
            for ow in range(ow_lo, ow_hi):
                br[ow * sw + off_w] += wv * sr[ow]
        else:
            for ow in range(ow_lo, ow_hi):
                sr[ow] += wv * br[ow * sw + off_w]


@kernel
def _direct_fwd_item(x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y, item):
    F, Cg, KH, KW = w.shape
    n = item // F
    f = item - n * F
    c0 = (f // (F // groups)) * Cg
    yp = y[n, f]
    init = b[f] if has_bias else np.float32(0.0)
    for oh in range(y.shape[2]):
        for ow in range(y.shape[3]):
            yp[oh, ow] = init
    for c in range(Cg):
        xp = x[n, c0 + c]
        for kh_ in range(KH):
            for kw_ in range(KW):
                _add_tap(xp, yp, w[f, c, kh_, kw_], kh_, kw_, sh, sw, pt, pl, dh, dw, False)


@kernel
def _direct_fwd_units(t, per, x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y):
    """Output planes t*per .. of _direct_fwd (an item of parallel_items)."""
    for it in range(t * per, min((t + 1) * per, y.shape[0] * y.shape[1])):
        _direct_fwd_item(x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y, it)


_direct_fwd_items = parallel_items(_direct_fwd_units)


@kernel
def _direct_fwd(x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y):
    units = y.shape[0] * y.shape[1]
    if y.size * w.shape[1] * w.shape[2] * w.shape[3] >= PAR_MIN:
        items, per = chunks(units)
        _direct_fwd_items(items, per, x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y)
    else:
        _direct_fwd_units(I0, units, x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y)


@kernel
def _direct_bwd_data_item(dy, w, sh, sw, pt, pl, dh, dw, groups, dx, item):
    F, Cg, KH, KW = w.shape
    Fg = F // groups
    C = dx.shape[1]
    n = item // C
    c = item - n * C
    g = c // Cg
    cl = c - g * Cg
    dxp = dx[n, c]
    for i in range(dx.shape[2]):
        for j in range(dx.shape[3]):
            dxp[i, j] = np.float32(0.0)
    for f in range(g * Fg, (g + 1) * Fg):
        dyp = dy[n, f]
        for kh_ in range(KH):
            for kw_ in range(KW):
                _add_tap(dxp, dyp, w[f, cl, kh_, kw_], kh_, kw_, sh, sw, pt, pl, dh, dw, True)


@kernel
def _direct_bwd_data_units(t, per, dy, w, sh, sw, pt, pl, dh, dw, groups, dx):
    """Input planes t*per .. of _direct_bwd_data (an item of parallel_items)."""
    for it in range(t * per, min((t + 1) * per, dx.shape[0] * dx.shape[1])):
        _direct_bwd_data_item(dy, w, sh, sw, pt, pl, dh, dw, groups, dx, it)


_direct_bwd_data_items = parallel_items(_direct_bwd_data_units)


@kernel
def _direct_bwd_data(dy, w, sh, sw, pt, pl, dh, dw, groups, dx):
    units = dx.shape[0] * dx.shape[1]
    if dy.size * w.shape[1] * w.shape[2] * w.shape[3] >= PAR_MIN:
        items, per = chunks(units)
        _direct_bwd_data_items(items, per, dy, w, sh, sw, pt, pl, dh, dw, groups, dx)
    else:
        _direct_bwd_data_units(I0, units, dy, w, sh, sw, pt, pl, dh, dw, groups, dx)


@kernel
def _direct_bwd_weight_item(x, dy, sh, sw, pt, pl, dh, dw, groups, dweight, item):
    F, Cg, KH, KW = dweight.shape
    N = x.shape[0]
    H = x.shape[2]
    W = x.shape[3]
    OH = dy.shape[2]
    OW = dy.shape[3]
    f = item // Cg
    c = item - f * Cg
    xc = (f // (F // groups)) * Cg + c
    for kh_ in range(KH):
        for kw_ in range(KW):
            off_w, ow_lo, ow_hi = _ow_range(kw_, dw, pl, sw, OW, W)
            acc = 0.0
            for n in range(N):
                xp = x[n, xc]
                dyp = dy[n, f]
                s = np.float32(0.0)
                for oh in range(OH):
                    ih = oh * sh - pt + kh_ * dh
                    if ih < 0 or ih >= H:
                        continue
                    xr = xp[ih]
                    gr = dyp[oh]
                    if sw == 1:
                        xs = xr[ow_lo + off_w:ow_hi + off_w]
                        gs = gr[ow_lo:ow_hi]
                        for j in range(ow_hi - ow_lo):
                            s += gs[j] * xs[j]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            s += gr[ow] * xr[ow * sw + off_w]
                acc += s
            dweight[f, c, kh_, kw_] = np.float32(acc)


@kernel
def _direct_bwd_weight_units(t, per, x, dy, sh, sw, pt, pl, dh, dw, groups, dweight):
    """Weight slices (f, c) t*per .. of _direct_bwd_weight (an item of parallel_items)."""
    for it in range(t * per, min((t + 1) * per, dweight.shape[0] * dweight.shape[1])):
        _direct_bwd_weight_item(x, dy, sh, sw, pt, pl, dh, dw, groups, dweight, it)


_direct_bwd_weight_items = parallel_items(_direct_bwd_weight_units)


@kernel
def _direct_bwd_weight(x, dy, sh, sw, pt, pl, dh, dw, groups, dweight):
    units = dweight.shape[0] * dweight.shape[1]
    if dy.size * dweight.shape[1] * dweight.shape[2] * dweight.shape[3] >= PAR_MIN:
        items, per = chunks(units)
        _direct_bwd_weight_items(items, per, x, dy, sh, sw, pt, pl, dh, dw, groups, dweight)
    else:
        _direct_bwd_weight_units(I0, units, x, dy, sh, sw, pt, pl, dh, dw, groups, dweight)

@kernel
def col_offset(keep, K, P, n0, nbb, g, groups):
    """Where chunk (n0, group g) is unfolded in col: always at 0, or, when the forward keeps the
    unfolded input for the backward pass, in its own slot (chunks of nbb images, groups each)."""
    return K * P * (n0 * groups + g * nbb) if keep else 0


@kernel
def _image_columns(x, n, g, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, direct_1x1, col):
    """(buffer, offset) of image n's unfolded group g as a K x P row-major matrix: a plain 1x1
    conv reads x itself, any other conv unfolds it into col."""
    if direct_1x1:
        return x.reshape(x.size), (n * x.shape[1] + g * Cg) * OH * OW
    _im2col(x, n, I1, g * Cg, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, col[:Cg * KH * KW * OH * OW].reshape(
        Cg * KH * KW, OH * OW))
    return col, 0


# ----------------------------------------------------------------------------
# cores: a conv with input X (N, C, H, W), weight (F, Cg, KH, KW), output Y (N, F, OH, OW)

@kernel
def _check_ws(col, tmp, K, P, F, nb, kept_images):
    """kept_images: images whose unfolded input col must hold at once (keep_col / col_ready), else 0."""
    if nb < 0:
        raise ValueError("conv: nb must be >= 0")
    if nb > 0 and (col.size < K * max(nb, kept_images) * P or tmp.size < F * nb * P):
        raise ValueError("conv: workspace too small (see conv2d_workspace / saved_col_len)")


@kernel
def gemm_forward(x, w, b, has_bias, res, has_res, act, alpha, pool, sh, sw, pt, pl, dh, dw, groups, OH, OW, nb, col,
                 tmp, y, keep_col):
    """The im2col + GEMM forward of conv, fused_conv and fused_conv_pool: per chunk of nb images and
    group, unfold, one GEMM, then the epilogue (epilogue.py: bias, residual, activation; with `pool`
    also the 2x2 max pool) on each output plane while it is in cache. The conv's output is
    (F, OH, OW); y is that, or (F, OH // 2, OW // 2) with `pool`. keep_col: see conv2d_forward."""
    N = x.shape[0]
    F, Cg, KH, KW = w.shape
    Fg = F // groups
    K = Cg * KH * KW
    P = OH * OW
    al = np.float32(alpha)
    _check_ws(col, tmp, K, P, F, nb, N * groups if keep_col else 0)
    wf = w.reshape(w.size)
    direct_1x1 = KH == 1 and KW == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 \
        and OH == x.shape[2] and OW == x.shape[3] and not keep_col  # kept columns must be written
    for n0 in range(0, N, nb):
        nbb = min(nb, N - n0)
        for g in range(groups):
            c0 = col_offset(keep_col, K, P, n0, nbb, g, groups)
            if nbb == 1:
                src, src0 = _image_columns(x, n0, g, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, direct_1x1,
                                           col[c0:])
            else:
                _im2col(x, n0, nbb, g * Cg, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW,
                        col[c0:c0 + K * nbb * P].reshape(K, nbb * P))
                src, src0 = col, c0
            if nbb == 1 and not pool:  # the GEMM straight into y, finished in place
                pgemm(NO, NO, Fg, P, K, ONE, wf, g * Fg * K, K, src, src0, P, ZERO,
                      y.reshape(y.size), (n0 * F + g * Fg) * P, P)
                chunk_epilogue(y[n0, g * Fg:(g + 1) * Fg].reshape(Fg, P), n0, I1, g * Fg, Fg, b, has_bias, res,
                               has_res, act, al, y)
                continue
            pgemm(NO, NO, Fg, nbb * P, K, ONE, wf, g * Fg * K, K, src, src0, nbb * P, ZERO, tmp, I0, nbb * P)
            t2 = tmp[:Fg * nbb * P].reshape(Fg, nbb * P)
            if pool:
                chunk_pool_epilogue(t2, n0, nbb, g * Fg, Fg, OW, b, has_bias, res, has_res, act, al, y)
            else:
                chunk_epilogue(t2, n0, nbb, g * Fg, Fg, b, has_bias, res, has_res, act, al, y)


@kernel
def _bwd_data_core(dy, w, sh, sw, pt, pl, dh, dw, groups, nb, col, tmp, dx):
    N = dx.shape[0]
    F, Cg, KH, KW = w.shape
    OH = dy.shape[2]
    OW = dy.shape[3]
    Fg = F // groups
    K = Cg * KH * KW
    P = OH * OW
    _check_ws(col, tmp, K, P, F, nb, I0)  # I0, not 0: a literal is a signature of its own
    wf = w.reshape(w.size)
    for n0 in range(0, N, nb):
        nbb = min(nb, N - n0)
        for g in range(groups):
            c2 = col[:K * nbb * P].reshape(K, nbb * P)
            if nbb == 1:  # col = W_g^T dy[n0, group]
                pgemm(YES, NO, K, P, Fg, ONE, wf, g * Fg * K, K, dy.reshape(dy.size), (n0 * F + g * Fg) * P, P,
                      ZERO, col, I0, P)
            else:
                t2 = tmp[:Fg * nbb * P].reshape(Fg, nbb * P)
                _gather(dy, n0, nbb, g * Fg, Fg, t2)
                pgemm(YES, NO, K, nbb * P, Fg, ONE, wf, g * Fg * K, K, tmp, I0, nbb * P, ZERO, col, I0, nbb * P)
            _col2im(c2, n0, nbb, g * Cg, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, dx)


@kernel
def _bwd_weight_core(x, dy, sh, sw, pt, pl, dh, dw, groups, nb, col, tmp, dweight, col_ready):
    N = x.shape[0]
    F, Cg, KH, KW = dweight.shape
    OH = dy.shape[2]
    OW = dy.shape[3]
    Fg = F // groups
    K = Cg * KH * KW
    P = OH * OW
    _check_ws(col, tmp, K, P, F, nb, N * groups if col_ready else 0)
    dw2 = dweight.reshape(F, K)
    for n0 in range(0, N, nb):
        nbb = min(nb, N - n0)
        for g in range(groups):
            c0 = col_offset(col_ready, K, P, n0, nbb, g, groups)
            c2 = col[c0:c0 + K * nbb * P].reshape(K, nbb * P)
            if not col_ready:
                _im2col(x, n0, nbb, g * Cg, Cg, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, c2)
            if nbb == 1:
                d2 = dy[n0, g * Fg:(g + 1) * Fg].reshape(Fg, P)
            else:
                d2 = tmp[:Fg * nbb * P].reshape(Fg, nbb * P)
                _gather(dy, n0, nbb, g * Fg, Fg, d2)
            # dW_g (Fg x K) (+)= dy_g (Fg x nbb*P) @ col^T: a long reduction, so dot products
            # (dots.py) rather than BLAS; the first chunk overwrites, the others accumulate
            gemm_nt(d2, c2, n0 > 0, dw2[g * Fg:(g + 1) * Fg])


# ----------------------------------------------------------------------------
# public kernels: plain Python functions that pick the direct loops (nb == 0) or the im2col + GEMM
# core. The choice is made here rather than inside one compiled kernel so that a model compiles
# only the path it uses: Numba compiles every branch of a function, and the direct path alone
# cost about a third of LeNet-5's cold compile.

def conv2d_forward(x, weight, bias, has_bias, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, y,
                   keep_col=False):
    """y = conv2d(x, weight) (+ bias). Output size taken from y; x (N,C,H,W), weight (F,C/g,KH,KW).
    keep_col: col holds saved_col_len(...) elements and keeps every chunk's unfolded input, for
    conv2d_backward_weight(..., col_ready=True) to reuse instead of unfolding x again."""
    if nb == 0:
        _direct_fwd(x, weight, bias, has_bias, sh, sw, pad_top, pad_left, dh, dw, groups, y)
    else:
        gemm_forward(x, weight, bias, has_bias, y, False, NO_ACTIVATION, 0.0, False, sh, sw, pad_top, pad_left, dh, dw,
                     groups, y.shape[2], y.shape[3], nb, col, tmp, y, keep_col)


def conv2d_backward_data(dy, weight, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, dx):
    """dx = dL/dx (overwritten) from dy (N,F,OH,OW); the input size is taken from dx."""
    if nb == 0:
        _direct_bwd_data(dy, weight, sh, sw, pad_top, pad_left, dh, dw, groups, dx)
    else:
        _bwd_data_core(dy, weight, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, dx)


def conv2d_backward_weight(x, dy, has_bias, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp,
                           dweight, dbias, col_ready=False):
    """dweight (F,C/g,KH,KW) and dbias (F,) overwritten with the batch-summed gradients.
    col_ready: col is what conv2d_forward(..., keep_col=True) left (same x, same nb)."""
    if nb == 0:
        _direct_bwd_weight(x, dy, sh, sw, pad_top, pad_left, dh, dw, groups, dweight)
    else:
        _bwd_weight_core(x, dy, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, dweight, col_ready)
    if has_bias:
        bias_grad(dy, dbias)


def conv_transpose2d_forward(x, weight, bias, has_bias, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col,
                             tmp, y):
    """y = conv_transpose2d(x, weight) (+ bias); x (N,C,H,W), weight (C,F/g,KH,KW), y (N,F,OH,OW).

    y[n, g*Fg+f, i*sh - pad_top + kh*dh, j*sw - pad_left + kw*dw] += x[n, c, i, j] * weight[c, f, kh, kw]
    for c in group g; the output size (hence output_padding) is taken from y.
    """
    conv2d_backward_data(x, weight, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, y)
    if has_bias:
        _add_bias_chunk(y, 0, y.shape[0], bias)


def conv_transpose2d_backward_data(dy, weight, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, dx):
    """dx (N,C,H,W) overwritten: a plain conv2d of dy with the same weight."""
    conv2d_forward(dy, weight, _NO_BIAS, False, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, dx, False)


def conv_transpose2d_backward_weight(x, dy, has_bias, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp,
                                     dweight, dbias):
    """dweight (C,F/g,KH,KW) and dbias (F,) overwritten with the batch-summed gradients."""
    conv2d_backward_weight(dy, x, False, sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, dweight, dbias,
                           False)
    if has_bias:
        bias_grad(dy, dbias)
