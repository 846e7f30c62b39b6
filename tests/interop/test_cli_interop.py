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


@pytest.fixture(scope="module")
def run_import():
    import cnndsl.cli.export  # noqa: F401
    import cnndsl.cli.import_cmd  # noqa: F401

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)
    return invoke


def test_export_then_import_writes_a_model_file_and_weights(run_import, tmp_path):
    from cnndsl import compile, load

    weights = compile(LENET, seed=5).save_weights(tmp_path / "w.safetensors")
    assert run_import("export", LENET, "--weights", str(weights), "-o", str(tmp_path / "l.onnx")).exit_code == 0
    result = run_import("import", str(tmp_path / "l.onnx"), "-o", str(tmp_path / "back.cnn"))
    assert result.exit_code == 0, result.output
    assert "back.cnn: 12 layers (classes = 10); " in result.output and "back.safetensors: 10 tensors" in result.output
    program = load(tmp_path / "back.cnn")
    model = compile(program)
    model.load_weights(tmp_path / "back.safetensors")
    x = np.random.default_rng(0).uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    assert_close(model.predict(x)["logits"], compile(LENET, seed=5).predict(x)["logits"])


@pytest.mark.parametrize("weights_out, words", [
    ("folder", "folder: error: cannot access this file: is a folder, not a file"),
    ("afile/w.safetensors", "w.safetensors: error: cannot access this file: {tmp}/afile is a file, not a folder"),
])
def test_import_writes_nothing_when_the_weights_cannot_be_written(run_import, tmp_path, weights_out, words):
    """import -o m.cnn --weights-out FOLDER wrote m.cnn and then failed on the weights: a model file
    naming a weights file that was never written. A file where a folder should be said only
    'File exists'."""
    from cnndsl import compile

    weights = compile(LENET, seed=5).save_weights(tmp_path / "w.safetensors")
    assert run_import("export", LENET, "--weights", str(weights), "-o", str(tmp_path / "l.onnx")).exit_code == 0
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    result = run_import("import", str(tmp_path / "l.onnx"), "-o", str(tmp_path / "m.cnn"),
                        "--weights-out", str(tmp_path / weights_out))
    assert result.exit_code == 1 and words.format(tmp=tmp_path) in result.output, result.output
    assert not (tmp_path / "m.cnn").exists()


@pytest.mark.parametrize("content, expected", [
    (b"\x00\x01garbage that is not protobuf \xff\xff\xff", "this is not an ONNX model"),
    (b"", "ONNX model"),
])
def test_import_of_a_bad_onnx_file_is_a_clean_error(run_import, tmp_path, content, expected):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    result = run_import("import", str(bad), "-o", str(tmp_path / "out.cnn"))
    assert result.exit_code == 1, result.output
    assert str(bad) in result.output and expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.cnn").exists()


def test_import_of_an_unknown_kind_of_file(run_import, tmp_path):
    other = tmp_path / "model.h5"
    other.write_bytes(b"HDF")
    result = run_import("import", str(other), "-o", str(tmp_path / "out.cnn"))
    assert result.exit_code == 1 and "expected: a name ending in .onnx (ONNX), .prototxt (Caffe) or .cfg" in result.output


def test_import_of_a_missing_file_and_a_directory(run_import, tmp_path):
    for path in (tmp_path / "missing.onnx", tmp_path):
        target = path if path.suffix else tmp_path / "dir.onnx"
        if not path.suffix:
            target.mkdir()
        result = run_import("import", str(target), "-o", str(tmp_path / "out.cnn"))
        assert result.exit_code == 1 and str(target) in result.output and "Traceback" not in result.output


def test_import_a_caffe_net_with_and_without_weights(run_import, tmp_path):
    pytest.importorskip("google.protobuf")
    from caffe_numpy import random_blobs, write_caffemodel

    proto = ROOT / "tests" / "interop" / "data" / "cifar10_quick.prototxt"
    result = run_import("import", str(proto), "-o", str(tmp_path / "c.cnn"))
    assert result.exit_code == 0 and "rounds up" in result.output and not (tmp_path / "c.safetensors").exists()
    weights = tmp_path / "c.caffemodel"
    write_caffemodel(weights, random_blobs(proto.read_text(), (3, 32, 32)))
    result = run_import("import", str(proto), "--weights", str(weights), "-o", str(tmp_path / "c.cnn"),
                        "--weights-out", str(tmp_path / "w.safetensors"))
    assert result.exit_code == 0 and "w.safetensors: 10 tensors" in result.output


def test_import_a_darknet_cfg_and_a_bad_weights_file(run_import, tmp_path):
    cfg = ROOT / "tests" / "interop" / "data" / "tiny_yolo.cfg"
    result = run_import("import", str(cfg), "-o", str(tmp_path / "y.cnn"))
    assert result.exit_code == 0 and "(classes = 2, boxes = 3)" in result.output
    bad = tmp_path / "y.weights"
    bad.write_bytes(b"\0" * 100)
    result = run_import("import", str(cfg), "--weights", str(bad), "-o", str(tmp_path / "y2.cnn"))
    assert result.exit_code == 1 and str(bad) in result.output and "the weights end inside" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "y2.cnn").exists()
