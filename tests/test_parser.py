"""The parser: text -> typed AST, and syntax/file errors -> clean diagnostics."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.frontend import ast
from cnndsl.frontend.parser import decode_source, parse_text, read_source


def parse(text: str) -> ast.Module:
    return parse_text(text, "t.cnn")


def body(text: str) -> list:
    return parse("network n {\n" + text + "\n}\n").networks[0].body


def syntax_error(text: str):
    with pytest.raises(CnnError) as e:
        parse(text)
    (d,) = e.value.diagnostics
    assert d.severity == "error"
    return d


def test_layer_statement_parts():
    (s,) = body("c1 = conv 6 kernel=5 padding=same relu -> feats")
    assert isinstance(s, ast.Layer)
    assert s.target == "c1" and s.op == "conv" and s.inputs is None
    assert [a.key for a in s.args] == [None, "kernel", "padding", None]
    assert s.args[0].value.value == 6
    assert s.args[2].value.name == "same"
    assert s.heads[0][0] == "feats"
    assert (s.span.line, s.span.column) == (2, 1)
    assert (s.op_span.column, s.op_span.end_column) == (6, 10)
    assert s.args[1].span.column == 13 and s.args[1].key_span.end_column == 19


def test_inputs_in_parentheses_need_no_space():
    (s,) = body("add(x, y) relu")
    assert s.op == "add" and [a.value.name for a in s.inputs] == ["x", "y"]
    (s,) = body("conv(stem) 16")
    assert [a.value.name for a in s.inputs] == ["stem"]
    # with a space, parentheses group arithmetic
    (s,) = body("conv (classes + 5) * boxes kernel=1")
    assert s.inputs is None
    e = s.args[0].value
    assert isinstance(e, ast.BinOp) and e.op == "*" and isinstance(e.left, ast.BinOp)


def test_values():
    (s,) = body("x = op 3 0.5 5e-4 3x5 1x28x28 [a, 2*b] true same \"path/to x\" .5")
    vals = [a.value for a in s.args]
    assert vals[0].value == 3 and isinstance(vals[0].value, int)
    assert vals[1].value == 0.5 and vals[2].value == 5e-4
    assert vals[3].value == (3, 5) and vals[4].value == (1, 28, 28)
    assert isinstance(vals[5], ast.ListExpr) and len(vals[5].items) == 2
    assert vals[6].name == "true" and vals[7].name == "same"
    assert vals[8].value == "path/to x"
    assert vals[9].value == 0.5
    (s,) = body("op -2 3")
    assert isinstance(s.args[0].value, ast.Neg) and s.args[1].value.value == 3
    # a minus after a value continues the expression: write negative values as key=value
    (s,) = body("op 3 -2")
    assert len(s.args) == 1 and s.args[0].value.op == "-"


def test_precedence():
    (s,) = body("op 1 + 2 * 3 - 4 // 2 % 3")
    e = s.args[0].value
    assert isinstance(e, ast.BinOp) and e.op == "-"
    assert e.left.op == "+" and e.left.right.op == "*"
    assert e.right.op == "%" and e.right.left.op == "//"


def test_trailing_activation_call():
    (s,) = body("conv 16 leaky_relu(0.2)")
    call = s.args[-1].value
    assert isinstance(call, ast.Call) and call.name == "leaky_relu" and call.args[0].value.value == 0.2


def test_dotted_names():
    (s,) = body("stage1.res2.out = add(stage1.res2.conv1, x) -> a.b")
    assert s.target == "stage1.res2.out"
    assert s.inputs[0].value.name == "stage1.res2.conv1"
    assert s.heads[0][0] == "a.b"


def test_several_heads():
    (s,) = body("dense 4 -> box, box2")
    assert [h for h, _ in s.heads] == ["box", "box2"]


def test_input_statements():
    stmts = body("input image: 1x28x28\ninput v: [100]\ninput w: [c, h * 2, 3]\ninput x")
    assert [type(s) for s in stmts] == [ast.Input] * 4
    assert stmts[0].shape.value == (1, 28, 28)
    assert isinstance(stmts[1].shape, ast.ListExpr)
    assert stmts[3].shape is None


def test_repeat():
    a, b = body("repeat 3 residual 32\nrepeat n * 2 {\n  conv 8\n  relu\n}")
    assert isinstance(a, ast.Repeat) and not a.braced and a.body[0].op == "residual"
    assert b.braced and [s.op for s in b.body] == ["conv", "relu"]


def test_comments_blank_lines_and_crlf():
    text = "# top\r\n\r\nnetwork n {   # header\r\n  # inside\r\n\r\n  input x: 3x4x4  # c\r\n}\r\n# end"
    (net,) = parse(text).networks
    assert len(net.body) == 1


def test_single_line_bodies():
    m = parse("network n { input x: [3] }\nprofile deploy { batch 1 }\n")
    assert len(m.networks[0].body) == 1
    assert m.profiles[0].name == "deploy" and m.profiles[0].settings[0].name == "batch"


def test_file_items():
    m = parse("""
block res(filters, stride = 1) {
  input x
  conv filters stride=stride
}
network A(classes = 10, width) { input x: [3] }
network B { input x: [3] }
train {
  dataset "data/x"
  augment {
    hflip p=0.5
  }
}
profile quick { epochs 1 }
""")
    assert [b.name for b in m.blocks] == ["res"]
    assert [p.name for p in m.blocks[0].params] == ["filters", "stride"]
    assert m.blocks[0].params[0].default is None and m.blocks[0].params[1].default.value == 1
    assert [n.name for n in m.networks] == ["A", "B"]
    assert m.networks[0].params[1].default is None
    (t,) = m.trains
    assert t.settings[0].args[0].value.value == "data/x"
    aug = t.settings[1]
    assert aug.name == "augment" and aug.children[0].name == "hflip"


def test_network_header_with_space_before_parenthesis():
    m = parse("network N (classes = 3) { input x: [3] }")
    assert m.networks[0].params[0].name == "classes"


# ---- syntax errors ---------------------------------------------------------------
def test_unexpected_brace_message():
    d = syntax_error("network n {\n  input x: [3]\n  conv 3 kernel=\n}\n")
    assert d.message == "expected a value, got the end of the line"
    assert (d.span.line, d.span.column) == (3, 17)
    assert d.code == "syntax"


def test_comma_between_options():
    d = syntax_error("network n {\n  conv 16, kernel=3\n}")
    assert d.message == "unexpected ','" and "separated by spaces" in d.help
    assert (d.span.line, d.span.column) == (2, 10)


def test_unclosed_brace_points_at_opening():
    d = syntax_error("network n {\n  input x: [3]\n  dense 3\n\n")
    assert d.message == "the file ends before the closing '}'"
    assert d.span.line == 3
    assert d.notes[0][0].line == 1 and d.notes[0][0].column == 11


def test_extra_closing_brace():
    d = syntax_error("network n {\n  input x: [3]\n}\n}\n")
    assert "got '}'" in d.message and d.help == "this '}' closes nothing"


def test_misspelt_keyword():
    d = syntax_error("netwrok n {\n}\n")
    assert d.help == "did you mean 'network'?"


def test_reserved_word_as_name():
    d = syntax_error("network n {\n  input = conv 3\n}")
    assert "reserved word" in d.help


def test_bad_character():
    d = syntax_error("network n {\n  conv 3 $\n}")
    assert d.message == "unexpected character '$'" and (d.span.line, d.span.column) == (2, 10)
    d = syntax_error("network n {\n  conv 3 \x01\n}")
    assert "U+0001" in d.message
    d = syntax_error("train {\n  dataset 'x'\n}")
    assert "double quotes" in d.help


def test_syntax_error_in_training_section_says_setting():
    d = syntax_error("network n { input x: [3] }\ntrain {\n  = 3\n}\n")
    assert d.message.startswith("expected a setting")


def test_error_never_mentions_lark():
    for text in ["network {", "network n { conv(3 }", "}", "network n { a = = b }", "train { augment { { } }",
                 "network n { input x: }", "network n { -> x }", "block b( { }"]:
        d = syntax_error(text)
        assert "lark" not in d.render().lower() and "Token" not in d.render()
        assert "__ANON" not in d.message and "_NL" not in d.message


def test_deep_nesting_is_refused():
    d = syntax_error("network n { input x: [" + "(" * 100 + "1" + ")" * 100 + "] }")
    assert d.code == "too-deep"


def test_long_expression_chain_is_fine_or_clean_error():
    text = "network n(a = " + "+".join(["1"] * 5000) + ") { input x: [3] }"
    try:
        parse(text)
    except CnnError as e:
        assert e.errors[0].code == "too-deep"


def test_empty_and_comment_only_files():
    for text in ["", "   \n\n", "# only a comment\n"]:
        d = syntax_error(text)
        assert d.code == "empty-file"


# ---- files ----------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(CnnError) as e:
        read_source(tmp_path / "nope.cnn")
    assert e.value.errors[0].code == "file-missing"


def test_missing_file_suggests_near_name(tmp_path):
    (tmp_path / "lenet5.cnn").write_text("x")
    with pytest.raises(CnnError) as e:
        read_source(tmp_path / "lenet.cnn")
    assert "lenet5.cnn" in e.value.errors[0].help


def test_directory(tmp_path):
    (tmp_path / "a.cnn").write_text("x")
    with pytest.raises(CnnError) as e:
        read_source(tmp_path)
    d = e.value.errors[0]
    assert d.code == "file-directory" and "a.cnn" in d.render()


def test_binary_and_non_utf8():
    with pytest.raises(CnnError) as e:
        decode_source(b"\x7fELF\x00\x01", "a.out")
    assert e.value.errors[0].code == "file-binary"
    with pytest.raises(CnnError) as e:
        decode_source(b"network n {\n  \xff\n}", "latin.cnn")
    d = e.value.errors[0]
    assert d.code == "file-encoding" and "line 2, column 3" in d.message


def test_bom_is_ignored():
    assert decode_source("\ufeffnetwork n {}".encode("utf-8"), "x").startswith("network")


@pytest.mark.parametrize("encoding, bom", [("utf-16", "ff fe"), ("utf-16-be", None), ("utf-32", "ff fe 00 00")])
def test_utf16_and_utf32_files_are_named_as_such(encoding, bom):
    """Notepad's "Unicode" (UTF-16 with a byte order mark) was 'a binary file ... a NUL byte at offset 3'."""
    data = "network n {}".encode(encoding)
    if bom is None:
        data = b"\xfe\xff" + data
        bom = "fe ff"
    with pytest.raises(CnnError) as e:
        decode_source(data, "u.cnn")
    d = e.value.errors[0]
    assert d.code == "file-encoding" and f"u.cnn is UTF-{encoding[4:6]} text, not UTF-8" in d.message, d.render()
    assert f"found: the UTF-{encoding[4:6]} byte order mark {bom}" in d.render()


def test_classic_mac_line_ends_are_line_ends():
    """A file with CR alone between lines was one comment line: 'defines no network'."""
    text = "# LeNet\rnetwork n {\r  input x: 3x4x4\r  conv 2 kernal=3\r}\r"
    from cnndsl.frontend import loads

    with pytest.raises(CnnError) as e:
        loads(decode_source(text.encode(), "mac.cnn"), "mac.cnn")
    d = e.value.errors[0]
    assert "'kernal' is not an option of conv" in d.message and d.span.line == 4, d.render()


def test_a_model_file_over_the_size_cap_is_refused_before_parsing(tmp_path):
    """Parsing runs at ~200 KB/s: 100,000 networks (8.9 MB) kept `check` busy for over a minute."""
    import time

    from cnndsl.diagnostics import CnnError
    from cnndsl.frontend import load
    from cnndsl.frontend.parser import MAX_BYTES

    one = "network N{}(classes = 5) {{\n  input image: 1x8x8\n  flatten\n  dense classes -> logits\n}}\n"
    text = "".join(one.format(i) for i in range(MAX_BYTES // len(one.format(0)) + 10))
    path = tmp_path / "many.cnn"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(CnnError, match="too large for a model description"):
        load(path)
    assert time.perf_counter() - start < 2


def _syntax_error_text(source: str) -> str:
    from cnndsl.frontend.parser import parse_text

    with pytest.raises(CnnError) as e:
        parse_text(source, "bad.cnn")
    return str(e.value)


def test_parser_tables_are_saved_loaded_and_rebuilt_when_unreadable(tmp_path, monkeypatch):
    from cnndsl.frontend import parser as P

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    good = (Path(__file__).resolve().parent.parent / "examples" / "lenet5.cnn").read_text()
    bad = "network N(classes = 5) {\n  input image: 1x8x8\n  dense classes -> logits\n  flatten ->\n}\n"
    P._parser.cache_clear()
    try:
        built = P._parser()  # built from the grammar, then saved
        saved = list((tmp_path / "cnndsl" / "parser").glob("*.lark"))
        assert len(saved) == 1
        tree, message = built.parse(good), _syntax_error_text(bad)
        P._parser.cache_clear()
        loaded = P._parser()  # from the file: the same trees, positions and diagnostics
        assert loaded is not built and loaded.parse(good) == tree
        assert loaded.parse(good).meta.end_line == tree.meta.end_line
        assert _syntax_error_text(bad) == message
        saved[0].write_bytes(b"not a saved parser")  # truncated, or another Lark's
        P._parser.cache_clear()
        assert P._parser().parse(good) == tree  # built again, silently, and the file replaced
        assert saved[0].read_bytes() != b"not a saved parser"
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # no folder can be made there
        P._parser.cache_clear()
        assert P._parser().parse(good) == tree
    finally:
        P._parser.cache_clear()
