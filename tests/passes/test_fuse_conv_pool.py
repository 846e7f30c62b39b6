"""fuse_conv_pool: a fused conv followed by a 2x2 max pool -> fused_conv_pool, at inference only;
where it must not fire; and the same outputs as the unfused graph on every kernel path."""
import numpy as np
import pytest
from passes_testutil import assert_close, body, graph_of, ops, random_store, run_inference, run_pass

from cnndsl.backend.executor import load_backend
from cnndsl.training_graph import LossSpec
from cnndsl.passes.base import TRAINING
from cnndsl.passes.fuse_conv_pool import FuseConvPool
from cnndsl.passes.pipeline import optimize


def net(body_text: str, shape: str = "2x8x8") -> str:
    return f"network F {{\n input x: {shape}\n {body_text}\n}}"


def test_fused_conv_and_pool_fuse():
    g0 = optimize(graph_of(net("c = conv(x) 3 padding=same relu\n p = maxpool(c) 2\n flatten(p) -> out")),
                  "inference", 2, disabled=("fuse_conv_pool",))
    g, ctx = run_pass(g0, FuseConvPool())
    assert body(g)[1:] == [
        "c = fused_conv_pool(x) filters=3 kernel=3x3 stride=1x1 padding=same dilation=1x1 groups=1 bias=true "
        "residual=false activation=relu alpha=0.01",
        "out = flatten(c) -> out",
    ]
    node = g.node("c")
    assert node.type.shape == (3, 4, 4) and node.geometry.out_hw == (8, 8)
    assert node.params == {"weight": (3, 2, 3, 3), "bias": (3,)}  # weight names unchanged
    assert node.meta["rewritten_by"] == "fuse_conv_activation, fuse_conv_pool"
    assert sum(ctx.stats["fuse_conv_pool"].values()) == 1


def test_a_conv_without_activation_fuses_and_floor_rounding_is_kept():
    g, _ = run_pass(graph_of(net("c = conv(x) 3\n p = maxpool(c) 2 rounding=floor\n flatten(p) -> out", "2x7x7")),
                    FuseConvPool())
    assert ops(g) == ["input", "fused_conv_pool", "flatten"]
    assert g.node("c").type.shape == (3, 2, 2) and g.node("c").geometry.out_hw == (5, 5)  # 5x5 floor-pooled


NEGATIVE = {  # (input, body): each stopped by one guard only
    "3x3 window": ("2x9x9", "c = conv(x) 3 padding=same\n p = maxpool(c) 3\n flatten(p) -> out"),
    "overlapping 2x2": ("2x8x8", "c = conv(x) 3 padding=same\n p = maxpool(c) 2 stride=1\n flatten(p) -> out"),
    "padded pool": ("2x8x8", "c = conv(x) 3 padding=same\n p = maxpool(c) 2 padding=1\n flatten(p) -> out"),
    "average pool": ("2x8x8", "c = conv(x) 3 padding=same\n p = avgpool(c) 2\n flatten(p) -> out"),
    "conv read twice": ("2x8x8", "c = conv(x) 2 padding=same\n p = maxpool(c) 2\n q = maxpool(c) 2\n"
                                 " k = concat(p, q)\n flatten(k) -> out"),
    "conv is a head": ("2x8x8", "c = conv(x) 3 padding=same -> feat\n p = maxpool(c) 2\n flatten(p) -> out"),
    "pool is a head": ("2x8x8", "c = conv(x) 3 padding=same\n maxpool(c) 2 -> out"),
    "ceil rounding": ("2x7x7", "c = conv(x) 3\n p = maxpool(c) 2 rounding=ceil\n flatten(p) -> out"),
}


@pytest.mark.parametrize("case", NEGATIVE, ids=list(NEGATIVE))
def test_does_not_fire(case):
    shape, text = NEGATIVE[case]
    g0 = graph_of(net(text, shape))
    g, ctx = run_pass(g0, FuseConvPool())
    assert body(g) == body(g0) and not ctx.stats


def test_not_in_training():
    g0 = graph_of(net("c = conv(x) 3 padding=same\n p = maxpool(c) 2\n flatten(p) -> out"))
    assert "fused_conv_pool" not in ops(optimize(g0, TRAINING, 3, losses=[LossSpec("out", "mse")]))
    assert "fused_conv_pool" in ops(optimize(g0, "inference", 2))


CASES = {
    "relu": "c = conv(x) 4 padding=same relu\n p = maxpool(c) 2\n flatten(p) -> out",
    "leaky relu, odd map (floor)": "c = conv(x) 4 kernel=2 leaky_relu(0.2)\n p = maxpool(c) 2 rounding=floor\n flatten(p) -> out",
    "sigmoid, stride 2": "c = conv(x) 3 kernel=3 stride=2 padding=same sigmoid\n p = maxpool(c) 2\n flatten(p) -> out",
    "tanh, no bias, 1x1": "c = conv(x) 5 kernel=1 bias=false tanh\n p = maxpool(c) 2\n flatten(p) -> out",
    "batchnorm folded": "c = conv(x) 4 padding=same\n b = batchnorm(c) relu\n p = maxpool(b) 2\n flatten(p) -> out",
    "residual": "c = conv(x) 2 padding=same\n s = add(c, x)\n r = relu(s)\n p = maxpool(r) 2\n flatten(p) -> out",
    "grouped": "c = conv(x) 4 padding=same groups=2 relu\n p = maxpool(c) 2\n flatten(p) -> out",
    "depthwise (direct path)": "c = conv(x) 2 kernel=3 padding=same groups=2 relu\n p = maxpool(c) 2\n flatten(p) -> out",
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_same_outputs_as_the_unfused_graph(case, batch):
    shape = "2x9x9" if "odd" in case else "2x16x20" if "depthwise" in case else "2x8x8"
    g0 = graph_of(net(CASES[case], shape))
    fused = optimize(g0, "inference", 2, backend=load_backend("cpu"))
    plain = optimize(g0, "inference", 2, backend=load_backend("cpu"), disabled=("fuse_conv_pool",))
    assert "fused_conv_pool" in ops(fused) and "fused_conv_pool" not in ops(plain), case
    store = random_store(g0, seed=3)
    x = np.random.default_rng(batch).standard_normal((batch,) + g0.node("x").type.shape).astype(np.float32)
    want, got = run_inference(plain, store, x), run_inference(fused, store, x)
    for head in want:
        assert_close(got[head], want[head], what=f"{case}: {head}")
