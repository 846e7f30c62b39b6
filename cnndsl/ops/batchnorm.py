"""batchnorm: batch normalisation per channel (CxHxW) or per feature (F).

y = gamma * (x - mean) / sqrt(var + eps) + beta. While training, mean and var are
the batch statistics and the running ones are updated PyTorch-style:
running = (1 - momentum) * running + momentum * batch (running_var uses the
unbiased batch variance). At inference the running statistics are used.
"""
from __future__ import annotations

from cnndsl.ops.activation import same_shape
from cnndsl.ops.registry import Attr, OpDef, register


def _per_channel(a, ins, out):
    return (out.shape[0],)


def batchnorm_gradient(b, node, dy):
    """One node computes dx and (unless frozen) writes dgamma, dbeta."""
    x = b.graph.inputs_of(node.name)[0]
    if not (b.trains(node) or b.needs(x)):
        return [None]
    name = b.add("batchnorm_grad", node, [dy, x], "grad", like=1)
    if b.trains(node):
        b.writes_params(name)
    return [name if b.needs(x) else None]


BATCHNORM = register(OpDef(
    gradient=batchnorm_gradient,
    name="batchnorm",
    aliases=("bn",),
    doc="Batch normalisation: per channel of a CxHxW map, per feature of a vector.",
    attrs=(
        Attr("eps", "float", 1e-5, "added to the variance before the square root", above=0),
        Attr("momentum", "float", 0.1,
             "weight of the batch statistics in the running ones (PyTorch meaning)", minimum=0, maximum=1),
    ),
    shape=same_shape,
    params=lambda a, ins, out: {"gamma": _per_channel(a, ins, out), "beta": _per_channel(a, ins, out)},
    buffers=lambda a, ins, out: {"running_mean": _per_channel(a, ins, out), "running_var": _per_channel(a, ins, out)},
    flops=lambda a, ins, out: 2 * out.size,
    shape_doc="same as the input",
    params_doc="gamma (C), beta (C); buffers running_mean (C), running_var (C)",
    flops_doc="2 per element (one multiply-add once folded for inference)",
))
