"""cse: duplicate pure expressions merge; layers with weights, dropout and heads do not."""
from passes_testutil import body, graph_of, run_pass

from cnndsl.passes.cse import CommonSubexpressionElimination
from cnndsl.passes.dce import DeadCodeElimination
from cnndsl.passes.manager import PassManager
from cnndsl.passes.base import PassContext


def test_duplicate_activation_and_pool_merge():
    g, ctx = run_pass(graph_of("""
network C {
  input x: 2x4x4
  a = relu(x)
  b = relu(x)
  p = maxpool(a) 2
  q = maxpool(b) 2
  add(p, q) -> out
}"""), CommonSubexpressionElimination())
    assert body(g) == [
        "input x: 2x4x4",
        "a = relu(x)",
        "p = maxpool(a) kernel=2x2 padding=0x0",
        "out = add(p, p) -> out",
    ]
    assert ctx.stats["cse"]["duplicate relu merged"] == 1 and ctx.stats["cse"]["duplicate maxpool merged"] == 1
    assert "cse" in g.node("a").meta["rewritten_by"]


NOT_MERGED = """
network C {
  input x: 2x4x4
  a = conv(x) 2
  b = conv(x) 2
  d1 = dropout(x) 0.5
  d2 = dropout(x) 0.5
  s = sigmoid(x)
  t = sigmoid(x) -> t
  u = maxpool(x) kernel=2
  v = maxpool(x) kernel=2 stride=1 rounding=floor
  add(a, b) -> out
  concat(d1, d2, s) -> cat
  concat(u, u) -> uu
  concat(v, v) -> vv
}
"""


def test_weights_dropout_heads_and_different_options_do_not_merge():
    g, ctx = run_pass(graph_of(NOT_MERGED), CommonSubexpressionElimination())
    assert body(g) == body(graph_of(NOT_MERGED)) and not ctx.stats


def test_cse_then_dce_leaves_no_orphan():
    g = graph_of("network C {\n input x: 2x4x4\n a = tanh(x)\n b = tanh(x)\n c = relu(b)\n d = relu(a)\n add(c, d) -> out\n}")
    ctx = PassContext(level=3, verify=True)
    PassManager([CommonSubexpressionElimination(), DeadCodeElimination()]).run(g, ctx)
    assert [n.op for n in g.nodes()] == ["input", "tanh", "relu", "add"]
