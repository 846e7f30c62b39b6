"""The optimizer step as a registered op (cnndsl/ops/training/optimizers.py): its attributes are the
optimizer and its hyperparameters, set by autodiff from the training section or the optimizer given
to the model, shown and read back through the IR dump, checked per kind; the learning rate is a
run-time input, so a schedule changing it every step rebuilds and recompiles nothing; the state is
the runtime's. The update rules against PyTorch's formulas: tests/test_optim.py; on the device:
tests/cuda/test_networks.py."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.backend.compile_events import counting
from cnndsl.diagnostics import CnnError
from cnndsl.ir.dump import dump
from cnndsl.model import Model, loss_specs, optimizer_attrs
from cnndsl.ops.registry import get_op
from cnndsl.ops.training.optimizers import OPTIMIZERS, step_attrs, step_attrs_of
from cnndsl.training_graph import build_training_graph
from cnndsl.passes.pipeline import optimize
from cnndsl.train.optim import SGD, Adam, FlatParams, make_optimizer

NET = """
network Tiny(classes = 3) {
  input image: 1x6x6
  conv 2 kernel=3 padding=same relu
  flatten
  dense classes -> logits
}
"""

# every optimizer with every hyperparameter away from its default
HYPER = {
    "sgd": dict(momentum=0.8, nesterov=True, weight_decay=0.003),
    "adam": dict(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.01),
    "adamw": dict(beta1=0.85, beta2=0.95, eps=1e-7, weight_decay=0.05),
    "rmsprop": dict(alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.002),
    "lion": dict(beta1=0.95, beta2=0.98, weight_decay=0.1),
}


def _program(train: str = ""):
    text = NET + ("train {\n" + train + "\n loss logits cross_entropy\n}\n" if train else "")
    return cnndsl.loads(text, "t.cnn")


def _step_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith("optimizer_step ="))


def _read_attrs(line: str) -> dict:
    """The key=value options of a dumped statement, read back through the op's declarations."""
    op = get_op("optimizer_step")
    words = line.split(")", 1)[1].split("#", 1)[0].split()
    out = {}
    for word in words:
        key, text = word.split("=", 1)
        value = {"true": True, "false": False}.get(text, text)
        if isinstance(value, str) and key != "kind":
            value = float(value)
        out[key] = op.attr(key).coerce(value)
    return out


def test_every_optimizer_declares_what_the_op_and_the_classes_derive():
    op = get_op("optimizer_step")
    assert op.attr("kind").choices == tuple(OPTIMIZERS)
    declared = {a.name for d in OPTIMIZERS.values() for a in d.options}
    assert {a.name for a in op.attrs} == declared | {"kind", "lr_mult"}  # lr_mult: per layer, not per optimizer
    assert "lr" not in declared  # a run-time input, not an attribute
    for kind, d in OPTIMIZERS.items():
        opt = make_optimizer(kind, FlatParams({"w": (3,)}))
        assert opt.step_attrs == step_attrs(kind)  # the class's defaults are the declaration's
        assert type(opt).options == {"lr": d.lr, **{a.name: a for a in d.options}}
        assert opt.lr == d.lr.default


@pytest.mark.parametrize("kind", list(HYPER))
def test_step_attributes_round_trip_through_the_dump(kind):
    program = _program()
    attrs = step_attrs(kind, **HYPER[kind])
    graph = optimize(program.graph, "training", 2, losses=loss_specs(program), optimizer=attrs, verify=True)
    assert step_attrs_of(graph.node(graph.attrs["optimizer_step"])) == attrs
    line = _step_line(dump(graph))
    assert f"kind={kind}" in line
    assert _read_attrs(line) == attrs  # every value, exactly (floats are written with repr)


def test_compile_print_ir_shows_the_training_sections_optimizer(tmp_path):
    import cnndsl.cli.compile  # noqa: F401  (registers the command)
    from cnndsl.cli.main import cli

    path = tmp_path / "t.cnn"
    path.write_text(NET + "train {\n optimizer adamw lr=0.002 beta2=0.99 weight_decay=0.05\n"
                    " loss logits cross_entropy\n}\n")
    r = CliRunner().invoke(cli, ["compile", str(path), "--train", "--print-ir"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    line = _step_line(r.output)
    assert _read_attrs(line) == step_attrs("adamw", beta2=0.99, weight_decay=0.05)
    assert "lr=" not in line
    assert optimizer_attrs(_program("optimizer adamw beta2=0.99 weight_decay=0.05").training) == \
        step_attrs("adamw", beta2=0.99, weight_decay=0.05)


@pytest.mark.parametrize("attrs, words", [
    ({"kind": "lion", "momentum": 0.9, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0}, "no option momentum"),
    (dict(step_attrs("adam"), beta1=1.5), "beta1 must be below 1"),
    (dict(step_attrs("sgd"), nesterov=True), "Nesterov momentum requires a momentum"),
    ({"kind": "adam", "beta1": 0.9}, "lacks the adam options beta2, eps, weight_decay"),
    ({"kind": "nadam"}, "names no known optimizer"),
])
def test_the_step_node_is_checked_against_its_kinds_declaration(attrs, words):
    program = _program()
    with pytest.raises(CnnError) as e:
        build_training_graph(program.graph, loss_specs(program), optimizer=attrs)
    assert words in str(e.value)


def test_the_optimizer_given_to_the_model_sets_the_step_attributes_and_the_runtime_state():
    model = Model(_program("optimizer sgd momentum=0.9"))
    x = np.random.default_rng(0).standard_normal((4, 1, 6, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    sgd = SGD(model.store.params, lr=0.1, momentum=0.9)
    model.set_optimizer(sgd)
    model.train_step(x, y, 0)
    graph = model._graph("train")
    assert step_attrs_of(graph.node("optimizer_step")) == sgd.step_attrs
    assert model.store.optimizer_state is sgd.slots and sgd.step_count == 1
    same = SGD(model.store.params, lr=0.5, momentum=0.9)  # same hyperparameters: the same graph
    model.set_optimizer(same)
    assert model._graph("train") is graph
    adam = Adam(model.store.params, lr=0.01, beta1=0.5)  # others: the graph is rebuilt with them
    model.set_optimizer(adam)
    model.train_step(x, y, 1)
    assert model._graph("train") is not graph
    assert step_attrs_of(model._graph("train").node("optimizer_step")) == step_attrs("adam", beta1=0.5)
    assert adam.step_count == 1 and adam.state["exp_avg"].any() and sgd.step_count == 1


def test_a_step_without_matching_state_is_refused():
    model = Model(_program())
    model.set_optimizer(SGD(model.store.params, lr=0.1, momentum=0.9))
    model.store.optimizer_state = Adam(model.store.params).slots  # not what the graph's step keeps
    x = np.zeros((2, 1, 6, 6), np.float32)
    with pytest.raises(RuntimeError, match="sgd step keeping momentum_buffer.*adam"):
        model.train_step(x, np.array([0, 1]), 0)


def test_a_schedule_changes_the_learning_rate_without_rebuilding_or_recompiling(tmp_path):
    """The learning rate is the step's run-time input: a step schedule halving it every epoch runs
    on the executable and graph of the first step, with no kernel compiled after the compile
    phase, and each step applies its own rate."""
    from cnndsl.data.dataset import Dataset
    from cnndsl.train.trainer import Trainer

    model = Model(_program("epochs 3\n batch 4\n optimizer sgd lr=0.1\n schedule step step_size=1 gamma=0.5"))
    rng = np.random.default_rng(1)
    data = Dataset(rng.standard_normal((8, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 8))
    trainer = Trainer(model, data, data, model.config, tmp_path, progress=False, compile_report=None)
    trainer.compile_kernels()
    exe, graph = model.executable("train", 4), model._graph("train")
    seen = []
    step = model.train_step

    def train_step(x, y, s, **kw):  # the rate each step runs at, and that nothing was rebuilt
        seen.append(trainer.optimizer.lr)
        assert model.executable("train", 4) is exe and model._graph("train") is graph
        return step(x, y, s, **kw)

    model.train_step = train_step
    with counting() as c:
        records = trainer.fit()
    assert c.count == 0, [r.qualname for r in c.records]
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.05, 0.025])
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert model.executable("train", 4) is exe and model._graph("train") is graph


def test_each_step_applies_the_learning_rate_it_is_given():
    model = Model(_program())
    opt = SGD(model.store.params, lr=1.0)
    model.set_optimizer(opt)
    x = np.random.default_rng(2).standard_normal((2, 1, 6, 6)).astype(np.float32)
    y = np.array([2, 1])
    for lr in (0.25, 0.0625):
        before = model.store.params.data.copy()
        model.train_step(x, y, 0, lr=lr)
        grad = model.store.params.grad.copy()
        np.testing.assert_array_equal(model.store.params.data, before + np.float32(-lr) * grad)


def test_a_training_section_breaking_an_optimizers_own_check_is_a_located_error():
    with pytest.raises(CnnError) as e:
        _program("optimizer sgd nesterov=true")  # Nesterov without momentum
    assert "t.cnn:" in str(e.value) and "Nesterov momentum requires a momentum" in str(e.value)
    assert _program("optimizer sgd nesterov=true momentum=0.9").training.optimizer.nesterov


NAMED = """
network Two(classes = 3) {
  input image: 1x6x6
  c1 = conv 2 kernel=3 padding=same relu
  flatten
  fc = dense classes -> logits
}
"""


def test_freeze_and_lr_mult_are_the_step_nodes_attribute(tmp_path):
    """The training section's freeze and lr_mult are one typed attribute of the optimizer_step node,
    ((layer, factor), ...), shown by `cnndsl compile --train --print-ir`."""
    import cnndsl.cli.compile  # noqa: F401  (registers the command)
    from cnndsl.cli.main import cli
    from cnndsl.ops.training.optimizers import lr_mult_of

    train = "train {\n freeze c1\n lr_mult fc=0.5\n loss logits cross_entropy\n}\n"
    model = Model(cnndsl.loads(NAMED + train, "t.cnn"))
    step = model._graph("train").node("optimizer_step")
    assert lr_mult_of(step) == (("c1", 0.0), ("fc", 0.5))
    assert step_attrs_of(step) == step_attrs("sgd")  # the optimizer's attributes are apart from it
    path = tmp_path / "t.cnn"
    path.write_text(NAMED + train)
    r = CliRunner().invoke(cli, ["compile", str(path), "--train", "--print-ir"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "lr_mult=[[c1, 0.0], [fc, 0.5]]" in _step_line(r.output)
    plain = Model(cnndsl.loads(NAMED + "train {\n loss logits cross_entropy\n}\n", "t.cnn"))
    assert lr_mult_of(plain._graph("train").node("optimizer_step")) == ()
    with pytest.raises(CnnError, match="lr_mult must be at least 0"):
        build_training_graph(plain.graph, plain.losses, optimizer=dict(step_attrs("sgd"), lr_mult={"fc": -1.0}))


def test_the_step_nodes_lr_mult_decides_the_update():
    """Changing the node's attribute, and nothing else, changes what the step does: the kernels'
    per-element factors are expanded from it (plain SGD: delta = -lr * factor * grad)."""
    model = Model(cnndsl.loads(NAMED + "train {\n loss logits cross_entropy\n}\n", "t.cnn"))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 6, 6)).astype(np.float32), np.array([0, 1, 2, 0])
    model.set_optimizer(SGD(model.store.params, lr=0.1))

    def one_step(lr_mult):
        model._graph("train").node("optimizer_step").attrs["lr_mult"] = lr_mult
        before = model.store.state_dict()
        model.train_step(x, y, 0)
        after = model.store.state_dict()
        return {k: (after[k] - before[k], model.store.grad_view(k).copy()) for k in model.store.segments}

    for lr_mult, factor in ((None, {}), ((("c1", 2.0), ("fc", 0.0)), {"c1": 2.0, "fc": 0.0})):
        for name, (delta, grad) in one_step(lr_mult).items():
            f = factor.get(name.split(".")[0], 1.0)
            assert np.any(grad != 0), name
            assert np.allclose(delta, np.float32(-0.1 * f) * grad, rtol=1e-5, atol=1e-7), (name, f)
    expanded = model.store.params.lr_mult
    assert set(expanded[model.store.params._slice("fc.weight")]) == {0.0}
    assert set(expanded[model.store.params._slice("c1.bias")]) == {2.0}


def test_set_lr_mult_after_the_first_step_rebuilds_the_step_node():
    """ParamStore.set_lr_mult (the Python API) reaches the kernels through the node: the training
    graph built before it is rebuilt with the new attribute."""
    from cnndsl.ops.training.optimizers import lr_mult_of

    model = Model(cnndsl.loads(NAMED + "train {\n loss logits cross_entropy\n}\n", "t.cnn"))
    x, y = np.ones((2, 1, 6, 6), np.float32), np.array([0, 1])
    model.set_optimizer(SGD(model.store.params, lr=0.1))
    model.train_step(x, y, 0)
    first = model._graph("train")
    model.store.set_lr_mult("fc", 0.0)
    before = model.store.state_dict()
    model.train_step(x, y, 1)
    assert model._graph("train") is not first
    assert lr_mult_of(model._graph("train").node("optimizer_step")) == (("fc", 0.0),)
    after = model.store.state_dict()
    assert np.array_equal(after["fc.weight"], before["fc.weight"]) and not np.array_equal(after["c1.weight"],
                                                                                        before["c1.weight"])
