"""Shape inference: walk the graph in order and apply each op's shape rule.

Fills node.type, node.params, node.geometry (the resolved window of a conv, pool or
conv_transpose: cnndsl/kernels/geometry.py), node.meta["buffers"], node.meta["flops"] and
node.meta["receptive_field"]. Errors do not stop the walk: a node whose inputs
failed is skipped (so one mistake is reported once), and every independent
error is collected.

Options a node does not set get their declared default (so hand-built graphs
and rewrite passes need not spell them all out); an unknown op, a missing
required option or a wrong number of inputs is a diagnostic, not a crash.

The receptive field is ((rf_h, rf_w), (jump_h, jump_w)) in input pixels, None
once the spatial structure is gone (flatten, dense, global pooling, vector
inputs). Upsampling has a fractional stride, so jump (and rf after it) may be a
fractions.Fraction; whole values are stored as int.
"""
from __future__ import annotations

from fractions import Fraction

from cnndsl.diagnostics import Diagnostic, Diagnostics, did_you_mean
from cnndsl.ir.graph import Graph, Node
from cnndsl.ops.build import default_value
from cnndsl.ops.registry import ShapeContext, ShapeError, get_op, op_names


def infer_shapes(graph: Graph, diagnostics: Diagnostics | None = None) -> Diagnostics:
    diagnostics = diagnostics if diagnostics is not None else Diagnostics()
    rounding = graph.attrs.get("rounding", "strict")
    for name in graph.topo_order():
        node = graph.node(name)
        sources = graph.inputs_of(name)
        in_types = [graph.node(s).type for s in sources]
        node.type = None
        node.geometry = None  # set again by the shape rule of a windowed op
        if any(t is None for t in in_types):
            continue  # an input already failed and was reported
        op = get_op(node.op)
        if op is None:
            hint = did_you_mean(node.op, op_names())
            diagnostics.add(Diagnostic("error", f"unknown op '{node.op}' for '{name}'", node.span,
                                       help=hint, code="unknown-op"))
            continue
        problem = _check_node(node, op, len(sources))
        if problem:
            diagnostics.add(Diagnostic("error", problem[0], node.span, code=problem[1]))
            continue
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


def _check_node(node: Node, op, n_inputs: int) -> tuple[str, str] | None:
    """Fill defaults; a (message, code) when the node cannot be inferred."""
    for attr in op.attrs:
        if attr.name not in node.attrs:
            if attr.required:
                return f"{op.name} '{node.name}' needs the option '{attr.name}' ({attr.doc})", "missing-option"
            node.attrs[attr.name] = default_value(attr)
    if n_inputs < op.min_inputs or (op.max_inputs is not None and n_inputs > op.max_inputs):
        want = (f"{op.min_inputs}" if op.max_inputs == op.min_inputs
                else f"at least {op.min_inputs}" if op.max_inputs is None
                else f"{op.min_inputs} to {op.max_inputs}")
        return f"{op.name} '{node.name}' takes {want} input{'s' if want != '1' else ''}, got {n_inputs}", "arity"
    return None


def _exact(x):
    """A Fraction with denominator 1 becomes an int."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 else x


def _receptive_field(graph: Graph, node: Node, sources: list[str], op):
    """(size, jump) per axis as ((rf_h, rf_w), (jump_h, jump_w)); None once spatial structure is gone."""
    if len(node.type.shape) != 3:
        return None
    if not sources:
        return ((1, 1), (1, 1))
    ins = [graph.node(s).meta.get("receptive_field") for s in sources]
    if any(r is None for r in ins):
        return None
    rf = tuple(max(r[0][i] for r in ins) for i in range(2))
    jump = tuple(max(r[1][i] for r in ins) for i in range(2))
    if op.window is None:
        return (rf, jump)
    (kh, kw), (sh, sw) = op.window(node.attrs)
    new_rf = (_exact(rf[0] + (Fraction(kh) - 1) * jump[0]), _exact(rf[1] + (Fraction(kw) - 1) * jump[1]))
    return (new_rf, (_exact(jump[0] * Fraction(sh)), _exact(jump[1] * Fraction(sw))))
