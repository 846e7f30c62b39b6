"""Launchers for dense, flatten, add, concat and upsample, with their gradients."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.launch import grads_of, launches, params_of
from cnndsl.kernels.cpu import dense as K
from cnndsl.kernels.cpu import tensor as T

_NO_BIAS = np.zeros(1, np.float32)


@launches("dense")
def dense(rc, node, ins, out):
    p = params_of(rc, node.name)
    K.dense_forward(ins[0], p["weight"], p.get("bias", _NO_BIAS), "bias" in p, out)


@launches("dense_grad_input")
def dense_grad_input(rc, node, ins, out):
    K.dense_backward_data(ins[0], params_of(rc, node.attrs["forward"])["weight"], out)


@launches("dense_grad_params")
def dense_grad_params(rc, node, ins, out):
    dy, x = ins
    g = grads_of(rc, node.attrs["forward"])
    K.dense_backward_weight(x, dy, "bias" in g, g["weight"], g.get("bias", _NO_BIAS))


@launches("flatten", "unflatten")
def reshape(rc, node, ins, out):
    """Nothing to do: the memory plan makes the output a view of the input's buffer."""


@launches("add")
def add(rc, node, ins, out):
    T.add2(ins[0], ins[1], out)
    for more in ins[2:]:
        T.add_accumulate(out, more)


@launches("concat")
def concat(rc, node, ins, out):
    offset = 0
    for x in ins:
        T.concat_forward(x, offset, out)
        offset += x.shape[1]


@launches("concat_grad")
def concat_grad(rc, node, ins, out):
    T.concat_backward(ins[0], node.attrs["offset"], out)


def bilinear_tables(node, in_shape) -> tuple:
    """The per-axis source tables (h0, h1, lh, w0, w1, lw) of a bilinear upsample node."""
    from cnndsl.kernels.cpu.layers import bilinear_tables as tables

    s, corners = node.attrs["scale"], bool(node.attrs.get("align_corners", False))
    h, w = in_shape[-2:]
    return tables(h * s, h, s, corners) + tables(w * s, w, s, corners)


def _planes(a):
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


@launches("upsample")
def upsample(rc, node, ins, out):
    s = node.attrs["scale"]
    if node.attrs.get("mode", "nearest") == "bilinear":
        tables = rc.cache.get(node.name) or rc.cache.setdefault(node.name, bilinear_tables(node, ins[0].shape))
        from cnndsl.kernels.cpu import layers as L

        L.bilinear_forward(_planes(ins[0]), *tables, _planes(out))
        return
    T.upsample_nearest_forward(ins[0], s, s, out)


@launches("upsample_grad")
def upsample_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    s = fwd.attrs["scale"]
    if fwd.attrs.get("mode", "nearest") == "bilinear":
        tables = rc.cache.get(node.name) or rc.cache.setdefault(node.name, bilinear_tables(fwd, out.shape))
        from cnndsl.kernels.cpu import layers as L

        L.bilinear_backward(_planes(ins[0]), *tables, _planes(out))
        return
    T.upsample_nearest_backward(ins[0], s, s, out)
