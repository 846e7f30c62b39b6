"""upsample: upsampling by an integer factor, nearest-neighbour or bilinear.

Bilinear is PyTorch's F.interpolate(mode="bilinear", scale_factor=scale) with its
align_corners option, false by default as there: output pixel centres map to
(dst + 0.5) / scale - 0.5 in the input (clamped at the border); with
align_corners=true the corner pixels of input and output coincide,
src = dst * (in - 1) / (out - 1).

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
    if ctx.attrs.get("align_corners") and ctx.attrs.get("mode") != "bilinear":
        ctx.warn(f"{ctx.describe()}: align_corners applies to mode=bilinear only; it changes nothing here",
                 attr="align_corners", code="unused-option")
    return TensorType((c, h * s, w * s))


def upsample_window(a):
    step = Fraction(1, a["scale"])
    k = 2 if a.get("mode") == "bilinear" else 1  # bilinear reads two input pixels per axis
    return (k, k), (step, step)


def upsample_gradient(b, node, dy):
    return [b.input_grad("upsample_grad", node, [dy, b.graph.inputs_of(node.name)[0]])]


UPSAMPLE = register(OpDef(
    gradient=upsample_gradient,
    name="upsample",
    doc="Scale height and width by an integer factor: nearest repeats each pixel scale x scale times; bilinear "
        "interpolates between the 2x2 nearest input pixels (PyTorch's F.interpolate, align_corners=false by "
        "default).",
    attrs=(
        Attr("scale", "int", 2, "factor for height and width", positional=True, minimum=1),
        Attr("mode", "enum", "nearest", "interpolation: nearest or bilinear", choices=("nearest", "bilinear")),
        Attr("align_corners", "bool", False,
             "bilinear only: false maps pixel centres, (dst + 0.5)/scale - 0.5 (PyTorch's default); true maps the "
             "corner pixels onto each other, dst * (in - 1)/(out - 1)"),
    ),
    shape=upsample_shape,
    flops=lambda a, ins, out: 0 if a.get("mode", "nearest") == "nearest" else 8 * out.size,
    window=upsample_window,
    shape_doc="C x H*scale x W*scale",
    params_doc="none",
    flops_doc="0 for nearest (copies); 8 per output element for bilinear (4 products, 3 sums, 1 weight)",
))
