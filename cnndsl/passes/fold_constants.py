"""fold_constants (-O1, both modes): ops whose options alone make them the identity are folded away.

The graph has no constant tensors (every layer reads a graph input, and parameters are
folded by fold_batchnorm), so what is constant at compile time is the options. With them
these ops compute y = x, in the forward and in the backward pass alike:

    dropout p=0 ; maxpool / avgpool with a 1x1 window, stride 1, no padding ;
    upsample scale=1 ; flatten of a vector

(l2pool 1x1 is |x|, not x, and is left alone.) Guard: a head stays.
Tests: tests/passes/test_fold_constants.py.
"""
from __future__ import annotations

from cnndsl.passes.base import Pass, PassContext, bypass, is_head


def is_identity(graph, node) -> bool:
    a = node.attrs
    if node.op == "dropout":
        return a["p"] == 0
    if node.op in ("maxpool", "avgpool"):
        g = node.geometry
        return g.kernel == (1, 1) and g.stride == (1, 1) and g.pads == (0, 0, 0, 0)
    if node.op == "upsample":
        return a["scale"] == 1
    if node.op == "flatten":
        return len(graph.node(graph.inputs_of(node.name)[0]).type.shape) == 1
    return False


class FoldConstants(Pass):
    name = "fold_constants"
    level = 1
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            node = graph.node(name)
            if is_head(graph, name) or not is_identity(graph, node):
                continue
            bypass(graph, name)
            ctx.fired(self.name, f"{node.op} (identity) removed")
            changed = True
        return changed
