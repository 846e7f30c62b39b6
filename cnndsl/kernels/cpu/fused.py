"""Fused conv / dense kernels: the epilogue (bias, residual add, activation) is applied to each
output chunk right after the GEMM that produced it, while it is still in cache, instead of in
separate sweeps over the whole output.

    fused_conv2d_forward(x, weight, bias, has_bias, res, has_res, act, alpha,
                         sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, y)
    fused_conv_pool_forward(x, weight, bias, has_bias, res, has_res, act, alpha,
                            sh, sw, pad_top, pad_left, dh, dw, groups, OH, OW, nb, col, tmp, y)
    fused_dense_forward(x, weight, bias, has_bias, act, alpha, y)
    fold_batchnorm(weight, bias, has_bias, gamma, beta, running_mean, running_var, eps, w_out, b_out)

`act` is the code of cnndsl/ops/fused/epilogue.py (0 none, 1 relu, 2 leaky_relu, 3 sigmoid,
4 tanh); `res` is the residual (shaped like y; any float32 4-D array when has_res is False).
Geometry and workspaces are exactly conv2d_forward's (see conv.py and conv2d_workspace).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.blas import pgemm
from cnndsl.kernels.cpu.common import ONE, PAR_MIN, ZERO, kernel, parallel_kernel
from cnndsl.kernels.cpu.conv import _check_ws, _direct_fwd_item, _im2col, _image_columns, col_offset
from cnndsl.kernels.cpu.dense import dense_matmul

NONE, RELU, LEAKY_RELU, SIGMOID, TANH = 0, 1, 2, 3, 4


@kernel
def _activate_plane(src, dst, bias_value, act, alpha):
    """dst[p] = act(src[p] + bias_value): one loop per activation with the branch outside it,
    so that each loop vectorizes."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    n = dst.size
    if act == RELU:
        for p in range(n):
            dst[p] = max(src[p] + bias_value, zero)
    elif act == LEAKY_RELU:
        for p in range(n):
            v = src[p] + bias_value
            dst[p] = v if v > zero else alpha * v
    elif act == SIGMOID:
        for p in range(n):
            dst[p] = one / (one + np.exp(-(src[p] + bias_value)))
    elif act == TANH:
        for p in range(n):
            dst[p] = np.tanh(src[p] + bias_value)
    else:
        for p in range(n):
            dst[p] = src[p] + bias_value


@kernel
def _epilogue(src, dst, bias_value, res, has_res, act, alpha):
    """dst = act(src + bias_value (+ res)) over one output plane (1-D views; dst may be src). The
    plane is a few KiB, so the residual's own loop reads it back from L1."""
    if has_res:
        for p in range(dst.size):
            dst[p] = src[p] + res[p]
        _activate_plane(dst, dst, bias_value, act, alpha)
    else:
        _activate_plane(src, dst, bias_value, act, alpha)


@kernel
def _plane_item(t2, o, y, n, f, bias, has_bias, res, has_res, act, alpha):
    P = y.shape[2] * y.shape[3]
    bv = bias[f] if has_bias else np.float32(0.0)
    r = res[n, f].reshape(P) if has_res else y[n, f].reshape(P)
    _epilogue(t2[o:o + P], y[n, f].reshape(P), bv, r, has_res, act, alpha)


@parallel_kernel
def _chunk_epilogue(t2, n0, nbb, f0, Fg, bias, has_bias, res, has_res, act, alpha, y):
    """y[n0+b, f0+f] = act(t2[f, b*P:(b+1)*P] + bias (+ res)): the GEMM result scattered to NCHW and
    finished in the same pass (t2 may be a view of y itself when nbb == 1)."""
    P = y.shape[2] * y.shape[3]
    items = nbb * Fg
    if items * P >= PAR_MIN:
        for it in prange(items):
            b = it // Fg
            f = it - b * Fg
            _plane_item(t2[f], b * P, y, n0 + b, f0 + f, bias, has_bias, res, has_res, act, alpha)
    else:
        for it in range(items):
            b = it // Fg
            f = it - b * Fg
            _plane_item(t2[f], b * P, y, n0 + b, f0 + f, bias, has_bias, res, has_res, act, alpha)


@parallel_kernel
def _direct_fused(x, w, b, has_bias, res, has_res, act, alpha, sh, sw, pt, pl, dh, dw, groups, y):
    """The direct path, with the epilogue applied to each (n, f) plane right after it is summed."""
    F = y.shape[1]
    P = y.shape[2] * y.shape[3]
    items = y.shape[0] * F
    if y.size * w.shape[1] * w.shape[2] * w.shape[3] >= PAR_MIN:
        for it in prange(items):
            _direct_fwd_item(x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y, it)
            n = it // F
            plane = y[n, it - n * F].reshape(P)
            r = res[n, it - n * F].reshape(P) if has_res else plane
            _epilogue(plane, plane, np.float32(0.0), r, has_res, act, alpha)
    else:
        for it in range(items):
            _direct_fwd_item(x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y, it)
            n = it // F
            plane = y[n, it - n * F].reshape(P)
            r = res[n, it - n * F].reshape(P) if has_res else plane
            _epilogue(plane, plane, np.float32(0.0), r, has_res, act, alpha)


def fused_conv2d_forward(x, weight, bias, has_bias, res, has_res, act, alpha, sh, sw, pad_top, pad_left, dh, dw,
                         groups, nb, col, tmp, y, keep_col=False):
    """y = act(conv2d(x, weight) + bias (+ res)); geometry, workspace and keep_col as conv2d_forward
    (like it, a Python function choosing the path, so that only the path used gets compiled)."""
    if nb == 0:
        _direct_fused(x, weight, bias, has_bias, res, has_res, act, np.float32(alpha), sh, sw, pad_top, pad_left,
                      dh, dw, groups, y)
    else:
        _fused_gemm_forward(x, weight, bias, has_bias, res, has_res, act, alpha, sh, sw, pad_top, pad_left, dh, dw,
                            groups, nb, col, tmp, y, keep_col)


@kernel
def _fused_gemm_forward(x, weight, bias, has_bias, res, has_res, act, alpha, sh, sw, pad_top, pad_left, dh, dw,
                        groups, nb, col, tmp, y, keep_col):
    N = x.shape[0]
    F, Cg, KH, KW = weight.shape
    OH = y.shape[2]
    OW = y.shape[3]
    Fg = F // groups
    K = Cg * KH * KW
    P = OH * OW
    al = np.float32(alpha)
    _check_ws(col, tmp, K, P, F, nb, N * groups if keep_col else 0)
    wf = weight.reshape(weight.size)
    direct_1x1 = KH == 1 and KW == 1 and sh == 1 and sw == 1 and pad_top == 0 and pad_left == 0 \
        and OH == x.shape[2] and OW == x.shape[3] and not keep_col  # kept columns must be written
    for n0 in range(0, N, nb):
        nbb = min(nb, N - n0)
        for g in range(groups):
            c0 = col_offset(keep_col, K, P, n0, nbb, g, groups)
            if nbb == 1:
                src, src0 = _image_columns(x, n0, g, Cg, KH, KW, sh, sw, pad_top, pad_left, dh, dw, OH, OW,
                                           direct_1x1, col[c0:])
                t2 = y[n0, g * Fg:(g + 1) * Fg].reshape(Fg, P)  # GEMM straight into y, finished in place
                pgemm(False, False, Fg, P, K, ONE, wf, g * Fg * K, K, src, src0, P, ZERO,
                      y.reshape(y.size), (n0 * F + g * Fg) * P, P)
            else:
                c2 = col[c0:c0 + K * nbb * P].reshape(K, nbb * P)
                _im2col(x, n0, nbb, g * Cg, Cg, KH, KW, sh, sw, pad_top, pad_left, dh, dw, OH, OW, c2)
                t2 = tmp[:Fg * nbb * P].reshape(Fg, nbb * P)
                pgemm(False, False, Fg, nbb * P, K, ONE, wf, g * Fg * K, K, col, c0, nbb * P, ZERO, tmp, 0, nbb * P)
            _chunk_epilogue(t2, n0, nbb, g * Fg, Fg, bias, has_bias, res, has_res, act, al, y)


@kernel
def _activate(v, act, alpha):
    if act == RELU:
        return max(v, np.float32(0.0))
    if act == LEAKY_RELU:
        return v if v > np.float32(0.0) else alpha * v
    if act == SIGMOID:
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-v))
    if act == TANH:
        return np.tanh(v)
    return v


@kernel
def _pool_plane(src, W, bias_value, res, has_res, act, alpha, dst):
    """dst (PH x PW) = act(max over each 2x2 window of src (+ res) + bias), src and res being flat
    planes W wide. src is scratch (a GEMM chunk), so the vertical max of each row pair is written
    over its first row in one contiguous, vectorized loop; the horizontal max and the activation
    then read it back. Every activation here is non-decreasing, so act(max) == max(act): one
    activation per window instead of four."""
    PH, PW = dst.shape
    for i in range(PH):
        top = src[2 * i * W:(2 * i + 1) * W]
        bottom = src[(2 * i + 1) * W:(2 * i + 2) * W]
        if has_res:
            rt = res[2 * i * W:(2 * i + 1) * W]
            rb = res[(2 * i + 1) * W:(2 * i + 2) * W]
            for j in range(W):
                top[j] = max(top[j] + rt[j], bottom[j] + rb[j])
        else:
            for j in range(W):
                top[j] = max(top[j], bottom[j])
        out = dst[i]
        for j in range(PW):
            out[j] = max(top[2 * j], top[2 * j + 1]) + bias_value
        _activate_row(out, act, alpha)


@kernel
def _activate_row(row, act, alpha):
    """The activation over a row in place, with the branch outside the loop so that it vectorizes."""
    if act == NONE:
        return
    for j in range(row.size):
        row[j] = _activate(row[j], act, alpha)


@parallel_kernel
def _chunk_pool_epilogue(t2, n0, nbb, f0, Fg, OW, bias, has_bias, res, has_res, act, alpha, y):
    """y[n0+b, f0+f] = the pooled, activated plane t2[f, b*P:(b+1)*P] (P = the conv's OH*OW)."""
    P = t2.shape[1] // nbb
    items = nbb * Fg
    if items * P >= PAR_MIN:
        for it in prange(items):
            b = it // Fg
            f = it - b * Fg
            _pool_item(t2, b, f, P, n0, f0, OW, bias, has_bias, res, has_res, act, alpha, y)
    else:
        for it in range(items):
            b = it // Fg
            f = it - b * Fg
            _pool_item(t2, b, f, P, n0, f0, OW, bias, has_bias, res, has_res, act, alpha, y)


@kernel
def _pool_item(t2, b, f, P, n0, f0, OW, bias, has_bias, res, has_res, act, alpha, y):
    bv = bias[f0 + f] if has_bias else np.float32(0.0)
    r = res[n0 + b, f0 + f].reshape(P) if has_res else t2[f, :P]
    _pool_plane(t2[f, b * P:(b + 1) * P], OW, bv, r, has_res, act, alpha, y[n0 + b, f0 + f])


@kernel
def fused_conv_pool_forward(x, weight, bias, has_bias, res, has_res, act, alpha, sh, sw, pad_top, pad_left, dh, dw,
                            groups, OH, OW, nb, col, tmp, y):
    """y = maxpool2x2(act(conv2d(x, weight) + bias (+ res))): the conv's output (F, OH, OW) is only
    ever a chunk in tmp; y is (N, F, OH // 2, OW // 2), res (N, F, OH, OW) when has_res. The
    im2col + GEMM path only (nb >= 1): geometry and workspace as conv2d_forward's."""
    N = x.shape[0]
    F, Cg, KH, KW = weight.shape
    Fg = F // groups
    K = Cg * KH * KW
    P = OH * OW
    al = np.float32(alpha)
    if nb < 1:
        raise ValueError("fused_conv_pool_forward: the im2col + GEMM path only (nb >= 1)")
    _check_ws(col, tmp, K, P, F, nb, 0)
    wf = weight.reshape(weight.size)
    direct_1x1 = KH == 1 and KW == 1 and sh == 1 and sw == 1 and pad_top == 0 and pad_left == 0 \
        and OH == x.shape[2] and OW == x.shape[3]
    for n0 in range(0, N, nb):
        nbb = min(nb, N - n0)
        for g in range(groups):
            if nbb == 1:
                src, src0 = _image_columns(x, n0, g, Cg, KH, KW, sh, sw, pad_top, pad_left, dh, dw, OH, OW,
                                           direct_1x1, col)
            else:
                _im2col(x, n0, nbb, g * Cg, Cg, KH, KW, sh, sw, pad_top, pad_left, dh, dw, OH, OW,
                        col[:K * nbb * P].reshape(K, nbb * P))
                src, src0 = col, 0
            pgemm(False, False, Fg, nbb * P, K, ONE, wf, g * Fg * K, K, src, src0, nbb * P, ZERO, tmp, 0, nbb * P)
            _chunk_pool_epilogue(tmp[:Fg * nbb * P].reshape(Fg, nbb * P), n0, nbb, g * Fg, Fg, OW, bias, has_bias,
                                 res, has_res, act, al, y)


@parallel_kernel
def _dense_epilogue(y, bias, has_bias, act, alpha):
    """Row by row: the same epilogue loops, with the bias as a per-element "residual" row."""
    N, F = y.shape
    zero_bias = np.float32(0.0)
    if N * F >= PAR_MIN:
        for n in prange(N):
            _epilogue(y[n], y[n], zero_bias, bias[:F] if has_bias else y[n], has_bias, act, alpha)
    else:
        for n in range(N):
            _epilogue(y[n], y[n], zero_bias, bias[:F] if has_bias else y[n], has_bias, act, alpha)


@kernel
def fused_dense_forward(x, weight, bias, has_bias, act, alpha, y):
    """y = act(x W^T + b): one GEMM, then bias and activation in one pass over y."""
    dense_matmul(x, weight, y)
    _dense_epilogue(y, bias, has_bias, act, np.float32(alpha))


@kernel
def fold_batchnorm(weight, bias, has_bias, gamma, beta, running_mean, running_var, eps, w_out, b_out):
    """w_out[f] = weight[f] * s[f], b_out[f] = (bias[f] - mean[f]) * s[f] + beta[f], s = gamma / sqrt(var + eps).
    Axis 0 of weight is the output channel (conv (F, C/g, KH, KW), dense (units, in))."""
    F = weight.shape[0]
    w2 = weight.reshape(F, weight.size // F)
    o2 = w_out.reshape(F, weight.size // F)
    for f in range(F):
        s = gamma[f] / np.sqrt(running_var[f] + np.float32(eps))
        for k in range(w2.shape[1]):
            o2[f, k] = w2[f, k] * s
        b0 = bias[f] if has_bias else np.float32(0.0)
        b_out[f] = (b0 - running_mean[f]) * s + beta[f]
