"""fuse_conv_pool (-O2, inference): a fused conv followed by a 2x2 max pool becomes one fused_conv_pool.

    c = fused_conv(x) activation=relu ; p = maxpool(c) 2   ->   p = fused_conv_pool(x) activation=relu

The pool runs on each GEMM chunk right after the epilogue, while it is in cache, so the
full-resolution map is never written and read back (ONNX Runtime has no such fusion; oneDNN
post-ops do the same for eltwise, and "conv + relu + maxpool in the output step" is the fusion the
Numba notes single out). Like every fused op it keeps the conv's name, so its parameters stay
`<conv>.weight`; the pool's readers read it instead.

Where it pays, and only there: the non-overlapping 2x2 window (the kernel's one specialized case)
of an unpadded pool; at inference only, because training needs the conv's output and the pool's
argmax for the backward pass. Guards (each bails out): not the 2x2/stride-2 unpadded window;
the conv's output has another reader or is a head; the pool is a head (its name is what the
caller reads); the backend has no fused_conv_pool kernel;
the pooled size is not the floor of half the conv's (the pool would need rounding=ceil); the
conv's activation is not monotone (gelu, silu, ...: max(act(z)) != act(max(z))).
Tests: tests/passes/test_fuse_conv_pool.py.
"""
from __future__ import annotations

from cnndsl.ops.fused.conv_pool import POOL
from cnndsl.ops.pool import pool_stride
from cnndsl.passes.base import INFERENCE, Pass, PassContext, absorb, is_head, mark_rewritten, sole_consumer
from cnndsl.passes.fusion import backend_has, make_fused, pool_refusal


class FuseConvPool(Pass):
    name = "fuse_conv_pool"
    level = 2
    modes = frozenset({INFERENCE})
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if name in graph and graph.node(name).op in ("conv", "fused_conv"):
                changed |= self.fuse(graph, name, ctx)
        return changed

    def fuse(self, graph, conv_name: str, ctx: PassContext) -> bool:
        pool_name = sole_consumer(graph, conv_name)
        if pool_name is None or is_head(graph, pool_name) or not is_plain_2x2_maxpool(graph.node(pool_name)):
            return False
        if not backend_has(ctx, "fused_conv_pool"):
            return False
        conv, pool = graph.node(conv_name), graph.node(pool_name)
        if pool_refusal(conv.attrs.get("activation", "none")):
            return False
        _, oh, ow = conv.type.shape
        if pool.type.shape[1:] != (oh // POOL, ow // POOL):
            return False
        make_fused(conv)
        conv.op = "fused_conv_pool"
        conv.type = pool.type
        conv.meta["conv_hw"] = (oh, ow)
        absorb(graph, conv_name, pool_name)
        mark_rewritten(conv, self.name)
        ctx.fired(self.name, f"conv + {conv.attrs['activation']} + maxpool 2")
        return True


def is_plain_2x2_maxpool(node) -> bool:
    a = node.attrs
    return (node.op == "maxpool" and tuple(a["kernel"]) == (POOL, POOL) and pool_stride(a) == (POOL, POOL)
            and a.get("padding", 0) in (0, "valid", (0, 0)))
