"""Helpers shared by the pass tests (imported by file name; tests/passes has no __init__.py)."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.executor import Executable
from cnndsl.backend.params import ParamStore
from cnndsl.frontend import loads
from cnndsl.ir.dump import dump
from cnndsl.passes.base import INFERENCE, PassContext
from cnndsl.passes.manager import PassManager


def graph_of(text: str):
    return loads(text, "test.cnn").graph


def run_pass(graph, pass_obj, mode: str = INFERENCE, level: int = 3, properties=None):
    """A copy of `graph` after one pass, run by the pass manager with verification on; (graph, ctx)."""
    out = graph.copy()
    ctx = PassContext(mode=mode, level=level, verify=True)
    if properties is not None:
        ctx.properties = set(properties)
    PassManager([pass_obj]).run(out, ctx)
    return out, ctx


def body(graph) -> list[str]:
    """The canonical dump without the header, the closing brace and the type comments."""
    return [line.split("  #")[0].strip() for line in dump(graph).splitlines()[1:-1]]


def ops(graph) -> list[str]:
    return [n.op for n in graph.nodes()]


def random_store(graph, seed: int = 0) -> ParamStore:
    """Parameters and batchnorm statistics drawn at random (far from the identity initialization),
    so that folding them is actually exercised."""
    store = ParamStore(graph)
    store.initialize(seed)
    rng = np.random.default_rng(seed)
    for name, buf in store.buffers.items():
        buf[...] = rng.uniform(0.5, 1.5, buf.shape) if name.endswith("var") else rng.normal(0, 0.3, buf.shape)
    for name in store.segments:
        view = store.view(name)
        if name.endswith((".gamma", ".beta", ".bias")):
            view[...] = rng.normal(1.0 if name.endswith("gamma") else 0.0, 0.3, view.shape)
    return store


def run_inference(graph, store, x) -> dict[str, np.ndarray]:
    exe = Executable(graph, store, len(x))
    exe.run({graph.inputs[0]: x}, training=False)
    return {h: exe.output(n).copy() for h, n in graph.heads.items()}


def assert_close(actual, expected, rtol=2e-4, what=""):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"
