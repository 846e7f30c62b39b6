"""dense (fully connected) and flatten.

dense works on vectors only: on a feature map the error says to add `flatten`
and how long the flattened vector would be, so nobody computes in_features by hand.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register


def dense_shape(ctx: ShapeContext) -> TensorType:
    shape = ctx.inputs[0].shape
    if len(shape) != 1:
        src = ctx.input_names[0]
        flat = ctx.inputs[0].size
        ctx.error(
            f"{ctx.describe()} needs a vector but '{src}' is a {ctx.inputs[0]} feature map",
            details=[f"flatten would turn it into a vector of {'*'.join(map(str, shape))} = {flat}"],
            help=f"add `flatten` before '{ctx.node.name}' (it gives {flat} features), "
                 f"or global_avgpool (it gives {shape[0]})",
            code="needs-vector",
        )
    return TensorType((ctx.attrs["units"],))


def dense_params(a, ins, out):
    p = {"weight": (a["units"], ins[0].shape[0])}
    if a["bias"]:
        p["bias"] = (a["units"],)
    return p


def dense_flops(a, ins, out):
    return 2 * a["units"] * ins[0].shape[0] + (a["units"] if a["bias"] else 0)


def dense_gradient(b, node, dy):
    x = b.graph.inputs_of(node.name)[0]
    b.params_grad("dense_grad_params", node, [dy, x])
    return [b.input_grad("dense_grad_input", node, [dy, x])]


def flatten_gradient(b, node, dy):
    """dy reshaped back (a view: no copy is made)."""
    return [b.input_grad("unflatten", node, [dy, b.graph.inputs_of(node.name)[0]])]


DENSE = register(OpDef(
    gradient=dense_gradient,
    name="dense",
    aliases=("fc", "linear"),
    doc="Fully connected layer on a vector: y = W x + b.",
    attrs=(
        Attr("units", "int", doc="number of outputs", positional=True, minimum=1),
        Attr("bias", "bool", True, "add a learned bias per output"),
    ),
    shape=dense_shape,
    params=dense_params,
    flops=dense_flops,
    shape_doc="a vector of `units`; the input must be a vector (add flatten after feature maps)",
    params_doc="weight (units, in_features) like PyTorch; bias (units)",
    flops_doc="2*in_features*units + units (bias)",
))


def flatten_shape(ctx: ShapeContext) -> TensorType:
    t = ctx.inputs[0]
    if len(t.shape) == 1:
        ctx.warn(
            f"{ctx.describe()} does nothing: '{ctx.input_names[0]}' is already a vector of {t.shape[0]}",
            help=f"remove '{ctx.node.name}'",
            code="flatten-vector",
        )
    return TensorType((t.size,))


FLATTEN = register(OpDef(
    gradient=flatten_gradient,
    name="flatten",
    doc="CxHxW -> a vector of C*H*W, in C, H, W order (row-major, like PyTorch).",
    shape=flatten_shape,
    flops=lambda a, ins, out: 0,
    shape_doc="C*H*W (a vector)",
    params_doc="none",
    flops_doc="0",
))
