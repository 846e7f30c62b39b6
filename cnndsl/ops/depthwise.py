"""depthwise: a depthwise convolution, written without its input's channel count.

`depthwise 3 stride=2 padding=same` is `conv C*multiplier kernel=3 groups=C ...` with C the
channels of its input: the frontend (cnndsl/frontend/lower.py) reads C from the input's inferred
shape and writes the conv, so the graph, the weights (`<layer>.weight` of shape (C*multiplier, 1,
KH, KW)) and the kernels are those of conv. This OpDef declares the options and the docs.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.conv import CONV
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register


def _conv_attr(name: str) -> Attr:
    return next(a for a in CONV.attrs if a.name == name)


def depthwise_shape(ctx: ShapeContext) -> TensorType:  # pragma: no cover - lowered to conv first
    ctx.error(f"{ctx.describe()} should have been written as a conv by the frontend", code="internal")


DEPTHWISE = register(OpDef(
    name="depthwise",
    aliases=("depthwise_conv", "dwconv"),
    doc="Depthwise convolution: each input channel convolved with its own multiplier filters, "
        "`conv C*multiplier groups=C` for an input of C channels, which it reads itself (no channel count to "
        "write or get wrong). It is a conv in the graph: its shapes, weights and kernels are conv's.",
    attrs=(
        Attr("kernel", "pair", 3, "window size, K or KHxKW", positional=True, minimum=1, unit="px"),
        _conv_attr("stride"),
        _conv_attr("padding"),
        _conv_attr("dilation"),
        Attr("multiplier", "int", 1, "filters per input channel (the output has C*multiplier channels)", minimum=1),
        _conv_attr("bias"),
        _conv_attr("rounding"),
    ),
    shape=depthwise_shape,
    shape_doc="(C*multiplier) x O_h x O_w, as conv with groups=C",
    params_doc="weight (C*multiplier, 1, KH, KW); bias (C*multiplier)",
    flops_doc="as conv: 2*C*multiplier*O_h*O_w*KH*KW + the bias",
))
