"""fuse_backward: the activation gradient folded into the fused layer's gradient node."""
from passes_testutil import graph_of

from cnndsl.training_graph import LossSpec
from cnndsl.passes.base import PassContext, TRAINING
from cnndsl.passes.pipeline import optimize

NET = """
network B {
  input x: 2x6x6
  c = conv(x) 3 padding=same relu
  d = conv 3 padding=same
  s = add(c, d)
  r = relu(s)
  g = global_avgpool(r)
  h = dense(g) 8 relu
  dense(h) 4 -> out
}
"""


def _train(disabled=()):
    ctx = PassContext()
    g = optimize(graph_of(NET), TRAINING, 2, losses=[LossSpec("out", "cross_entropy")], disabled=disabled,
                 verify=True, ctx=ctx)
    return g, ctx


def test_conv_and_dense_backward_fuse():
    g, ctx = _train()
    ops = {n.name: n.op for n in g.nodes()}
    assert ops["c.grad_fused"] == "fused_conv_grad" and ops["h.grad_fused"] == "fused_dense_grad"
    assert g.node("h.grad_fused").attrs == {"forward": "h", "like": 1, "params_grad": True, "input_grad": True}
    assert g.node("c.grad_fused").attrs["input_grad"] is False  # x is the image: no gradient wanted
    assert ctx.stats["fuse_backward"] == {"conv backward fused": 1, "dense backward fused": 1}
    # the residual conv (d, fused with the add and relu) keeps its dz: the shortcut reads it
    assert ops["d.grad_epilogue"] == "epilogue_grad"
    assert {"conv_grad_params", "conv_grad_input"} <= set(ops.values())
    assert "optimizer_step" in ops and g.inputs_of("optimizer_step").count("c.grad_fused") == 1


def test_frozen_layer_fuses_without_parameter_gradients():
    g = optimize(graph_of(NET), TRAINING, 2, losses=[LossSpec("out", "cross_entropy")], frozen={"h"}, verify=True)
    assert g.node("h.grad_fused").attrs["params_grad"] is False and g.node("h.grad_fused").attrs["input_grad"]
    assert "h.grad_fused" not in g.inputs_of("optimizer_step")
    assert g.node("c.grad_fused").type.shape == ()  # no input gradient: an effect node


def test_disabled_leaves_three_nodes():
    g, ctx = _train(disabled=["fuse_backward"])
    assert "fused_conv_grad" not in [n.op for n in g.nodes()] and "fuse_backward" not in ctx.stats
