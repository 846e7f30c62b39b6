"""Golden diagnostics: each examples/errors/NAME.cnn renders exactly NAME.expected.

Regenerate after an intended change of wording with
    CNNDSL_REGEN_GOLDEN=1 python -m pytest tests/test_errors_golden.py
and review the diff.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.frontend import loads

ROOT = Path(__file__).resolve().parents[1]
ERRORS = sorted((ROOT / "examples" / "errors").glob("*.cnn"))
REGEN = os.environ.get("CNNDSL_REGEN_GOLDEN") == "1"


def render(path: Path) -> tuple[str, list]:
    rel = path.relative_to(ROOT).as_posix()
    text = path.read_text(encoding="utf-8")
    try:
        program = loads(text, rel)
        diags = program.diagnostics
    except CnnError as e:
        diags = e.diagnostics
    return "".join(d.render() + "\n" for d in diags), diags


@pytest.mark.parametrize("path", ERRORS, ids=[p.stem for p in ERRORS])
def test_golden(path: Path):
    out, diags = render(path)
    assert diags, f"{path.name} produced no diagnostic"
    expected = path.with_suffix(".expected")
    if REGEN or not expected.exists():
        expected.write_text(out, encoding="utf-8")
        if not REGEN:
            pytest.fail(f"{expected.name} was missing and has been written; review it")
    assert out == expected.read_text(encoding="utf-8")


def test_every_expected_has_a_model():
    for exp in (ROOT / "examples" / "errors").glob("*.expected"):
        assert exp.with_suffix(".cnn").exists(), exp


def test_each_kind_of_check_has_an_example():
    codes = set()
    for path in ERRORS:
        _, diags = render(path)
        codes |= {d.code for d in diags}
    wanted = {
        "stride-does-not-tile", "unknown-option", "unknown-op", "syntax", "kernel-too-large", "bad-value",
        "undefined-tensor", "unknown-head", "missing-option", "input-count", "duplicate-name",
        "recursive-block", "unused", "no-input", "normalize-channels",
    }
    assert wanted <= codes, wanted - codes


def test_one_mistake_per_file():
    """Each file shows exactly one mistake."""
    for path in ERRORS:
        _, diags = render(path)
        errors = [d for d in diags if d.severity == "error"]
        assert len(errors) <= 1 and len(diags) >= 1, path.name


def test_block_error_shows_distinct_use_sites():
    _, diags = render(ROOT / "examples" / "errors" / "block_error.cnn")
    (d,) = diags
    assert d.span.line == 6
    lines = [s.line for s, _ in d.notes]
    assert lines == [11, 19]  # innermost use first, each a different position
