"""global_maxpool: the maximum over the whole height and width of each channel (CxHxW -> C)."""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import OpDef, ShapeContext, register
from cnndsl.ops.spatial import require_image
from cnndsl.ops.training.gradients import _grad_op


def global_maxpool_shape(ctx: ShapeContext) -> TensorType:
    c, _, _ = require_image(ctx)
    return TensorType((c,))


def global_maxpool_gradient(b, node, dy):
    """dy goes to the first maximum of each plane (recomputed from the input x)."""
    return [b.input_grad("global_maxpool_grad", node, [dy, b.graph.inputs_of(node.name)[0]])]


GLOBAL_MAXPOOL = register(OpDef(
    gradient=global_maxpool_gradient,
    name="global_maxpool",
    aliases=("gmp",),
    doc="Maximum over the whole height and width of each channel: CxHxW -> a vector of C "
        "(Keras GlobalMaxPooling2D, PyTorch AdaptiveMaxPool2d(1) + flatten). Its gradient goes to the first "
        "maximum of each channel in row-major order.",
    shape=global_maxpool_shape,
    flops=lambda a, ins, out: ins[0].size,
    shape_doc="C (a vector)",
    params_doc="none",
    flops_doc="C*H*W comparisons",
))

GLOBAL_MAXPOOL_GRAD = _grad_op("global_maxpool_grad", "dL/dx of global max pooling. Inputs: dy, x.", 2)
