"""The memory plan: buffers are shared only by tensors whose lifetimes do not overlap."""
from __future__ import annotations

from pathlib import Path

import pytest

import cnndsl
from cnndsl.analysis.plan import execution_order, plan_memory
from cnndsl.model import Model
from cnndsl.training_graph import build_training_graph

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.cnn"))


def _intervals(graph, plan):
    """tensor -> (first step, last step) during which its buffer must hold it."""
    step = {n: i for i, n in enumerate(plan.order)}
    end = len(plan.order)
    pinned = set(graph.inputs) | set(graph.outputs) | set(graph.attrs.get("losses", {}).values())
    live = {}
    for name in plan.slot_of:
        root = plan.view_of.get(name, name)
        first = -1 if name in graph.inputs else step[name]  # inputs are filled before the first launch
        last = end if name in pinned else max([step[c] for c in graph.consumers(name)] + [step[name]])
        lo, hi = live.get(root, (first, last))
        live[root] = (min(lo, first), max(hi, last))
    return live


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("kind", ["inference", "training"])
def test_tensors_sharing_a_buffer_are_never_live_together(path, kind):
    model = Model(cnndsl.load(path), init_from_file=False)
    graph = model.graph if kind == "inference" else build_training_graph(model.graph, model.losses)
    plan = plan_memory(graph, execution_order(graph))
    live = _intervals(graph, plan)
    by_slot = {}
    for tensor, (lo, hi) in live.items():
        by_slot.setdefault(plan.slot_of[tensor], []).append((lo, hi, tensor))
    for slot, users in by_slot.items():
        users.sort()
        for (lo1, hi1, t1), (lo2, hi2, t2) in zip(users, users[1:]):
            assert lo2 > hi1, f"slot {slot}: {t1} lives {lo1}..{hi1} but {t2} is written at {lo2}"
        for _, _, t in users:
            node = graph.node(t)
            assert plan.slot_elems[slot] >= node.type.size and plan.slot_dtype[slot] == node.type.dtype


def test_plan_reuses_memory():
    model = Model(cnndsl.load(EXAMPLES[0].parent / "vgg_small.cnn"))
    graph = build_training_graph(model.graph, model.losses)
    plan = plan_memory(graph)
    assert plan.peak_bytes_per_sample() < 0.7 * plan.unplanned_bytes_per_sample(graph)


def test_graph_inputs_are_placed_first():
    model = Model(cnndsl.load(EXAMPLES[0].parent / "lenet5.cnn"))
    graph = build_training_graph(model.graph, model.losses)
    order = execution_order(graph)
    assert order[: len(graph.inputs)] == [n for n in graph.topo_order() if n in graph.inputs]
