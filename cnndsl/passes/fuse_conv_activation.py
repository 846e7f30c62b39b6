"""fuse_conv_activation (-O2, both modes): conv + bias + activation become one fused_conv.

    c = conv(x) ; r = relu(c)             ->   c = fused_conv(x) activation=relu

The headline fusion (ONNX Runtime ConvActivationFusion): the activation is applied to each
output chunk right after its GEMM, while it is in cache, instead of in a second sweep over
the whole tensor. Activations: every element-wise one (cnndsl/kernels/activations.py; alpha
kept). In training the fused op's gradient rule differentiates the activation from the fused
output, so there only the activations whose gradient reads their output fuse.

Guards (each declines with its reason, `--pass-stats`): the conv's output has another reader or
is a head (it must stay materialized); the activation is a head (its name is what the caller
reads and it would disappear); the conv already has an activation; the backend lacks the fused
op; the reader is not an element-wise activation, or (training) its gradient needs its input.
Tests: tests/passes/test_fuse_conv_activation.py, tests/passes/test_rewrite.py.
"""
from __future__ import annotations

from cnndsl.passes.base import RewritePass, absorb, consumer_not_head, mark_rewritten
from cnndsl.passes.fusion import (ACTIVATION_OPS, backend_can_fuse, consumer_activation_fuses, layer_has_room,
                                  make_fused, set_activation)


class FuseActivation(RewritePass):
    """The rule shared with fuse_dense_activation: a layer followed by its activation."""

    then = ACTIVATION_OPS
    requires = ("typed", "forward")
    level = 2
    guards = (consumer_not_head, layer_has_room, backend_can_fuse, consumer_activation_fuses)

    def rewrite(self, graph, m, ctx) -> str:
        layer, act = graph.node(m.node), graph.node(m.consumer)
        make_fused(layer)
        set_activation(layer, act)
        absorb(graph, m.node, m.consumer)
        mark_rewritten(layer, self.name)
        return f"{layer.op.removeprefix('fused_')} + {act.op}"


class FuseConvActivation(FuseActivation):
    name = "fuse_conv_activation"
    ops = ("conv", "fused_conv")
