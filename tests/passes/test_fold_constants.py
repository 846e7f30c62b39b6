"""fold_constants: identity ops by their options are folded; lookalikes are not."""
from passes_testutil import body, graph_of, run_pass

from cnndsl.passes.fold_constants import FoldConstants

NET = """
network F {
  input x: 2x6x6
  a = maxpool(x) kernel=1 stride=1
  b = upsample(a) 1
  c = dropout(b) 0
  d = l2pool(c) kernel=1 stride=1
  e = avgpool(d) kernel=2
  conv(e) 2 -> out
}
"""


def test_identities_are_folded():
    g, ctx = run_pass(graph_of(NET), FoldConstants())
    assert [line.split(" =")[0] for line in body(g)] == ["input x: 2x6x6", "d", "e", "out"]
    assert body(g)[1].startswith("d = l2pool(x)")  # l2pool 1x1 is |x|, not x: kept
    assert sum(ctx.stats["fold_constants"].values()) == 3


def test_real_pooling_and_dropout_stay():
    net = "network F {\n input x: 2x6x6\n a = maxpool(x) kernel=2\n b = dropout(a) 0.1\n conv(b) 2 -> out\n}"
    g, ctx = run_pass(graph_of(net), FoldConstants())
    assert body(g) == body(graph_of(net)) and not ctx.stats
