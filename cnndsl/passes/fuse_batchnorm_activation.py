"""fuse_batchnorm_activation (-O2, both modes): batchnorm + activation become one fused_batchnorm.

    b = batchnorm(x) ; r = relu(b)        ->   b = fused_batchnorm(x) activation=relu

The activation is applied to each row as the batchnorm writes it, instead of in a second sweep
over the whole tensor. In training the fused op's gradient rule differentiates the activation
from the fused output, and fuse_backward folds that into the batchnorm backward
(fused_batchnorm_grad): one sweep less each way. Activations: relu, leaky_relu (alpha kept),
sigmoid, tanh.

Runs after fold_batchnorm: at inference a batchnorm after a conv or dense is folded into it (and
the activation then fuses into the conv's epilogue), so this pass only takes the batchnorms that
could not be folded (after a pool, an add, the input); in training, where nothing is folded, it
takes every batchnorm followed by an activation (conv -> batchnorm -> relu).

Guards (each bails out): the batchnorm already has an activation; its output has another reader
or is a head; the reader is not a fusable activation, or is a head (its name is what the caller
reads); the backend lacks fused_batchnorm (in training, or epilogue_grad).
Tests: tests/passes/test_fuse_batchnorm_activation.py.
"""
from __future__ import annotations

from cnndsl.passes.base import TRAINING, Pass, PassContext, absorb, is_head, mark_rewritten, sole_consumer
from cnndsl.passes.fusion import activation_refusal, backend_has, set_activation


def has_activation_room(node) -> bool:
    """A batchnorm, or a fused one without an activation yet."""
    return node.op == "batchnorm" or (node.op == "fused_batchnorm" and node.attrs["activation"] == "none")


def backend_ready(ctx: PassContext) -> bool:
    if ctx.mode == TRAINING:
        return backend_has(ctx, "fused_batchnorm", "epilogue_grad")
    return backend_has(ctx, "fused_batchnorm")


class FuseBatchnormActivation(Pass):
    name = "fuse_batchnorm_activation"
    level = 2
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if name in graph and has_activation_room(graph.node(name)):
                changed |= self.fuse(graph, name, ctx)
        return changed

    def fuse(self, graph, bn_name: str, ctx: PassContext) -> bool:
        act_name = sole_consumer(graph, bn_name)
        if act_name is None or is_head(graph, act_name):
            return False
        act = graph.node(act_name)
        if activation_refusal(act.op, ctx) or not backend_ready(ctx):
            return False
        bn = graph.node(bn_name)
        bn.op = "fused_batchnorm"  # batchnorm's options stay; the activation's are added
        set_activation(bn, act)
        absorb(graph, bn_name, act_name)
        mark_rewritten(bn, self.name)
        ctx.fired(self.name, f"batchnorm + {act.op}")
        return True
