"""Fused conv / dense kernels: the epilogue (bias, residual add, activation) is applied to each
output chunk right after the GEMM that produced it, while it is still in cache, instead of in
separate sweeps over the whole output.

    fused_conv2d_forward(x, weight, bias, has_bias, res, has_res, act, alpha,
                         sh, sw, pad_top, pad_left, dh, dw, groups, nb, col, tmp, y)
    fused_conv_pool_forward(x, weight, bias, has_bias, res, has_res, act, alpha,
                            sh, sw, pad_top, pad_left, dh, dw, groups, OH, OW, nb, col, tmp, y)
    fused_dense_forward(x, weight, bias, has_bias, act, alpha, y)
    fold_batchnorm(weight, bias, has_bias, gamma, beta, running_mean, running_var, eps, w_out, b_out)

`act` is an activation's code (cnndsl/kernels/activations.py: 0 none, 1 relu, 2 leaky_relu, ...);
`res` is the residual (shaped like y; any float32 4-D array when has_res is False).
Geometry and workspaces are exactly conv2d_forward's (see conv.py and conv2d_workspace). The
im2col + GEMM path of both conv kernels is conv.py's `gemm_forward`, the epilogue loops are in
epilogue.py; this module keeps the direct path's fused loop and the folding. fused_dense_forward
lives in dense.py (the plain dense layer runs it too) and is imported here.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from cnndsl.kernels.cpu.common import PAR_MIN, kernel, parallel_kernel
from cnndsl.kernels.cpu.conv import _direct_fwd_item, gemm_forward
from cnndsl.kernels.cpu.dense import fused_dense_forward  # noqa: F401  (a fused kernel, kept with dense's)
from cnndsl.kernels.cpu.epilogue import epilogue


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
            epilogue(plane, plane, np.float32(0.0), r, has_res, act, alpha)
    else:
        for it in range(items):
            _direct_fwd_item(x, w, b, has_bias, sh, sw, pt, pl, dh, dw, groups, y, it)
            n = it // F
            plane = y[n, it - n * F].reshape(P)
            r = res[n, it - n * F].reshape(P) if has_res else plane
            epilogue(plane, plane, np.float32(0.0), r, has_res, act, alpha)


def fused_conv2d_forward(x, weight, bias, has_bias, res, has_res, act, alpha, sh, sw, pad_top, pad_left, dh, dw,
                         groups, nb, col, tmp, y, keep_col=False):
    """y = act(conv2d(x, weight) + bias (+ res)); geometry, workspace and keep_col as conv2d_forward
    (like it, a Python function choosing the path, so that only the path used gets compiled)."""
    if nb == 0:
        _direct_fused(x, weight, bias, has_bias, res, has_res, act, np.float32(alpha), sh, sw, pad_top, pad_left,
                      dh, dw, groups, y)
    else:
        gemm_forward(x, weight, bias, has_bias, res, has_res, act, alpha, False, sh, sw, pad_top, pad_left, dh, dw,
                     groups, y.shape[2], y.shape[3], nb, col, tmp, y, keep_col)


def fused_conv_pool_forward(x, weight, bias, has_bias, res, has_res, act, alpha, sh, sw, pad_top, pad_left, dh, dw,
                            groups, OH, OW, nb, col, tmp, y):
    """y = maxpool2x2(act(conv2d(x, weight) + bias (+ res))): the conv's output (F, OH, OW) is only
    ever a chunk in tmp; y is (N, F, OH // 2, OW // 2), res (N, F, OH, OW) when has_res. The
    im2col + GEMM path only (nb >= 1): geometry and workspace as conv2d_forward's."""
    if nb < 1:
        raise ValueError("fused_conv_pool_forward: the im2col + GEMM path only (nb >= 1)")
    gemm_forward(x, weight, bias, has_bias, res, has_res, act, alpha, True, sh, sw, pad_top, pad_left, dh, dw,
                 groups, OH, OW, nb, col, tmp, y, False)


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
