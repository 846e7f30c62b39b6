"""fuse_conv_activation: conv + bias + activation -> fused_conv, and where it must not fire."""
import pytest
from passes_testutil import body, graph_of, run_pass

from cnndsl.passes.base import TRAINING
from cnndsl.passes.fuse_conv_activation import FuseConvActivation


@pytest.mark.parametrize("act, shown", [("relu", "relu alpha=0.01"), ("leaky_relu(c) 0.2", "leaky_relu alpha=0.2"),
                                        ("sigmoid", "sigmoid alpha=0.01"), ("tanh", "tanh alpha=0.01")])
def test_conv_and_activation_fuse(act, shown):
    op = act if "(" in act else f"{act}(c)"
    g, ctx = run_pass(graph_of(f"network F {{\n input x: 2x6x6\n c = conv(x) 3 padding=same\n a = {op}\n"
                               f" maxpool(a) 2 -> out\n}}"), FuseConvActivation())
    assert body(g)[1:] == [
        "c = fused_conv(x) filters=3 kernel=3x3 stride=1x1 padding=same dilation=1x1 groups=1 bias=true "
        f"residual=false activation={shown}",
        "out = maxpool(c) kernel=2x2 padding=0x0 -> out",
    ]
    assert g.node("c").params == {"weight": (3, 2, 3, 3), "bias": (3,)}  # weight names unchanged
    assert g.node("c").meta["rewritten_by"] == "fuse_conv_activation"
    assert sum(ctx.stats["fuse_conv_activation"].values()) == 1


def test_fuses_in_training_mode_too():
    g, _ = run_pass(graph_of("network F {\n input x: 2x6x6\n c = conv(x) 3\n r = relu(c)\n maxpool(r) 2 -> out\n}"),
                    FuseConvActivation(), mode=TRAINING)
    assert body(g)[1].startswith("c = fused_conv(x)") and body(g)[1].endswith("activation=relu alpha=0.01")


NEGATIVE = {
    "conv read twice": "c = conv(x) 3 padding=same\n a = relu(c)\n add(a, c) -> out",
    "conv is a head": "c = conv(x) 3 -> feat\n relu(c) -> out",
    "activation is a head": "c = conv(x) 3\n relu(c) -> out",
    "softmax is not fusable": "c = conv(x) 3\n s = softmax(c)\n maxpool(s) 2 -> out",
    "already activated": "c = conv(x) 3\n a = relu(c)\n b = relu(a)\n maxpool(b) 2 -> out",
}


@pytest.mark.parametrize("case", NEGATIVE, ids=list(NEGATIVE))
def test_does_not_fire(case):
    g0 = graph_of(f"network F {{\n input x: 2x6x6\n {NEGATIVE[case]}\n}}")
    g, ctx = run_pass(g0, FuseConvActivation())
    if case == "already activated":  # the first relu fuses, the second must stay a relu
        assert [n.op for n in g.nodes()] == ["input", "fused_conv", "relu", "maxpool"]
        return
    assert body(g) == body(g0) and not ctx.stats


def test_no_fusion_into_an_op_the_backend_cannot_run(monkeypatch):
    """A backend without a fused_conv kernel (e.g. a new one) keeps the conv and its relu."""
    from cnndsl.backend.executor import load_backend
    from cnndsl.ops.registry import get_op
    from cnndsl.passes.pipeline import optimize

    load_backend("cpu")
    net = graph_of("network F {\n input x: 2x6x6\n c = conv(x) 3\n r = relu(c)\n maxpool(r) 2 -> out\n}")
    assert "fused_conv" in [n.op for n in optimize(net, "inference", 2, backend="cpu").nodes()]
    monkeypatch.delitem(get_op("fused_conv").kernels, "cpu")
    assert [n.op for n in optimize(net, "inference", 2, backend="cpu").nodes()] == ["input", "conv", "relu", "maxpool"]


def test_a_backend_that_is_not_loaded_is_refused():
    """The passes read the op registry that a loaded backend fills; they never load one, so a name
    with no launchers registered (a typo, or a backend not loaded yet) is an error, not a silent
    'nothing fuses'."""
    from cnndsl.passes.pipeline import optimize

    net = graph_of("network F {\n input x: 2x6x6\n c = conv(x) 3\n r = relu(c)\n maxpool(r) 2 -> out\n}")
    with pytest.raises(ValueError, match="backend 'tpu' is not loaded"):
        optimize(net, "inference", 2, backend="tpu")
