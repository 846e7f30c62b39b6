"""Reference YOLO-style detection loss (NumPy): the oracle of cnndsl/kernels/cpu/yolo_loss.py
and cnndsl/kernels/cuda/yolo_loss.py.

The head z and the target t are (N, B*P, GH, GW) maps with P = classes + 5 channels per
predictor (cnndsl.tasks.detection): 0 x, 1 y (centre offset in the cell), 2 sqrt(w),
3 sqrt(h) (fractions of the image), 4 objectness, 5... class scores. Per predictor, with
s = sigmoid and `obj` = (t[4] > 0.5):

    objectness   BCE(s(z4), t4)                      on every predictor; times `noobj` where not obj
    box          coord * sum_k (s(z_k) - t_k)^2, k<4  only where obj
    class        -sum_c t_c log softmax(z[5:])_c      only where obj

loss = sum over predictors and cells / N. Returns (loss, dloss/dz).
"""
from __future__ import annotations

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def yolo_loss(z, t, boxes: int = 1, noobj: float = 0.5, coord: float = 5.0):
    z = np.asarray(z, np.float64)
    t = np.asarray(t, np.float64)
    n, c, gh, gw = z.shape
    per = c // boxes
    zz = z.reshape(n, boxes, per, gh, gw)
    tt = t.reshape(n, boxes, per, gh, gw)
    obj = tt[:, :, 4] > 0.5
    g = np.zeros_like(zz)
    # objectness: BCE with logits, weight 1 (object) or noobj (none)
    zo, to = zz[:, :, 4], tt[:, :, 4]
    w = np.where(obj, 1.0, noobj)
    bce = np.maximum(zo, 0) - zo * to + np.log1p(np.exp(-np.abs(zo)))
    loss = float((w * bce).sum())
    g[:, :, 4] = w * (_sigmoid(zo) - to)
    # box: squared error of the sigmoid outputs, object predictors only
    s = _sigmoid(zz[:, :, :4])
    d = (s - tt[:, :, :4]) * obj[:, :, None]
    loss += coord * float((d * d).sum())
    g[:, :, :4] = coord * 2 * d * s * (1 - s)
    # class: cross-entropy with the (one-hot) target scores, object predictors only
    zc, tc = zz[:, :, 5:], tt[:, :, 5:]
    m = zc.max(axis=2, keepdims=True)
    lse = m + np.log(np.exp(zc - m).sum(axis=2, keepdims=True))
    lsm = zc - lse
    loss += float((-(tc * lsm).sum(axis=2) * obj).sum())
    g[:, :, 5:] = (np.exp(lsm) * tc.sum(axis=2, keepdims=True) - tc) * obj[:, :, None]
    return loss / n, (g / n).reshape(z.shape)
