"""autodiff (every level, training only): the optimized forward graph becomes the training graph.

A pass wrapper around cnndsl/passes/autodiff.py's build_training_graph (whose behaviour is
unchanged): forward fusions run before it, so the fused ops' own gradient rules build the
backward graph; backward fusions run after it. The losses and frozen layers come from the
PassContext, and so do the optimizer step's attributes (the optimizer and its hyperparameters).
"""
from __future__ import annotations

from cnndsl.passes.autodiff import build_training_graph
from cnndsl.passes.base import TRAINING, Pass, PassContext


class Autodiff(Pass):
    name = "autodiff"
    level = 0
    modes = frozenset({TRAINING})
    requires = ("typed", "forward")
    ensures = ("training_graph",)
    invalidates = ("forward",)

    def run(self, graph, ctx: PassContext) -> bool:
        trained = build_training_graph(graph, ctx.losses, set(ctx.frozen), ctx.optimizer)
        graph.__dict__.update(trained.__dict__)  # the pass manager rewrites one graph in place
        return True
