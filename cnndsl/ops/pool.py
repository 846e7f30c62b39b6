"""Pooling: maxpool, avgpool, l2pool over sliding windows, and global_avgpool.

Pools follow the same strict size rule as conv (see spatial.py). The stride
defaults to the kernel (non-overlapping windows) and padding may be at most
K/2, as in PyTorch, so that every window sees at least one input value.

avgpool and l2pool divide by the number of *input* values in the window: zero
padding (and the extra bottom/right rows that rounding=ceil or padding=same
add) is not counted, like TensorFlow and PyTorch's count_include_pad=False.
A 3x3 average at a corner with padding=1 is the mean of 4 values, not 9.
l2pool is sqrt(mean(x^2)) over those values (NNEF rms_pool, LPPool with p=2
up to that divisor). maxpool treats padding as -infinity.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.conv import ROUNDING
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.spatial import require_image, window_2d


def pool_stride(a: dict) -> tuple[int, int]:
    """The stride, defaulting to the kernel when not given."""
    return tuple(a["stride"]) if a.get("stride") is not None else tuple(a["kernel"])


def pool_shape(ctx: ShapeContext) -> TensorType:
    c, _, _ = require_image(ctx)
    a = ctx.attrs
    kh, kw = a["kernel"]
    oh, ow = window_2d(ctx, (kh, kw), pool_stride(a), a["padding"], max_pad=(kh // 2, kw // 2))
    return TensorType((c, oh, ow))


def pool_window(a):
    return tuple(a["kernel"]), pool_stride(a)


def _flops_per_window(extra: int, per_element: int):
    def flops(a, ins, out):
        kh, kw = a["kernel"]
        return out.size * (per_element * kh * kw + extra)
    return flops


def _pool_attrs(kind: str) -> tuple[Attr, ...]:
    return (
        Attr("kernel", "pair", doc="window size, K or KHxKW", positional=True, minimum=1, unit="px"),
        Attr("stride", "pair", None, "step between windows; defaults to the kernel", minimum=1, unit="px"),
        Attr("padding", "padding", 0,
             f"{kind} added on each side: P, PHxPW, same or valid; at most K/2", minimum=0, unit="px"),
        ROUNDING,
    )


_POOL_SHAPE_DOC = ("C x O_h x O_w with O = (W - K + 2P)/S + 1 per axis (strict unless rounding says otherwise); "
                   "S defaults to K; P <= K/2")

def pool_gradient(b, node, dy):
    """One gradient op for max, average and L2 pooling; max reads the argmax saved by the forward."""
    return [b.input_grad("pool_grad", node, [dy, b.graph.inputs_of(node.name)[0], node.name])]


def global_avgpool_gradient(b, node, dy):
    return [b.input_grad("global_avgpool_grad", node, [dy, b.graph.inputs_of(node.name)[0]])]


def _pool(name: str, alias: str, doc: str, padding_fill: str, flops: tuple[int, int], flops_doc: str) -> OpDef:
    """max, avg and l2 pooling differ only in what they compute over the same windows."""
    return register(OpDef(
        gradient=pool_gradient,
        name=name,
        aliases=(alias,),
        doc=doc,
        attrs=_pool_attrs(padding_fill),
        shape=pool_shape,
        flops=_flops_per_window(*flops),
        window=pool_window,
        shape_doc=_POOL_SHAPE_DOC,
        params_doc="none",
        flops_doc=flops_doc,
    ))


MAXPOOL = _pool("maxpool", "max_pool", "Maximum over each window, per channel.", "-infinity", (0, 1),
                "K_h*K_w per output (comparisons)")
AVGPOOL = _pool("avgpool", "avg_pool",
                "Mean over each window, per channel; the divisor counts only input values, not padding.",
                "zeros (not counted in the mean)", (1, 1), "K_h*K_w + 1 per output (adds and one divide)")
L2POOL = _pool("l2pool", "l2_pool",
               "sqrt of the mean of squares over each window, per channel; the divisor counts only input values.",
               "zeros (not counted in the mean)", (2, 2),
               "2*K_h*K_w + 2 per output (square-adds, a divide and a sqrt)")


def global_avgpool_shape(ctx: ShapeContext) -> TensorType:
    c, _, _ = require_image(ctx)
    return TensorType((c,))


GLOBAL_AVGPOOL = register(OpDef(
    gradient=global_avgpool_gradient,
    name="global_avgpool",
    aliases=("gap",),
    doc="Mean over the whole height and width of each channel: CxHxW -> a vector of C.",
    shape=global_avgpool_shape,
    flops=lambda a, ins, out: ins[0].size + out.size,
    shape_doc="C (a vector)",
    params_doc="none",
    flops_doc="C*H*W adds + C divides",
))
