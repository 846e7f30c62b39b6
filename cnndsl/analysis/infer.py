"""Shape inference: walk the graph in order and apply each op's shape rule.

Fills node.type, node.params, node.meta["flops"] and node.meta["receptive_field"].
Errors do not stop the walk: a node whose inputs failed is skipped (so one
mistake is reported once), and every independent error is collected.
"""
from __future__ import annotations

from cnndsl.diagnostics import Diagnostics
from cnndsl.ir.graph import Graph, Node
from cnndsl.ops.registry import ShapeContext, ShapeError, get_op


def infer_shapes(graph: Graph, diagnostics: Diagnostics | None = None) -> Diagnostics:
    diagnostics = diagnostics or Diagnostics()
    rounding = graph.attrs.get("rounding", "strict")
    for name in graph.topo_order():
        node = graph.node(name)
        sources = graph.inputs_of(name)
        in_types = [graph.node(s).type for s in sources]
        node.type = None
        if any(t is None for t in in_types):
            continue  # an input already failed and was reported
        op = get_op(node.op)
        ctx = ShapeContext(node, in_types, sources, diagnostics, rounding)
        try:
            node.type = op.shape(ctx)
        except ShapeError as e:
            diagnostics.add(e.diagnostic)
            continue
        node.params = op.params(node.attrs, in_types, node.type) if op.params else {}
        node.meta["buffers"] = op.buffers(node.attrs, in_types, node.type) if op.buffers else {}
        node.meta["flops"] = op.flops(node.attrs, in_types, node.type) if op.flops else 0
        node.meta["receptive_field"] = _receptive_field(graph, node, sources, op)
    return diagnostics


def _receptive_field(graph: Graph, node: Node, sources: list[str], op) -> tuple[int, int] | None:
    """(size, jump) per axis as ((rf_h, rf_w), (jump_h, jump_w)); None once spatial structure is gone."""
    if not sources:
        return ((1, 1), (1, 1))
    ins = [graph.node(s).meta.get("receptive_field") for s in sources]
    if any(r is None for r in ins) or len(node.type.shape) != 3:
        return None
    rf = tuple(max(r[0][i] for r in ins) for i in range(2))
    jump = tuple(max(r[1][i] for r in ins) for i in range(2))
    if op.window is None:
        return (rf, jump)
    (kh, kw), (sh, sw) = op.window(node.attrs)
    new_rf = (rf[0] + (kh - 1) * jump[0], rf[1] + (kw - 1) * jump[1])
    return (new_rf, (jump[0] * sh, jump[1] * sw))
