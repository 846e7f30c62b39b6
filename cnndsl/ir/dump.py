"""`dump(graph)`: the graph as canonical, fully explicit .cnn source.

Every node is one statement in topological order, named, with its inputs in
parentheses and every option of its op written as key=value; heads are
`-> HEAD`, and the inferred type is a trailing comment:

    network LeNet5(classes = 10) {
      input image: 1x28x28  # 1x28x28
      c1 = conv(image) filters=6 kernel=5x5 stride=1x1 padding=same dilation=1x1 groups=1 bias=true  # 6x28x28
      c1.relu = relu(c1)  # 6x28x28
      ...
      logits = dense(dropout1) units=10 bias=true -> logits  # 10
    }

The text parses back to the same graph, so dump(parse(dump(g))) == dump(g).
Options whose value is None (an unset per-layer `rounding`) are left out.
"""
from __future__ import annotations

import re
from typing import Any

from cnndsl.ir.graph import Graph
from cnndsl.ops.registry import get_op


def dump(graph: Graph) -> str:
    params = graph.attrs.get("params") or {}
    header = f"network {graph.name}"
    if params:
        header += "(" + ", ".join(f"{k} = {show(v)}" for k, v in params.items()) + ")"
    lines = [header + " {"]
    if graph.attrs.get("rounding") is not None:
        lines.append(f"  rounding = {graph.attrs['rounding']}")
    heads_of: dict[str, list[str]] = {}
    for head, node in graph.heads.items():
        heads_of.setdefault(node, []).append(head)
    for node in graph.nodes():
        op = get_op(node.op)
        if node.op == "input":
            shape = node.attrs.get("shape", ())
            text = f"input {node.name}: {_shape(shape)}"
        else:
            inputs = ", ".join(graph.inputs_of(node.name))
            text = f"{node.name} = {node.op}({inputs})"
            names = [a.name for a in op.attrs] if op is not None else sorted(node.attrs)
            for key in names:
                if key in node.attrs and node.attrs[key] is not None:
                    text += f" {key}={show(node.attrs[key])}"
            if node.name in heads_of:
                text += " -> " + ", ".join(heads_of[node.name])
        if node.type is not None:
            text += f"  # {node.type}"
        lines.append("  " + text)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _shape(shape) -> str:
    shape = tuple(shape)
    if len(shape) == 1:
        return f"[{shape[0]}]"
    return "x".join(str(d) for d in shape)


def show(v: Any) -> str:
    """A value as it would be written in a .cnn file: the canonical form of the dump, and of the values
    the frontend's and the sweep's messages quote."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return f"{v:.1f}"
        return repr(v)
    if isinstance(v, str):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", v) and v not in _RESERVED:
            return v
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        if v and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v) and len(v) > 1:
            return "x".join(str(x) for x in v)
        return "[" + ", ".join(show(x) for x in v) + "]"
    if v is None:
        return "none"
    return str(v)


_RESERVED = {  # keywords of grammar/cnn.lark that a bare word cannot be
    "network", "block", "train", "profile", "input", "repeat", "true", "false"}
