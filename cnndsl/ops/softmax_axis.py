"""softmax_axis: softmax along a chosen axis of each sample. `softmax axis=AXIS` in a file is this
layer (the frontend maps it; `softmax` alone is the activation, over the channels)."""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.training.gradients import _grad_op

AXES = ("channels", "height", "width", "spatial")


def softmax_axis_shape(ctx: ShapeContext) -> TensorType:
    (t,) = ctx.inputs
    axis = ctx.attrs["axis"]
    if len(t.shape) == 1 and axis != "channels":
        ctx.error(f"{ctx.describe()}: a vector ({t}) has no {axis}", attr="axis",
                  help="axis=channels (its features), or softmax before flatten", code="softmax-axis")
    if len(t.shape) not in (1, 3):
        ctx.error(f"{ctx.describe()} needs a CxHxW map or a vector, got {t}", code="softmax-axis")
    return t


def softmax_axis_gradient(b, node, dy):
    """dx = y * (dy - sum(dy * y)) along the axis, from the forward output y."""
    return [b.input_grad("softmax_axis_grad", node, [dy, node.name])]


SOFTMAX_AXIS = register(OpDef(
    gradient=softmax_axis_gradient,
    name="softmax_axis",
    doc="exp(x) / sum(exp(x)) along one axis of each sample: channels (each pixel's channels, as the softmax "
        "activation), height (each column), width (each row), or spatial (all H*W pixels of each channel: a "
        "spatial softmax for attention or keypoints). Written `softmax axis=AXIS`.",
    attrs=(Attr("axis", "enum", "channels", "the axis the values sum to 1 along", choices=AXES,
                positional=True),),
    shape=softmax_axis_shape,
    flops=lambda a, ins, out: 5 * out.size,
    shape_doc="same as the input",
    params_doc="none",
    flops_doc="5 per element (max, subtract, exp, sum, divide)",
))

SOFTMAX_AXIS_GRAD = _grad_op("softmax_axis_grad", "dL/dx of softmax_axis from its output. Inputs: dy, y.", 2)
