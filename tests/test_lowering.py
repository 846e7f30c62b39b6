"""Lowering: names, heads, inputs, blocks, repeat, parameters, -D overrides, expressions, errors."""
from __future__ import annotations

import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.frontend import loads


def net(body: str, header: str = "network n", extra: str = "", **kw):
    return loads(f"{extra}{header} {{\n{body}\n}}\n", "t.cnn", **kw)


def errors(body: str, header: str = "network n", extra: str = "", **kw):
    with pytest.raises(CnnError) as e:
        net(body, header, extra, **kw)
    return e.value.errors


def names(program):
    return [n.name for n in program.graph.nodes()]


# ---- naming ------------------------------------------------------------------------
def test_unnamed_layers_are_counted_per_op():
    p = net("input x: 3x8x8\nconv 4 padding=same\nrelu\nconv 4 padding=same\nmaxpool 2\nrelu")
    assert names(p) == ["x", "conv1", "relu1", "conv2", "maxpool1", "relu2"]
    assert p.graph.inputs_of("conv2") == ["relu1"]


def test_named_layers_keep_the_count_stable():
    p = net("input x: 3x8x8\nc1 = conv 4 padding=same\nconv 4 padding=same")
    assert names(p) == ["x", "c1", "conv2"]


def test_counter_skips_taken_names():
    p = net("input x: 3x8x8\nconv2 = conv 4 padding=same\nconv 4 padding=same")
    assert names(p) == ["x", "conv2", "conv3"]


def test_aliases_are_canonical():
    p = net("input x: [8]\nfc 4")
    assert names(p) == ["x", "dense1"] and p.graph.node("dense1").op == "dense"


def test_trailing_activation_and_references():
    p = net("input x: 3x8x8\nc1 = conv 4 padding=same relu\nc2 = conv(c1) 4 padding=same\nadd(c1, c2)")
    g = p.graph
    assert g.node("c1.relu").op == "relu" and g.inputs_of("c1.relu") == ["c1"]
    assert g.inputs_of("c2") == ["c1.relu"]  # c1 means the post-activation tensor
    assert g.inputs_of("add1") == ["c1.relu", "c2"]
    assert g.node("c1.relu").trace == ()


def test_activation_as_own_line_is_equivalent():
    a = net("input x: [8]\ndense 4 relu")
    b = net("input x: [8]\ndense 4\nrelu")
    assert [n.op for n in a.graph.nodes()] == [n.op for n in b.graph.nodes()]


def test_activation_call_sets_alpha():
    p = net("input x: [8]\nd = dense 4 leaky_relu(0.2)")
    assert p.graph.node("d.leaky_relu").attrs["alpha"] == 0.2
    p = net("input x: [8]\nd = dense 4 leaky_relu(alpha=0.3)")
    assert p.graph.node("d.leaky_relu").attrs["alpha"] == 0.3
    p = net("input x: [8]\ndense 4\nleaky_relu 0.1")
    assert p.graph.node("leaky_relu1").attrs["alpha"] == 0.1


def test_dotted_reference_and_target():
    p = net("input x: 3x8x8\nc1 = conv 4 padding=same relu\na.b = conv(c1.relu) 4 padding=same\nadd(c1, a.b)")
    assert p.graph.inputs_of("a.b") == ["c1.relu"]


# ---- heads -----------------------------------------------------------------------
def test_head_names_unnamed_layer():
    p = net("input x: [8]\ndense 3 -> logits")
    assert p.graph.heads == {"logits": "logits"}


def test_head_on_named_layer_and_activation():
    p = net("input x: [8]\nd = dense 3 softmax -> probs")
    assert p.graph.heads == {"probs": "d.softmax"}


def test_default_head_is_last_statement():
    p = net("input x: [8]\ndense 3")
    assert p.graph.heads == {"dense1": "dense1"}


def test_several_heads_in_order():
    p = net("input x: [8]\nh = dense 8 relu\ndense(h) 3 -> cls\ndense(h) 4 sigmoid -> box")
    assert list(p.graph.heads.items()) == [("cls", "cls"), ("box", "box.sigmoid")]


def test_duplicate_head():
    errs = errors("input x: [8]\ndense 3 -> a\ndense 3 -> a")
    assert errs[0].code == "duplicate-head"


# ---- inputs ---------------------------------------------------------------------
def test_inputs_shapes():
    p = net("input a: 1x28x28\ninput b: [100]\ninput c: [w, w * 2, 3]\nconcat(a, a)\ndense(b) 2\nrelu(c)",
            header="network n(w = 2)")
    g = p.graph
    assert g.inputs == ["a", "b", "c"]
    assert g.node("a").attrs["shape"] == (1, 28, 28)
    assert g.node("b").attrs["shape"] == (100,)
    assert g.node("c").attrs["shape"] == (2, 4, 3)


def test_network_without_input():
    errs = errors("dense 3")
    assert [e.code for e in errs] == ["no-input"]


def test_network_input_needs_shape():
    assert errors("input x\ndense 3")[0].code == "input-no-shape"


def test_bad_input_shape():
    errs = errors("input x: 28x28\ndense 3")
    assert "1x28x28" in errs[0].message


# ---- option binding --------------------------------------------------------------
def test_positional_and_keyword_options():
    p = net("input x: 3x8x8\nconv 4 kernel=3x1 stride=1 padding=same bias=false dilation=1")
    a = p.graph.node("conv1").attrs
    assert a["filters"] == 4 and a["kernel"] == (3, 1) and a["padding"] == "same" and a["bias"] is False
    assert list(a) == ["filters", "kernel", "stride", "padding", "dilation", "groups", "bias", "rounding"]
    spans = p.graph.node("conv1").attr_spans
    assert spans["kernel"].column == 8 and spans["filters"].column == 6


def test_unknown_option_did_you_mean():
    (e,) = errors("input x: 3x8x8\nconv 4 strdie=2")
    assert e.code == "unknown-option" and e.help == "did you mean 'stride'?"
    assert (e.span.line, e.span.column) == (3, 8)


def test_missing_required_option_is_named():
    (e,) = errors("input x: 3x8x8\nconv kernel=3")
    assert e.code == "missing-option" and "filters" in e.message


def test_wrong_value_type_uses_attr_message():
    (e,) = errors("input x: 3x8x8\nconv 4 bias=3")
    assert e.code == "bad-value" and e.message == "bias takes true or false, got 3"


def test_option_given_twice():
    (e,) = errors("input x: 3x8x8\nconv 4 filters=5")
    assert e.code == "duplicate-option"


def test_too_many_positional_values():
    (e,) = errors("input x: 3x8x8\nconv 4 kernel 3")
    assert e.code == "too-many-values" and e.help == "did you mean kernel=3?"


def test_misplaced_space_before_inputs():
    (e,) = errors("input x: 3x8x8\nc = conv 4 padding=same\nadd (x, c)")
    assert e.code == "bad-input" and e.help == "write add(x, c) with no space before '('"


def test_options_inside_input_parentheses():
    (e,) = errors("input x: [8]\ndense 3\nleaky_relu(0.2)")
    assert e.code == "bad-input" and "leaky_relu 0.2" in e.help


def test_unknown_op():
    (e,) = errors("input x: 3x8x8\nmaxpol 2")
    assert e.code == "unknown-op" and e.help == "did you mean 'maxpool'?"


def test_internal_ops_are_not_layers():
    (e,) = errors("input x: 3x8x8\ninput2 = cross_entropy")
    assert e.code == "unknown-op"


# ---- tensors ---------------------------------------------------------------------
def test_undefined_tensor_did_you_mean():
    (e,) = errors("input x: 3x8x8\nskip = conv 4 padding=same\nadd(x, skp)")
    assert e.code == "undefined-tensor" and e.help == "did you mean 'skip'?"


def test_forward_reference_is_explained():
    (e,) = errors("input x: 3x8x8\nadd(x, later)\nlater = conv 3 padding=same")
    assert "after this use" in e.help


def test_duplicate_name():
    (e,) = errors("input x: [8]\na = dense 3\na = dense 3")
    assert e.code == "duplicate-name" and e.notes[0][0].line == 3


def test_input_counts():
    (e,) = errors("input x: 3x8x8\nadd(x)")
    assert e.code == "input-count" and "at least 2" in e.message
    (e,) = errors("input x: 3x8x8\nconv(x, x) 3")
    assert e.code == "input-count"
    (e,) = errors("input x: 3x8x8\nconcat relu")
    assert e.code == "input-count"


def test_same_tensor_twice_is_allowed():
    p = net("input x: 3x8x8\nadd(x, x)")
    assert p.graph.inputs_of("add1") == ["x", "x"]


def test_unused_layer_warning():
    p = net("input x: [8]\nside = dense 3\ndense(x) 3 -> out")
    (w,) = p.diagnostics
    assert w.severity == "warning" and w.code == "unused" and "'side'" in w.message


def test_several_independent_errors_in_one_run():
    errs = errors("input x: 3x8x8\nconv 4 strdie=1\nconv(x) 4 kernal=3\nmaxpol(x) 2\ndropout(x) 2")
    assert [e.code for e in errs] == ["unknown-option", "unknown-option", "unknown-op", "bad-value"]


def test_error_in_one_layer_is_not_repeated_downstream():
    errs = errors("input x: 3x8x8\nconv 4 strdie=1\nconv 4\nconv 4\ndense 3")
    assert len(errs) == 1


# ---- parameters and expressions ---------------------------------------------------
def test_parameters_and_expressions():
    p = net("input x: 3x8x8\nconv (classes + 5) * boxes kernel=k\nconv width // 3 kernel=[k, k - 2] padding=same",
            header="network n(classes = 3, boxes = 2, k = 3, width = classes * 4)")
    assert p.params == {"classes": 3, "boxes": 2, "k": 3, "width": 12}
    assert p.graph.node("conv1").attrs["filters"] == 16
    assert p.graph.node("conv2").attrs["filters"] == 4 and p.graph.node("conv2").attrs["kernel"] == (3, 1)


def test_division_exact_and_inexact():
    p = net("input x: [8]\ndense w / 2\ndropout 1 / 4", header="network n(w = 8)")
    assert p.graph.node("dense1").attrs["units"] == 4 and p.graph.node("dropout1").attrs["p"] == 0.25
    (e,) = errors("input x: [8]\ndense w / 3", header="network n(w = 8)")
    assert e.code == "bad-value"


def test_defines_override_parameters():
    p = net("input x: [8]\ndense classes * 2", header="network n(classes = 10, width = classes)",
            defines={"classes": "5"})
    assert p.params == {"classes": 5, "width": 5}
    assert p.graph.node("dense1").attrs["units"] == 10


def test_define_values():
    p = net("input x: 3x8x8\nconv 3 padding=pad bias=b kernel=k",
            header="network n(pad = valid, b = true, k = 3)", defines={"pad": "same", "b": "false", "k": "3x1"})
    a = p.graph.node("conv1").attrs
    assert a["padding"] == "same" and a["bias"] is False and a["kernel"] == (3, 1)


def test_define_errors():
    (e,) = errors("input x: [8]\ndense classes", header="network n(classes = 10)", defines={"clases": "5"})
    assert e.code == "unknown-define" and e.help == "did you mean 'classes'?" and str(e.span) == "<command line>"
    (e,) = errors("input x: [8]\ndense classes", header="network n(classes = 10)", defines={"classes": "5!"})
    assert e.code == "bad-define"
    # 5,000 digits: int() refuses past 4,300 (Python's limit); the message stays one short line
    (e,) = errors("input x: [8]\ndense classes", header="network n(classes = 10)", defines={"classes": "9" * 5000})
    assert e.code == "bad-define" and "the number is out of range" in e.message and len(e.message) < 120


@pytest.mark.parametrize("text, words", [
    # `5+5` was "the number is out of range (at most 1,000,000,000,000)": any text of digits and
    # +-.xe counted as a number
    ("5+5", "expected a number, true/false, a word or HxW"),
    ("1.2.3", "expected a number, true/false, a word or HxW"),
    ("28x", "expected a number, true/false, a word or HxW"),
    ("-5-5", "expected a number, true/false, a word or HxW"),
    ("99999999999999999999", "the number is out of range"),
    ("1e400", "the number is out of range"),
    ("10x10x99999999999999", "the number is out of range"),
])
def test_a_define_that_is_no_value_is_not_called_out_of_range(text, words):
    (e,) = errors("input x: [8]\ndense classes", header="network n(classes = 10)", defines={"classes": text})
    assert e.code == "bad-define" and e.message == f"-D classes={text}: {words}" + (
        " (at most 1,000,000,000,000)" if "range" in words else ""), e.message


@pytest.mark.parametrize("body, shown", [
    ("input x: [8]\ndense " + "9" * 5000, "99999999999999999999...(5,000 characters)"),
    # a dims part of over 4,000 digits is held as 10**100: it was reported as that number
    ("input x: 1x28x" + "9" * 5000 + "\nflatten", "99999999999999999999...(5,000 characters)"),
    ("input x: 1x28x99999999999999\nflatten", "99999999999999"),
    ("input x: [8]\ndense 1e308", "1e308"),
], ids=["5000-digit-number", "5000-digit-dims", "dims", "float"])
def test_a_number_too_large_is_shown_as_written_and_cut_short(body, shown):
    """A 5,000-digit literal made a 5,000-character message."""
    (e,) = errors(body)
    assert e.code == "number-too-large" and e.message == f"the number {shown} is too large", e.message


def test_parameter_without_value():
    (e,) = errors("input x: [8]\ndense classes", header="network n(classes)")
    assert e.code == "parameter-no-value"
    p = net("input x: [8]\ndense classes", header="network n(classes)", defines={"classes": "7"})
    assert p.graph.node("dense1").attrs["units"] == 7


def test_expression_errors():
    (e,) = errors("input x: [8]\ndense (clases + 1)", header="network n(classes = 10)")
    assert e.code == "unknown-parameter" and e.help == "did you mean 'classes'?"
    (e,) = errors("input x: [8]\ndense 4 / (2 - 2)")
    assert e.code == "division-by-zero"
    (e,) = errors("input x: [8]\ndense 99999999999999999999")
    assert e.code == "number-too-large"
    (e,) = errors("input x: [8]\ndropout 1e999")
    assert e.code == "number-too-large"
    (e,) = errors("input x: [8]\ndense (same + 1)")
    assert e.code == "unknown-parameter"
    (e,) = errors("input x: [8]\ndense 1000000 * 1000000 * 1000000")
    assert e.code == "number-too-large"


def test_typo_in_parameter_word_gets_hint():
    (e,) = errors("input x: [8]\ndense clases", header="network n(classes = 10)")
    assert "did you mean 'classes'" in e.help


# ---- rounding -----------------------------------------------------------------------
@pytest.mark.parametrize("stmt", ["rounding floor", "rounding = floor"])
def test_network_rounding(stmt):
    p = net(f"{stmt}\ninput x: 1x7x7\nmaxpool 2")
    assert p.graph.attrs["rounding"] == "floor"
    assert str(p.graph.node("maxpool1").type) == "1x3x3"
    assert [w.code for w in p.diagnostics] == ["rounding-drops"]  # one warning for rows and columns


def test_network_rounding_errors():
    (e,) = errors("rounding flor\ninput x: [3]")
    assert e.code == "bad-rounding" and e.help == "did you mean 'floor'?"
    (e,) = errors("rounding ceil\nrounding floor\ninput x: [3]")
    assert e.code == "duplicate-rounding"


def test_strict_rounding_is_default():
    (e,) = errors("input x: 1x7x7\nmaxpool 2")
    assert e.code == "stride-does-not-tile"


# ---- blocks ------------------------------------------------------------------------
BLOCKS = """
block residual(filters, stride = 1) {
  input x
  conv filters kernel=3 stride=stride padding=same
  y = batchnorm
  add(x, y) relu
}
block pair(f) {
  input a
  input b
  concat(a, b)
  conv f kernel=1
}
"""


def test_block_expansion_names_and_trace():
    p = net("input x: 8x8x8\nresidual 8\nr2 = residual 8\nresidual(x) 8", extra=BLOCKS)
    g = p.graph
    assert "residual1.conv1" in g and "r2.conv1" in g and "residual3.conv1" in g
    assert g.inputs_of("residual1.add1") == ["x", "residual1.y"]
    assert g.inputs_of("r2.conv1") == ["residual1.add1.relu"]  # residual1 means the block's output
    assert g.inputs_of("residual3.conv1") == ["x"]
    assert g.node("r2.conv1").trace[0].line == 17
    assert g.heads == {"residual3.add1.relu": "residual3.add1.relu"}


def test_block_params_positional_keyword_default():
    p = net("input x: 8x8x8\nresidual 8 stride=1\nresidual filters=8", extra=BLOCKS)
    assert p.graph.node("residual2.conv1").attrs["filters"] == 8


def test_block_with_two_inputs_and_activation_and_head():
    p = net("input x: 8x4x4\ny = conv 8 kernel=1\np = pair(x, y) 4 relu -> out", extra=BLOCKS)
    g = p.graph
    assert g.inputs_of("p.concat1") == ["x", "y"]
    assert g.heads == {"out": "p.relu"} and g.inputs_of("p.relu") == ["p.conv1"]


def test_block_errors():
    (e,) = errors("input x: 8x8x8\nresidual 8 strid=2", extra=BLOCKS)
    assert e.code == "unknown-option" and e.help == "did you mean 'stride'?"
    (e,) = errors("input x: 8x8x8\nresidual", extra=BLOCKS)
    assert e.code == "missing-option" and "filters" in e.message
    (e,) = errors("input x: 8x8x8\npair 3", extra=BLOCKS)
    assert e.code == "input-count"
    (e,) = errors("input x: 8x8x8\nresidual 8 9 10", extra=BLOCKS)
    assert e.code == "too-many-values"


def test_error_inside_block_points_inside_and_at_use_sites():
    extra = BLOCKS + """
block two(f) {
  input x
  residual f
}
"""
    (e,) = errors("input x: 8x8x8\ntwo 8 \ntwo badvalue", extra=extra)
    assert e.span.line == 4  # `conv filters ...` inside residual
    assert [s.line for s, _ in e.notes] == [17, 22]  # residual in two, then two in the network
    assert all(text == "in the block used here" for _, text in e.notes)


def test_shape_error_inside_repeated_block_has_trace():
    (e,) = errors("input x: 8x8x8\nresidual 16", extra=BLOCKS)
    assert e.code != "" and len(e.notes) == 1 and e.notes[0][0].line == 16


def test_recursive_blocks_are_an_error():
    extra = "block a(f) {\n  input x\n  b f\n}\nblock b(f) {\n  input x\n  a f\n}\n"
    (e,) = errors("input x: [3]\na 1", extra=extra)
    assert e.code == "recursive-block" and "a -> b -> a" in e.message
    extra = "block a(f) {\n  input x\n  a f\n}\n"
    (e,) = errors("input x: [3]\na 1", extra=extra)
    assert e.code == "recursive-block"


def test_block_definition_errors():
    with pytest.raises(CnnError) as e:
        loads("block conv(f) {\n input x\n}\nnetwork n { input x: [3] }")
    assert e.value.errors[0].code == "block-shadows-op"
    with pytest.raises(CnnError) as e:
        loads("block b(f) {\n dense 3\n}\nnetwork n { input x: [3] }")
    assert e.value.errors[0].code == "block-no-input"
    (e,) = errors("input x: [3]\nb", extra="block b {\n  input x: [4]\n  dense 3\n}")
    assert e.code == "block-input-shape"  # a declared shape must match the input (tests/test_block_shapes.py)
    (e,) = errors("input x: [3]\nb", extra="block b {\n  input x\n  dense 3 -> h\n}")
    assert e.code == "head-in-block"


def test_blocks_do_not_see_network_parameters():
    (e,) = errors("input x: [3]\nb", header="network n(classes = 3)",
                  extra="block b {\n  input x\n  dense classes + 1\n}")
    assert e.code == "unknown-parameter"


# ---- repeat -----------------------------------------------------------------------
def test_repeat_statement_and_block():
    p = net("input x: 8x8x8\nrepeat 3 residual 8\nrepeat 2 {\n  conv 8 padding=same\n  relu\n}", extra=BLOCKS)
    n = names(p)
    assert [x for x in n if x.endswith(".conv1")] == ["residual1.conv1", "residual2.conv1", "residual3.conv1"]
    assert "conv1" in n and "conv2" in n and "relu2" in n
    assert p.graph.inputs_of("residual2.conv1") == ["residual1.add1.relu"]


def test_repeat_with_named_layers_and_parameter_count():
    p = net("input x: [8]\nrepeat n {\n  h = dense 8\n  add(h, h)\n}", header="network n(n = 2)")
    assert "h_1" in p.graph and "h_2" in p.graph
    assert p.graph.inputs_of("add2") == ["h_2", "h_2"]


def test_repeat_errors():
    (e,) = errors("input x: [8]\nrepeat 0 dense 3")
    assert e.code == "bad-repeat"
    (e,) = errors("input x: [8]\nrepeat 2 dense 3 -> out")
    assert e.code == "head-in-repeat"
    (e,) = errors("input x: [8]\nrepeat 100000 dense 3")
    assert e.code == "bad-repeat"
    errs = errors("input x: [8]\nrepeat 5 dense 3 bais=true")
    assert len(errs) == 1  # reported once, not once per iteration


def test_huge_network_is_refused(monkeypatch):
    from cnndsl.frontend import lower

    monkeypatch.setattr(lower, "MAX_NODES", 500)
    errs = errors("input x: [8]\nrepeat 10000 {\n  repeat 10000 {\n    relu\n  }\n}")
    assert errs[0].code in ("too-large",)


# ---- networks ----------------------------------------------------------------------
def test_choose_network():
    text = "network a { input x: [3] }\nnetwork b { input y: [4] }\n"
    with pytest.raises(CnnError) as e:
        loads(text)
    assert e.value.errors[0].code == "choose-network" and "a, b" in e.value.errors[0].help
    assert loads(text, network="b").graph.inputs == ["y"]
    with pytest.raises(CnnError) as e:
        loads(text, network="c")
    assert e.value.errors[0].code == "unknown-network"


def test_file_without_network():
    with pytest.raises(CnnError) as e:
        loads("block b {\n input x\n relu\n}")
    assert e.value.errors[0].code == "no-network"


def test_node_spans_and_trace_types():
    p = net("input x: 3x8x8\nc = conv 3 kernel=3 padding=1")
    n = p.graph.node("c")
    assert (n.span.line, n.span.column) == (3, 1)
    assert n.attr_spans["padding"].column == 21
    assert n.trace == ()


def test_mistake_in_block_used_twice_is_reported_once():
    extra = "block b {\n  input x\n  dense 3 bais=true\n}\n"
    (e,) = errors("input x: [3]\nb\nb", extra=extra)
    assert e.code == "unknown-option" and e.span.line == 3 and e.notes[0][0].line == 7
