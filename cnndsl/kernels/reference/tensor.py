"""Reference structural ops: add, concat (axis 1), flatten, nearest upsampling."""
from __future__ import annotations

import numpy as np


def add(*xs):
    out = xs[0].copy()
    for x in xs[1:]:
        out = out + x
    return out


def add_backward(dy, n):
    return tuple(dy.copy() for _ in range(n))


def concat(xs):
    return np.concatenate(xs, axis=1)


def concat_backward(dy, sizes):
    out, c = [], 0
    for s in sizes:
        out.append(dy[:, c:c + s].copy())
        c += s
    return out


def flatten(x):
    return x.reshape(x.shape[0], -1)


def flatten_backward(dy, x_shape):
    return dy.reshape(x_shape)


def upsample_nearest(x, sh, sw):
    return x.repeat(sh, axis=2).repeat(sw, axis=3)


def upsample_nearest_backward(dy, sh, sw):
    n, c, h, w = dy.shape
    return dy.reshape(n, c, h // sh, sh, w // sw, sw).sum(axis=(3, 5))
