"""remove_dropout (-O1, inference): dropout is the identity at inference, so it is not run at all.

    d = dropout(h) p=0.5 ; out = dense(d)   ->   out = dense(h)

Guard: a dropout that is a head stays (its name is what the caller reads).
Tests: tests/passes/test_remove_dropout.py.
"""
from __future__ import annotations

from cnndsl.passes.base import INFERENCE, Match, RewritePass, bypass, is_head


def not_head(graph, m, ctx) -> str | None:
    return f"'{m.node}' is a head: its name must stay" if is_head(graph, m.node) else None


class RemoveDropout(RewritePass):
    name = "remove_dropout"
    level = 1
    modes = frozenset({INFERENCE})
    ops = ("dropout",)
    guards = (not_head,)

    def rewrite(self, graph, m: Match, ctx) -> str:
        bypass(graph, m.node)
        return "dropout removed"
