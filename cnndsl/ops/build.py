"""Building nodes by hand (tests, rewrite passes): options checked like the frontend does.

    g = Graph()
    g.add(make_node("input", "x", shape=(1, 28, 28)))
    g.inputs.append("x")
    g.add(make_node("conv", "c1", filters=6, kernel=5, padding="same"), ["x"])
"""
from __future__ import annotations

from typing import Any

from cnndsl.diagnostics import Span
from cnndsl.ir.graph import Node
from cnndsl.ops.registry import Attr, AttrError, OpDef, get_op


def resolve_attrs(op: OpDef, given: dict[str, Any]) -> dict[str, Any]:
    """Every option of `op`: given values checked through Attr.coerce, the rest defaulted.

    Raises AttrError for an unknown option, a value that does not fit, or a missing
    required option. Defaults are coerced too (kernel=3 -> (3, 3)); a None default
    stays None: a sentinel the shape rule resolves, e.g. a pool's stride.
    """
    out: dict[str, Any] = {}
    for name in given:
        if op.attr(name) is None:
            raise AttrError(f"{op.name} has no option '{name}'")
    for attr in op.attrs:
        if attr.name in given:
            value = given[attr.name]
            out[attr.name] = None if value is None and not attr.required else attr.coerce(value)
        elif attr.required:
            raise AttrError(f"{op.name} needs the option '{attr.name}'")
        else:
            out[attr.name] = default_value(attr)
    return out


def default_value(attr: Attr) -> Any:
    """The declared default in the coerced form (kernel=3 -> (3, 3)); None stays None."""
    return None if attr.default is None else attr.coerce(attr.default)


def make_node(op: str, name: str, span: Span | None = None, attr_spans: dict[str, Span] | None = None,
              **attrs: Any) -> Node:
    """A Node for `op` (an alias is fine; the canonical name is stored) with resolved options."""
    opdef = get_op(op)
    if opdef is None:
        raise AttrError(f"unknown op '{op}'")
    return Node(name, opdef.name, resolve_attrs(opdef, attrs), span=span, attr_spans=dict(attr_spans or {}))
