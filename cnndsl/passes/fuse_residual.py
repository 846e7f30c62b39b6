"""fuse_residual (-O2, both modes): conv -> residual add [-> activation] into the conv's epilogue.

    c = conv(h) ; s = add(x, c) ; r = relu(s)   ->   c = fused_conv(h, x) residual=true activation=relu

The shortcut is added to each output chunk after its GEMM and before the activation, so the
sum and the activation cost no extra sweep (ONNX Runtime ConvAddActivationFusion). The
shortcut becomes the fused conv's second input; it cannot depend on the conv, because the
add is the conv's only reader.

Guards (each bails out): the conv already has an activation or a residual; the conv's output
has another reader or is a head; the add does not have exactly two inputs, reads the conv
twice, or is a head; the activation after it (optional) is a head or has no room to fuse.
Tests: tests/passes/test_fuse_residual.py.
"""
from __future__ import annotations

from cnndsl.passes.base import Pass, PassContext, absorb, is_head, mark_rewritten, sole_consumer
from cnndsl.passes.fusion import activation_refusal, can_make_fused, has_epilogue_room, make_fused, set_activation


class FuseResidual(Pass):
    name = "fuse_residual"
    level = 2
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if name in graph and graph.node(name).op in ("conv", "fused_conv"):
                changed |= self.fuse(graph, name, ctx)
        return changed

    def fuse(self, graph, conv_name: str, ctx: PassContext) -> bool:
        conv = graph.node(conv_name)
        if not has_epilogue_room(conv) or conv.attrs.get("residual") or not can_make_fused(conv, ctx):
            return False
        add_name = sole_consumer(graph, conv_name)
        if add_name is None or is_head(graph, add_name) or graph.node(add_name).op != "add":
            return False
        operands = graph.inputs_of(add_name)
        if len(operands) != 2 or operands.count(conv_name) != 1:
            return False
        shortcut = operands[1] if operands[0] == conv_name else operands[0]
        act_name = sole_consumer(graph, add_name)
        act = graph.node(act_name) if act_name and not is_head(graph, act_name) else None
        make_fused(conv)
        conv.attrs["residual"] = True
        graph.set_inputs(conv_name, graph.inputs_of(conv_name) + [shortcut])
        absorb(graph, conv_name, add_name)
        fired = "conv + add"
        if act is not None and not activation_refusal(act.op, ctx):
            set_activation(conv, act)
            absorb(graph, conv_name, act_name)
            fired += f" + {act.op}"
        mark_rewritten(conv, self.name)
        ctx.fired(self.name, fired)
        return True
