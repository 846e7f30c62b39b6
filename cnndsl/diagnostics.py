"""Compiler diagnostics: source spans, errors with carets, formulas and fix-its.

Every user-facing problem in cnndsl is a `Diagnostic`. Stages collect them in a
`Diagnostics` bag so that several independent errors are reported in one run,
then raise `CnnError` carrying all of them. The CLI renders them like a C
compiler would:

    lenet.cnn:7:3: error: stride 3 does not tile the 14x14 input of conv 'c2'
        conv 16 kernel=3 stride=3
        ^^^^^^^^^^^^^^^^^^^^^^^^^
      (14 - 3 + 2*0) / 3 + 1 = 4.67 is not a whole number
      help: padding=2 gives (14 - 3 + 4) / 3 + 1 = 6; stride=1 gives 12
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Literal

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, end is exclusive."""

    file: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    def __str__(self) -> str:
        if self.line <= 0:  # a whole file: no position to point at
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


class SourceFiles:
    """Texts of the files read so far, so diagnostics can quote the source line."""

    _texts: dict[str, str] = {}

    @classmethod
    def add(cls, name: str, text: str) -> None:
        cls._texts[name] = text

    @classmethod
    def line(cls, name: str, line: int) -> str | None:
        text = cls._texts.get(name)
        if text is None:
            return None
        lines = text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None


@dataclass
class Diagnostic:
    severity: Severity
    message: str
    span: Span | None = None
    details: list[str] = field(default_factory=list)  # e.g. the size formula with numbers filled in
    help: str | None = None  # a concrete fix that would work
    notes: list[tuple[Span | None, str]] = field(default_factory=list)  # e.g. block expansion sites
    code: str = ""  # stable identifier of the kind of problem (used by tests and --json)

    def render(self) -> str:
        # no place in a file (a command-line setting, the machine): named as the tool, as gcc does
        out = [f"{self.span or 'cnndsl'}: {self.severity}: {self.message}"]
        out += _quote(self.span)
        out += [f"  {d}" for d in self.details]
        if self.help:
            out.append(f"  help: {self.help}")
        for span, text in self.notes:
            out.append(f"  note: {span}: {text}" if span else f"  note: {text}")
            out += _quote(span, indent=6)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


def _quote(span: Span | None, indent: int = 4) -> list[str]:
    """The source line and a caret run under the span (or to the line's end)."""
    if span is None:
        return []
    text = SourceFiles.line(span.file, span.line)
    if text is None:
        return []
    text = text.expandtabs(1).rstrip()
    start = max(span.column - 1, 0)
    if span.end_line == span.line and span.end_column is not None:
        end = max(span.end_column - 1, start + 1)
    else:
        end = max(len(text), start + 1)
    pad = " " * indent
    return [pad + text, pad + " " * start + "^" * (end - start)]


class CnnError(Exception):
    """One or more error diagnostics; the CLI prints them and exits with status 1."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class Diagnostics:
    """A bag that collects diagnostics of one compilation."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, diagnostic: Diagnostic) -> Diagnostic:
        self.items.append(diagnostic)
        return diagnostic

    def error(self, message: str, span: Span | None = None, **kw) -> Diagnostic:
        return self.add(Diagnostic("error", message, span, **kw))

    def warning(self, message: str, span: Span | None = None, **kw) -> Diagnostic:
        return self.add(Diagnostic("warning", message, span, **kw))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise CnnError(self.items)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate, formatted as a hint, or None when nothing is close."""
    match = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def file_error(path, message: str, expected: str | None = None, found: str | None = None,
               help: str | None = None, code: str = "file") -> CnnError:
    """An error about a whole file (model, data, weights, image): names the file,
    what was expected and what was found. Raise the result."""
    details = []
    if expected is not None:
        details.append(f"expected: {expected}")
    if found is not None:
        details.append(f"found: {found}")
    return CnnError([Diagnostic("error", message, Span(str(path), 0, 0), details, help, code=code)])


LIST_LIMIT = 20  # items a message lists before it says "and N more"


def abbreviated(items: Iterable[str], limit: int = LIST_LIMIT, sep: str = ", ") -> str:
    """`items` joined by `sep`, at most `limit` of them, then "... and N more": error output
    stays readable when a file has thousands of bad entries."""
    items = [str(i) for i in items]
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f"{sep}... and {len(items) - limit:,} more"


def interrupted(exc: BaseException) -> bool:
    """Whether `exc` is a Ctrl-C, or an error raised because of one (its cause or context chain
    holds a KeyboardInterrupt: an extension module whose initialization was interrupted)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
