"""conv: 2-D convolution (cross-correlation), with stride, padding, dilation and groups.

A 1x1 conv is the "Network in Network" layer: `conv 64 kernel=1`.
"""
from __future__ import annotations

import math

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.spatial import divisors, require_image, window_2d

ROUNDING = Attr("rounding", "enum", None, "override the network's size rounding for this layer",
                choices=("strict", "floor", "ceil"))


def check_groups(ctx: ShapeContext, c: int) -> tuple[int, int]:
    """(filters, groups) of a conv or conv_transpose reading c channels; a located error (with the
    nearest groups that fits) when groups does not divide both."""
    filters, groups = ctx.attrs["filters"], ctx.attrs["groups"]
    if c % groups or filters % groups:
        ctx.error(
            f"groups={groups} must divide both the {c} input channels and the {filters} filters of {ctx.describe()}",
            attr="groups",
            details=[f"{c} % {groups} = {c % groups}, {filters} % {groups} = {filters % groups}"],
            help=f"groups={_common_divisor(c, filters, groups)}",
            code="groups",
        )
    return filters, groups


def conv_shape(ctx: ShapeContext) -> TensorType:
    c, _, _ = require_image(ctx)
    a = ctx.attrs
    filters, groups = check_groups(ctx, c)
    if 1 < groups == filters != c:
        ctx.warn(f"{ctx.describe()} has groups = filters = {groups}, the pattern of a depthwise conv, but its input "
                 f"has {c} channels: each filter reads {c // groups} of them", attr="groups",
                 details=[f"a depthwise conv of this input has groups = filters = {c}"],
                 help=f"`depthwise` (or groups=channels(x) and filters=channels(x)) reads the channel count "
                      f"itself; for a grouped conv with {c // groups} channels per group this warning does not apply",
                 code="groups-depthwise")
    oh, ow = window_2d(ctx, a["kernel"], a["stride"], a["padding"], a["dilation"], filters=filters, groups=groups)
    return TensorType((filters, oh, ow))


def _common_divisor(a: int, b: int, near: int) -> int:
    """The common divisor of a and b closest to `near` (the smaller on a tie): a divisor of
    gcd(a, b). A loop to min(a, b) did not end for 10^10 channels."""
    return min(sorted(divisors(math.gcd(a, b))), key=lambda g: abs(g - near))


def conv_params(a, ins, out):
    c = ins[0].shape[0]
    kh, kw = a["kernel"]
    p = {"weight": (a["filters"], c // a["groups"], kh, kw)}
    if a["bias"]:
        p["bias"] = (a["filters"],)
    return p


def conv_flops(a, ins, out):
    c = ins[0].shape[0]
    kh, kw = a["kernel"]
    macs = out.size * (c // a["groups"]) * kh * kw
    return 2 * macs + (out.size if a["bias"] else 0)


def conv_window(a):
    (kh, kw), (dh, dw) = a["kernel"], a["dilation"]
    return (dh * (kh - 1) + 1, dw * (kw - 1) + 1), a["stride"]


def conv_gradient(b, node, dy):
    """dW, db from (dy, x) unless frozen; dx = conv_grad_input(dy) when x needs a gradient."""
    x = b.graph.inputs_of(node.name)[0]
    b.params_grad("conv_grad_params", node, [dy, x])
    return [b.input_grad("conv_grad_input", node, [dy, x])]


CONV = register(OpDef(
    gradient=conv_gradient,
    name="conv",
    aliases=("conv2d",),
    doc="2-D convolution over a CxHxW feature map.",
    attrs=(
        Attr("filters", "int", doc="number of output channels", positional=True, minimum=1),
        Attr("kernel", "pair", 3, "window size, K or KHxKW", minimum=1, unit="px"),
        Attr("stride", "pair", 1, "step between windows", minimum=1, unit="px"),
        Attr("padding", "padding", 0, "zeros added on each side: P, PHxPW, same or valid", minimum=0,
             unit="px"),
        Attr("dilation", "pair", 1, "spacing between kernel taps", minimum=1, unit="px"),
        Attr("groups", "int", 1, "split input and output channels into this many groups", minimum=1),
        Attr("bias", "bool", True, "add a learned bias per filter"),
        ROUNDING,
    ),
    shape=conv_shape,
    params=conv_params,
    flops=conv_flops,
    window=conv_window,
    shape_doc="F x O_h x O_w with O = (W - K_eff + 2P)/S + 1 per axis, K_eff = D*(K-1)+1; "
              "C and F must be divisible by groups.",
    params_doc="weight (F, C/groups, KH, KW) like PyTorch; bias (F)",
    flops_doc="2*F*O_h*O_w*(C/groups)*KH*KW (multiply-adds) + F*O_h*O_w (bias)",
))
