"""conv_transpose: transposed ("fractionally strided") 2-D convolution, the adjoint of conv.

Each input pixel scatters a KxK window of weights into the output at stride S;
`padding=P` then crops P rows/columns from each side of that full result and
`output_padding` adds rows/columns at the bottom/right. Per axis:

    O = (W - 1)*S - 2P + D*(K - 1) + output_padding + 1

so a conv that tiles W exactly into O is undone by a conv_transpose with the
same kernel, stride and padding. P may be at most D*(K-1) (the adjoint conv
then has padding >= 0) and output_padding must be below S.

`padding=same` gives O = W*S exactly, like TensorFlow's conv2d_transpose: the
full result is cropped by max(K_eff - S, 0) in total (the smaller half at the
top/left) and, when K_eff < S, extended by S - K_eff at the bottom/right.
`valid` is padding 0. The backends read the node's `geometry` (cnndsl/kernels/geometry.py): the
adjoint conv, from this layer's output space to its input space, with the resolved crop as its
padding (top, bottom, left, right); the rows/columns added at the bottom/right are in
node.meta["output_padding"] = (h, w) (for the ONNX export).

Weights are laid out (C_in, F/groups, KH, KW) like PyTorch's ConvTranspose2d.
"""
from __future__ import annotations

from fractions import Fraction

from cnndsl.ir.graph import TensorType
from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.ops.conv import check_groups
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.spatial import AXES, require_image


def _formula(w: int, s: int, p: int, k_eff: int, op: int) -> str:
    out = (w - 1) * s - 2 * p + k_eff + op
    return f"({w} - 1)*{s} - 2*{p} + {k_eff} + {op} = {out}"


def _axis(ctx: ShapeContext, axis: int, w: int) -> tuple[int, int, int, int]:
    """(out, crop_before, crop_after, extra_after) along one axis."""
    a = ctx.attrs
    k, s, d = a["kernel"][axis], a["stride"][axis], a["dilation"][axis]
    op = a["output_padding"][axis]
    k_eff = d * (k - 1) + 1
    padding = a["padding"]
    if op >= s:
        ctx.error(
            f"output_padding {op} of {ctx.describe()} must be smaller than its stride {s}",
            attr="output_padding",
            details=["output_padding picks one of the S output sizes that a strided conv maps to the same input size"],
            help=f"output_padding={s - 1}" if s > 1 else "output_padding=0 (with stride 1 there is nothing to pick)",
            code="output-padding",
        )
    if padding == "same":
        if op:
            ctx.error(
                f"{ctx.describe()} cannot combine padding=same with output_padding={op}",
                attr="output_padding",
                details=[f"padding=same already gives W*S = {w}*{s} = {w * s}"],
                help="remove output_padding",
                code="output-padding",
            )
        crop = max(k_eff - s, 0)
        return w * s, crop // 2, crop - crop // 2, max(s - k_eff, 0)
    p = 0 if padding == "valid" else padding[axis]
    limit = k_eff - 1
    if p > limit:
        ctx.error(
            f"padding {p} is too large for the kernel {k} of {ctx.describe()}",
            attr="padding",
            details=[f"padding may be at most D*(K-1) = {limit} here: it crops the full {k_eff}-wide scatter"],
            help=f"padding={limit}",
            code="padding-too-large",
        )
    out = (w - 1) * s - 2 * p + k_eff + op
    if out < 1:
        best = ((w - 1) * s + k_eff + op - 1) // 2
        ctx.error(
            f"padding {p} crops the whole {AXES[axis]} of the output of {ctx.describe()}",
            attr="padding",
            details=[_formula(w, s, p, k_eff, op) + " is not a positive size"],
            help=f"padding={best} or smaller fits",
            code="padding-too-large",
        )
    return out, p, p, op


def conv_transpose_shape(ctx: ShapeContext) -> TensorType:
    c, h, w = require_image(ctx)
    a = ctx.attrs
    filters, groups = check_groups(ctx, c)
    oh, top, bottom, eh = _axis(ctx, 0, h)
    ow, left, right, ew = _axis(ctx, 1, w)
    kh, kw = a["kernel"]
    ctx.node.geometry = ConvGeometry(
        C=filters, H=oh, W=ow, F=c, OH=h, OW=w, KH=kh, KW=kw, sh=a["stride"][0], sw=a["stride"][1],
        pt=top, pb=bottom, pl=left, pr=right, dh=a["dilation"][0], dw=a["dilation"][1], G=groups)
    ctx.node.meta["output_padding"] = (eh, ew)
    return TensorType((filters, oh, ow))


def conv_transpose_params(a, ins, out):
    c = ins[0].shape[0]
    kh, kw = a["kernel"]
    p = {"weight": (c, a["filters"] // a["groups"], kh, kw)}
    if a["bias"]:
        p["bias"] = (a["filters"],)
    return p


def conv_transpose_flops(a, ins, out):
    kh, kw = a["kernel"]
    macs = ins[0].size * (a["filters"] // a["groups"]) * kh * kw
    return 2 * macs + (out.size if a["bias"] else 0)


def conv_transpose_window(a):
    """Upsample by S (jump / S), then a K_eff window at stride 1 on the finer grid."""
    (kh, kw), (dh, dw), (sh, sw) = a["kernel"], a["dilation"], a["stride"]
    k = (Fraction(dh * (kh - 1), sh) + 1, Fraction(dw * (kw - 1), sw) + 1)
    return k, (Fraction(1, sh), Fraction(1, sw))


def conv_transpose_gradient(b, node, dy):
    x = b.graph.inputs_of(node.name)[0]
    b.params_grad("conv_transpose_grad_params", node, [dy, x])
    return [b.input_grad("conv_transpose_grad_input", node, [dy, x])]


CONV_TRANSPOSE = register(OpDef(
    gradient=conv_transpose_gradient,
    name="conv_transpose",
    aliases=("deconv", "conv2d_transpose"),
    doc="Transposed 2-D convolution (learned upsampling), the adjoint of conv.",
    attrs=(
        Attr("filters", "int", doc="number of output channels", positional=True, minimum=1),
        Attr("kernel", "pair", 3, "window size, K or KHxKW", minimum=1, unit="px"),
        Attr("stride", "pair", 1, "upsampling step", minimum=1, unit="px"),
        Attr("padding", "padding", 0,
             "rows/columns cropped from each side: P, PHxPW, valid (0) or same (output = W*S)", minimum=0, unit="px"),
        Attr("output_padding", "pair", 0, "rows/columns added at the bottom/right; below the stride",
             minimum=0, unit="px"),
        Attr("dilation", "pair", 1, "spacing between kernel taps", minimum=1, unit="px"),
        Attr("groups", "int", 1, "split input and output channels into this many groups", minimum=1),
        Attr("bias", "bool", True, "add a learned bias per filter"),
    ),
    shape=conv_transpose_shape,
    params=conv_transpose_params,
    flops=conv_transpose_flops,
    window=conv_transpose_window,
    shape_doc="F x O_h x O_w with O = (W - 1)*S - 2P + D*(K-1) + output_padding + 1 per axis; "
              "padding=same gives O = W*S; P <= D*(K-1), output_padding < S; C and F divisible by groups",
    params_doc="weight (C_in, F/groups, KH, KW) like PyTorch; bias (F)",
    flops_doc="2*C_in*H*W*(F/groups)*KH*KW (multiply-adds) + F*O_h*O_w (bias)",
))
