"""dropout: zero each value with probability p during training, scaling the rest by 1/(1-p).

At inference it is the identity (training_only), so it costs nothing there.
"""
from __future__ import annotations

from cnndsl.ops.activation import same_shape
from cnndsl.ops.registry import Attr, OpDef, register

def dropout_gradient(b, node, dy):
    """dy through the same mask: the counter-based generator recomputes it from (seed, step)."""
    return [b.input_grad("dropout_grad", node, [dy], like=0)]


DROPOUT = register(OpDef(
    gradient=dropout_gradient,
    name="dropout",
    doc="Randomly zero values while training (inverted dropout: the kept ones are scaled by 1/(1-p)); "
        "identity at inference.",
    attrs=(
        Attr("p", "float", 0.5, "probability of zeroing each value", positional=True, minimum=0, below=1),
    ),
    shape=same_shape,
    flops=lambda a, ins, out: 0,
    training_only=True,
    shape_doc="same as the input",
    params_doc="none",
    flops_doc="0 (identity at inference)",
))
