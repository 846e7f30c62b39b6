"""Reference conv2d / conv_transpose2d (NumPy, any float dtype).

conv2d weight: (F, C/groups, KH, KW); conv_transpose2d weight: (C_in, F/groups, KH, KW)
(PyTorch layouts). Both are cross-correlations written as a sum over kernel taps
of strided slices of the zero-padded input.
"""
from __future__ import annotations

import numpy as np


def conv2d_output_size(size: int, k: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int:
    return (size + pad_before + pad_after - (dilation * (k - 1) + 1)) // stride + 1


def conv_transpose2d_output_size(size: int, k: int, stride: int, pad_before: int, pad_after: int,
                                 dilation: int, output_padding: int) -> int:
    return (size - 1) * stride - pad_before - pad_after + dilation * (k - 1) + 1 + output_padding


def _taps(xpad, kh, kw, stride, dilation, oh, ow):
    """xpad[..., kh*dh + i*sh, kw*dw + j*sw] for i < oh, j < ow."""
    (sh, sw), (dh, dw) = stride, dilation
    return xpad[:, :, kh * dh: kh * dh + sh * (oh - 1) + 1: sh, kw * dw: kw * dw + sw * (ow - 1) + 1: sw]


def _pad(x, pads):
    pt, pb, pl, pr = pads
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def conv2d(x, w, b, stride, pads, dilation, groups):
    """y[n, f, i, j] = b[f] + sum_{c in group(f), kh, kw} xpad[n, c, i*sh + kh*dh, j*sw + kw*dw] * w[f, c, kh, kw]."""
    n, c, h, wd = x.shape
    f, cg, kh_, kw_ = w.shape
    fg = f // groups
    oh = conv2d_output_size(h, kh_, stride[0], pads[0], pads[1], dilation[0])
    ow = conv2d_output_size(wd, kw_, stride[1], pads[2], pads[3], dilation[1])
    xp = _pad(x, pads)
    y = np.zeros((n, f, oh, ow), dtype=x.dtype)
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for kh in range(kh_):
            for kw in range(kw_):
                y[:, g * fg:(g + 1) * fg] += np.einsum("ncij,fc->nfij", _taps(xs, kh, kw, stride, dilation, oh, ow),
                                                       w[g * fg:(g + 1) * fg, :, kh, kw])
    if b is not None:
        y += b.reshape(1, f, 1, 1)
    return y


def conv2d_backward(x, w, dy, stride, pads, dilation, groups):
    """(dx, dw, db) of conv2d; db is the batch sum of dy (return it even without a bias)."""
    n, c, h, wd = x.shape
    f, cg, kh_, kw_ = w.shape
    fg = f // groups
    oh, ow = dy.shape[2:]
    xp = _pad(x, pads)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    (sh, sw), (dh, dwl) = stride, dilation
    for g in range(groups):
        cs, fs = slice(g * cg, (g + 1) * cg), slice(g * fg, (g + 1) * fg)
        for kh in range(kh_):
            for kw in range(kw_):
                dw[fs, :, kh, kw] = np.einsum("nfij,ncij->fc", dy[:, fs],
                                              _taps(xp[:, cs], kh, kw, stride, dilation, oh, ow))
                dxp[:, cs, kh * dh: kh * dh + sh * (oh - 1) + 1: sh, kw * dwl: kw * dwl + sw * (ow - 1) + 1: sw] += \
                    np.einsum("nfij,fc->ncij", dy[:, fs], w[fs, :, kh, kw])
    pt, pl = pads[0], pads[2]
    dx = dxp[:, :, pt:pt + h, pl:pl + wd]
    return np.ascontiguousarray(dx), dw, dy.sum(axis=(0, 2, 3))


def conv_transpose2d(x, w, b, stride, pads, dilation, groups, out_hw):
    """The adjoint of conv2d: y[n, g*Fg+f, i*sh - pt + kh*dh, j*sw - pl + kw*dw] += x[n, c, i, j] * w[c, f, kh, kw].

    out_hw = (OH, OW); rows/columns beyond the scattered area (output_padding) get only the bias.
    """
    n, c, h, wd = x.shape
    _, fg, kh_, kw_ = w.shape
    f = fg * groups
    cg = c // groups
    (sh, sw), (dh, dwl) = stride, dilation
    pt, pl = pads[0], pads[2]
    oh, ow = out_hw
    fh = max((h - 1) * sh + dh * (kh_ - 1) + 1, pt + oh)
    fw = max((wd - 1) * sw + dwl * (kw_ - 1) + 1, pl + ow)
    full = np.zeros((n, f, fh, fw), dtype=x.dtype)
    for g in range(groups):
        cs, fs = slice(g * cg, (g + 1) * cg), slice(g * fg, (g + 1) * fg)
        for kh in range(kh_):
            for kw in range(kw_):
                full[:, fs, kh * dh: kh * dh + sh * (h - 1) + 1: sh, kw * dwl: kw * dwl + sw * (wd - 1) + 1: sw] += \
                    np.einsum("ncij,cf->nfij", x[:, cs], w[cs, :, kh, kw])
    y = np.ascontiguousarray(full[:, :, pt:pt + oh, pl:pl + ow])
    if b is not None:
        y += b.reshape(1, f, 1, 1)
    return y


def conv_transpose2d_backward(x, w, dy, stride, pads, dilation, groups):
    """(dx, dw, db) of conv_transpose2d."""
    n, c, h, wd = x.shape
    _, fg, kh_, kw_ = w.shape
    f = fg * groups
    cg = c // groups
    (sh, sw), (dh, dwl) = stride, dilation
    pt, pl = pads[0], pads[2]
    oh, ow = dy.shape[2:]
    fh = max((h - 1) * sh + dh * (kh_ - 1) + 1, pt + oh)
    fw = max((wd - 1) * sw + dwl * (kw_ - 1) + 1, pl + ow)
    dfull = np.zeros((n, f, fh, fw), dtype=dy.dtype)
    dfull[:, :, pt:pt + oh, pl:pl + ow] = dy
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for g in range(groups):
        cs, fs = slice(g * cg, (g + 1) * cg), slice(g * fg, (g + 1) * fg)
        for kh in range(kh_):
            for kw in range(kw_):
                tap = dfull[:, fs, kh * dh: kh * dh + sh * (h - 1) + 1: sh, kw * dwl: kw * dwl + sw * (wd - 1) + 1: sw]
                dx[:, cs] += np.einsum("nfij,cf->ncij", tap, w[cs, :, kh, kw])
                dw[cs, :, kh, kw] = np.einsum("ncij,nfij->cf", x[:, cs], tap)
    return dx, dw, dy.sum(axis=(0, 2, 3))
