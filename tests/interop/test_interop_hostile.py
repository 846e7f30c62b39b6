"""Mutated model files only ever give a CnnError (a clear, located message) or import cleanly:
never another exception, for ONNX, Caffe prototxt and Darknet cfg files."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cnndsl.diagnostics import CnnError
from cnndsl.interop.caffe import import_caffe
from cnndsl.interop.cnn_writer import finish
from cnndsl.interop.darknet import import_darknet

DATA = Path(__file__).resolve().parent / "data"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
JUNK = st.sampled_from(["", "-1", "0", "999999999", "abc", "1.5", "\"x\"", "{", "}", "nan", "-3", "[", "1e40"])


def _mutate(text: str, data) -> str:
    tokens = text.split(" ") if " " in text else [text]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(tokens) - 1))
        tokens[i] = data.draw(JUNK)
    return " ".join(tokens)


def _only_cnn_errors(fn, tmp):
    try:
        builder = fn()
        finish(builder, str(tmp / "out.cnn"))
    except CnnError as e:
        assert e.diagnostics and e.diagnostics[0].render()


@SETTINGS
@given(st.data(), st.sampled_from(["lenet.prototxt", "every_layer.prototxt", "cifar10_quick.prototxt"]))
def test_mutated_prototxt(tmp_path_factory, data, name):
    tmp = tmp_path_factory.mktemp("caffe")
    path = tmp / name
    path.write_text(_mutate((DATA / name).read_text().replace("\n", " \n "), data))
    _only_cnn_errors(lambda: import_caffe(path), tmp)


def test_a_layer_that_is_a_value_is_a_located_error(tmp_path):
    """`layer: -1` instead of a block (Hypothesis found it: the importer failed on it with an
    AttributeError): a diagnostic at the value, naming what was expected."""
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\ninput: "data"\ninput_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
                    'layer: -1\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    with pytest.raises(CnnError) as e:
        import_caffe(path)
    d = e.value.diagnostics[0]
    assert "must be a block" in d.message and "-1" in d.message and d.span.line == 4, d.render()


def test_an_input_dim_that_is_not_a_number_is_a_located_error(tmp_path):
    """`dim: abc` in the net's input_shape (Hypothesis found it: a ValueError from int())."""
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\ninput: "data"\ninput_shape { dim: 1 dim: abc dim: 4 dim: 4 }\n'
                    'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    with pytest.raises(CnnError) as e:
        import_caffe(path)
    d = e.value.diagnostics[0]
    assert "input_shape" in d.message and "abc" in d.message and d.span.line == 3, d.render()


@SETTINGS
@given(st.data(), st.sampled_from(["tiny_yolo.cfg", "classifier.cfg"]))
def test_mutated_cfg(tmp_path_factory, data, name):
    tmp = tmp_path_factory.mktemp("darknet")
    lines = (DATA / name).read_text().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        key = lines[i].split("=")[0]
        lines[i] = f"{key}={data.draw(JUNK)}" if "=" in lines[i] else data.draw(JUNK)
    path = tmp / name
    path.write_text("\n".join(lines))
    _only_cnn_errors(lambda: import_darknet(path), tmp)


@SETTINGS
@given(st.data())
def test_mutated_onnx(tmp_path_factory, data):
    onnx = pytest.importorskip("onnx")
    from cnndsl.frontend import load
    from cnndsl.interop.onnx_export import export_program
    from cnndsl.interop.onnx_import import import_onnx
    from cnndsl.model import Model

    tmp = tmp_path_factory.mktemp("onnx")
    program = load(DATA.parent.parent.parent / "examples" / "lenet5.cnn")
    blob = bytearray(export_program(program, Model(program, init_from_file=False).state_dict()).SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp / "m.onnx"
    path.write_bytes(bytes(blob))
    del onnx
    _only_cnn_errors(lambda: import_onnx(str(path)), tmp)


CONV_CFG = "[net]\nwidth=28\nheight=28\nchannels=1\n[convolutional]\nfilters={filters}\nsize=3\n"
CONV_PROTOTXT = ('name: "n"\ninput: "data"\ninput_shape {{ dim: 1 dim: 1 dim: {height} dim: 28 }}\n'
                 'layer {{ name: "c1" type: "Convolution" bottom: "data" top: "c1" '
                 'convolution_param {{ num_output: {filters} kernel_size: 3 }} }}\n')


@pytest.mark.parametrize("name, text, line, words", [
    # float('inf') and 1e400 passed the number check, then int() raised OverflowError: [net] width=inf
    # was an internal error, a layer's filters=inf "an option of the wrong kind (OverflowError: ...)"
    ("inf.cfg", CONV_CFG.format(filters=28).replace("width=28", "width=inf"), 2, "[net] width=inf is not a whole number"),
    ("inf2.cfg", CONV_CFG.format(filters="1e400"), 6, "[convolutional] filters=1e400 is not a whole number"),
    # numbers a .cnn file cannot hold were refused by `finish`, naming the .cnn file never written
    ("big.cfg", CONV_CFG.format(filters=10 ** 15), 5,
     "filters 1000000000000000 is too large for cnndsl (at most 1,000,000,000,000)"),
    ("big.prototxt", CONV_PROTOTXT.format(height=28, filters=10 ** 15), 4,
     "Caffe Convolution 'c1' (line 4): filters 1000000000000000 is too large for cnndsl"),
    ("bigin.prototxt", CONV_PROTOTXT.format(height=10 ** 15, filters=4), 0,
     "input 'data': shape 1000000000000000 is too large for cnndsl"),
    # a shape error of an input had no place: "cnndsl: error: input 'data' has 280,000,000,000 elements"
    ("wide.prototxt", CONV_PROTOTXT.format(height=10 ** 10, filters=4), 0,
     "input 'data' has 280,000,000,000 elements per sample"),
])
def test_numbers_too_large_are_errors_in_the_file_imported(tmp_path, name, text, line, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CnnError) as e:
        builder = (import_darknet if name.endswith(".cfg") else import_caffe)(path)
        finish(builder, str(tmp_path / "out.cnn"))
    d = e.value.diagnostics[0]
    assert words in d.message, d.render()
    assert d.span is not None and d.span.file == str(path) and d.span.line == line, d.render()
