"""The typed geometry (cnndsl/kernels/geometry.py): shape inference computes one ConvGeometry per
windowed layer, and the launchers compute with that record, not with the options.

The behaviour tests change a compiled node's geometry to another window of the same output size
and check that the CPU launchers then compute the reference result of the changed window: a
launcher that re-derived padding from the options would still compute the old one. The source
check below keeps the untyped entries from coming back anywhere a launcher could read them.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.backend.executor import load_backend
from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.kernels.reference import conv as RC
from cnndsl.kernels.reference import pool as RP
from cnndsl.model import Model

PACKAGE = Path(cnndsl.__file__).resolve().parent


def _node(text: str, name: str):
    program = cnndsl.loads(text)
    return program.graph.node(name)


def test_shape_inference_stores_the_resolved_window():
    node = _node("network N {\n input x: 3x9x9\n c = conv 4 kernel=3 stride=2 padding=same groups=1 -> out\n}", "c")
    assert node.geometry == ConvGeometry(C=3, H=9, W=9, F=4, OH=5, OW=5, KH=3, KW=3, sh=2, sw=2,
                                         pt=1, pb=1, pl=1, pr=1)
    assert "pads" not in node.meta and "conv_hw" not in node.meta


def test_a_pools_default_stride_is_resolved_once_into_its_geometry():
    node = _node("network N {\n input x: 2x8x6\n p = maxpool 2x3 -> out\n}", "p")
    assert node.geometry.stride == (2, 3) and node.geometry.out_hw == (4, 2) and node.geometry.F == 2
    assert node.attrs.get("stride") is None  # the option stays as written


def test_conv_transpose_stores_its_adjoint_conv():
    node = _node("network N {\n input x: 3x5x5\n t = conv_transpose 2 kernel=3 stride=2 padding=1 -> out\n}", "t")
    g = node.geometry
    assert node.type.shape == (2, 9, 9)
    assert (g.C, g.H, g.W, g.F, g.OH, g.OW) == (2, 9, 9, 3, 5, 5)  # from the output space to the input's
    assert g.pads == (1, 1, 1, 1) and g.stride == (2, 2)


def test_fused_conv_pool_keeps_the_convs_map():
    from cnndsl.passes.pipeline import optimize

    program = cnndsl.loads("network N {\n input x: 1x8x8\n c = conv 3 kernel=3 padding=same relu\n"
                           " maxpool 2\n flatten\n dense 2 -> out\n}")  # a head would stay unfused
    graph = optimize(program.graph, "inference", 2, backend=load_backend("cpu"))
    fused = [n for n in graph.nodes() if n.op == "fused_conv_pool"]
    assert fused and fused[0].type.shape == (3, 4, 4) and fused[0].geometry.out_hw == (8, 8)


def _model(text: str) -> Model:
    return Model(cnndsl.loads(text), seed=0, opt_level=0)


def test_the_cpu_conv_launcher_computes_with_the_nodes_geometry():
    m = _model("network N {\n input x: 2x7x7\n c = conv 3 kernel=3 padding=1 bias=false -> out\n}")
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 7)).astype(np.float32)
    w = m.store.by_layer["c"]["weight"].astype(np.float64)
    y = m.predict(x)["out"]
    np.testing.assert_allclose(y, RC.conv2d(x.astype(np.float64), w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1),
                               rtol=1e-4, atol=1e-5)
    node = m._graph("infer").node("c")
    node.geometry = replace(node.geometry, pt=0, pb=2, pl=2, pr=0)  # the same 7x7 output, shifted
    moved = m.predict(x)["out"]
    expected = RC.conv2d(x.astype(np.float64), w, None, (1, 1), (0, 2, 2, 0), (1, 1), 1)
    np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(moved, y)


@pytest.mark.parametrize("op, reference", [("maxpool", RP.maxpool2d), ("avgpool", RP.avgpool2d)])
def test_the_cpu_pool_launchers_compute_with_the_nodes_geometry(op, reference):
    m = _model(f"network N {{\n input x: 2x6x6\n p = {op} 3 stride=1 padding=1 -> out\n}}")
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)
    node = m._graph("infer").node("p")
    assert node.geometry.pads == (1, 1, 1, 1)
    m.predict(x)
    node.geometry = replace(node.geometry, pt=0, pb=2, pl=2, pr=0)
    expected = reference(x.astype(np.float64), (3, 3), (1, 1), (0, 2, 2, 0), (1, 1))
    np.testing.assert_allclose(m.predict(x)["out"], expected, rtol=1e-5, atol=1e-6)


# the untyped geometry entries and the second resolution of a pool's stride that the record replaced
_GONE = [r'meta\["pads"\]', r'meta\.get\("pads"', r'"conv_hw"', r'pool_stride\(', r'\.get\("stride"\) or']


def test_no_launcher_or_pass_rederives_the_geometry():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "ops" / "pool.py":  # where a pool's default stride is resolved, once
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}" for p in _GONE if re.search(p, line)]
    assert not found, "geometry read around node.geometry:\n" + "\n".join(found)
