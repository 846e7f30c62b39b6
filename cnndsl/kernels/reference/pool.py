"""Reference pooling (NumPy). Windows: kernel (KH, KW), stride, dilation, pads (top, bottom, left, right).

maxpool pads with -inf. avgpool and l2pool divide by the number of NON-padding
elements in each window (count_include_pad=False). l2pool = sqrt(mean of squares).
"""
from __future__ import annotations

import numpy as np

L2_EPS = 1e-30  # l2pool backward: dy * x / (count * max(y, L2_EPS)); y == 0 means x == 0, so the grad is 0


def _out(size, k, s, p0, p1, d):
    return (size + p0 + p1 - (d * (k - 1) + 1)) // s + 1


def _windows(x, kernel, stride, pads, dilation, fill):
    """(KH*KW, N, C, OH, OW) stack of window taps of x padded with `fill`, plus OH, OW."""
    n, c, h, w = x.shape
    (kh_, kw_), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = pads
    oh = _out(h, kh_, sh, pt, pb, dh)
    ow = _out(w, kw_, sw, pl, pr, dw)
    # pad generously so every tap slice has full length (floor/ceil rounding may read past pb/pr)
    eh = max(0, (oh - 1) * sh + dh * (kh_ - 1) + 1 - (h + pt))
    ew = max(0, (ow - 1) * sw + dw * (kw_ - 1) + 1 - (w + pl))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, eh), (pl, ew)), constant_values=fill)
    taps = [xp[:, :, kh * dh: kh * dh + sh * (oh - 1) + 1: sh, kw * dw: kw * dw + sw * (ow - 1) + 1: sw]
            for kh in range(kh_) for kw in range(kw_)]
    return np.stack(taps), xp.shape, oh, ow


def _scatter_taps(contrib, xp_shape, x_shape, kernel, stride, pads, dilation, oh, ow, dtype):
    """Adjoint of _windows: sum the per-tap contributions back onto the input."""
    (kh_, kw_), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pl = pads[0], pads[2]
    dxp = np.zeros(xp_shape, dtype=dtype)
    t = 0
    for kh in range(kh_):
        for kw in range(kw_):
            dxp[:, :, kh * dh: kh * dh + sh * (oh - 1) + 1: sh, kw * dw: kw * dw + sw * (ow - 1) + 1: sw] += contrib[t]
            t += 1
    h, w = x_shape[2:]
    return np.ascontiguousarray(dxp[:, :, pt:pt + h, pl:pl + w])


def _counts(x, kernel, stride, pads, dilation):
    ones = np.ones((1, 1) + x.shape[2:], dtype=x.dtype)
    win, _, _, _ = _windows(ones, kernel, stride, pads, dilation, 0)
    return win.sum(axis=0)  # (1, 1, OH, OW)


def maxpool2d(x, kernel, stride, pads, dilation):
    win, _, _, _ = _windows(x, kernel, stride, pads, dilation, -np.inf)
    return win.max(axis=0)


def maxpool2d_backward(x, dy, kernel, stride, pads, dilation):
    """dx: dy routed to the first maximum of each window (row-major window order)."""
    win, xp_shape, oh, ow = _windows(x, kernel, stride, pads, dilation, -np.inf)
    arg = win.argmax(axis=0)
    contrib = np.stack([np.where(arg == t, dy, 0) for t in range(win.shape[0])])
    return _scatter_taps(contrib, xp_shape, x.shape, kernel, stride, pads, dilation, oh, ow, x.dtype)


def avgpool2d(x, kernel, stride, pads, dilation):
    win, _, _, _ = _windows(x, kernel, stride, pads, dilation, 0)
    return win.sum(axis=0) / _counts(x, kernel, stride, pads, dilation)


def avgpool2d_backward(x, dy, kernel, stride, pads, dilation):
    win, xp_shape, oh, ow = _windows(x, kernel, stride, pads, dilation, 0)
    g = dy / _counts(x, kernel, stride, pads, dilation)
    contrib = np.broadcast_to(g, win.shape)
    return _scatter_taps(contrib, xp_shape, x.shape, kernel, stride, pads, dilation, oh, ow, x.dtype)


def l2pool2d(x, kernel, stride, pads, dilation):
    win, _, _, _ = _windows(x, kernel, stride, pads, dilation, 0)
    return np.sqrt((win * win).sum(axis=0) / _counts(x, kernel, stride, pads, dilation))


def l2pool2d_backward(x, dy, kernel, stride, pads, dilation):
    win, xp_shape, oh, ow = _windows(x, kernel, stride, pads, dilation, 0)
    cnt = _counts(x, kernel, stride, pads, dilation)
    y = np.sqrt((win * win).sum(axis=0) / cnt)
    contrib = win * (dy / (cnt * np.maximum(y, L2_EPS)))
    return _scatter_taps(contrib, xp_shape, x.shape, kernel, stride, pads, dilation, oh, ow, x.dtype)


def global_avgpool(x):
    return x.mean(axis=(2, 3))


def global_avgpool_backward(x_shape, dy):
    n, c, h, w = x_shape
    return np.broadcast_to((dy / (h * w))[:, :, None, None], x_shape).copy()
