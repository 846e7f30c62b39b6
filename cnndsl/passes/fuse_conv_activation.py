"""fuse_conv_activation (-O2, both modes): conv + bias + activation become one fused_conv.

    c = conv(x) ; r = relu(c)             ->   c = fused_conv(x) activation=relu

The headline fusion (ONNX Runtime ConvActivationFusion): the activation is applied to each
output chunk right after its GEMM, while it is in cache, instead of in a second sweep over
the whole tensor. Activations: relu, leaky_relu (alpha kept), sigmoid, tanh. In training
the fused op's gradient rule differentiates the activation from the fused output.

Guards (each bails out): the conv already has an activation; the conv's output has another
reader (it must stay materialized) or is a head; the activation is a head (its name is
what the caller reads and it would disappear).
Tests: tests/passes/test_fuse_conv_activation.py.
"""
from __future__ import annotations

from cnndsl.passes.base import Pass, PassContext, absorb, is_head, mark_rewritten, sole_consumer
from cnndsl.passes.fusion import activation_refusal, can_make_fused, has_epilogue_room, make_fused, set_activation


def fuse_activation(graph, layer_name: str, pass_name: str, ctx: PassContext) -> bool:
    """The rule shared with fuse_dense_activation."""
    layer = graph.node(layer_name)
    if not has_epilogue_room(layer) or not can_make_fused(layer, ctx):
        return False
    act_name = sole_consumer(graph, layer_name)
    if act_name is None or is_head(graph, act_name):
        return False
    act = graph.node(act_name)
    if activation_refusal(act.op, ctx):
        return False
    make_fused(layer)
    set_activation(layer, act)
    absorb(graph, layer_name, act_name)
    mark_rewritten(layer, pass_name)
    ctx.fired(pass_name, f"{layer.op.removeprefix('fused_')} + {act.op}")
    return True


class FuseConvActivation(Pass):
    name = "fuse_conv_activation"
    level = 2
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if name in graph and graph.node(name).op in ("conv", "fused_conv"):
                changed |= fuse_activation(graph, name, self.name, ctx)
        return changed
