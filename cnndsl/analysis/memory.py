"""Planned activation memory of a model, for `cnndsl shapes`: inference and one training step."""
from __future__ import annotations

from cnndsl.analysis.summary import human_bytes
from cnndsl.backend.plan import plan_memory
from cnndsl.diagnostics import CnnError


def memory_lines(program) -> list[str]:
    """Peak activation memory per sample with the memory plan, next to one buffer per tensor."""
    from cnndsl.model import loss_specs
    from cnndsl.passes.autodiff import build_training_graph

    graphs = [("inference", program.graph)]
    try:
        graphs.append(("training step", build_training_graph(program.graph, loss_specs(program))))
    except CnnError:
        pass  # no trainable loss for these heads: inference only
    lines = []
    for what, graph in graphs:
        plan = plan_memory(graph)
        lines.append(f"Planned activation memory, {what}: {human_bytes(plan.peak_bytes_per_sample())} per sample "
                     f"({human_bytes(plan.unplanned_bytes_per_sample(graph))} without buffer reuse)")
    return lines
