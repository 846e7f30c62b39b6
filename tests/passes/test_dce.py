"""dce: unread nodes go; inputs, heads, losses and what they read stay."""
from passes_testutil import body, graph_of, run_pass

from cnndsl.passes.dce import DeadCodeElimination

NET = "network D {\n input x: 2x4x4\n a = relu(x)\n conv(a) 2 -> out\n}"


def test_unread_branch_is_removed():
    g = graph_of(NET)
    from cnndsl.ops.build import make_node as mk
    g.add(mk("sigmoid", "orphan"), ["a"])
    g.add(mk("tanh", "orphan2"), ["orphan"])
    out, ctx = run_pass(g, DeadCodeElimination())
    assert body(out) == body(graph_of(NET))
    assert ctx.stats["dce"]["nodes removed"] == 2


def test_live_graph_is_untouched():
    out, ctx = run_pass(graph_of(NET), DeadCodeElimination())
    assert body(out) == body(graph_of(NET)) and not ctx.stats
