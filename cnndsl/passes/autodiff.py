"""autodiff (every level, training only): the optimized forward graph becomes the training graph.

The pass runs cnndsl/training_graph.py's `add_training` on the graph it is given: forward fusions
run before it, so the fused ops' own gradient rules build the backward graph; backward fusions run
after it. The losses and frozen layers come from the PassContext, and so do the optimizer step's
attributes (the optimizer and its hyperparameters).
"""
from __future__ import annotations

from cnndsl.passes.base import TRAINING, Pass, PassContext
from cnndsl.training_graph import add_training


class Autodiff(Pass):
    name = "autodiff"
    level = 0
    modes = frozenset({TRAINING})
    requires = ("typed", "forward")
    ensures = ("training_graph",)
    invalidates = ("forward",)

    def run(self, graph, ctx: PassContext) -> bool:
        add_training(graph, ctx.losses, set(ctx.frozen), ctx.optimizer)  # the pass manager rewrites one graph in place
        return True
