"""CUDA launchers of global_maxpool, multiply, reshape, lrn and softmax_axis, with their gradients
(kernels: cnndsl/kernels/cuda/layers.py; softmax_axis: elementwise.softmax_* on an (O, L, I) view)."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.layers import lines
from cnndsl.backend.cuda.launch import flat, launch, launches, nothing, sequence
from cnndsl.kernels.cuda import elementwise as E
from cnndsl.kernels.cuda import layers as K
from cnndsl.kernels.cuda.common import grid1d


def _nc_s(shape) -> tuple[int, int]:
    """(N*C, S) of a batched (N, C, H, W) or (N, C) shape."""
    s = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[0] * shape[1], s


@launches("global_maxpool")
def global_maxpool(rc, node, ins, out):
    nc, p = _nc_s(ins[0].shape)
    return sequence([launch(K.global_maxpool_forward, grid1d(nc), flat(ins[0]), flat(out), nc, p)])


@launches("global_maxpool_grad")
def global_maxpool_grad(rc, node, ins, out):
    dy, x = ins
    nc, p = _nc_s(x.shape)
    return sequence([launch(K.global_maxpool_backward, grid1d(nc), flat(x), flat(dy), flat(out), nc, p)])


@launches("multiply")
def multiply(rc, node, ins, out):
    a, b = ins if ins[0].size >= ins[1].size else (ins[1], ins[0])
    nc, s = _nc_s(a.shape)
    sb = b.size // nc
    return sequence([launch(K.multiply_forward, grid1d(out.size), flat(a), flat(b), flat(out), nc, s, sb)])


@launches("multiply_grad")
def multiply_grad(rc, node, ins, out):
    dy, a, b = ins
    mine, other = (a, b) if node.attrs["port"] == 0 else (b, a)
    nc, s = _nc_s(dy.shape)
    if mine.size >= other.size:
        run = launch(K.multiply_forward, grid1d(out.size), flat(dy), flat(other), flat(out), nc, s, other.size // nc)
    else:
        run = launch(K.multiply_backward_reduce, grid1d(nc), flat(dy), flat(other), flat(out), nc, s)
    return sequence([run])


@launches("reshape")
def reshape(rc, node, ins, out):
    """Nothing to do: the memory plan makes the output a view of the input's buffer."""
    return nothing


def _lrn_args(node):
    a = node.attrs
    return a["size"], np.float32(a["alpha"] / a["size"]), np.float32(a["beta"]), np.float32(a["k"])


@launches("lrn")
def lrn(rc, node, ins, out):
    x = ins[0]
    nc, s = _nc_s(x.shape)
    return sequence([launch(K.lrn_forward, grid1d(out.size), flat(x), flat(out), x.shape[0], x.shape[1], s,
                            *_lrn_args(node))])


@launches("lrn_grad")
def lrn_grad(rc, node, ins, out):
    dy, x = ins
    nc, s = _nc_s(x.shape)
    return sequence([launch(K.lrn_backward, grid1d(out.size), flat(x), flat(dy), flat(out), x.shape[0], x.shape[1],
                            s, *_lrn_args(rc.forward_node(node)))])


@launches("softmax_axis")
def softmax_axis(rc, node, ins, out):
    o, n, i = lines(ins[0].shape, node.attrs["axis"])
    return sequence([launch(E.softmax_forward, grid1d(o * i), flat(ins[0]), flat(out), o, n, i)])


@launches("softmax_axis_grad")
def softmax_axis_grad(rc, node, ins, out):
    dy, y = ins
    o, n, i = lines(y.shape, rc.forward_node(node).attrs["axis"])
    return sequence([launch(E.softmax_backward, grid1d(o * i), flat(y), flat(dy), flat(out), o, n, i)])
