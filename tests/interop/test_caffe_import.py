"""Caffe import: hand-written prototxt files (LeNet, CIFAR-10 quick, every layer kind and option),
with .caffemodel weights written by these tests, give the outputs of a NumPy evaluation of Caffe's
own rules (tests/interop/caffe_numpy.py) within max |a - b| <= 1e-5 * max(1, max |ref|); ceil-mode
pooling is explicit and warned about; bad files are clean errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("google.protobuf")

from caffe_numpy import evaluate, random_blobs, write_caffemodel  # noqa: E402
from interop_testutil import assert_close  # noqa: E402

from cnndsl.diagnostics import CnnError  # noqa: E402
from cnndsl.interop.caffe import import_caffe  # noqa: E402
from cnndsl.interop.cnn_writer import finish  # noqa: E402
from cnndsl.model import Model  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
NETS = {"lenet": ((1, 28, 28), "prob"), "cifar10_quick": ((3, 32, 32), "ip2"),
        "every_layer": ((4, 13, 9), "prob")}


def _import(name, tmp_path, seed=0, legacy=False):
    proto = DATA / f"{name}.prototxt"
    shape, _ = NETS[name]
    blobs = random_blobs(proto.read_text(), shape, seed)
    weights = tmp_path / f"{name}.caffemodel"
    write_caffemodel(weights, blobs, legacy_shapes=legacy)
    builder = import_caffe(proto, weights)
    text, program = finish(builder, str(tmp_path / f"{name}.cnn"))
    model = Model(program, init_from_file=False)
    model.store.load_state_dict(builder.weights)
    return proto, blobs, builder, text, model


@pytest.mark.parametrize("name", sorted(NETS))
def test_caffe_nets_match_a_numpy_evaluation_of_the_same_weights(name, tmp_path):
    proto, blobs, builder, text, model = _import(name, tmp_path)
    shape, _ = NETS[name]
    x = np.random.default_rng(1).standard_normal((3,) + shape).astype(np.float32)
    want = evaluate(proto.read_text(), blobs, x)
    got = model.predict(x)
    assert got, text
    for head, value in got.items():
        top = head
        assert_close(value, want[top].reshape(value.shape), what=f"{name} head {head}")


def test_legacy_blob_shapes_are_read(tmp_path):
    proto, blobs, builder, text, model = _import("lenet", tmp_path, legacy=True)
    x = np.random.default_rng(2).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert_close(model.predict(x)["prob"], evaluate(proto.read_text(), blobs, x)["prob"])


def test_ceil_pooling_is_explicit_and_warned_with_its_line(tmp_path):
    proto, _, builder, text, _ = _import("cifar10_quick", tmp_path)
    assert "pool1 = maxpool 3 stride=2 rounding=ceil" in text
    assert "pool2 = avgpool 3 stride=2 rounding=ceil" in text
    notes = [d for d in builder.notes if "rounds up" in d.message]
    assert [d.span.line for d in notes] == [31, 37, 42]
    assert "'pool1' gives 16x16 from 32x32" in notes[0].message and "would give 15x15" in notes[0].help
    # the losses and the accuracy are left out and said so; the loss's input is the head
    assert "left out: Accuracy 'accuracy'" in text and "ip2 = dense classes -> ip2" in text
    assert "network CIFAR10_quick(classes = 10)" in text


def test_lenet_reads_like_the_prototxt(tmp_path):
    _, _, _, text, _ = _import("lenet", tmp_path)
    for line in ("network LeNet(classes = 10) {", "conv1 = conv 20 kernel=5", "pool1 = maxpool 2",
                 "ip2 = dense classes", "prob = softmax -> prob", "# Caffe Convolution 'conv1' (line 9)"):
        assert line in text, text


def test_every_layer_net_uses_every_rewrite(tmp_path):
    _, _, builder, text, _ = _import("every_layer", tmp_path)
    for piece in ("Scale 'scale_a'", "leaky_relu 0.1", "rounding=floor", "padding=2 dilation=2", "add(",
                  "(AVE counting its padding)", "conv_transpose 3 kernel=4 stride=2 padding=1", "global_avgpool",
                  "dropout 0.3", "kernel=3x2", "groups=2 bias=false", "concat("):
        assert piece in text, piece


def test_a_layer_kind_cnndsl_lacks_is_located(tmp_path):
    proto = tmp_path / "bad.prototxt"
    proto.write_text('input: "data"\ninput_shape { dim: 1 dim: 1 dim: 8 dim: 8 }\n'
                     'layer {\n  name: "p"\n  type: "Power"\n  bottom: "data"\n  top: "p"\n}\n')
    with pytest.raises(CnnError) as info:
        import_caffe(proto)
    d = info.value.diagnostics[0]
    assert d.span.line == 5 and "has type Power, which cnndsl cannot import" in d.message
    assert "Convolution" in d.help


@pytest.mark.parametrize("text, line, expected", [
    ('layer {\n  name: "a"\n  type: "ReLU"\n', 1, "never closed"),
    ('name: "x"\nlayer { name: }\n', 2, "a value was expected"),
    ('name: "x"\n', 0, "has no layers"),
])
def test_bad_prototxt_files_are_located_errors(tmp_path, text, line, expected):
    proto = tmp_path / "bad.prototxt"
    proto.write_text(text)
    with pytest.raises(CnnError) as info:
        import_caffe(proto)
    d = info.value.diagnostics[0]
    assert expected in d.message and d.span.file == str(proto) and d.span.line == line


def test_bad_caffemodel_files(tmp_path):
    proto = DATA / "lenet.prototxt"
    garbage = tmp_path / "bad.caffemodel"
    garbage.write_bytes(b"\xff\xff\xff\xff not protobuf")
    with pytest.raises(CnnError) as info:
        import_caffe(proto, garbage)
    assert "not a Caffe .caffemodel" in info.value.diagnostics[0].message
    blobs = random_blobs(proto.read_text(), (1, 28, 28))
    blobs["conv1"][0] = blobs["conv1"][0][:10]  # 10 filters where the prototxt says 20
    wrong = tmp_path / "wrong.caffemodel"
    write_caffemodel(wrong, blobs)
    with pytest.raises(CnnError) as info:
        import_caffe(proto, wrong)
    d = info.value.diagnostics[0]
    assert d.span.file == str(wrong) and "the weights of layer 'conv1' has 250 values" in d.message
    assert "expected: 20x1x5x5 = 500 values (line 9 of" in d.details[0]
    write_caffemodel(wrong, {k: v for k, v in random_blobs(proto.read_text(), (1, 28, 28)).items() if k != "ip1"})
    with pytest.raises(CnnError) as info:
        import_caffe(proto, wrong)
    assert "no blobs for layer 'ip1'" in info.value.diagnostics[0].message
