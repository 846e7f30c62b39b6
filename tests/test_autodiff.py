"""The autodiff pass: structure of the training graph, and whole-network gradient checks.

The gradient check runs every example network (batch 2) through the compiled
training graph and compares the parameter gradient it writes with central
finite differences of the loss along random directions, computed with the
same compiled evaluation graph. Dropout masks depend only on (seed, step), so
both see the same network.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.model import Model
from cnndsl.ir.dump import dump
from cnndsl.passes.autodiff import Autodiff
from cnndsl.passes.base import TRAINING, PassContext
from cnndsl.training_graph import LossSpec, build_training_graph
from cnndsl.train.optim import SGD

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.cnn"))


def _model(text: str, seed: int = 0) -> Model:
    return Model(cnndsl.loads(text), seed=seed)


LENET = """
network L {
  input image: 1x12x12
  c1 = conv 4 kernel=3 padding=same relu
  maxpool 2
  flatten
  dropout 0.25
  dense 5 -> logits
}
"""


def test_no_gradient_for_the_input_image():
    m = _model(LENET)
    g = build_training_graph(m.graph, m.losses)
    ops = {n.name: n.op for n in g.nodes()}
    assert "c1.grad_params" in ops
    assert "c1.grad_input" not in ops  # the image needs no gradient
    assert all(src != "image" for n in g.nodes() if n.op.endswith("grad_input") for src in g.inputs_of(n.name))


def test_the_autodiff_pass_rewrites_its_graph_in_place():
    """The pass turns the graph object it is given into the training graph (no copy handed back),
    and builds what build_training_graph builds, which leaves its argument as it was."""
    m = _model(LENET)
    before = dump(m.graph)
    expected = build_training_graph(m.graph, m.losses, frozen={"c1"})
    assert dump(m.graph) == before
    graph = m.graph.copy()
    nodes_object = graph.nx
    assert Autodiff().run(graph, PassContext(mode=TRAINING, losses=m.losses, frozen=frozenset({"c1"})))
    assert graph.nx is nodes_object and graph.name == expected.name
    assert dump(graph) == dump(expected)
    assert graph.attrs["optimizer_step"] == expected.attrs["optimizer_step"]


def test_frozen_layer_gets_no_parameter_gradient():
    m = _model(LENET)
    g = build_training_graph(m.graph, m.losses, frozen={"c1"})
    names = set(g.topo_order())
    assert "c1.grad_params" not in names
    assert "logits.grad_params" in names
    # nothing trainable feeds maxpool1 any more, so no gradient flows below the dense layer
    assert not any(n.startswith("maxpool1.grad") for n in names)


def test_tensor_read_twice_sums_its_gradients():
    m = _model("""
network Twice {
  input image: 2x6x6
  c = conv 2 kernel=3 padding=same
  s = add(c, c)
  flatten
  dense 3 -> out
}""")
    g = build_training_graph(m.graph, m.losses)
    assert g.node("grad.c").op == "add"
    assert g.inputs_of("grad.c") == ["flatten1.grad_input", "flatten1.grad_input"]


def test_optimizer_step_waits_for_every_parameter_gradient():
    m = _model(LENET)
    g = build_training_graph(m.graph, m.losses)
    writers = {n.name for n in g.nodes() if n.op.endswith("grad_params") or n.op == "batchnorm_grad"}
    assert set(g.inputs_of("optimizer_step")) == writers


def _loss_at(model: Model, x, targets, step: int) -> float:
    exe = model.executable("loss_train", len(x))
    exe.run(model._feeds(model.prepare(x), targets), training=True, step=step, seed=model.seed)
    return model._loss_value(exe)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_whole_network_gradient_matches_finite_differences(path):
    program = cnndsl.load(path)
    model = Model(program, seed=3, init_from_file=False)  # the fine-tuning example needs no pretrained file here
    rng = np.random.default_rng(0)
    x = rng.random((2,) + model.input_shape).astype(np.float32)
    targets = model.example_targets(2, rng)
    model.set_optimizer(SGD(model.store.params, lr=0.0))  # gradients only; lr 0 leaves weights alone
    model.train_step(x, targets, step=5)
    grad = model.store.params.grad.copy()
    theta = model.store.params.data
    base = theta.copy()
    trainable = model.store.params.lr_mult > 0
    for trial in range(3):
        v = rng.standard_normal(theta.shape).astype(np.float32) * trainable
        v /= np.linalg.norm(v)
        eps = 1e-2
        theta[:] = base + eps * v
        up = _loss_at(model, x, targets, step=5)
        theta[:] = base - eps * v
        down = _loss_at(model, x, targets, step=5)
        theta[:] = base
        numeric = (up - down) / (2 * eps)
        analytic = float(grad.astype(np.float64) @ v.astype(np.float64))
        assert abs(numeric - analytic) <= 2e-2 * max(1.0, abs(numeric), abs(analytic)) + 2e-3, (
            f"{path.stem} trial {trial}: finite differences {numeric:.6f}, backward pass {analytic:.6f}")
