"""`cnndsl export` (and `cnndsl import`): files written, clean errors with exit 1 for bad input,
a one-line error when an optional package is missing."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cnndsl.cli.main import cli, main  # noqa: F401  (main registers the commands)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from interop_testutil import ROOT, assert_close, ort_outputs  # noqa: E402

LENET = str(ROOT / "examples" / "lenet5.cnn")


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.export  # noqa: F401

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)
    return invoke


def test_export_writes_a_checked_model_with_the_given_weights(run, tmp_path):
    from cnndsl import compile

    model = compile(LENET, seed=3)
    weights = model.save_weights(tmp_path / "w.safetensors")
    out = tmp_path / "lenet.onnx"
    result = run("export", LENET, "--weights", str(weights), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "opset 17, IR version 8" in result.output and "image[batch,1,28,28]" in result.output
    exported = onnx.load(str(out))
    onnx.checker.check_model(exported, full_check=True)
    x = np.random.default_rng(0).uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    assert_close(ort_outputs(exported, {"image": x})["logits"], model.predict(x)["logits"])


def test_export_without_weights_warns(run, tmp_path):
    result = run("export", LENET, "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 0 and "warning: no --weights given" in result.output


def test_export_with_weights_of_another_network_is_a_clean_error(run, tmp_path):
    from cnndsl import compile

    weights = compile(str(ROOT / "examples" / "nin.cnn")).save_weights(tmp_path / "nin.safetensors")
    out = tmp_path / "m.onnx"
    result = run("export", LENET, "--weights", str(weights), "-o", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nin.safetensors" in result.output and not out.exists()


def test_export_of_a_bad_model_file_is_a_clean_error(run, tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("network N {\n input x: 1x8x8\n conv 4 kernel=3 stride=2\n}\n")
    result = run("export", str(bad), "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1 and "bad.cnn:3:" in result.output and "Traceback" not in result.output


def test_a_missing_extra_is_a_one_line_error(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError while this holds
    result = run("export", LENET, "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1
    assert "ONNX export needs the onnx package, which is not installed" in result.output
    assert "pip install 'cnndsl[onnx]'" in result.output and "Traceback" not in result.output
