"""fuse_dense_activation: dense + bias + activation -> fused_dense, and where it must not fire."""
from passes_testutil import body, graph_of, run_pass

from cnndsl.passes.fuse_dense_activation import FuseDenseActivation


def test_dense_and_relu_fuse():
    g, ctx = run_pass(graph_of("network F {\n input x: [8]\n h = dense 4 bias=false\n r = relu(h)\n dense(r) 2 -> out\n}"),
                      FuseDenseActivation())
    assert body(g) == [
        "input x: [8]",
        "h = fused_dense(x) units=4 bias=false activation=relu alpha=0.01",
        "out = dense(h) units=2 bias=true -> out",
    ]
    assert g.node("h").params == {"weight": (4, 8)}
    assert ctx.stats["fuse_dense_activation"]["dense + relu"] == 1


def test_head_activation_and_shared_output_do_not_fuse():
    for net in ("network F {\n input x: [8]\n h = dense 4\n sigmoid(h) -> out\n}",
                "network F {\n input x: [8]\n h = dense 4\n r = relu(h)\n add(r, h) -> out\n}"):
        g, ctx = run_pass(graph_of(net), FuseDenseActivation())
        assert body(g) == body(graph_of(net)) and not ctx.stats
