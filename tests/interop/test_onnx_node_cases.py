"""The ONNX backend node-test cases of the ops cnndsl imports (246 with onnx 1.23.2), through
`cnndsl import` and cnndsl's CPU kernels: none may give a wrong answer (each passes, or is refused
with a clear reason), and the per-op table in docs/interop.md is the one this run produces."""
from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")

from interop_testutil import ROOT  # noqa: E402
from onnx_node_runner import run_all, table  # noqa: E402

DOCS_ONNX_VERSION = "1.23.2"  # the onnx release the table of docs/interop.md was made with


@pytest.fixture(scope="module")
def results():
    return run_all()


def test_no_node_case_gives_a_wrong_answer(results):
    assert len(results) > 200  # the cases of the supported ops are found
    failed = [(name, reason) for _, name, status, reason in results if status == "fail"]
    assert not failed, failed
    passed = {op for op, _, status, _ in results if status == "pass"}
    for op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
               "Gemm", "MatMul", "BatchNormalization", "Concat", "Flatten", "Softmax", "Identity"):
        assert op in passed, op
    for _, name, status, reason in results:
        assert status == "pass" or reason, name  # every refusal says why


def test_the_docs_table_is_this_run(results):
    if onnx.__version__ != DOCS_ONNX_VERSION:
        pytest.skip(f"the docs table was made with onnx {DOCS_ONNX_VERSION}, this is {onnx.__version__}")
    docs = (ROOT / "docs" / "interop.md").read_text()
    assert table(results) in docs, "regenerate it: python tests/interop/onnx_node_runner.py"
