"""Optimized and unoptimized graphs compute the same thing: random chains and DAGs (residual adds,
concats, batchnorm after a conv or on its own, either maybe followed by an activation, dropout,
duplicate expressions) at -O0 and at the highest level, in inference and for one training step
(loss, gradients, updated weights and batchnorm statistics)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from passes_testutil import assert_close, random_store, run_inference

from cnndsl.analysis.infer import infer_shapes
from cnndsl.ir.graph import Graph
from cnndsl.model import Model
from cnndsl.ops.build import make_node
from cnndsl.passes.base import MAX_LEVEL
from cnndsl.passes.pipeline import kernel_count, optimize
from cnndsl.train.optim import make_optimizer

ACTIVATIONS = ("none", "relu", "leaky_relu", "sigmoid", "tanh")
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Builder:
    def __init__(self, draw, channels: int, size: int):
        self.draw, self.g, self.n = draw, Graph("random"), 0
        self.g.add(make_node("input", "x", shape=(channels, size, size)))
        self.g.inputs.append("x")
        self.cur, self.channels, self.size = "x", channels, size

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.n += 1
        name = f"{op}{self.n}"
        self.g.add(make_node(op, name, **attrs), inputs)
        return name

    def activation(self, x: str) -> str:
        act = self.draw(st.sampled_from(ACTIVATIONS))
        if act == "none":
            return x
        return self.node(act, [x], **({"alpha": 0.2} if act == "leaky_relu" else {}))

    def conv_unit(self, x: str, filters: int, activate: bool = True) -> str:
        y = self.node("conv", [x], filters=filters, kernel=self.draw(st.sampled_from([1, 3])), padding="same",
                      bias=self.draw(st.booleans()))
        if self.draw(st.booleans()):
            y = self.node("batchnorm", [y])
        return self.activation(y) if activate else y

    def block(self) -> None:
        kind = self.draw(st.sampled_from(["conv", "residual", "concat", "pool", "duplicate", "dropout", "norm"]))
        if kind == "conv":
            self.channels = self.draw(st.integers(1, 4))
            self.cur = self.conv_unit(self.cur, self.channels)
        elif kind == "residual":
            y = self.conv_unit(self.conv_unit(self.cur, self.channels), self.channels, activate=False)
            pair = [self.cur, y] if self.draw(st.booleans()) else [y, self.cur]
            self.cur = self.activation(self.node("add", pair))
        elif kind == "concat":
            a, b = self.draw(st.integers(1, 3)), self.draw(st.integers(1, 3))
            self.cur = self.node("concat", [self.conv_unit(self.cur, a), self.conv_unit(self.cur, b)])
            self.channels = a + b
        elif kind == "pool" and self.size % 2 == 0:
            self.cur = self.node("maxpool", [self.cur], kernel=2)
            self.size //= 2
        elif kind == "duplicate":  # the same expression twice: CSE fodder
            self.cur = self.node("add", [self.node("relu", [self.cur]), self.node("relu", [self.cur])])
        elif kind == "dropout":
            self.cur = self.node("dropout", [self.cur], p=self.draw(st.sampled_from([0.0, 0.3])))
        elif kind == "norm":  # no conv before it: not folded at inference, fused with its activation
            self.cur = self.activation(self.node("batchnorm", [self.cur]))

    def head(self) -> None:
        pooled = self.node("global_avgpool", [self.cur])
        h = self.node("dense", [pooled], units=self.draw(st.integers(2, 6)))
        if self.draw(st.booleans()):
            h = self.node("batchnorm", [h])
        h = self.activation(h)
        self.g.add(make_node("dense", "out", units=3), [h])
        self.g.heads["out"] = "out"


@st.composite
def networks(draw):
    b = _Builder(draw, draw(st.integers(1, 3)), draw(st.sampled_from([4, 6])))
    for _ in range(draw(st.integers(1, 4))):
        b.block()
    b.head()
    infer_shapes(b.g).raise_if_errors()
    return b.g


@SETTINGS
@given(networks(), st.integers(0, 2**16))
def test_inference_outputs_match(graph, seed):
    store = random_store(graph, seed)
    x = np.random.default_rng(seed).standard_normal((3,) + graph.node("x").type.shape).astype(np.float32)
    want = run_inference(optimize(graph, "inference", 0), store, x)["out"]
    best = optimize(graph, "inference", MAX_LEVEL, verify=True)
    assert_close(run_inference(best, store, x)["out"], want, what="inference -O0 vs -O3")
    assert kernel_count(best) <= kernel_count(graph)


def _one_step(graph, level: int, seed: int, x, y):
    model = Model(SimpleNamespace(graph=graph, training=None), seed=seed, opt_level=level)
    reference = random_store(graph, seed)  # non-trivial batchnorm statistics and biases
    model.store.load_state_dict(reference.state_dict())
    model.set_optimizer(make_optimizer("sgd", model.store.params, lr=0.1, momentum=0.9))
    loss, _ = model.train_step(x, y, step=1)
    return loss, model.store.params.grad.copy(), model.store.state_dict()


@SETTINGS
@given(networks(), st.integers(0, 2**16))
def test_one_training_step_matches(graph, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4,) + graph.node("x").type.shape).astype(np.float32)
    y = rng.integers(0, 3, 4)
    loss0, grad0, state0 = _one_step(graph, 0, seed, x, y)
    loss3, grad3, state3 = _one_step(graph, MAX_LEVEL, seed, x, y)
    assert abs(loss3 - loss0) <= 1e-4 * max(1.0, abs(loss0))
    assert_close(grad3, grad0, rtol=1e-3, what="gradients")
    for name in state0:
        assert_close(state3[name], state0[name], rtol=1e-4, what=f"updated {name}")


def _with_conv_algorithm(value: str, fn):
    """Run fn with CNNDSL_CPU_CONV=value (read by the CPU conv launchers at every launch)."""
    old = os.environ.get("CNNDSL_CPU_CONV")
    os.environ["CNNDSL_CPU_CONV"] = value
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["CNNDSL_CPU_CONV"]
        else:
            os.environ["CNNDSL_CPU_CONV"] = old


@pytest.mark.parametrize("algorithm", ["auto", "winograd"])
@SETTINGS
@given(graph=networks(), seed=st.integers(0, 2**16))
def test_direct_and_im2col_convs_match(algorithm, graph, seed):
    """The register-blocked direct convolution (the default for groups=1 convs; `auto`) and
    Winograd F(2x2, 3x3) (`winograd`: every 3x3 stride-1 conv, whatever its size) against im2col +
    GEMM, for inference and one training step at the highest level (tolerances as above: the
    direct kernel sums the same products in another order; Winograd's transforms add a few
    roundings more, test_kernels_winograd.py)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4,) + graph.node("x").type.shape).astype(np.float32)
    y = rng.integers(0, 3, 4)
    store = random_store(graph, seed)
    best = optimize(graph, "inference", MAX_LEVEL)
    want = _with_conv_algorithm("im2col", lambda: run_inference(best, store, x)["out"])
    assert_close(_with_conv_algorithm(algorithm, lambda: run_inference(best, store, x)["out"]), want,
                 what=f"inference {algorithm} vs im2col")
    loss0, grad0, state0 = _with_conv_algorithm("im2col", lambda: _one_step(graph, MAX_LEVEL, seed, x, y))
    loss1, grad1, state1 = _with_conv_algorithm(algorithm, lambda: _one_step(graph, MAX_LEVEL, seed, x, y))
    assert abs(loss1 - loss0) <= 1e-4 * max(1.0, abs(loss0))
    assert_close(grad1, grad0, rtol=1e-3, what=f"gradients {algorithm} vs im2col")
    for name in state0:
        assert_close(state1[name], state0[name], rtol=1e-4, what=f"updated {name}")
