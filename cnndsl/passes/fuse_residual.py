"""fuse_residual (-O2, both modes): conv -> residual add [-> activation] into the conv's epilogue.

    c = conv(h) ; s = add(x, c) ; r = relu(s)   ->   c = fused_conv(h, x) residual=true activation=relu

The shortcut is added to each output chunk after its GEMM and before the activation, so the
sum and the activation cost no extra sweep (ONNX Runtime ConvAddActivationFusion). The
shortcut becomes the fused conv's second input; it cannot depend on the conv, because the
add is the conv's only reader.

Guards (each declines with its reason): the conv's output has another reader or is a head; the
add is a head; the conv already has an activation or a residual; the backend lacks fused_conv;
the add does not have exactly two inputs or reads the conv twice. The activation after the add
(optional) joins unless it is a head, has another reader, or fuse_conv_activation's activation
guard refuses it (then the conv + add still fuse, and the refusal is recorded).
Tests: tests/passes/test_fuse_residual.py.
"""
from __future__ import annotations

from cnndsl.passes.base import Match, RewritePass, absorb, consumer_not_head, is_head, mark_rewritten, sole_consumer
from cnndsl.passes.fusion import ACTIVATION_OPS, activation_refusal, backend_can_fuse, layer_has_room, make_fused, set_activation


def no_residual_yet(graph, m, ctx) -> str | None:
    return f"'{m.node}' already adds a residual" if graph.node(m.node).attrs.get("residual") else None


def two_operands(graph, m, ctx) -> str | None:
    operands = graph.inputs_of(m.consumer)
    if len(operands) != 2 or operands.count(m.node) != 1:
        return f"'{m.consumer}' is not a sum of '{m.node}' and one other tensor"
    return None


class FuseResidual(RewritePass):
    name = "fuse_residual"
    level = 2
    requires = ("typed", "forward")
    ops = ("conv", "fused_conv")
    then = ("add",)
    guards = (consumer_not_head, layer_has_room, no_residual_yet, backend_can_fuse, two_operands)

    def rewrite(self, graph, m: Match, ctx) -> str:
        conv, add_name = graph.node(m.node), m.consumer
        operands = graph.inputs_of(add_name)
        shortcut = operands[1] if operands[0] == m.node else operands[0]
        act_name = sole_consumer(graph, add_name)
        act = graph.node(act_name) if act_name and not is_head(graph, act_name) else None
        make_fused(conv)
        conv.attrs["residual"] = True
        graph.set_inputs(m.node, graph.inputs_of(m.node) + [shortcut])
        absorb(graph, m.node, add_name)
        fired = "conv + add"
        refusal = activation_refusal(act.op, ctx) if act is not None else None
        if act is not None and refusal is None:
            set_activation(conv, act)
            absorb(graph, m.node, act_name)
            fired += f" + {act.op}"
        elif refusal is not None and act.op in ACTIVATION_OPS:
            ctx.declined(self.name, f"{m.node} -> {add_name} -> {act_name}", refusal)
        mark_rewritten(conv, self.name)
        return fired
