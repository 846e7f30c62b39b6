"""CPU launchers of global_maxpool, multiply, reshape, lrn and softmax_axis, with their gradients
(kernels: cnndsl/kernels/cpu/layers.py; softmax_axis: the softmax kernels of activation.py on a
(O, L, I) view)."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.launch import launches
from cnndsl.kernels.cpu import activation as A
from cnndsl.kernels.cpu import layers as K


def _planes(a):
    """(N, C, H, W) or (N, C) as (N, C, S)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


@launches("global_maxpool")
def global_maxpool(rc, node, ins, out):
    K.global_maxpool_forward(_planes(ins[0]), out)


@launches("global_maxpool_grad")
def global_maxpool_grad(rc, node, ins, out):
    dy, x = ins
    K.global_maxpool_backward(_planes(x), dy, _planes(out))


def _big_small(a, b):
    """(the operand as large as the output, the other) and whether they were swapped."""
    return (a, b, False) if a.size >= b.size else (b, a, True)


@launches("multiply")
def multiply(rc, node, ins, out):
    big, small, _ = _big_small(ins[0], ins[1])
    K.multiply_forward(_planes(big), small.reshape(big.shape[0], big.shape[1], -1), _planes(out))


@launches("multiply_grad")
def multiply_grad(rc, node, ins, out):
    dy, a, b = ins
    port = node.attrs["port"]
    mine, other = (a, b) if port == 0 else (b, a)
    if mine.size >= other.size:  # as large as y: dy times the other operand (broadcast)
        K.multiply_forward(_planes(dy), other.reshape(dy.shape[0], dy.shape[1], -1), _planes(out))
    else:  # the per-channel operand: the sum over the pixels
        K.multiply_backward_reduce(_planes(dy), _planes(other), out.reshape(out.shape[0], out.shape[1]))


@launches("reshape")
def reshape(rc, node, ins, out):
    """Nothing to do: the memory plan makes the output a view of the input's buffer."""


def _lrn_args(node):
    a = node.attrs
    return np.int64(a["size"]), np.float32(a["alpha"]), np.float32(a["beta"]), np.float32(a["k"])


@launches("lrn")
def lrn(rc, node, ins, out):
    K.lrn_forward(_planes(ins[0]), *_lrn_args(node), _planes(out))


@launches("lrn_grad")
def lrn_grad(rc, node, ins, out):
    dy, x = ins
    K.lrn_backward(_planes(x), _planes(dy), *_lrn_args(rc.forward_node(node)), _planes(out))


def lines(shape, axis: str) -> tuple[int, int, int]:
    """(outer, length, inner): a batched tensor viewed so that `axis` is the middle one."""
    if len(shape) == 2:
        return shape[0], shape[1], 1
    n, c, h, w = shape
    return {"channels": (n, c, h * w), "height": (n * c, h, w), "width": (n * c * h, w, 1),
            "spatial": (n * c, h * w, 1)}[axis]


@launches("softmax_axis")
def softmax_axis(rc, node, ins, out):
    shape = lines(ins[0].shape, node.attrs["axis"])
    A.softmax_forward(ins[0].reshape(shape), out.reshape(shape))


@launches("softmax_axis_grad")
def softmax_axis_grad(rc, node, ins, out):
    dy, y = ins
    shape = lines(y.shape, rc.forward_node(node).attrs["axis"])
    A.softmax_backward(y.reshape(shape), dy.reshape(shape), out.reshape(shape))
