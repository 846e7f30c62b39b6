"""The IR verifier on hand-built graphs, well formed and corrupted."""
from __future__ import annotations

import pytest

from cnndsl.analysis.infer import infer_shapes
from cnndsl.ir.graph import Graph, Node
from cnndsl.ir.verify import INTERNAL_ATTRS, InvalidGraph, assert_valid, verify
from cnndsl.ops.build import make_node


def small() -> Graph:
    g = Graph("small")
    g.add(make_node("input", "x", shape=(3, 8, 8)))
    g.inputs.append("x")
    g.add(make_node("conv", "c", filters=4, padding="same"), ["x"])
    g.add(make_node("relu", "r"), ["c"])
    g.add(make_node("add", "a"), ["c", "r"])
    g.add(make_node("gap", "p"), ["a"])
    g.add(make_node("dense", "fc", units=2), ["p"])
    g.heads["logits"] = "fc"
    return g


def test_well_formed_before_and_after_inference():
    g = small()
    assert verify(g) == []
    assert not infer_shapes(g).errors
    assert verify(g) == []
    assert_valid(g)


def test_cycle():
    g = small()
    g.nx.add_edge("r", "c", port=1)
    problems = verify(g)
    assert any("cycle" in p for p in problems)
    with pytest.raises(InvalidGraph, match="cycle"):
        assert_valid(g)


def test_unknown_op():
    g = small()
    g.node("r").op = "rleu"
    assert verify(g) == ["'r' has unknown op 'rleu'"]


def test_port_gap_and_duplicate():
    g = small()
    for _, _, key, data in g.nx.in_edges("a", keys=True, data=True):
        if data["port"] == 1:
            data["port"] = 2
    assert any("ports [0, 2]" in p for p in verify(g))
    g = small()
    for _, _, data in g.nx.in_edges("a", data=True):
        data["port"] = 0
    assert any("ports [0, 0]" in p for p in verify(g))


def test_input_count():
    g = small()
    g.set_inputs("a", ["c"])
    assert any("'a' (add) has 1 inputs" in p for p in verify(g))
    g = small()
    g.set_inputs("r", ["c", "x"])
    assert any("'r' (relu) has 2 inputs" in p for p in verify(g))


def test_input_nodes():
    g = small()
    g.inputs.remove("x")
    assert "input node 'x' is not listed in graph.inputs" in verify(g)
    g = small()
    g.add(make_node("input", "y", shape=(3, 8, 8)), ["x"])
    g.inputs.append("y")
    assert any("'y' (input) has 1 inputs" in p for p in verify(g))
    g = small()
    g.inputs.append("c")
    assert "graph.inputs lists 'c', which is a conv, not an input" in verify(g)
    g = small()
    g.inputs.append("nope")
    assert "graph.inputs lists 'nope', which is not a node" in verify(g)


def test_heads():
    g = small()
    g.heads["boxes"] = "gone"
    assert verify(g) == ["head 'boxes' points at 'gone', which is not a node"]


def test_attr_keys():
    g = small()
    g.node("c").attrs["kernal"] = (3, 3)
    assert verify(g) == ["'c' has attr 'kernal', which conv does not declare"]
    g.node("c").attrs.pop("kernal")
    g.node("c").attrs["_fused"] = True  # internal keys start with "_"
    assert verify(g) == []
    INTERNAL_ATTRS.add("activation")
    try:
        g.node("c").attrs["activation"] = "relu"
        assert verify(g) == []
    finally:
        INTERNAL_ATTRS.discard("activation")
        del g.node("c").attrs["activation"]
    del g.node("c").attrs["filters"]
    assert verify(g) == ["'c' lacks the required option 'filters' of conv"]


def test_node_data():
    g = small()
    g.nx.add_node("ghost")
    assert "'ghost' has no Node attached" in verify(g)
    g = small()
    g.node("r").name = "other"
    assert "node stored as 'r' is named 'other'" in verify(g)


def test_types_after_inference():
    g = small()
    infer_shapes(g)
    g.node("a").type = None
    assert verify(g) == ["'a' has no type after shape inference"]
    g = small()
    g.add(make_node("dense", "bad", units=3), ["c"])  # dense on a feature map: inference fails
    infer_shapes(g)
    assert verify(g) == ["'bad' has no type after shape inference"]
    assert verify(g, typed=False) == []


def test_hand_built_node_with_alias():
    g = Graph()
    g.add(Node("x", "input", {"shape": (4,)}))
    g.inputs.append("x")
    g.add(Node("f", "fc", {"units": 2}), ["x"])
    assert verify(g) == []
    infer_shapes(g)
    assert verify(g) == [] and g.node("f").type.shape == (2,)
