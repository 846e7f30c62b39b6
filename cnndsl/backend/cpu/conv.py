"""Launchers for conv and conv_transpose, forward and backward (im2col + BLAS kernels)."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.launch import grads_of, launches, params_of
from cnndsl.kernels.cpu import conv as K

_NO_BIAS = np.zeros(1, np.float32)


def _geometry(node):
    a = node.attrs
    top, _, left, _ = node.meta["pads"]
    return a["stride"][0], a["stride"][1], top, left, a["dilation"][0], a["dilation"][1], a["groups"]


def _conv_ws(rc, x, y, weight, groups):
    n, c = x.shape[:2]
    f, _, kh, kw = weight.shape
    nb, col_len, tmp_len = K.conv2d_workspace(n, c, f, kh, kw, groups, y.shape[2], y.shape[3])
    return nb, rc.scratch("col", col_len), rc.scratch("tmp", tmp_len)


def _convt_ws(rc, x, weight, groups):
    n, c, h, w = x.shape
    _, fg, kh, kw = weight.shape
    nb, col_len, tmp_len = K.conv_transpose2d_workspace(n, c, fg * groups, kh, kw, groups, h, w)
    return nb, rc.scratch("col", col_len), rc.scratch("tmp", tmp_len)


@launches("conv")
def conv(rc, node, ins, out):
    p = params_of(rc, node.name)
    sh, sw, pt, pl, dh, dw, g = _geometry(node)
    nb, col, tmp = _conv_ws(rc, ins[0], out, p["weight"], g)
    bias = p.get("bias", _NO_BIAS)
    K.conv2d_forward(ins[0], p["weight"], bias, "bias" in p, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, out)


@launches("conv_grad_input")
def conv_grad_input(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    w = params_of(rc, fwd.name)["weight"]
    sh, sw, pt, pl, dh, dw, g = _geometry(fwd)
    nb, col, tmp = _conv_ws(rc, x, dy, w, g)
    K.conv2d_backward_data(dy, w, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, out)


@launches("conv_grad_params")
def conv_grad_params(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    grads = grads_of(rc, fwd.name)
    sh, sw, pt, pl, dh, dw, g = _geometry(fwd)
    nb, col, tmp = _conv_ws(rc, x, dy, grads["weight"], g)
    K.conv2d_backward_weight(x, dy, "bias" in grads, sh, sw, pt, pl, dh, dw, g, nb, col, tmp,
                             grads["weight"], grads.get("bias", _NO_BIAS))


@launches("conv_transpose")
def conv_transpose(rc, node, ins, out):
    p = params_of(rc, node.name)
    sh, sw, pt, pl, dh, dw, g = _geometry(node)
    nb, col, tmp = _convt_ws(rc, ins[0], p["weight"], g)
    bias = p.get("bias", _NO_BIAS)
    K.conv_transpose2d_forward(ins[0], p["weight"], bias, "bias" in p, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, out)


@launches("conv_transpose_grad_input")
def conv_transpose_grad_input(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    w = params_of(rc, fwd.name)["weight"]
    sh, sw, pt, pl, dh, dw, g = _geometry(fwd)
    nb, col, tmp = _convt_ws(rc, x, w, g)
    K.conv_transpose2d_backward_data(dy, w, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, out)


@launches("conv_transpose_grad_params")
def conv_transpose_grad_params(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    grads = grads_of(rc, fwd.name)
    sh, sw, pt, pl, dh, dw, g = _geometry(fwd)
    nb, col, tmp = _convt_ws(rc, x, grads["weight"], g)
    K.conv_transpose2d_backward_weight(x, dy, "bias" in grads, sh, sw, pt, pl, dh, dw, g, nb, col, tmp,
                                       grads["weight"], grads.get("bias", _NO_BIAS))
