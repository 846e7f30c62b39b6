"""cse (-O1, both modes, before autodiff): common-subexpression elimination.

Two nodes with the same op, the same options and the same inputs in the same order
compute the same tensor; the later one's readers read the earlier one and DCE drops it.

Only pure, parameter-free ops qualify: a layer with parameters has its own weights
(two convs of one input differ), dropout draws a mask per layer name, and inputs,
targets, losses and gradient ops are not expressions. A head is never the one dropped.
Tests: tests/passes/test_cse.py.
"""
from __future__ import annotations

from cnndsl.ops.registry import get_op
from cnndsl.passes.base import Pass, PassContext, absorb, is_head, mark_rewritten

PURE_CATEGORIES = ("layer", "activation", "merge")


def expression_key(graph, node):
    """What identifies the value a node computes, or None when it must not be merged."""
    op = get_op(node.op)
    if node.params or node.op == "dropout" or op.category not in PURE_CATEGORIES:
        return None
    return node.op, repr(sorted(node.attrs.items())), tuple(graph.inputs_of(node.name))


class CommonSubexpressionElimination(Pass):
    name = "cse"
    level = 1
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        seen: dict = {}
        changed = False
        for name in graph.topo_order():
            key = expression_key(graph, graph.node(name))
            if key is None:
                continue
            first = seen.setdefault(key, name)
            if first == name or is_head(graph, name):
                continue
            absorb(graph, first, name)
            mark_rewritten(graph.node(first), self.name)
            ctx.fired(self.name, f"duplicate {key[0]} merged")
            changed = True
        return changed
