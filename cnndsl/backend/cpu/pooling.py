"""Launchers for max / average / L2 pooling and global average pooling."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.launch import launches
from cnndsl.kernels.cpu import pool as K


def _window(node):
    """(KH, KW, sh, sw, pt, pl) of a pooling node's geometry, the pool kernels' order (dilation 1)."""
    g = node.geometry
    return g.KH, g.KW, g.sh, g.sw, g.pt, g.pl


@launches("maxpool")
def maxpool(rc, node, ins, out):
    kh, kw, sh, sw, pt, pl = _window(node)
    idx = rc.ws(node.name, "argmax", out.shape, np.int32)  # saved for the backward pass
    K.maxpool2d_forward(ins[0], kh, kw, sh, sw, pt, pl, 1, 1, out, idx)


@launches("avgpool")
def avgpool(rc, node, ins, out):
    kh, kw, sh, sw, pt, pl = _window(node)
    K.avgpool2d_forward(ins[0], kh, kw, sh, sw, pt, pl, 1, 1, out)


@launches("l2pool")
def l2pool(rc, node, ins, out):
    kh, kw, sh, sw, pt, pl = _window(node)
    K.l2pool2d_forward(ins[0], kh, kw, sh, sw, pt, pl, 1, 1, out)


@launches("pool_grad")
def pool_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x, y = ins
    if fwd.op == "maxpool":
        K.maxpool2d_backward(dy, rc.ws(fwd.name, "argmax", y.shape, np.int32), out)
        return
    kh, kw, sh, sw, pt, pl = _window(fwd)
    if fwd.op == "avgpool":
        K.avgpool2d_backward(dy, kh, kw, sh, sw, pt, pl, 1, 1, out)
    else:
        K.l2pool2d_backward(x, y, dy, kh, kw, sh, sw, pt, pl, 1, 1, out)


@launches("global_avgpool")
def global_avgpool(rc, node, ins, out):
    K.global_avgpool_forward(ins[0], out)


@launches("global_avgpool_grad")
def global_avgpool_grad(rc, node, ins, out):
    K.global_avgpool_backward(ins[0], out)
