"""dump(graph) is valid .cnn source: parsing it back and dumping again gives the same text."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnndsl.frontend import load, loads
from cnndsl.ir.dump import dump

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_round_trip(path: Path):
    g = load(path).graph
    text = dump(g)
    g2 = loads(text, f"{path.stem}.dump.cnn").graph
    assert dump(g2) == text
    # the same graph: names, ops, attributes, edges, heads, types
    assert [n.name for n in g2.nodes()] == [n.name for n in g.nodes()]
    for n in g.nodes():
        m = g2.node(n.name)
        assert (m.op, m.attrs, m.type, m.params) == (n.op, n.attrs, n.type, n.params)
        assert g2.inputs_of(n.name) == g.inputs_of(n.name)
    assert g2.heads == g.heads or set(g2.heads.items()) == set(g.heads.items())
    assert g2.inputs == g.inputs


def test_dump_is_deterministic():
    path = ROOT / "examples" / "resnet_tiny.cnn"
    assert dump(load(path).graph) == dump(load(path).graph)


def test_dump_format():
    g = loads("""
network T(k = 3) {
  rounding floor
  input x: 3x9x9
  a = conv k kernel=3 stride=2 bias=false relu
  b = conv(x) 3 kernel=3 stride=2
  add(a, b) -> out
}
""").graph
    assert dump(g).splitlines() == [
        "network T(k = 3) {",
        "  rounding = floor",
        "  input x: 3x9x9  # 3x9x9",
        "  a = conv(x) filters=3 kernel=3x3 stride=2x2 padding=0x0 dilation=1x1 groups=1 bias=false  # 3x4x4",
        "  a.relu = relu(a)  # 3x4x4",
        "  b = conv(x) filters=3 kernel=3x3 stride=2x2 padding=0x0 dilation=1x1 groups=1 bias=true  # 3x4x4",
        "  out = add(a.relu, b) -> out  # 3x4x4",
        "}",
    ]


def test_dump_of_vector_input_and_several_heads():
    g = loads("""
network V {
  input v: [100]
  h = dense 32 relu
  dense(h) 10 -> cls
  dense(h) 4 -> box
}
""").graph
    text = dump(g)
    assert "  input v: [100]  # 100" in text
    assert "-> cls" in text and "-> box" in text
    assert dump(loads(text).graph) == text
