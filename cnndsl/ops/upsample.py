"""upsample: nearest-neighbour upsampling by an integer factor.

For receptive-field tracking its stride is 1/scale: it shrinks the jump between
neighbouring outputs, measured in input pixels.
"""
from __future__ import annotations

from fractions import Fraction

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.spatial import require_image


def upsample_shape(ctx: ShapeContext) -> TensorType:
    c, h, w = require_image(ctx)
    s = ctx.attrs["scale"]
    return TensorType((c, h * s, w * s))


def upsample_window(a):
    step = Fraction(1, a["scale"])
    return (1, 1), (step, step)


def upsample_gradient(b, node, dy):
    return [b.input_grad("upsample_grad", node, [dy, b.graph.inputs_of(node.name)[0]])]


UPSAMPLE = register(OpDef(
    gradient=upsample_gradient,
    name="upsample",
    doc="Repeat each pixel scale x scale times (nearest neighbour).",
    attrs=(
        Attr("scale", "int", 2, "factor for height and width", positional=True, minimum=1),
        Attr("mode", "enum", "nearest", "interpolation; only nearest is supported", choices=("nearest",)),
    ),
    shape=upsample_shape,
    flops=lambda a, ins, out: 0,
    window=upsample_window,
    shape_doc="C x H*scale x W*scale",
    params_doc="none",
    flops_doc="0 (copies)",
))
