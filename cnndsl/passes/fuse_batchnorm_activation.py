"""fuse_batchnorm_activation (-O2, both modes): batchnorm + activation become one fused_batchnorm.

    b = batchnorm(x) ; r = relu(b)        ->   b = fused_batchnorm(x) activation=relu

The activation is applied to each row as the batchnorm writes it, instead of in a second sweep
over the whole tensor. In training the fused op's gradient rule differentiates the activation
from the fused output, and fuse_backward folds that into the batchnorm backward
(fused_batchnorm_grad): one sweep less each way. Activations: every element-wise one (in
training, those whose gradient reads their output).

Runs after fold_batchnorm: at inference a batchnorm after a conv or dense is folded into it (and
the activation then fuses into the conv's epilogue), so this pass only takes the batchnorms that
could not be folded (after a pool, an add, the input); in training, where nothing is folded, it
takes every batchnorm followed by an activation (conv -> batchnorm -> relu).

Guards (each declines with its reason): the batchnorm's output has another reader or is a head;
the activation is a head (its name is what the caller reads); the batchnorm already has an
activation; the reader is not a fusable activation; the backend lacks fused_batchnorm (in
training, or epilogue_grad).
Tests: tests/passes/test_fuse_batchnorm_activation.py.
"""
from __future__ import annotations

from cnndsl.passes.base import TRAINING, Match, PassContext, RewritePass, absorb, consumer_not_head, mark_rewritten
from cnndsl.passes.fusion import ACTIVATION_OPS, backend_has, consumer_activation_fuses, set_activation


def has_activation_room(node) -> bool:
    """A batchnorm, or a fused one without an activation yet."""
    return node.op == "batchnorm" or (node.op == "fused_batchnorm" and node.attrs["activation"] == "none")


def backend_ready(ctx: PassContext) -> bool:
    if ctx.mode == TRAINING:
        return backend_has(ctx, "fused_batchnorm", "epilogue_grad")
    return backend_has(ctx, "fused_batchnorm")


def bn_has_room(graph, m, ctx) -> str | None:
    node = graph.node(m.node)
    return None if has_activation_room(node) else f"'{m.node}' already has an activation ({node.attrs['activation']})"


def bn_backend(graph, m, ctx) -> str | None:
    return None if backend_ready(ctx) else f"backend {ctx.backend} has no kernel for fused_batchnorm (or its gradient)"


class FuseBatchnormActivation(RewritePass):
    name = "fuse_batchnorm_activation"
    level = 2
    requires = ("typed", "forward")
    ops = ("batchnorm", "fused_batchnorm")
    then = ACTIVATION_OPS
    guards = (consumer_not_head, bn_has_room, consumer_activation_fuses, bn_backend)

    def rewrite(self, graph, m: Match, ctx) -> str:
        bn, act = graph.node(m.node), graph.node(m.consumer)
        bn.op = "fused_batchnorm"  # batchnorm's options stay; the activation's are added
        set_activation(bn, act)
        absorb(graph, m.node, m.consumer)
        mark_rewritten(bn, self.name)
        return f"batchnorm + {act.op}"
