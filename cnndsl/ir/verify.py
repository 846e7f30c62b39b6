"""The IR verifier: structural checks that every stage may rely on.

`verify(graph)` returns the problems found (empty when the graph is well
formed); `assert_valid(graph)` raises InvalidGraph listing them. Passes call
assert_valid after rewriting, tests corrupt graphs by hand and check the list.

Checks:
  * the graph is acyclic;
  * every networkx node carries a Node of the same name, whose op exists;
  * the input ports of each node are numbered 0..n-1 without gaps or repeats;
  * the number of inputs is within the op's min/max;
  * `input` nodes have no inputs and are exactly the nodes in graph.inputs;
  * every head points at an existing node;
  * every attr key is an option of the op (or an internal key, below);
  * when shape inference has run (some node has a type, or typed=True), every
    node reachable from a graph input has a type, and types are well formed.
"""
from __future__ import annotations

import networkx as nx

from cnndsl.ir.graph import Graph, Node, TensorType
from cnndsl.ops.registry import get_op

# Attr keys that are not options of any op but that compiler stages may set.
# A pass that stores its own key in node.attrs adds it here, or starts it with "_".
INTERNAL_ATTRS: set[str] = set()


class InvalidGraph(AssertionError):
    """A graph that breaks the IR's invariants; .problems lists them."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid graph:\n" + "\n".join(f"  - {p}" for p in problems))


def verify(graph: Graph, typed: bool | None = None) -> list[str]:
    problems: list[str] = []
    g = graph.nx

    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        path = " -> ".join([str(e[0]) for e in cycle] + [str(cycle[0][0])])
        problems.append(f"the graph has a cycle: {path}")

    nodes: dict[str, Node] = {}
    for name, data in g.nodes(data=True):
        node = data.get("node")
        if not isinstance(node, Node):
            problems.append(f"'{name}' has no Node attached")
            continue
        if node.name != name:
            problems.append(f"node stored as '{name}' is named '{node.name}'")
        nodes[name] = node

    for name, node in nodes.items():
        ports = sorted(p for _, _, p in g.in_edges(name, data="port"))
        if any(not isinstance(p, int) for p in ports):
            problems.append(f"'{name}' has an input edge without an integer port: {ports}")
        elif ports != list(range(len(ports))):
            problems.append(f"'{name}' has input ports {ports}; expected 0..{len(ports) - 1} without gaps or repeats")

        op = get_op(node.op)
        if op is None:
            problems.append(f"'{name}' has unknown op '{node.op}'")
            continue
        n = len(ports)
        if n < op.min_inputs or (op.max_inputs is not None and n > op.max_inputs):
            most = "any" if op.max_inputs is None else op.max_inputs
            problems.append(f"'{name}' ({op.name}) has {n} inputs; {op.name} takes {op.min_inputs} to {most}")
        if op.category == "input" and name not in graph.inputs:
            problems.append(f"input node '{name}' is not listed in graph.inputs")
        declared = {a.name for a in op.attrs}
        for key in node.attrs:
            if key not in declared and key not in INTERNAL_ATTRS and not str(key).startswith("_"):
                problems.append(f"'{name}' has attr '{key}', which {op.name} does not declare")
        for a in op.attrs:
            if a.required and a.name not in node.attrs:
                problems.append(f"'{name}' lacks the required option '{a.name}' of {op.name}")

    seen = set()
    for name in graph.inputs:
        if name in seen:
            problems.append(f"graph.inputs lists '{name}' twice")
        seen.add(name)
        if name not in nodes:
            problems.append(f"graph.inputs lists '{name}', which is not a node")
        elif get_op(nodes[name].op) is None or get_op(nodes[name].op).category != "input":
            # images (`input`) and, in training graphs, the heads' targets (`target`)
            problems.append(f"graph.inputs lists '{name}', which is a {nodes[name].op}, not an input")

    for head, name in graph.heads.items():
        if name not in g:
            problems.append(f"head '{head}' points at '{name}', which is not a node")

    if typed is None:
        typed = any(n.type is not None for n in nodes.values())
    if typed and not problems:
        reachable = set()
        for name in graph.inputs:
            reachable |= {name} | nx.descendants(g, name)
        for name in sorted(reachable, key=lambda n: g.nodes[n].get("order", 0)):
            t = nodes[name].type
            if t is None:
                problems.append(f"'{name}' has no type after shape inference")
            elif not isinstance(t, TensorType) or any(not isinstance(d, int) or d < 1 for d in t.shape):
                problems.append(f"'{name}' has a malformed type {t!r}")
    return problems


def assert_valid(graph: Graph, typed: bool | None = None) -> None:
    problems = verify(graph, typed)
    if problems:
        raise InvalidGraph(problems)
