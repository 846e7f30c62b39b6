"""fuse_batchnorm_activation: batchnorm + activation -> fused_batchnorm, its backward folded into
fused_batchnorm_grad by fuse_backward, where neither must fire, and the same numbers as -O0."""
from types import SimpleNamespace

import numpy as np
import pytest
from passes_testutil import assert_close, body, graph_of, ops, random_store, run_inference, run_pass

from cnndsl.frontend import loads
from cnndsl.model import Model
from cnndsl.ops.registry import get_op
from cnndsl.training_graph import LossSpec
from cnndsl.passes.base import INFERENCE, TRAINING, PassContext
from cnndsl.passes.fuse_batchnorm_activation import FuseBatchnormActivation
from cnndsl.passes.pipeline import optimize
from cnndsl.train.optim import SGD, make_optimizer

ACTIVATIONS = [("relu", "relu alpha=0.01"), ("leaky_relu(b) 0.2", "leaky_relu alpha=0.2"),
               ("sigmoid", "sigmoid alpha=0.01"), ("tanh", "tanh alpha=0.01")]

# conv -> batchnorm -> activation twice: what vgg_small and resnet_tiny train
NET = """
network T {
  input x: 2x6x6
  c = conv(x) 3 padding=same
  b = batchnorm(c)
  r = relu(b)
  c2 = conv(r) 4 padding=same
  b2 = batchnorm(c2)
  t = leaky_relu(b2) 0.2
  g = global_avgpool(t)
  dense(g) 3 -> out
}
"""
LOSSES = [LossSpec("out", "cross_entropy")]


@pytest.mark.parametrize("mode", [TRAINING, INFERENCE])
@pytest.mark.parametrize("act, shown", ACTIVATIONS)
def test_batchnorm_and_activation_fuse(act, shown, mode):
    op = act if "(" in act else f"{act}(b)"
    g, ctx = run_pass(graph_of(f"network F {{\n input x: 2x6x6\n p = maxpool(x) 2\n b = batchnorm(p)\n a = {op}\n"
                               f" global_avgpool(a) -> out\n}}"), FuseBatchnormActivation(), mode=mode)
    assert body(g)[1:] == [
        "p = maxpool(x) kernel=2x2 padding=0x0",
        f"b = fused_batchnorm(p) eps=1e-05 momentum=0.1 activation={shown}",
        "out = global_avgpool(b) -> out",
    ]
    assert g.node("b").params == {"gamma": (2,), "beta": (2,)}  # weight names unchanged: b.gamma, ...
    assert g.node("b").meta["buffers"] == {"running_mean": (2,), "running_var": (2,)}
    assert g.node("b").meta["rewritten_by"] == "fuse_batchnorm_activation"
    assert ctx.stats["fuse_batchnorm_activation"] == {f"batchnorm + {op.split('(')[0]}": 1}


NEGATIVE = {
    "batchnorm read twice": "b = batchnorm(x)\n a = relu(b)\n add(a, b) -> out",
    "batchnorm is a head": "b = batchnorm(x) -> feat\n relu(b) -> out",
    "activation is a head": "b = batchnorm(x)\n relu(b) -> out",
    "softmax is not fusable": "b = batchnorm(x)\n s = softmax(b)\n maxpool(s) 2 -> out",
    "not an activation": "b = batchnorm(x)\n p = maxpool(b) 2\n relu(p) -> out",
    "already activated": "b = batchnorm(x)\n a = relu(b)\n r = relu(a)\n maxpool(r) 2 -> out",
}


@pytest.mark.parametrize("case", NEGATIVE, ids=list(NEGATIVE))
def test_does_not_fire(case):
    g0 = graph_of(f"network F {{\n input x: 2x6x6\n {NEGATIVE[case]}\n}}")
    g, ctx = run_pass(g0, FuseBatchnormActivation(), mode=TRAINING)
    if case == "already activated":  # the first relu fuses, the second must stay a relu
        assert ops(g) == ["input", "fused_batchnorm", "relu", "maxpool"]
        return
    assert body(g) == body(g0) and not ctx.stats


def test_a_fused_batchnorm_without_activation_takes_one():
    """As written in source (a dump of an optimized graph parses back): activation=none has room."""
    g, _ = run_pass(graph_of("network F {\n input x: 2x6x6\n b = fused_batchnorm(x)\n r = tanh(b)\n"
                             " global_avgpool(r) -> out\n}"), FuseBatchnormActivation())
    assert body(g)[1] == "b = fused_batchnorm(x) eps=1e-05 momentum=0.1 activation=tanh alpha=0.01"


def test_inference_folds_into_the_conv_instead():
    """At inference conv -> batchnorm -> relu stays one fused_conv (folded batchnorm + relu); the
    batchnorm after the pool, which cannot be folded, fuses with its relu."""
    net = graph_of("network F {\n input x: 2x6x6\n c = conv(x) 3 padding=same\n b = batchnorm(c)\n r = relu(b)\n"
                   " p = maxpool(r) 3\n b2 = batchnorm(p)\n r2 = relu(b2)\n global_avgpool(r2) -> out\n}")
    ctx = PassContext()
    g = optimize(net, INFERENCE, 2, verify=True, ctx=ctx)
    assert ops(g) == ["input", "fused_conv", "maxpool", "fused_batchnorm", "global_avgpool"]
    assert g.node("c").attrs["folded_bn"] == "b" and g.node("c").attrs["activation"] == "relu"
    assert ctx.stats["fuse_batchnorm_activation"] == {"batchnorm + relu": 1}
    g = optimize(net, TRAINING, 2, losses=[LossSpec("out", "mse")], verify=True)
    assert [n.name for n in g.nodes() if n.op == "fused_batchnorm"] == ["b", "b2"]


def test_no_fusion_into_ops_the_backend_cannot_run(monkeypatch):
    from cnndsl.backend.executor import load_backend

    load_backend("cpu")
    net = graph_of("network F {\n input x: 2x6x6\n b = batchnorm(x)\n r = relu(b)\n global_avgpool(r) -> out\n}")
    monkeypatch.delitem(get_op("epilogue_grad").kernels, "cpu")  # training also needs the activation's gradient
    assert "fused_batchnorm" in ops(optimize(net, INFERENCE, 2, backend="cpu"))
    assert "fused_batchnorm" not in ops(optimize(net, TRAINING, 2, losses=[LossSpec("out", "mse")], backend="cpu"))
    monkeypatch.delitem(get_op("fused_batchnorm").kernels, "cpu")
    assert ops(optimize(net, INFERENCE, 2, backend="cpu")) == ["input", "batchnorm", "relu", "global_avgpool"]


def _train_graph(**kw):
    ctx = PassContext()
    return optimize(graph_of(NET), TRAINING, 2, losses=LOSSES, verify=True, ctx=ctx, **kw), ctx


def test_backward_fuses_into_fused_batchnorm_grad():
    g, ctx = _train_graph()
    kinds = ops(g)
    assert kinds.count("fused_batchnorm") == 2 and kinds.count("fused_batchnorm_grad") == 2
    assert not {"epilogue_grad", "batchnorm_grad", "activation_grad", "relu", "leaky_relu"} & set(kinds)
    assert g.node("b.grad_fused").attrs == {"forward": "b", "like": 1}
    assert g.inputs_of("b.grad_fused")[1:] == ["c", "b"]  # dy, x, y
    assert g.node("b.grad_fused").type == g.node("c").type
    assert {"b.grad_fused", "b2.grad_fused"} <= set(g.inputs_of("optimizer_step"))  # they write dgamma, dbeta
    assert ctx.stats["fuse_batchnorm_activation"] == {"batchnorm + relu": 1, "batchnorm + leaky_relu": 1}
    assert ctx.stats["fuse_backward"]["batchnorm backward fused"] == 2


def test_backward_without_fuse_backward_keeps_two_nodes():
    g, ctx = _train_graph(disabled=["fuse_backward"])
    assert g.node("b.grad_epilogue").op == "epilogue_grad" and g.node("b.grad").op == "batchnorm_grad"
    assert g.inputs_of("b.grad")[0] == "b.grad_epilogue" and g.node("b.grad").attrs["forward"] == "b"
    assert "fused_batchnorm_grad" not in ops(g)


def test_frozen_batchnorm_fuses_without_parameter_gradients():
    g, _ = _train_graph(frozen={"b2"})
    assert g.node("b2.grad_fused").op == "fused_batchnorm_grad"
    assert "b2.grad_fused" not in g.inputs_of("optimizer_step") and "b.grad_fused" in g.inputs_of("optimizer_step")


def _one_step(graph, level: int, x, y):
    model = Model(SimpleNamespace(graph=graph, training=None), seed=0, opt_level=level)
    model.store.load_state_dict(random_store(graph, 1).state_dict())  # non-trivial statistics and biases
    model.set_optimizer(make_optimizer("sgd", model.store.params, lr=0.1, momentum=0.9))
    loss, outs = model.train_step(x, y, step=1)
    return loss, outs["out"].copy(), model.store.params.grad.copy(), model.store.state_dict(), ops(model._graph("train"))


@pytest.mark.parametrize("backward", ["fused", "unfused"])
def test_one_training_step_matches_O0(backward, monkeypatch):
    """Loss, outputs, gradients, updated weights and running statistics as at -O0, with the backward
    fused (fused_batchnorm_grad) and not (epilogue_grad + batchnorm_grad of the fused forward)."""
    from cnndsl.backend.executor import load_backend

    load_backend("cpu")
    if backward == "unfused":
        monkeypatch.delitem(get_op("fused_batchnorm_grad").kernels, "cpu")
    graph = graph_of(NET)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 2, 6, 6)).astype(np.float32), rng.integers(0, 3, 4)
    loss0, out0, grad0, state0, _ = _one_step(graph, 0, x, y)
    loss2, out2, grad2, state2, kinds = _one_step(graph, 2, x, y)
    assert ("fused_batchnorm_grad" in kinds) == (backward == "fused") and "fused_batchnorm" in kinds
    assert abs(loss2 - loss0) <= 1e-5 * max(1.0, abs(loss0))
    assert_close(out2, out0, rtol=1e-5, what="outputs")
    assert_close(grad2, grad0, rtol=1e-4, what="gradients")
    for name in state0:  # weights after the step, and b.running_mean / b.running_var
        assert_close(state2[name], state0[name], rtol=1e-5, what=f"updated {name}")


def test_inference_outputs_match_O0():
    net = graph_of("network F {\n input x: 3x6x6\n b0 = batchnorm(x)\n r0 = sigmoid(b0)\n c = conv(r0) 4\n"
                   " p = avgpool(c) 2\n b = batchnorm(p)\n r = tanh(b)\n global_avgpool(r) -> out\n}")
    store = random_store(net, 2)
    x = np.random.default_rng(2).standard_normal((3, 3, 6, 6)).astype(np.float32)
    best = optimize(net, INFERENCE, 2, verify=True)
    assert ops(best).count("fused_batchnorm") == 2
    assert_close(run_inference(best, store, x)["out"], run_inference(optimize(net, INFERENCE, 0), store, x)["out"])


def test_frozen_statistics_are_honoured():
    """A batchnorm frozen with its statistics (transfer learning) normalizes training batches with the
    running ones and never updates them, fused or not."""
    src = NET + "train {\n  freeze up_to b\n  loss out cross_entropy\n}\n"
    model = Model(loads(src, "t.cnn"), seed=0)
    assert model._graph("train").node("b").op == "fused_batchnorm"
    assert model._graph("train").node("b").meta["frozen_statistics"]
    model.set_optimizer(SGD(model.store.params, lr=0.0))
    before = model.store.state_dict()
    x = np.random.default_rng(3).standard_normal((4, 2, 6, 6)).astype(np.float32)
    model.train_step(x, np.arange(4) % 3, 0)
    after = model.store.state_dict()
    assert np.array_equal(after["b.running_mean"], before["b.running_mean"])
    assert not np.array_equal(after["b2.running_mean"], before["b2.running_mean"])  # b2 still trains
