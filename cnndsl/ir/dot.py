"""Graphviz DOT text of a graph: one box per node with its op, key options and output shape."""
from __future__ import annotations

from cnndsl.ir.graph import Graph
from cnndsl.ops.registry import get_op

_COLORS = {"input": "#d9ead3", "activation": "#fff2cc", "merge": "#cfe2f3", "layer": "#ffffff"}


def _label(node) -> str:
    shown = []
    for key, value in node.attrs.items():
        if key in ("shape",) or value is None:
            continue
        if isinstance(value, tuple):
            value = "x".join(map(str, value))
        shown.append(f"{key}={value}")
    lines = [f"{node.name}", f"{node.op} {' '.join(shown[:3])}".strip()]
    if node.type is not None:
        lines.append(str(node.type))
    if node.meta.get("rewritten_by"):
        lines.append(f"({node.meta['rewritten_by']})")
    return "\\n".join(lines)


def to_dot(graph: Graph) -> str:
    out = [f'digraph "{graph.name}" {{', "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for node in graph.nodes():
        op = get_op(node.op)
        color = _COLORS.get(op.category if op else "layer", "#ffffff")
        out.append(f'  "{node.name}" [label="{_label(node)}", fillcolor="{color}"];')
    for node in graph.nodes():
        for src in graph.inputs_of(node.name):
            out.append(f'  "{src}" -> "{node.name}";')
    for head, name in graph.heads.items():
        out.append(f'  "head:{head}" [label="{head}", shape=ellipse, fillcolor="#f4cccc"];')
        out.append(f'  "{name}" -> "head:{head}";')
    out.append("}")
    return "\n".join(out) + "\n"
