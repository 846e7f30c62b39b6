"""Launchers for max / average / L2 pooling and global average pooling."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cuda.launch import channel_sums, flat, launch, launches, sequence
from cnndsl.kernels.cuda import pool as K
from cnndsl.kernels.cuda.common import grid1d


def _window(node, n: int) -> tuple:
    """N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw of a pooling node (dilation 1): its
    geometry at batch n."""
    g = node.geometry
    return n, g.C, g.H, g.W, g.OH, g.OW, g.KH, g.KW, g.sh, g.sw, g.pt, g.pl, 1, 1


@launches("maxpool")
def maxpool(rc, node, ins, out):
    idx = rc.ws(node.name, "argmax", (out.size,), np.int32)  # saved for the backward pass
    geo = _window(node, ins[0].shape[0])
    return sequence([launch(K.maxpool_forward, grid1d(out.size), flat(ins[0]), flat(out), idx, *geo)])


@launches("avgpool", "l2pool")
def avg_l2_pool(rc, node, ins, out):
    geo = _window(node, ins[0].shape[0])
    kind = K.L2 if node.op == "l2pool" else K.AVG
    return sequence([launch(K.avg_l2_forward, grid1d(out.size), flat(ins[0]), flat(out), *geo, kind)])


@launches("pool_grad")
def pool_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x, y = ins
    geo = _window(fwd, x.shape[0])
    if fwd.op == "maxpool":
        idx = rc.ws(fwd.name, "argmax", (y.size,), np.int32)
        return sequence([launch(K.maxpool_backward, grid1d(out.size), flat(dy), idx, flat(out), *geo)])
    kind = K.L2 if fwd.op == "l2pool" else K.AVG
    return sequence([launch(K.avg_l2_backward, grid1d(out.size), flat(x), flat(y), flat(dy), flat(out), *geo, kind)])


@launches("global_avgpool")
def global_avgpool(rc, node, ins, out):
    n, c, h, w = ins[0].shape
    return sequence([channel_sums(rc, flat(ins[0]), 1, n * c, h * w, 1.0 / (h * w), flat(out))])


@launches("global_avgpool_grad")
def global_avgpool_grad(rc, node, ins, out):
    n, c, h, w = out.shape
    return sequence([launch(K.global_avgpool_backward, grid1d(out.size), flat(ins[0]), flat(out), h * w,
                            np.float32(1.0 / (h * w)))])
