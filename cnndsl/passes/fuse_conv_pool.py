"""fuse_conv_pool (-O2, inference): a fused conv followed by a 2x2 max pool becomes one fused_conv_pool.

    c = fused_conv(x) activation=relu ; p = maxpool(c) 2   ->   p = fused_conv_pool(x) activation=relu

The pool runs on each GEMM chunk right after the epilogue, while it is in cache, so the
full-resolution map is never written and read back (ONNX Runtime has no such fusion; oneDNN
post-ops do the same for eltwise, and "conv + relu + maxpool in the output step" is the fusion the
Numba notes single out). Like every fused op it keeps the conv's name, so its parameters stay
`<conv>.weight`; the pool's readers read it instead.

Where it pays, and only there: the non-overlapping 2x2 window (the kernel's one specialized case)
of an unpadded pool; at inference only, because training needs the conv's output and the pool's
argmax for the backward pass. Guards (each declines with its reason): the conv's output has another
reader or is a head; the pool is a head (its name is what the caller reads); not the 2x2/stride-2
unpadded window; the backend has no fused_conv_pool kernel;
the pooled size is not the floor of half the conv's (the pool would need rounding=ceil); the
conv's activation is not monotone (gelu, silu, ...: max(act(z)) != act(max(z))).
Tests: tests/passes/test_fuse_conv_pool.py.
"""
from __future__ import annotations

from cnndsl.ops.fused.conv_pool import POOL
from cnndsl.passes.base import INFERENCE, Match, RewritePass, absorb, consumer_not_head, mark_rewritten
from cnndsl.passes.fusion import backend_has, make_fused, pool_refusal


def plain_window(graph, m, ctx) -> str | None:
    if not is_plain_2x2_maxpool(graph.node(m.consumer)):
        return f"'{m.consumer}' is not the unpadded 2x2 stride-2 max pool"
    return None


def backend_pools(graph, m, ctx) -> str | None:
    return None if backend_has(ctx, "fused_conv_pool") else f"backend {ctx.backend} has no kernel for fused_conv_pool"


def monotone(graph, m, ctx) -> str | None:
    return pool_refusal(graph.node(m.node).attrs.get("activation", "none"))


def floor_size(graph, m, ctx) -> str | None:
    _, oh, ow = graph.node(m.node).type.shape
    if graph.node(m.consumer).type.shape[1:] != (oh // POOL, ow // POOL):
        return f"'{m.consumer}' rounds up (rounding=ceil): the fused kernel pools only whole windows"
    return None


class FuseConvPool(RewritePass):
    name = "fuse_conv_pool"
    level = 2
    modes = frozenset({INFERENCE})
    requires = ("typed", "forward")
    ops = ("conv", "fused_conv")
    then = ("maxpool",)
    guards = (consumer_not_head, plain_window, backend_pools, monotone, floor_size)

    def rewrite(self, graph, m: Match, ctx) -> str:
        conv, pool = graph.node(m.node), graph.node(m.consumer)
        make_fused(conv)
        conv.op = "fused_conv_pool"
        conv.type = pool.type  # its geometry stays the conv's (shape inference computes it again)
        absorb(graph, m.node, m.consumer)
        mark_rewritten(conv, self.name)
        return f"conv + {conv.attrs['activation']} + maxpool 2"


def is_plain_2x2_maxpool(node) -> bool:
    g = node.geometry  # the resolved window: a pool's stride defaults to its kernel
    return node.op == "maxpool" and g.kernel == (POOL, POOL) and g.stride == (POOL, POOL) and g.pads == (0, 0, 0, 0)
