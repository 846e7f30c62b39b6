"""Search spaces (issue 19): parsing, located validation errors, --space, and `cnndsl check` /
`cnndsl shapes` checking every point of a space with the shape checker."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cnndsl.cli.main import cli
from cnndsl.diagnostics import CnnError
from cnndsl.frontend import load, loads
from cnndsl.frontend.parser import parse_text
from cnndsl.sweep.check import check_space
from cnndsl.sweep.space import apply_knobs, build_space

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "sweep" / "sweep_lenet.cnn"

import cnndsl.cli.inspect  # noqa: E402,F401  registers check/shapes

TINY = """network Tiny(width = choice(2, 4), k = choice(3, 5), s = choice(1, 2), lr = log(1e-3, 1e-1)) {
  input image: 1x9x9
  conv width kernel=k stride=s relu
  flatten
  dense 10 -> logits
}
train {
  optimizer sgd lr=lr
}
"""


def space_of(text, defines=None, cli=()):
    module = parse_text(text, "t.cnn")
    return build_space(module, module.networks[0], defines, cli, "t.cnn")


def error_of(text, cli=(), defines=None) -> "Diagnostic":  # noqa: F821
    with pytest.raises(CnnError) as e:
        space_of(text, defines, cli)
    assert len(e.value.diagnostics) == 1
    return e.value.diagnostics[0]


def header(params: str) -> str:
    return f"network N({params}) {{\n  input x: 1x8x8\n  conv 4\n}}\n"


def test_header_spaces_parse_to_dimensions():
    sp = space_of(TINY)
    assert sp.names == ["width", "k", "s", "lr"]
    width, k, s, lr = sp.dims
    assert width.kind == "choice" and width.values == (2, 4)
    assert lr.kind == "log" and (lr.low, lr.high) == (1e-3, 1e-1)
    assert sp.size() is None and sp.discrete_size() == 8
    assert sp.describe() == "width = choice(2, 4), k = choice(3, 5), s = choice(1, 2), lr = log(0.001, 0.1)"
    d = space_of(header("d = int(1, 7, step=2), p = float(0.1, 0.5), pad = choice(same, valid)")).dims
    assert d[0].grid() == [1, 3, 5, 7] and d[1].kind == "float" and d[2].values == ("same", "valid")


def test_minus_d_fixes_a_dimension_and_space_replaces_or_adds():
    sp = space_of(TINY, defines={"width": "4"}, cli=("k=3,5,7", "batch=16,32", "lr=float(0.01, 0.2)"))
    assert sp.names == ["k", "s", "lr", "batch"]
    assert sp.dims[0].values == (3, 5, 7) and sp.dims[2].kind == "float"
    assert sp.dims[3].knob and not sp.dims[0].knob
    defines, knobs = sp.split({"k": 5, "s": 1, "lr": 0.05, "batch": 16})
    assert defines == {"width": "4", "k": "5", "s": "1", "lr": "0.05"} and knobs == {"batch": 16}


@pytest.mark.parametrize("params, message, column", [
    ("d = int(4, 1)", "int(4, 1) is empty: low is above high", 15),
    ("w = choice(8, 16, 8)", "choice(...) lists 8 twice", 15),
    ("lr = log(0, 0.1)", "log(0, 0.1) needs low > 0", 16),
    ("lr = float(0.5)", "float(...) takes two numbers (low, high), got 1", 16),
    ("d = int(1.5, 3)", "int(...) takes whole numbers", 15),
    ("d = int(1, 4, stp=2)", "int(...) takes no option 'stp'", 15),
    ("lr = log(1e-4, 1e-1, step=2)", "log(...) takes no option 'step'", 16),
    ("d = int(1, 6, step=2)", "the step does not reach 6 from 1", 15),
    ("d = choice()", "choice() needs at least one value", 15),
])
def test_space_errors_are_located(params, message, column):
    d = error_of(header(params))
    assert message in d.message
    assert d.span.file == "t.cnn" and d.span.line == 1 and d.span.column == column
    assert d.code == "search-space"


def test_space_outside_a_parameter_default_is_a_located_error():
    with pytest.raises(CnnError) as e:
        loads("network N {\n  input x: 1x8x8\n  conv choice(4, 8)\n}\n", "t.cnn")
    d = e.value.diagnostics[0]
    assert d.code == "search-space-place" and (d.span.line, d.span.column) == (3, 8)
    assert "only be the default of a network parameter" in d.message


def test_plain_load_of_a_space_asks_for_a_point():
    with pytest.raises(CnnError) as e:
        loads(TINY, "t.cnn")
    codes = [d.code for d in e.value.diagnostics]
    assert codes.count("search-space") == 4
    first = e.value.diagnostics[0]
    assert "parameter 'width' is a search space (choice(2, 4))" in first.message
    assert (first.span.line, first.span.column) == (1, 22) and "-D width=" in first.help
    program = loads(TINY, "t.cnn", defines={"width": "2", "k": "3", "s": "1", "lr": "0.01"})
    assert program.training.optimizer.lr == 0.01  # the train section reads the parameter


@pytest.mark.parametrize("item, message", [
    ("widht=8,16", "has no network parameter 'widht'"),
    ("lr=float(0, 0.1)", "lr (the optimizer's learning rate) must be > 0"),
    ("momentum=0.5,1", "must be >= 0 and < 1"),
    ("batch=log(8, 64)", "batch (the batch size) takes whole numbers"),
    ("k=3,x y", "cannot read 'x y'"),
    ("k", "--space takes NAME=SPEC"),
    ("k=range(1, 3)", "'range(...)' is not a search space"),
])
def test_cli_space_errors(item, message):
    d = error_of(TINY.replace(", lr = log(1e-3, 1e-1)", "").replace("lr=lr", "lr=0.1"), cli=(item,))
    assert message in d.message, d.message
    assert d.span.file == "<command line>"


def test_cli_space_did_you_mean():
    assert "did you mean 'width'" in error_of(TINY, cli=("widht=8,16",)).help


def test_apply_knobs_sets_training_values():
    program = loads(TINY, "t.cnn", defines={"width": "2", "k": "3", "s": "1", "lr": "0.01"})
    cfg = apply_knobs(program.training, {"lr": 0.2, "batch": 8, "weight_decay": 1e-4})
    assert cfg.optimizer.lr == 0.2 and cfg.batch == 8 and cfg.optimizer.weight_decay == 1e-4


def test_check_space_groups_invalid_points_by_reason():
    sp = space_of(TINY)
    report = check_space(sp, TINY)
    assert report.exhaustive and len(report.results) == 8
    # 9x9 input: stride 2 tiles (9 - k) for k = 3 and 5 alike, so every point is valid ...
    assert len(report.valid) == 8
    text = TINY.replace("1x9x9", "1x10x10")  # ... on 10x10 stride 2 tiles neither (10 - 3) nor (10 - 5)
    report = check_space(space_of(text), text)
    assert len(report.valid) == 4 and len(report.invalid) == 4
    groups = report.groups()
    assert len(groups) == 1
    diag, points = groups[0]
    assert diag.code == "stride-does-not-tile" and (diag.span.line, diag.span.column) == (3, 23)
    assert {p.point["s"] for p in points} == {2}
    lines = "\n".join(report.lines())
    assert "4 valid, 4 invalid" in lines and "every one of them has s=2" in lines


def test_large_space_is_sampled_with_a_seed():
    sp = space_of(header("a = int(1, 40), b = int(1, 40)"))
    report = check_space(sp, header("a = int(1, 40), b = int(1, 40)"), limit=25)
    assert not report.exhaustive and len(report.results) == 25
    assert len({(r.point["a"], r.point["b"]) for r in report.results}) == 25
    again = check_space(sp, header("a = int(1, 40), b = int(1, 40)"), limit=25)
    assert [r.point for r in again.results] == [r.point for r in report.results]
    assert "checked a seeded sample of 25 of 1,600 points" in "\n".join(report.lines())


def test_check_cli_on_the_example_counts_and_groups():
    result = CliRunner().invoke(cli, ["check", str(EXAMPLE)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "checked all 54 points" in out and "36 valid, 18 invalid" in out
    assert "18 invalid points, [stride-does-not-tile]" in out
    assert "sweep_lenet.cnn:12:3: error: stride 3 does not tile" in out
    assert "every one of them has pool=3" in out
    assert "ok (search space: 36 of 54 points checked are valid)" in out


def test_check_cli_exits_1_when_no_point_is_valid(tmp_path):
    f = tmp_path / "bad.cnn"
    f.write_text(TINY.replace("1x9x9", "1x10x10").replace("s = choice(1, 2)", "s = choice(2, 4)"))
    result = CliRunner().invoke(cli, ["check", str(f)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "0 valid, 8 invalid" in result.output and "no valid point among the 8 checked" in result.output


def test_shapes_cli_lists_valid_points_with_costs():
    result = CliRunner().invoke(cli, ["shapes", str(EXAMPLE), "-D", "c1=4", "-D", "c2=8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "checked all 6 points" in out and "4 valid, 2 invalid" in out
    table = out[out.index("valid points, by FLOPs:"):].splitlines()
    assert table[1].split() == ["k", "pool", "lr", "params", "FLOPs", "activations"]
    # k=3 pool=3 is valid; its parameter count is the graph's own
    program = load(EXAMPLE, defines={"c1": "4", "c2": "8", "k": "3", "pool": "3", "lr": "0.1"})
    from cnndsl.analysis.summary import summary_rows, totals

    count = totals(summary_rows(program.graph))["params"]
    assert any(r.split()[:2] == ["3", "3"] and f"{count:,}" in r for r in table[2:])
