"""fused_conv_pool: a fused_conv whose output goes straight through a 2x2, stride-2 max pool.

Made at inference only by the fuse_conv_pool pass (cnndsl/passes/fuse_conv_pool.py): the conv's
epilogue (bias, folded batchnorm, residual, activation) and the pool run on each output chunk
right after its GEMM, so the full-resolution map is never written. Options and params are
fused_conv's; the pool is always the non-overlapping 2x2 window (what LeNet- and VGG-style
networks use), and the output is (F, OH // 2, OW // 2) of the conv's (F, OH, OW). No gradient:
training keeps conv and pool apart, because the backward pass needs the pool's argmax.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.conv import conv_params
from cnndsl.ops.fused.conv import FUSED_CONV, fused_conv_flops, fused_conv_shape
from cnndsl.ops.registry import OpDef, ShapeContext, register

POOL = 2  # window and stride of the fused max pool


def fused_conv_pool_shape(ctx: ShapeContext) -> TensorType:
    conv = fused_conv_shape(ctx)  # the node's geometry is the conv's: (OH, OW) is the map before pooling
    c, oh, ow = conv.shape
    if oh < POOL or ow < POOL:
        ctx.error(f"{ctx.describe()} pools a {oh}x{ow} map with a {POOL}x{POOL} window", code="fused-pool")
    return TensorType((c, oh // POOL, ow // POOL), conv.dtype)


def fused_conv_pool_flops(a, ins, out):
    conv_out = TensorType((out.shape[0], out.shape[1] * POOL, out.shape[2] * POOL), out.dtype)
    return fused_conv_flops(a, ins, conv_out) + 3 * out.size  # three comparisons per pooled value


def fused_conv_pool_window(a):
    (kh, kw), (sh, sw) = FUSED_CONV.window(a)
    return (kh + (POOL - 1) * sh, kw + (POOL - 1) * sw), (POOL * sh, POOL * sw)


FUSED_CONV_POOL = register(OpDef(
    name="fused_conv_pool",
    doc="fused_conv followed by a 2x2, stride-2 max pool in the same pass over each output chunk "
        "(inference only; made by the optimization passes).",
    attrs=FUSED_CONV.attrs,
    min_inputs=1,
    max_inputs=2,
    shape=fused_conv_pool_shape,
    params=conv_params,
    flops=fused_conv_pool_flops,
    window=fused_conv_pool_window,
    gradient=None,
    shape_doc="F x OH/2 x OW/2 of the conv's F x OH x OW",
    params_doc="as conv",
    flops_doc="conv + epilogue + 3 comparisons per output",
))
