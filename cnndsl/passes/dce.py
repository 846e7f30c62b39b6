"""dce (-O1, both modes): dead-code elimination.

Keeps what the caller can observe and what it depends on: graph inputs, heads, loss
nodes and the optimizer step (which depends on every parameter-gradient node). Everything
else is removed: e.g. a branch that CSE or a fusion left without readers.
Tests: tests/passes/test_dce.py.
"""
from __future__ import annotations

import networkx as nx

from cnndsl.passes.base import Pass, PassContext


def live_roots(graph) -> set[str]:
    roots = set(graph.inputs) | set(graph.heads.values()) | set(graph.attrs.get("losses", {}).values())
    if graph.attrs.get("optimizer_step") in graph:
        roots.add(graph.attrs["optimizer_step"])
    return roots


class DeadCodeElimination(Pass):
    name = "dce"
    level = 1
    requires = ()

    def run(self, graph, ctx: PassContext) -> bool:
        live = set()
        for root in live_roots(graph):
            live |= {root} | nx.ancestors(graph.nx, root)
        dead = [n for n in graph.topo_order() if n not in live]
        for name in dead:
            graph.remove(name)
        if dead:
            ctx.fired(self.name, "nodes removed", len(dead))
        return bool(dead)
