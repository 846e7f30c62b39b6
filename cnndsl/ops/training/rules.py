"""Local gradient rules, one per forward op.

A rule gets the GradBuilder, the forward node and the name of dL/dy, adds the
gradient nodes it needs and returns dL/dx per input port (None where an input
needs no gradient). The op modules attach these as `OpDef.gradient`.
"""
from __future__ import annotations


def _x(b, node, port=0):
    return b.graph.inputs_of(node.name)[port]


def conv(b, node, dy):
    x = _x(b, node)
    b.params_grad("conv_grad_params", node, [dy, x])
    return [b.input_grad("conv_grad_input", node, [dy, x])]


def conv_transpose(b, node, dy):
    x = _x(b, node)
    b.params_grad("conv_transpose_grad_params", node, [dy, x])
    return [b.input_grad("conv_transpose_grad_input", node, [dy, x])]


def dense(b, node, dy):
    x = _x(b, node)
    b.params_grad("dense_grad_params", node, [dy, x])
    return [b.input_grad("dense_grad_input", node, [dy, x])]


def pool(b, node, dy):
    return [b.input_grad("pool_grad", node, [dy, _x(b, node), node.name])]


def global_avgpool(b, node, dy):
    return [b.input_grad("global_avgpool_grad", node, [dy, _x(b, node)])]


def activation(b, node, dy):
    """relu, leaky_relu, tanh, sigmoid and softmax differentiate from their output y."""
    return [b.input_grad("activation_grad", node, [dy, node.name])]


def dropout(b, node, dy):
    return [b.input_grad("dropout_grad", node, [dy], like=0)]


def batchnorm(b, node, dy):
    x = _x(b, node)
    if not (b.trains(node) or b.needs(x)):
        return [None]
    name = b.add("batchnorm_grad", node, [dy, x], "grad", like=1)
    if b.trains(node):
        b.writes_params(name)
    return [name if b.needs(x) else None]


def flatten(b, node, dy):
    return [b.input_grad("unflatten", node, [dy, _x(b, node)])]


def upsample(b, node, dy):
    return [b.input_grad("upsample_grad", node, [dy, _x(b, node)])]


def add(b, node, dy):
    return [dy if b.needs(src) else None for src in b.graph.inputs_of(node.name)]


def concat(b, node, dy):
    grads, offset = [], 0
    for port, src in enumerate(b.graph.inputs_of(node.name)):
        if b.needs(src):
            grads.append(b.add("concat_grad", node, [dy, src], f"grad_input{port}", like=1, offset=offset))
        else:
            grads.append(None)
        offset += b.graph.node(src).type.shape[0]
    return grads


def input_(b, node, dy):
    return []
