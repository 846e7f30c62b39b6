"""lrn: local response normalization across channels (AlexNet), as torch.nn.LocalResponseNorm."""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.training.gradients import _grad_op


def lrn_shape(ctx: ShapeContext) -> TensorType:
    (t,) = ctx.inputs
    if len(t.shape) not in (1, 3):
        ctx.error(f"{ctx.describe()} needs a CxHxW map or a vector, got {t}", code="lrn-input")
    return t


def lrn_gradient(b, node, dy):
    return [b.input_grad("lrn_grad", node, [dy, b.graph.inputs_of(node.name)[0]])]


LRN = register(OpDef(
    gradient=lrn_gradient,
    name="lrn",
    aliases=("local_response_norm",),
    doc="Local response normalization across channels (AlexNet; torch.nn.LocalResponseNorm): "
        "y_c = x_c / (k + alpha/size * sum of x_j^2 over the `size` channels j around c)^beta, the window "
        "[c - size//2, c + (size-1)//2] cut at the first and last channel.",
    attrs=(
        Attr("size", "int", 5, "channels in the window", positional=True, minimum=1),
        Attr("alpha", "float", 1e-4, "scale of the sum of squares (divided by size)", minimum=0),
        Attr("beta", "float", 0.75, "exponent", minimum=0),
        Attr("k", "float", 1.0, "added to the scaled sum (AlexNet used 2)", above=0),
    ),
    shape=lrn_shape,
    flops=lambda a, ins, out: out.size * (2 * a["size"] + 4),
    shape_doc="same as the input",
    params_doc="none",
    flops_doc="(2*size + 4) per element (the window's squares and sums, the scale, the power, the product)",
))

LRN_GRAD = _grad_op("lrn_grad", "dL/dx of lrn. Inputs: dy, x.", 2)
