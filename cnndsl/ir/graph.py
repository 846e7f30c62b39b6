"""The graph IR: a networkx MultiDiGraph of named nodes with ordered input ports.

Each node produces exactly one tensor, named after the node. An edge
`producer -> consumer` carries the consumer's input port in its `port`
attribute; a MultiDiGraph allows the same producer on several ports
(`add(x, x)`). Shapes are per sample: batch is implicit and never stored.

Learnable tensors (conv weights, batchnorm scales) are not nodes: a node lists
them in `params` (name -> shape) once shape inference has run, and they are
named `<node>.<param>` in weight files, which keeps names stable for
transfer learning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx

from cnndsl.diagnostics import Span
from cnndsl.kernels.geometry import ConvGeometry


@dataclass(frozen=True)
class TensorType:
    """A per-sample tensor type: (C, H, W) for feature maps, (F,) for vectors."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __str__(self) -> str:
        return "x".join(str(d) for d in self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Node:
    name: str
    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    span: Span | None = None  # where the layer is written
    attr_spans: dict[str, Span] = field(default_factory=dict)  # where each option is written
    trace: tuple[Span, ...] = ()  # block use sites, innermost first
    type: TensorType | None = None  # filled by shape inference
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)  # filled by shape inference
    # a windowed layer's resolved window (conv, pools, conv_transpose's adjoint conv): filled by shape
    # inference, read by the launchers (cnndsl/kernels/geometry.py)
    geometry: ConvGeometry | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # flops, receptive field, rewritten_by, ...


class Graph:
    """A network: nodes in insertion order, graph inputs and named outputs."""

    def __init__(self, name: str = "network") -> None:
        self.name = name
        self.nx = nx.MultiDiGraph()
        self.inputs: list[str] = []  # names of `input` nodes, in declaration order
        # output heads: head name -> node name, in declaration order. A head is
        # what a loss or a metric refers to ("logits", "boxes").
        self.heads: dict[str, str] = {}
        self.attrs: dict[str, Any] = {}  # network-level settings (rounding, parameters, training)
        self._order = 0

    # -- building -----------------------------------------------------------
    def add(self, node: Node, inputs: list[str] = ()) -> Node:
        if node.name in self.nx:
            raise ValueError(f"node {node.name!r} already exists")
        self.nx.add_node(node.name, node=node, order=self._order)
        self._order += 1
        for port, src in enumerate(inputs):
            if src not in self.nx:
                raise KeyError(f"node {node.name!r} reads unknown tensor {src!r}")
            self.nx.add_edge(src, node.name, port=port)
        return node

    @property
    def outputs(self) -> list[str]:
        return list(self.heads.values())

    def remove(self, name: str) -> None:
        if name in self.outputs:
            raise ValueError(f"node {name!r} is an output head and cannot be removed")
        self.nx.remove_node(name)

    def set_inputs(self, name: str, inputs: list[str]) -> None:
        """Rewire all input ports of `name`."""
        for src, _, key in list(self.nx.in_edges(name, keys=True)):
            self.nx.remove_edge(src, name, key)
        for port, src in enumerate(inputs):
            self.nx.add_edge(src, name, port=port)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer of `old` read `new` instead (outputs too)."""
        for consumer in list(self.consumers(old)):
            self.set_inputs(consumer, [new if s == old else s for s in self.inputs_of(consumer)])
        self.heads = {h: (new if n == old else n) for h, n in self.heads.items()}

    # -- reading ------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def node(self, name: str) -> Node:
        return self.nx.nodes[name]["node"]

    def inputs_of(self, name: str) -> list[str]:
        """Producers of `name`'s input ports, in port order."""
        edges = sorted(self.nx.in_edges(name, data="port"), key=lambda e: e[2])
        return [src for src, _, _ in edges]

    def consumers(self, name: str) -> list[str]:
        """Distinct nodes that read `name`, in graph order."""
        return sorted(set(self.nx.successors(name)), key=self._key)

    def _key(self, name: str) -> int:
        return self.nx.nodes[name]["order"]

    def topo_order(self) -> list[str]:
        """A deterministic topological order: ties are broken by insertion order."""
        return list(nx.lexicographical_topological_sort(self.nx, key=self._key))

    def nodes(self) -> Iterator[Node]:
        for name in self.topo_order():
            yield self.node(name)

    def copy(self) -> "Graph":
        import copy

        return copy.deepcopy(self)


def layers_matching(graph: Graph, patterns) -> list[str]:
    """Layers with parameters named by `patterns` (the training section's `freeze` and `lr_mult`):
    a layer's own name, or a prefix of the names a block instance gives its layers ("stage1")."""
    names = [n for n in graph.topo_order() if graph.node(n).params]
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in patterns)]
