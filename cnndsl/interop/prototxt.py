"""A reader for protobuf text format as Caffe's .prototxt files use it, keeping line and column.

    msg = parse(text, "net.prototxt")      # Message: fields in order, each value with its Span
    for layer in msg.all("layer"): layer.get("name"), layer.first("convolution_param").get("num_output")

Needs no schema (and no protobuf): `key: value` (numbers, "strings", enum WORDS, true/false) and
`key { ... }` (also `key: { ... }` and `key < ... >`), `#` comments, repeated fields by repetition.
Every value keeps the position it was written at, so an importer's errors point at the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cnndsl.diagnostics import CnnError, Diagnostic, Span

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<comment>\#[^\n]*) |
    (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*') |
    (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)[fF]?|[-+]?(?:inf|nan)\b) |
    (?P<word>[A-Za-z_][A-Za-z0-9_.]*) | (?P<punct>[{}<>:;,\[\]])
""", re.VERBOSE)


@dataclass
class Value:
    value: Any
    span: Span


@dataclass
class Message:
    span: Span
    fields: list[tuple[str, Any]] = field(default_factory=list)  # (name, Value | Message) in order

    def all(self, name: str) -> list:
        return [v for k, v in self.fields if k == name]

    def first(self, name: str):
        found = self.all(name)
        return found[0] if found else None

    def get(self, name: str, default=None):
        v = self.first(name)
        return default if v is None else (v.value if isinstance(v, Value) else v)

    def values(self, name: str) -> list:
        return [v.value for v in self.all(name) if isinstance(v, Value)]

    def span_of(self, name: str) -> Span:
        v = self.first(name)
        return v.span if v is not None else self.span


def _unescape(s: str) -> str:
    body = s[1:-1]
    return bytes(body, "utf-8").decode("unicode_escape") if "\\" in body else body


def parse(text: str, path: str) -> Message:
    tokens = []
    line, col_start = 1, 0
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CnnError([Diagnostic("error", f"unexpected character {text[pos]!r} in protobuf text",
                                       Span(path, line, pos - col_start + 1), code="prototxt-syntax")])
        kind = m.lastgroup
        if kind == "nl":
            line, col_start = line + 1, m.end()
        elif kind not in ("ws", "comment"):
            tokens.append((kind, m.group(), Span(path, line, pos - col_start + 1)))
        pos = m.end()
    tokens.append(("eof", "", Span(path, line, pos - col_start + 1)))
    i = 0

    def fail(message, tok, expected, at=None):
        raise CnnError([Diagnostic("error", message, at or tok[2], [f"expected: {expected}",
                                                               f"found: {tok[1]!r}" if tok[1] else "found: the end of the file"],
                                   code="prototxt-syntax")])

    def message(close: str | None, span: Span) -> Message:
        nonlocal i
        msg = Message(span)
        while True:
            tok = tokens[i]
            if tok[0] == "eof":
                if close is None:
                    return msg
                fail(f"'{ {'}': '{', '>': '<'}[close] }' opened here is never closed", tok, f"'{close}'", at=span)
            if tok[0] == "punct" and tok[1] == close:
                i += 1
                return msg
            if tok[0] == "punct" and tok[1] in ";,":
                i += 1
                continue
            if tok[0] != "word":
                fail("a field name was expected", tok, "a field name such as `name` or `layer`")
            name, name_span = tok[1], tok[2]
            i += 1
            if tokens[i][1] == ":":
                i += 1
            tok = tokens[i]
            if tok[0] == "punct" and tok[1] in "{<":
                i += 1
                msg.fields.append((name, message("}" if tok[1] == "{" else ">", name_span)))
            elif tok[0] == "punct" and tok[1] == "[":  # a list of scalars: dim: [1, 3, 224, 224]
                i += 1
                while tokens[i][1] != "]":
                    msg.fields.append((name, scalar(tokens[i])))
                    i += 1
                    if tokens[i][1] == ",":
                        i += 1
                i += 1
            else:
                msg.fields.append((name, scalar(tok)))
                i += 1

    def scalar(tok) -> Value:
        kind, text_, span = tok
        if kind == "string":
            return Value(_unescape(text_), span)
        if kind == "number":
            t = text_.rstrip("fF") if not text_.lower().endswith(("inf", "nan")) else text_
            try:
                return Value(int(t), span)
            except ValueError:
                return Value(float(t), span)
        if kind == "word":
            return Value({"true": True, "false": False, "True": True, "False": False}.get(text_, text_), span)
        fail("a value was expected", tok, "a number, a \"string\", a word or { ... }")

    return message(None, Span(path, 1, 1))
