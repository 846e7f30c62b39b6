"""input: a graph input, per sample (batch is implicit).

`input 3x32x32` is an RGB image, `input 1x28x28` a grey one, `input 784` a vector.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register

MAX_ELEMENTS = 2**31  # per sample; beyond this the sizes are a typo, not a network


def input_shape(ctx: ShapeContext) -> TensorType:
    shape = tuple(ctx.attrs["shape"])
    if len(shape) not in (1, 3):
        ctx.error(
            f"{ctx.describe()} has shape {'x'.join(map(str, shape)) or '()'}, "
            "which is neither a vector nor a feature map",
            attr="shape",
            details=["an input is F (a vector) or CxHxW (a feature map); the batch size is implicit"],
            help="for a one-channel image write 1xHxW" if len(shape) == 2 else "write F or CxHxW",
            code="bad-shape",
        )
    bad = [d for d in shape if not isinstance(d, int) or isinstance(d, bool) or d < 1]
    if bad:
        ctx.error(
            f"{ctx.describe()} has a size of {bad[0]}; every size must be a positive whole number",
            attr="shape",
            help="write the sizes as CxHxW, e.g. 3x32x32",
            code="bad-shape",
        )
    t = TensorType(shape)
    if t.size > MAX_ELEMENTS:
        ctx.error(
            f"{ctx.describe()} has {t.size:,} elements per sample ({t}), more than 2**31",
            attr="shape",
            details=["the batch size is implicit: write the shape of one sample, CxHxW"],
            help="check the sizes for a typo (an extra digit?)",
            code="input-too-large",
        )
    return t


def input_gradient(b, node, dy):
    """Inputs have no inputs; nothing upstream needs a gradient."""
    return []


INPUT = register(OpDef(
    gradient=input_gradient,
    name="input",
    category="input",
    doc="A graph input: one sample's shape (the batch size is implicit).",
    attrs=(
        Attr("shape", "shape", doc="F for a vector, CxHxW for a feature map", positional=True, minimum=1),
    ),
    min_inputs=0,
    max_inputs=0,
    shape=input_shape,
    shape_doc="the given shape; at most 2**31 elements",
    flops_doc="0",
))
