"""Property tests of the sliding-window size rules against a brute-force count.

Valid chains: the inferred H and W must equal the number of window start
positions over the padded input whose window lies fully inside it. Invalid
layers: the right diagnostic code, with a location, and never another exception.
"""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cnndsl.analysis.infer import infer_shapes
from cnndsl.diagnostics import Span
from cnndsl.ir.graph import Graph
from cnndsl.ops.build import make_node

SETTINGS = settings(max_examples=100, deadline=None)
POOLS = ["maxpool", "avgpool", "l2pool"]
FILE = "p.cnn"


def brute_count(w: int, k_eff: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Window starts 0, S, 2S, ... over the padded input whose window fits entirely."""
    length = w + pad_before + pad_after
    return sum(1 for start in range(0, length, stride) if start + k_eff <= length)


def new_graph(c: int, h: int, w: int) -> Graph:
    g = Graph("prop")
    g.add(make_node("input", "x", shape=(c, h, w), span=Span(FILE, 1, 1)))
    g.inputs.append("x")
    return g


def add_layer(g: Graph, i: int, prev: str, op: str, **attrs) -> str:
    name = f"l{i}"
    spans = {k: Span(FILE, i + 2, 10 + 6 * j) for j, k in enumerate(attrs)}
    g.add(make_node(op, name, span=Span(FILE, i + 2, 3), attr_spans=spans, **attrs), [prev])
    return name


@st.composite
def valid_layer(draw, h: int, w: int):
    """(op, attrs, k_eff, stride, padding) that tiles both axes of an h x w input exactly."""
    op = draw(st.sampled_from(["conv"] * 3 + POOLS))
    k = draw(st.integers(1, 7))
    d = draw(st.integers(1, 3)) if op == "conv" else 1
    k_eff = d * (k - 1) + 1
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter of the layers use `same`
        s = draw(st.integers(1, 4))
        padding = "same"
    else:
        limit = k_eff - 1 if op == "conv" else k // 2
        p = draw(st.integers(0, limit))
        span_h, span_w = h + 2 * p - k_eff, w + 2 * p - k_eff
        if min(span_h, span_w) < 0:
            k, d, k_eff, p = 1, 1, 1, 0
            span_h, span_w = h - 1, w - 1
        g = math.gcd(span_h, span_w)
        strides = [s for s in range(1, 6) if g == 0 or g % s == 0]
        s = draw(st.sampled_from(strides))
        padding = p
    attrs = {"kernel": k, "stride": s, "padding": padding}
    if op == "conv":
        attrs.update(filters=draw(st.integers(1, 4)), dilation=d)
    return op, attrs, k_eff, s, padding


@SETTINGS
@given(st.data())
def test_valid_chains_match_brute_force(data):
    h, w = data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48))
    g = new_graph(data.draw(st.integers(1, 3)), h, w)
    prev = "x"
    expected = []
    for i in range(data.draw(st.integers(1, 4))):
        op, attrs, k_eff, s, padding = data.draw(valid_layer(h, w))
        prev = add_layer(g, i, prev, op, **attrs)
        if padding == "same":
            oh, ow = -(-h // s), -(-w // s)  # the definition of `same`: ceil(W / S)
        else:
            oh = brute_count(h, k_eff, s, padding, padding)
            ow = brute_count(w, k_eff, s, padding, padding)
        expected.append((prev, padding, k_eff, s, h, w, oh, ow))
        h, w = oh, ow
    diags = infer_shapes(g)
    assert not diags.errors, [d.render() for d in diags.errors]
    for name, padding, k_eff, s, ih, iw, oh, ow in expected:
        node = g.node(name)
        assert node.type.shape[1:] == (oh, ow)
        top, bottom, left, right = node.geometry.pads
        if padding == "same":
            # the stored padding reproduces the size under the brute-force count, split TF-style
            assert brute_count(ih, k_eff, s, top, bottom) == oh
            assert brute_count(iw, k_eff, s, left, right) == ow
            assert 0 <= bottom - top <= 1 and 0 <= right - left <= 1
        else:
            assert (top, bottom, left, right) == (padding,) * 4


@SETTINGS
@given(size=st.integers(1, 40), k=st.integers(0, 4).map(lambda n: 2 * n + 1), d=st.integers(1, 3),
       op=st.sampled_from(["conv"] + POOLS))
def test_same_at_stride_one_preserves_size(size, k, d, op):
    g = new_graph(2, size, size + 3)
    attrs = {"kernel": k, "stride": 1, "padding": "same"}
    if op == "conv":
        attrs.update(filters=3, dilation=d)
    add_layer(g, 0, "x", op, **attrs)
    assert not infer_shapes(g).errors
    node = g.node("l0")
    assert node.type.shape[1:] == (size, size + 3)
    k_eff = (d if op == "conv" else 1) * (k - 1) + 1
    assert node.geometry.pads == ((k_eff - 1) // 2,) * 4  # odd kernel: symmetric


@SETTINGS
@given(w=st.integers(1, 40), k=st.integers(1, 6), s=st.integers(1, 5), op=st.sampled_from(POOLS + ["conv"]),
       data=st.data())
def test_floor_and_ceil(w, k, s, op, data):
    limit = k - 1 if op == "conv" else k // 2
    p = data.draw(st.integers(0, limit))
    if w + 2 * p < k:
        return
    sizes = {}
    for rounding in ("floor", "ceil"):
        g = new_graph(1, w, w)
        attrs = {"kernel": k, "stride": s, "padding": p, "rounding": rounding}
        if op == "conv":
            attrs["filters"] = 1
        add_layer(g, 0, "x", op, **attrs)
        diags = infer_shapes(g)
        assert not diags.errors
        sizes[rounding] = g.node("l0").type.shape[1]
    floor, ceil = sizes["floor"], sizes["ceil"]
    assert floor == brute_count(w, k, s, p, p)
    tiles = (w + 2 * p - k) % s == 0
    assert ceil == floor if tiles else ceil in (floor, floor + 1)
    assert (ceil - 1) * s < w + p  # no window starts in the right padding


@st.composite
def invalid_layer(draw):
    """(h, op, attrs, expected code): one layer that breaks exactly one rule."""
    op = draw(st.sampled_from(["conv"] + POOLS))
    d = draw(st.integers(1, 3)) if op == "conv" else 1
    kind = draw(st.sampled_from(["stride", "kernel", "padding"]))
    if kind == "stride":
        k = draw(st.integers(1, 5))
        k_eff = d * (k - 1) + 1
        limit = k_eff - 1 if op == "conv" else k // 2
        p = draw(st.integers(0, limit))
        span = draw(st.integers(2, 40))
        h = span + k_eff - 2 * p
        if h < 1:
            h, p = span + k_eff, 0
        s = draw(st.sampled_from([s for s in range(2, span + 2) if span % s]))
        code = "stride-does-not-tile"
    elif kind == "kernel":
        h = draw(st.integers(1, 12))
        k = draw(st.integers(2, 8))
        p = 0 if op != "conv" else draw(st.integers(0, 3))
        k_eff = d * (k - 1) + 1
        if k_eff <= h + 2 * p:  # make it too big
            k = (h + 2 * p) // d + 2
        limit = d * (k - 1) if op == "conv" else k // 2
        p = min(p, limit)
        s = draw(st.integers(1, 3))
        code = "kernel-too-large"
    else:
        k = draw(st.integers(1, 5))
        k_eff = d * (k - 1) + 1
        limit = k_eff - 1 if op == "conv" else k // 2
        p = limit + draw(st.integers(1, 4))
        h = draw(st.integers(1, 40))
        s = draw(st.integers(1, 3))
        code = "padding-too-large"
    attrs = {"kernel": k, "stride": s, "padding": p}
    if op == "conv":
        attrs.update(filters=2, dilation=d)
    return h, op, attrs, code


@SETTINGS
@given(invalid_layer(), st.integers(1, 3))
def test_invalid_layers_give_the_right_diagnostic(case, extra_layers):
    h, op, attrs, code = case
    g = new_graph(2, h, h)
    prev = add_layer(g, 0, "x", op, **attrs)
    for i in range(extra_layers):  # later layers must not add cascading errors
        prev = add_layer(g, i + 1, prev, "relu")
    diags = infer_shapes(g)  # never raises
    assert [d.code for d in diags.errors] == [code], [d.render() for d in diags.errors]
    d = diags.errors[0]
    assert d.span is not None and d.span.file == FILE and d.span.line == 2
    assert d.help  # every one proposes a fix
    d.render()


@SETTINGS
@given(w=st.integers(1, 20), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 2), data=st.data())
def test_conv_transpose_matches_scatter_count(w, k, s, d, data):
    """Output size = positions the scatter of every input pixel touches, cropped by P, plus output_padding."""
    k_eff = d * (k - 1) + 1
    p = data.draw(st.integers(0, k_eff - 1))
    op = data.draw(st.integers(0, s - 1))
    touched = {i * s + d * t for i in range(w) for t in range(k)}
    expected = max(touched) + 1 - 2 * p + op
    g = new_graph(2, w, w)
    add_layer(g, 0, "x", "conv_transpose", filters=2, kernel=k, stride=s, padding=p, dilation=d, output_padding=op)
    diags = infer_shapes(g)
    if expected < 1:
        assert [e.code for e in diags.errors] == ["padding-too-large"]
        assert diags.errors[0].span is not None
    else:
        assert not diags.errors
        assert g.node("l0").type.shape == (2, expected, expected)
