"""fuse_residual: conv -> add -> relu into the conv's epilogue, and where it must not fire."""
from passes_testutil import body, graph_of, run_pass

from cnndsl.passes.fuse_residual import FuseResidual

BLOCK = """
network R {
  input x: 4x6x6
  h = conv(x) 4 padding=same
  c = conv(h) 4 padding=same
  s = add(x, c)
  r = relu(s)
  maxpool(r) 2 -> out
}
"""


def test_conv_add_relu_fuse():
    g, ctx = run_pass(graph_of(BLOCK), FuseResidual())
    assert body(g)[2:] == [
        "c = fused_conv(h, x) filters=4 kernel=3x3 stride=1x1 padding=same dilation=1x1 groups=1 bias=true "
        "residual=true activation=relu alpha=0.01",
        "out = maxpool(c) kernel=2x2 padding=0x0 -> out",
    ]
    assert ctx.stats["fuse_residual"]["conv + add + relu"] == 1


def test_add_without_activation_fuses_alone():
    net = BLOCK.replace("  r = relu(s)\n  maxpool(r) 2", "  maxpool(s) 2")
    g, ctx = run_pass(graph_of(net), FuseResidual())
    assert "residual=true activation=none" in body(g)[2]
    assert ctx.stats["fuse_residual"]["conv + add"] == 1


def test_does_not_fire():
    cases = [
        BLOCK.replace("s = add(x, c)", "s = add(x, c, h)"),  # three operands
        BLOCK.replace("  s = add(x, c)\n", "  s = add(x, c) -> sum\n"),  # the add is a head
        BLOCK.replace("maxpool(r) 2 -> out", "m = maxpool(r) 2\n  n = maxpool(c) 2\n  add(m, n) -> out"),  # c read twice
        "network R {\n input x: 4x6x6\n c = conv(x) 4 padding=same\n add(c, c) -> out\n}",  # conv on both ports
    ]
    for net in cases:
        g, ctx = run_pass(graph_of(net), FuseResidual())
        assert body(g) == body(graph_of(net)) and not ctx.stats, net
