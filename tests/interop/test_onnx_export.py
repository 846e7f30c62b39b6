"""ONNX export: every example and random networks over every exportable op, run by ONNX Runtime,
equal cnndsl's Model.predict within max |a - b| <= 1e-5 * max(1, max |predict|) (float32), at the
exported pass levels 1 (one node per layer) and 2 (the fused graph); every op of the registry
exports or is refused with a located error naming it."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from interop_testutil import (ACTS, ROOT, assert_close, equivalence_networks, ort_outputs,  # noqa: E402
                              random_networks, random_store)

from cnndsl.diagnostics import CnnError, Span  # noqa: E402
from cnndsl.frontend import load, loads  # noqa: E402
from cnndsl.interop import onnx_export as E  # noqa: E402
from cnndsl.ir.graph import Graph, Node  # noqa: E402
from cnndsl.model import Model  # noqa: E402
from cnndsl.ops.registry import all_ops  # noqa: E402

EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _model(program, seed=0):
    model = Model(program, seed=seed, init_from_file=False)
    model.store.load_state_dict(random_store(program.graph, seed).state_dict())  # batchnorm statistics too
    return model


def _compare(program, model, level, batch=3, seed=0):
    onnx_model = E.export_program(program, model.state_dict(), level=level)
    shape = program.graph.node(program.graph.inputs[0]).type.shape
    x = np.random.default_rng(seed).uniform(0, 1, (batch,) + shape).astype(np.float32)
    got = ort_outputs(onnx_model, {program.graph.inputs[0]: x})
    want = model.predict(x)
    assert set(got) == set(want)
    for head in want:
        assert_close(got[head], want[head], what=f"{program.graph.name} -O{level} head {head}")
    return onnx_model


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_matches_onnx_runtime(path):
    program = load(path)
    model = _model(program)
    missing = sorted({n.op for n in program.graph.nodes() if n.op != "input" and E.refusal_reason(n.op)})
    if missing:  # layers without an exporter yet (issue 17's lrn, multiply): a located refusal naming them
        with pytest.raises(CnnError) as e:
            E.export_program(program, model.state_dict(), level=1)
        assert {op for op in missing if f"cannot export {op} '" in str(e.value)} == set(missing)
        return
    for level in (1, 2):
        exported = _compare(program, model, level)
        onnx.checker.check_model(exported, full_check=True)
        assert exported.opset_import[0].version == E.OPSET and exported.ir_version == E.IR_VERSION


def _graph_model(graph, seed):
    return SimpleNamespace(graph=graph, training=None)


@SETTINGS
@given(random_networks(), st.integers(0, 2**16), st.sampled_from([1, 2]))
def test_random_networks_match_onnx_runtime(graph, seed, level):
    program = _graph_model(graph, seed)
    _compare(program, _model(program, seed), level, seed=seed)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_networks(), st.integers(0, 2**16), st.sampled_from([1, 2]))
def test_many_random_networks_match_onnx_runtime(graph, seed, level):
    program = _graph_model(graph, seed)
    _compare(program, _model(program, seed), level, seed=seed)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(equivalence_networks(), st.integers(0, 2**16))
def test_pass_equivalence_networks_match_onnx_runtime(graph, seed):
    program = _graph_model(graph, seed)
    _compare(program, _model(program, seed), 2, seed=seed)


def test_batch_is_dynamic_and_names_are_layer_names():
    program = load(ROOT / "examples" / "resnet_tiny.cnn")
    model = _model(program)
    exported = E.export_program(program, model.state_dict(), level=1)
    dims = exported.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    layers = {n.name for n in program.graph.nodes() if n.op not in ("input", "dropout")}
    node_names = {n.name for n in exported.graph.node}
    assert layers <= node_names  # every layer is the ONNX node making its output
    for batch in (1, 5):
        x = np.random.default_rng(batch).uniform(0, 1, (batch, 3, 32, 32)).astype(np.float32)
        assert_close(ort_outputs(exported, {"image": x})["logits"], model.predict(x)["logits"])


def test_dropout_removed_and_batchnorm_in_inference_form():
    program = load(ROOT / "examples" / "resnet_tiny.cnn")
    exported = E.export_program(program, _model(program).state_dict(), level=1)
    kinds = {n.op_type for n in exported.graph.node}
    assert "Dropout" not in kinds and "BatchNormalization" in kinds
    for n in exported.graph.node:
        if n.op_type == "BatchNormalization":
            assert len(n.output) == 1  # inference form: no running statistics out
    fused = E.export_program(program, _model(program).state_dict(), level=2)
    assert "BatchNormalization" not in {n.op_type for n in fused.graph.node}  # folded into the conv weights


def test_normalize_is_part_of_the_exported_model():
    program = load(ROOT / "examples" / "lenet5.cnn")  # normalize mean=0.1307 std=0.3081
    model = _model(program)
    exported = _compare(program, model, 1)
    assert [n.op_type for n in exported.graph.node[:2]] == ["Sub", "Div"]
    bare = E.export_program(program, model.state_dict(), level=1, normalize=False)
    assert bare.graph.node[0].op_type == "Conv"


# -- every op of the registry exports, or is refused with a located error naming it ---------------

def _one_layer_graph(op: str) -> Graph:
    g = Graph("probe")
    g.add(Node("x", "input", {"shape": (2, 4, 4)}))
    g.inputs.append("x")
    g.add(Node("probe_layer", op, {}, span=Span("probe.cnn", 3, 5)), ["x"])
    g.heads["probe_layer"] = "probe_layer"
    return g


@pytest.mark.parametrize("op", sorted(all_ops()))
def test_every_registry_op_exports_or_is_refused_with_a_located_error(op):
    if op == "input":
        return
    reason = E.refusal_reason(op)
    if reason is None:
        # exportable: some example or random-network test above reaches it; say which one here
        assert op in EXPORTED_BY_TESTS, f"op {op} has an exporter but no test exports it (add it to EXPORTED_BY_TESTS)"
        return
    with pytest.raises(CnnError) as info:
        E.check_exportable(_one_layer_graph(op))
    d = info.value.diagnostics[0]
    assert d.span == Span("probe.cnn", 3, 5) and f"{op} 'probe_layer'" in d.message and reason in d.message


# which test reaches each exporter: the random networks draw every layer kind below; the fused
# ops come from the -O2 exports of the examples (fused_conv_pool: lenet5, vgg_small; fused_batchnorm:
# the batchnorm-on-its-own blocks of the equivalence networks and random networks)
EXPORTED_BY_TESTS = {
    "conv", "conv_transpose", "maxpool", "avgpool", "l2pool", "global_avgpool", "dropout", "batchnorm",
    "dense", "flatten", "upsample", "softmax", "add", "concat",
    "fused_conv", "fused_conv_pool", "fused_dense", "fused_batchnorm",
    # drawn by the random networks whenever the registry has them (issue 17's layers)
    "global_maxpool", "multiply", "reshape", "lrn", "softmax_axis",
} | set(ACTS)  # every activation of the registry is drawn by the random networks


def test_fused_ops_are_reached_by_the_level_2_exports():
    from cnndsl.passes.pipeline import optimize

    seen = set()
    for path in EXAMPLES:
        seen |= {n.op for n in optimize(load(path).graph, "inference", 2).nodes()}
    assert {"fused_conv", "fused_conv_pool", "fused_dense"} <= seen
    text = "network N {\n input x: 2x4x4\n batchnorm relu\n flatten\n dense 3\n}\n"
    assert "fused_batchnorm" in {n.op for n in optimize(loads(text, "n.cnn").graph, "inference", 2).nodes()}


def test_a_training_op_is_refused_with_its_reason():
    with pytest.raises(CnnError) as info:
        E.check_exportable(_one_layer_graph("conv_grad_input"))
    assert "training graph" in info.value.diagnostics[0].message
