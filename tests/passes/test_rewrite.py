"""The pattern-rewrite helper (RewritePass in cnndsl/passes/base.py): the match loop, the sole-reader
rule, guards that decline with a reason, and `--pass-stats` printing what fired and why matches
were declined, on the ported fusion passes."""
from __future__ import annotations

import pytest
from passes_testutil import graph_of, ops, run_pass

from cnndsl.passes.base import INFERENCE, TRAINING, Match, RewritePass, absorb
from cnndsl.passes.fuse_backward import FuseBackward
from cnndsl.passes.fuse_batchnorm_activation import FuseBatchnormActivation
from cnndsl.passes.fuse_conv_activation import FuseConvActivation
from cnndsl.passes.fuse_conv_pool import FuseConvPool
from cnndsl.passes.pipeline import optimize


def _no_sigmoid(graph, m, ctx):
    return "sigmoid refused by the test" if graph.node(m.consumer).op == "sigmoid" else None


class DropActivation(RewritePass):
    """A toy pass: a conv's sole relu/sigmoid reader is removed (not a valid rewrite numerically,
    only the helper's mechanics)."""

    name = "drop_activation"
    ops = ("conv",)
    then = ("relu", "sigmoid")
    guards = (_no_sigmoid,)

    def rewrite(self, graph, m: Match, ctx) -> str:
        absorb(graph, m.node, m.consumer)
        return f"dropped {m.consumer}"


def test_helper_fires_declines_and_ignores_other_readers():
    g = graph_of("network N {\n input x: 1x6x6\n a = conv(x) 2 padding=same\n ra = relu(a)\n"
                 " b = conv(ra) 2 padding=same\n sb = sigmoid(b)\n c = conv(sb) 2 padding=same\n r1 = relu(c)\n"
                 " r2 = relu(c)\n d = conv(x) 2 padding=same\n"
                 " m = maxpool(d) 2\n add(r1, r2) -> out\n o2 = add(m, m) -> out2\n}")
    out, ctx = run_pass(g, DropActivation())
    assert "ra" not in out and "sb" in out and "r1" in out and "r2" in out
    assert dict(ctx.stats["drop_activation"]) == {"dropped ra": 1}
    assert ctx.declines["drop_activation"] == {
        "b -> sb": "sigmoid refused by the test",
        "c -> r1": "'c' has 2 readers: its value must stay",
        "c -> r2": "'c' has 2 readers: its value must stay",
    }  # d -> m is no match at all: maxpool is not a `then` kind


def test_gelu_fuses_at_inference_but_not_in_training_and_says_why():
    src = "network N {\n input x: 1x6x6\n c = conv(x) 2\n g = gelu(c)\n maxpool(g) 2 -> out\n}"
    inference, _ = run_pass(graph_of(src), FuseConvActivation(), mode=INFERENCE)
    assert "g" not in inference and inference.node("c").attrs["activation"] == "gelu"
    training, ctx = run_pass(graph_of(src), FuseConvActivation(), mode=TRAINING)
    assert "g" in training and training.node("c").op == "conv"
    assert ctx.declines["fuse_conv_activation"] == {
        "c -> g": "gelu's gradient needs its input, which the fused layer does not keep (training)"}


def test_batchnorm_activation_declines_input_gradient_in_training():
    src = "network N {\n input x: 1x6x6\n b = batchnorm(x)\n s = silu(b)\n maxpool(s) 2 -> out\n}"
    _, ctx = run_pass(graph_of(src), FuseBatchnormActivation(), mode=TRAINING)
    assert "silu's gradient needs its input" in ctx.declines["fuse_batchnorm_activation"]["b -> s"]


@pytest.mark.parametrize("act, fuses", [("relu", True), ("elu", True), ("silu", False), ("hardswish", False)])
def test_pool_fusion_needs_a_monotone_activation(act, fuses):
    g = optimize(graph_of(f"network N {{\n input x: 1x6x6\n c = conv(x) 2 padding=same\n a = {act}(c)\n"
                          f" p = maxpool(a) 2\n flatten(p)\n dense 3 -> out\n}}"), INFERENCE, 2)
    assert ("fused_conv_pool" in ops(g)) == fuses
    if not fuses:
        _, ctx = run_pass(g, FuseConvPool())
        assert ctx.declines["fuse_conv_pool"]["c -> p"] == f"{act} is not monotone: the max pool cannot come before it"


def test_residual_conv_keeps_its_backward_unfused_and_says_why():
    from cnndsl.training_graph import LossSpec
    from cnndsl.passes.base import PassContext

    src = ("network N {\n input x: 2x4x4\n h = conv(x) 2 padding=same\n c = conv(h) 2 padding=same\n"
           " s = add(h, c)\n r = relu(s)\n flatten(r)\n dense 3 -> logits\n}")
    ctx = PassContext()
    optimize(graph_of(src), TRAINING, 2, losses=[LossSpec("logits", "cross_entropy")], ctx=ctx)
    assert ctx.stats["fuse_residual"]["conv + add + relu"] == 1
    (where, why), = ctx.declines["fuse_backward"].items()
    assert where == "c.grad_epilogue" and "must stay materialized" in why
    assert isinstance(FuseBackward(), RewritePass)


def test_pass_stats_cli_prints_declines(tmp_path):
    from click.testing import CliRunner

    import cnndsl.cli.compile  # noqa: F401  (registers the command)
    from cnndsl.cli.main import cli

    path = tmp_path / "n.cnn"
    path.write_text("network N {\n input x: 1x6x6\n c = conv(x) 2 padding=same\n g = gelu(c)\n maxpool(g) 2\n"
                    " flatten\n dense 3 -> logits\n}\ntrain {\n loss logits cross_entropy\n}\n")
    r = CliRunner().invoke(cli, ["compile", str(path), "--pass-stats"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "fuse_conv_activation     conv + gelu" in r.output
    assert "declined:" in r.output and "gelu is not monotone: the max pool cannot come before it" in r.output
    r = CliRunner().invoke(cli, ["compile", str(path), "--train", "--pass-stats"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "c -> g: gelu's gradient needs its input" in r.output
