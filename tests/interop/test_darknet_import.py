"""Darknet import: hand-written cfg files (a tiny YOLO-style detector with [route], [shortcut],
[upsample], [maxpool] size 2 stride 1 and two [yolo] heads; a classifier with every other layer
kind) with .weights files written by these tests in Darknet's order, compared output-for-output
with a NumPy evaluation of Darknet's rules (tests/interop/darknet_numpy.py) within
max |a - b| <= 1e-5 * max(1, max |ref|); bad files are clean, located errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from darknet_numpy import random_params, run, write_weights
from interop_testutil import assert_close

from cnndsl.diagnostics import CnnError
from cnndsl.interop.cnn_writer import finish
from cnndsl.interop.darknet import import_darknet
from cnndsl.model import Model

DATA = Path(__file__).resolve().parent / "data"
NETS = {"tiny_yolo": (3, 32, 32), "classifier": (2, 10, 12), "gap": (1, 8, 8)}


def _import(name, tmp_path, version=(0, 2, 0), seed=0):
    cfg = DATA / f"{name}.cfg"
    params = random_params(cfg.read_text(), NETS[name], seed)
    weights = tmp_path / f"{name}.weights"
    write_weights(weights, cfg.read_text(), params, version)
    builder = import_darknet(cfg, weights)
    text, program = finish(builder, str(tmp_path / f"{name}.cnn"))
    model = Model(program, init_from_file=False)
    model.store.load_state_dict(builder.weights)
    return cfg, params, builder, text, model


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("version", [(0, 2, 0), (0, 1, 0)], ids=["seen-int64", "seen-int32"])
def test_darknet_nets_match_a_numpy_evaluation_of_the_same_weights(name, version, tmp_path):
    cfg, params, builder, text, model = _import(name, tmp_path, version)
    x = np.random.default_rng(3).standard_normal((2,) + NETS[name]).astype(np.float32)
    outs = run(cfg.read_text(), params, x)
    got = model.predict(x)
    for head, value in got.items():
        index = int(head[len("yolo"):]) - 1 if head.startswith("yolo") else len(outs) - 1
        if not head.startswith("yolo"):  # the last layer, before a [cost]
            index = max(i for i, o in enumerate(outs) if o.ndim == value.ndim)
        assert_close(value, outs[index].reshape(value.shape), what=f"{name} head {head}")


def test_tiny_yolo_reads_like_a_detector(tmp_path):
    _, _, builder, text, _ = _import("tiny_yolo", tmp_path)
    assert "network tiny_yolo(classes = 2, boxes = 3) {" in text
    assert text.count("conv (classes + 5) * boxes kernel=1 -> yolo") == 2
    assert "maxpool6 = maxpool 2 stride=1 padding=same" in text   # size 2 stride 1 keeps the size
    assert "route13 = concat(upsample12, conv4_bn_leaky)" in text and "shortcut5 = add(" in text
    assert "anchors=10,14,23,27" in text and "Not expressed in the .cnn: the anchors" in text
    assert "leaky_relu 0.1" in text and "batchnorm eps=1e-06" in text


def test_yolo_filters_that_do_not_fit_are_located(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text((DATA / "tiny_yolo.cfg").read_text().replace("filters=21\nactivation=linear\n\n[yolo]\nmask = 3,4,5",
                                                                 "filters=24\nactivation=linear\n\n[yolo]\nmask = 3,4,5"))
    with pytest.raises(CnnError) as info:
        import_darknet(cfg)
    d = info.value.diagnostics[0]
    assert "has filters=24, but [yolo] needs (classes + 5) * masks = (2 + 5) * 3 = 21" in d.message
    assert d.span.file == str(cfg) and d.span.line == 63 and d.help == "filters=21"


def test_a_weights_file_of_another_cfg(tmp_path):
    cfg = DATA / "classifier.cfg"
    params = random_params(cfg.read_text(), NETS["classifier"])
    short = tmp_path / "short.weights"
    write_weights(short, cfg.read_text(), params)
    short.write_bytes(short.read_bytes()[:-40])
    with pytest.raises(CnnError) as info:
        import_darknet(cfg, short)
    d = info.value.diagnostics[0]
    assert d.span.file == str(short) and "the weights end inside the weights of layer 7 [connected] (line 46)" in d.message
    long = tmp_path / "long.weights"
    write_weights(long, cfg.read_text(), params)
    long.write_bytes(long.read_bytes() + b"\0" * 8)
    with pytest.raises(CnnError) as info:
        import_darknet(cfg, long)
    assert "8 bytes of the weights are left over" in info.value.diagnostics[0].message
    tiny = tmp_path / "tiny.weights"
    tiny.write_bytes(b"\1\0")
    with pytest.raises(CnnError) as info:
        import_darknet(cfg, tiny)
    assert "too short for its header" in info.value.diagnostics[0].message


@pytest.mark.parametrize("text, line, expected", [
    ("[net]\nwidth=8\nheight=8\nchannels=1\n[crop]\ncrop_width=4\n", 5, "is [crop], which cnndsl cannot import"),
    ("[net]\nwidth=8\nheight=8\n[convolutional]\nfilters=two\n", 5, "filters=two is not a whole number"),
    ("[net]\nwidth=8\nheight=8\n[convolutional\n", 4, "malformed section header"),
    ("[net]\nwidth=8\nheight=8\n[route]\nlayers=3\n", 5, "refers to layer 3, which is not an earlier layer"),
    ("[convolutional]\nfilters=2\n", 0, "this is not a Darknet cfg"),
])
def test_bad_cfg_files_are_located_errors(tmp_path, text, line, expected):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    with pytest.raises(CnnError) as info:
        import_darknet(cfg)
    d = info.value.diagnostics[0]
    assert expected in d.message, d.render()
    assert d.span.file == str(cfg) and d.span.line == line
