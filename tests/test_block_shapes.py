"""Shapes inside blocks: channels(x), height(x), width(x) in expressions, the `depthwise`
shorthand, a block input that declares its channels, the groups = filters warning."""
from __future__ import annotations

import pytest

import cnndsl
from cnndsl.diagnostics import CnnError


def _load(text: str):
    return cnndsl.loads(text, "<blocks>")


def _errors(text: str):
    with pytest.raises(CnnError) as e:
        _load(text)
    return e.value.diagnostics


SEPARABLE = """
block separable(out_ch, stride = 1) {
  input x
  conv channels(x) kernel=3 stride=stride padding=same groups=channels(x) bias=false
  batchnorm relu
  conv out_ch kernel=1
}
network M {
  input image: 3x16x16
  conv 8 kernel=3 padding=same
  separable 16
  separable 32 stride=2
  conv height(image) // 4 kernel=1
  flatten
  dense width(image) * 2 -> out
}
"""


def test_channels_height_width_in_a_block_and_a_network():
    p = _load(SEPARABLE)
    g = p.graph
    assert g.node("separable1.conv1").attrs["groups"] == 8 and g.node("separable1.conv1").attrs["filters"] == 8
    assert g.node("separable2.conv1").attrs["groups"] == 16
    assert g.node("conv2").attrs["filters"] == 4 and g.node("out").attrs["units"] == 32
    assert p.diagnostics == []


def test_depthwise_is_a_conv_with_its_inputs_channels():
    p = _load("""
network D {
  input image: 6x8x8
  d = depthwise 3 stride=2 padding=same relu
  e = depthwise kernel=5 multiplier=2 padding=same bias=false
  flatten
  dense 2 -> out
}""")
    d, e = p.graph.node("d"), p.graph.node("e")
    assert d.op == e.op == "conv"
    assert (d.attrs["filters"], d.attrs["groups"], d.attrs["kernel"], d.attrs["stride"]) == (6, 6, (3, 3), (2, 2))
    assert (e.attrs["filters"], e.attrs["groups"], e.attrs["bias"]) == (12, 6, False)
    assert str(d.type) == "6x4x4" and str(e.type) == "12x4x4" and d.params["weight"] == (6, 1, 3, 3)
    assert p.graph.node("d.relu").op == "relu"
    d = _errors("network D {\n  input v: [8]\n  depthwise 3\n}")[0]
    assert "needs a feature map (CxHxW) but 'v' is a vector of 8" in d.message


def test_shape_function_errors():
    d = _errors("network N {\n  input v: [8]\n  dense height(v)\n}")[0]
    assert d.message == "'v' is a vector (8) and has no height" and d.help == "channels(v) is its length"
    d = _errors("network N {\n  input image: 1x4x4\n  conv channels(imag) kernel=1\n}")[0]
    assert d.message == "undefined tensor 'imag'" and "did you mean 'image'?" in d.help
    d = _errors("network N(c = channels(x)) {\n  input x: 1x4x4\n  conv c kernel=1\n}")[0]
    assert d.message == "channels(...) reads a tensor's shape, which only a layer's options can do"
    d = _errors("network N {\n  input x: 1x4x4\n  conv channels(x, 2) kernel=1\n}")[0]
    assert d.message == "channels(...) takes one tensor name, as in channels(x)"


def test_a_failed_layer_is_reported_once_not_again_by_channels():
    diags = _errors("network N {\n  input x: 1x4x4\n  a = conv 2 kernel=9\n  conv channels(a) kernel=1\n}")
    assert [d.code for d in diags if d.severity == "error"] == ["kernel-too-large"]


def test_a_block_input_that_declares_its_channels_is_checked_at_each_use():
    text = """
block separable(in_ch, out_ch) {
  input x: in_ch
  conv in_ch kernel=3 padding=same groups=in_ch
  conv out_ch kernel=1
}
network M {
  input image: 3x16x16
  conv 64 kernel=3 padding=same
  separable IN 64
}"""
    assert _load(text.replace("IN", "64")).diagnostics == []
    diags = _errors(text.replace("IN", "32"))
    d = diags[0]
    assert d.message == ("block separable expects its input 'x' to have 32 channels (in_ch = 32), but the tensor it "
                         "is given ('conv1') has 64 (64x16x16)")
    assert d.help == "give 64 where the block is used, or let the block read it: channels(x)"
    assert d.notes and "in the block used here" in d.notes[0][1]
    d = _errors(text.replace("input x: in_ch", "input x: 3x8x8").replace("IN", "64"))[0]
    assert "expects its input 'x' to be 3x8x8, but the tensor it is given ('conv1') is 64x16x16" in d.message


def test_groups_equal_to_filters_on_another_channel_count_warns():
    p = _load("network N {\n  input x: 64x4x4\n  conv 32 kernel=1 groups=32\n  flatten\n  dense 2 -> out\n}")
    (w,) = p.diagnostics
    assert w.code == "groups-depthwise"
    assert w.message == ("conv 'conv1' has groups = filters = 32, the pattern of a depthwise conv, but its input has "
                         "64 channels: each filter reads 2 of them")
    ok = _load("network N {\n  input x: 64x4x4\n  conv 64 kernel=1 groups=64\n  conv 32 kernel=1 groups=4\n"
               "  flatten\n  dense 2 -> out\n}")
    assert ok.diagnostics == []


def test_groups_that_do_not_divide_the_input_are_an_error():
    d = _errors("network N {\n  input x: 6x4x4\n  conv 8 kernel=1 groups=4\n}")[0]
    assert d.code == "groups" and "groups=4 must divide both the 6 input channels and the 8 filters" in d.message
