"""remove_dropout: before/after, and where it must not fire."""
from passes_testutil import body, graph_of, run_pass

from cnndsl.passes.base import TRAINING
from cnndsl.passes.pipeline import optimize
from cnndsl.passes.remove_dropout import RemoveDropout

NET = """
network D {
  input x: [8]
  h = dense 4
  d = dropout(h) 0.5
  dense(d) 2 -> out
}
"""


def test_dropout_is_removed_at_inference():
    g, ctx = run_pass(graph_of(NET), RemoveDropout())
    assert body(g) == [
        "input x: [8]",
        "h = dense(x) units=4 bias=true",
        "out = dense(h) units=2 bias=true -> out",
    ]
    assert ctx.stats["remove_dropout"]["dropout removed"] == 1


def test_dropout_stays_in_training():
    g = optimize(graph_of(NET), TRAINING, 3, disabled=["autodiff"])
    assert "dropout" in [n.op for n in g.nodes()]


def test_a_dropout_head_stays():
    g, ctx = run_pass(graph_of("network D {\n input x: [8]\n h = dense 4\n dropout(h) 0.5 -> out\n}"), RemoveDropout())
    assert [n.op for n in g.nodes()][-1] == "dropout" and not ctx.stats
