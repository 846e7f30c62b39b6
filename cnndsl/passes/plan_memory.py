"""plan_memory (every level, last): the memory plan of the final graph.

The executor (cnndsl/backend/executor.py) plans the graph it is given with the same
function; this pass runs it at the end of the pipeline so that --pass-stats and
`cnndsl compile` report the planned activation memory of what will actually run.
"""
from __future__ import annotations

from cnndsl.analysis.plan import plan_memory
from cnndsl.passes.base import Pass, PassContext


class PlanMemory(Pass):
    name = "plan_memory"
    level = 0
    ensures = ("planned",)

    def run(self, graph, ctx: PassContext) -> bool:
        plan = plan_memory(graph)
        ctx.notes["planned_bytes_per_sample"] = plan.peak_bytes_per_sample()
        ctx.notes["slots"] = len(plan.slot_elems)
        return False
