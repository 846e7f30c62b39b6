"""remove_dropout (-O1, inference): dropout is the identity at inference, so it is not run at all.

    d = dropout(h) p=0.5 ; out = dense(d)   ->   out = dense(h)

Guard: a dropout that is a head stays (its name is what the caller reads).
Tests: tests/passes/test_remove_dropout.py.
"""
from __future__ import annotations

from cnndsl.passes.base import INFERENCE, Pass, PassContext, bypass, is_head


class RemoveDropout(Pass):
    name = "remove_dropout"
    level = 1
    modes = frozenset({INFERENCE})

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if graph.node(name).op != "dropout" or is_head(graph, name):
                continue
            bypass(graph, name)
            ctx.fired(self.name, "dropout removed")
            changed = True
        return changed
