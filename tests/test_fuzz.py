"""Fuzzing: random bytes and mutated examples only ever produce CnnError (or load cleanly)."""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnndsl.diagnostics import CnnError
from cnndsl.frontend import loads
from cnndsl.frontend.parser import decode_source
from cnndsl.ir.dump import dump

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.cnn"))]
SOURCES += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples" / "errors").glob("*.cnn"))]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text: str, **kw) -> None:
    try:
        program = loads(text, "fuzz.cnn", **kw)
    except CnnError as e:
        assert e.errors, "CnnError without an error diagnostic"
        for d in e.diagnostics:
            d.render()  # rendering never fails either
        return
    text2 = dump(program.graph)  # a program that loads can be dumped and loaded back
    assert dump(loads(text2, "dump.cnn").graph) == text2


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data):
    try:
        text = decode_source(data, "fuzz.cnn")
    except CnnError:
        return
    check(text)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("network block input repeat train {}()[]=,:->#\n 0123456789x.+-*/\"conv"
                                             "relu dense add concat abc_")), max_size=300))
def test_random_token_soup(text):
    check(text)


def _mutate(text: str, ops: list[tuple[str, int, int]]) -> str:
    for kind, a, b in ops:
        if kind.startswith("line"):
            lines = text.split("\n")
            if not lines:
                continue
            i, j = a % len(lines), b % len(lines)
            if kind == "line-delete":
                del lines[i]
            elif kind == "line-duplicate":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        else:
            if not text:
                continue
            i, j = a % len(text), b % len(text)
            if kind == "char-delete":
                text = text[:i] + text[i + 1:]
            elif kind == "char-duplicate":
                text = text[:i] + text[i] + text[i:]
            else:
                chars = list(text)
                chars[i], chars[j] = chars[j], chars[i]
                text = "".join(chars)
    return text


MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["char-delete", "char-duplicate", "char-swap", "line-delete", "line-duplicate",
                               "line-swap"]),
              st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6)),
    min_size=1, max_size=6)


@FUZZ
@given(st.sampled_from(range(len(SOURCES))), MUTATIONS)
def test_mutated_examples(index, ops):
    check(_mutate(SOURCES[index], ops))


@FUZZ
@given(st.sampled_from(range(len(SOURCES))), st.dictionaries(
    st.sampled_from(["classes", "width", "boxes", "clases", "x"]),
    st.sampled_from(["0", "1", "-3", "5", "1e999", "abc", "3x3", "true", "", "2.5", "99999999999999999999"]),
    max_size=3), st.sampled_from([None, "deploy", "quick", "finetune", "nope"]))
def test_defines_and_profiles(index, defines, profile):
    check(SOURCES[index], defines=defines, profile=profile)


def test_pathological_inputs():
    for text in [
        "network n {" + "\n" * 10000 + "}",
        "network n { input x: [" + "1+" * 3000 + "1] }",
        "network n { input x: [" + "-" * 3000 + "1] }",
        "network n(" + ", ".join(f"p{i} = {i}" for i in range(2000)) + ") { input x: [3] }",
        "network n { input x: 99999999999999999999999x1x1 }",
        "network n { input x: 1x1x" + "9" * 5000 + " }",
        "network n { input x: [1e400] }",
        "network n { input x: 3x4x4\n dense " + "9" * 5000 + " }",
        "network n { input x: [3]\n repeat 999999999999 relu }",
        "\x00\x01",
        "network \u00e9 { }",
        "network n { input x: [3] }\n" * 3,
        "block b(f) {\n input x\n b f\n}\nnetwork n { input x: [3]\n b 1 }",
    ]:
        check(text)
