"""The memory plan: which buffer slot each tensor lives in.

Buffers are allocated once per compiled graph (and batch size) and reused by
liveness: a slot is free again after the last reader of its tensor has run.
Reshapes (flatten, reshape and their gradient) are views of their input's slot, so the
slot lives as long as the last reader of any view. Graph inputs, heads and loss
tensors stay live to the end (the caller reads them).

Slots are sized per sample; the executor multiplies by the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cnndsl.ir.graph import Graph
from cnndsl.ops.registry import get_op

VIEW_OPS = {"flatten", "unflatten", "reshape"}  # output is a reshaped view of input 0


def produces_tensor(graph: Graph, name: str) -> bool:
    """Effect nodes (parameter-gradient writers, the optimizer step) produce no tensor."""
    node = graph.node(name)
    op = get_op(node.op)
    return not (node.type is not None and node.type.shape == () and op.category in ("gradient", "optimizer"))


@dataclass
class MemoryPlan:
    order: list[str]
    slot_of: dict[str, int] = field(default_factory=dict)  # tensor -> slot
    slot_elems: list[int] = field(default_factory=list)  # per-sample elements of each slot
    slot_dtype: list[str] = field(default_factory=list)
    view_of: dict[str, str] = field(default_factory=dict)  # view tensor -> tensor it reshapes

    def peak_bytes_per_sample(self) -> int:
        itemsize = {"float32": 4, "int64": 8}
        return sum(n * itemsize[d] for n, d in zip(self.slot_elems, self.slot_dtype))

    def unplanned_bytes_per_sample(self, graph: Graph) -> int:
        """What one buffer per tensor would take: the figure the plan improves on."""
        return sum(graph.node(t).type.size * (8 if graph.node(t).type.dtype == "int64" else 4)
                   for t in self.slot_of if t not in self.view_of)


def execution_order(graph: Graph) -> list[str]:
    """Topological order with every graph input first: inputs are filled before the first
    launch, so their buffers must be live from the start."""
    order = graph.topo_order()
    inputs = set(graph.inputs)
    return [n for n in order if n in inputs] + [n for n in order if n not in inputs]


def plan_memory(graph: Graph, order: list[str] | None = None) -> MemoryPlan:
    order = order or execution_order(graph)
    plan = MemoryPlan(order)
    step_of = {name: i for i, name in enumerate(order)}
    pinned = set(graph.inputs) | set(graph.outputs) | set(graph.attrs.get("losses", {}).values())
    root = {}
    for name in order:
        node = graph.node(name)
        if node.op in VIEW_OPS:
            src = graph.inputs_of(name)[0]
            root[name] = root.get(src, src)
            plan.view_of[name] = root[name]
        else:
            root[name] = name
    last_use = {}
    for name in order:
        for src in graph.inputs_of(name):
            r = root.get(src, src)
            last_use[r] = max(last_use.get(r, -1), step_of[name])
    end = len(order)
    for name in pinned:
        if name in root:
            last_use[root[name]] = end

    free: list[int] = []
    releases: dict[int, list[int]] = {}
    for i, name in enumerate(order):
        if produces_tensor(graph, name):
            if name in plan.view_of:
                plan.slot_of[name] = plan.slot_of[plan.view_of[name]]
            else:
                node = graph.node(name)
                slot = _take(plan, free, node.type.size, node.type.dtype)
                plan.slot_of[name] = slot
                releases.setdefault(last_use.get(name, i), []).append(slot)
        for slot in releases.pop(i, []):
            free.append(slot)
    return plan


def _take(plan: MemoryPlan, free: list[int], elems: int, dtype: str) -> int:
    """Best fit among free slots of the same dtype; grow one if needed; else a new slot."""
    fitting = [s for s in free if plan.slot_dtype[s] == dtype and plan.slot_elems[s] >= elems]
    if fitting:
        slot = min(fitting, key=lambda s: plan.slot_elems[s])
    else:
        same = [s for s in free if plan.slot_dtype[s] == dtype]
        if not same:
            plan.slot_elems.append(elems)
            plan.slot_dtype.append(dtype)
            return len(plan.slot_elems) - 1
        slot = max(same, key=lambda s: plan.slot_elems[s])
        plan.slot_elems[slot] = elems  # grow the largest free slot rather than add one
    free.remove(slot)
    return slot
