"""ONNX import: .cnn -> ONNX -> .cnn gives the same shapes and outputs (every example, random
networks); hand-built ONNX graphs of the patterns the importer rewrites give ONNX Runtime's outputs;
unsupported ops and options are clear errors. Tolerance: max |a - b| <= 1e-5 * max(1, max |ref|)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from interop_testutil import ROOT, assert_close, ort_outputs, random_networks, random_store  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnndsl.diagnostics import CnnError  # noqa: E402
from cnndsl.frontend import load  # noqa: E402
from cnndsl.interop import onnx_export as E  # noqa: E402
from cnndsl.interop.cnn_writer import finish  # noqa: E402
from cnndsl.interop.onnx_import import import_onnx  # noqa: E402
from cnndsl.model import Model  # noqa: E402

EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))


def imported_model(onnx_model, tmp_path, name="m"):
    """(text, Model with the imported weights) for an in-memory ONNX model."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(onnx_model, str(path))
    builder = import_onnx(str(path))
    text, program = finish(builder, str(tmp_path / f"{name}.cnn"))
    model = Model(program, init_from_file=False)
    model.store.load_state_dict(builder.weights) if set(builder.weights) == set(model.store.expected_shapes()) \
        else pytest.fail(f"weights {sorted(builder.weights)} vs {sorted(model.store.expected_shapes())}")
    return text, model


def _round_trip(program, tmp_path, level, seed=0):
    original = Model(program, seed=seed, init_from_file=False)
    original.store.load_state_dict(random_store(program.graph, seed).state_dict())
    exported = E.export_program(program, original.state_dict(), level=level)
    text, back = imported_model(exported, tmp_path)
    shape = original.input_shape
    assert back.input_shape == shape
    x = np.random.default_rng(seed).uniform(0, 1, (3,) + shape).astype(np.float32)
    want, got = original.predict(x), back.predict(x)
    assert set(got) == set(want), text  # heads are listed in statement order in a .cnn
    for head in want:
        assert got[head].shape == want[head].shape
        assert_close(got[head], want[head], what=f"round trip -O{level} {head}")
    return text


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_round_trips(path, tmp_path):
    program = load(path)
    missing = sorted({n.op for n in program.graph.nodes() if n.op != "input" and E.refusal_reason(n.op)})
    if missing:  # issue 17's lrn, multiply: test_onnx_export checks the located refusal
        pytest.skip(f"{path.name} has layers without an ONNX exporter yet: {', '.join(missing)}")
    text = _round_trip(program, tmp_path, 1)
    layers = [n.name.replace(".", "_") for n in program.graph.nodes() if n.op not in ("input", "dropout")]
    for layer in layers:  # every layer keeps its name (dots become underscores)
        assert f"\n  {layer} = " in text, layer
    _round_trip(program, tmp_path, 2)


def _importable(graph) -> bool:
    """Known gap: `softmax_axis axis=spatial` exports as Reshape (N, C, H*W) -> Softmax -> Reshape,
    checked against ONNX Runtime in test_onnx_export; the importer does not map that pattern back
    yet (a per-sample C x H*W reshape has no cnndsl form), so such networks do not round-trip."""
    return not any(n.op == "softmax_axis" and n.attrs.get("axis") == "spatial" for n in graph.nodes())


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_networks(), st.integers(0, 2**16), st.sampled_from([1, 2]))
def test_random_networks_round_trip(tmp_path_factory, graph, seed, level):
    assume(_importable(graph))
    _round_trip(SimpleNamespace(graph=graph, training=None), tmp_path_factory.mktemp("rt"), level, seed)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_networks(), st.integers(0, 2**16), st.sampled_from([1, 2]))
def test_many_random_networks_round_trip(tmp_path_factory, graph, seed, level):
    assume(_importable(graph))
    _round_trip(SimpleNamespace(graph=graph, training=None), tmp_path_factory.mktemp("rt"), level, seed)


def test_lenet_reads_like_a_model_file(tmp_path):
    program = load(ROOT / "examples" / "lenet5.cnn")
    text = _round_trip(program, tmp_path, 1)
    assert "network LeNet5(classes = 10) {" in text
    assert "  c1 = conv 6 kernel=5 padding=same" in text and "# ONNX Conv 'c1'" in text
    assert "logits = dense classes -> logits" in text
    assert "normalize mean=0.1307 std=0.3081" in text


# -- hand-built ONNX graphs: each pattern the importer rewrites, against ONNX Runtime --------------

def _model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])


def _check_against_ort(m, shape, tmp_path, expect_in_text=()):
    text, model = imported_model(m, tmp_path)
    for piece in expect_in_text:
        assert piece in text, text
    x = np.random.default_rng(1).standard_normal((2,) + shape).astype(np.float32)
    want = ort_outputs(m, {m.graph.input[0].name: x})
    got = model.predict(x)
    for name, value in want.items():
        assert_close(got[name], value, what=name)
    return text


RNG = np.random.default_rng(0)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_matmul_add_is_one_dense_and_gap_flatten_a_global_pool(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Add", ["c", "cb"], ["cbias"], name="conv_bias"),
             helper.make_node("GlobalAveragePool", ["cbias"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "m"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "b"], ["logits"], name="fc_bias")]
    m = _model(nodes, [_vi("x", [2, 5, 5])], [_vi("logits", [7])],
               {"w": _w(4, 2, 3, 3), "cb": _w(1, 4, 1, 1), "m": _w(4, 7), "b": _w(7)})
    text = _check_against_ort(m, (2, 5, 5), tmp_path, ["global_avgpool", "dense classes -> logits",
                                                        "network g(classes = 7)"])
    assert text.count(" = dense") == 1 and text.count(" = conv") == 1  # the Adds are biases


def test_ceil_mode_pooling_and_count_include_pad(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                              ceil_mode=1),
             helper.make_node("AveragePool", ["p"], ["a"], name="pool2", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              count_include_pad=1),
             helper.make_node("LpPool", ["a"], ["y"], name="pool3", kernel_shape=[2, 2], p=2)]
    m = _model(nodes, [_vi("x", [3, 8, 8])], [_vi("y", [3, 3, 3])], {})
    _check_against_ort(m, (3, 8, 8), tmp_path, ["maxpool 3 stride=2 rounding=ceil", "groups=3 bias=false",
                                                "l2pool"])


def test_per_channel_constants_resize_and_softmax(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"], name="scale"),
             helper.make_node("Add", ["m", "t"], ["a"], name="shift"),
             helper.make_node("Resize", ["a", "", "sc"], ["r"], name="up", mode="nearest"),
             helper.make_node("Softmax", ["r"], ["y"], name="sm", axis=1),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    m = _model(nodes, [_vi("x", [3, 4, 4])], [_vi("z", [3, 8, 8])],
               {"s": np.abs(_w(3, 1, 1)) + 0.5, "t": _w(1, 3, 1, 1), "sc": np.array([1, 1, 2, 2], np.float32)})
    _check_against_ort(m, (3, 4, 4), tmp_path, ["upsample", "softmax", "normalize"])


def test_unsupported_ops_are_listed_with_where_they_are(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node("Abs", ["r"], ["a"], name="abs1"),
             helper.make_node("Abs", ["a"], ["b"], name="abs2"),
             helper.make_node("Erf", ["b"], ["y"], name="erf")]
    m = _model(nodes, [_vi("x", [3, 4, 4])], [_vi("y", [3, 4, 4])], {})
    path = tmp_path / "u.onnx"
    onnx.save(m, str(path))
    with pytest.raises(CnnError) as info:
        import_onnx(str(path))
    d = info.value.diagnostics[0]
    assert "uses 2 ONNX ops that cnndsl does not have: Abs, Erf" in d.message and str(path) in d.render()
    assert "Abs x2: nodes 1 'abs1', 2 'abs2'" in d.details and "Erf x1: node 3 'erf'" in d.details


def test_options_without_a_cnndsl_form_name_the_node(tmp_path):
    # over the batch: no cnndsl form (axes 1-3 are softmax axis=channels|height|width since issue 17)
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="spatial_softmax", axis=0)]
    m = _model(nodes, [_vi("x", [3, 4, 4])], [_vi("y", [3, 4, 4])], {})
    path = tmp_path / "s.onnx"
    onnx.save(m, str(path))
    with pytest.raises(CnnError) as info:
        import_onnx(str(path))
    assert "node 0 'spatial_softmax' (Softmax)" in info.value.diagnostics[0].message
    assert "axis 0" in info.value.diagnostics[0].message
