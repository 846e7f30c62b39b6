"""Text -> typed AST. Reads files defensively and turns every Lark error into a Diagnostic.

    module = parse_text(text, "lenet.cnn")     # raises CnnError on a syntax error
    text = read_source("lenet.cnn")            # raises CnnError on a missing/binary/non-UTF-8 file
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from cnndsl.diagnostics import CnnError, Diagnostic, SourceFiles, Span, did_you_mean, file_error
from cnndsl.frontend import ast
from cnndsl.io.files import open_regular

MAX_NESTING = 32  # brackets/braces deeper than this are refused before parsing
# Parsing runs at about 200 KB/s (Lark, 2 cores): a 16 MiB cap let an 8.9 MB file of 100,000
# networks keep `check` busy for over a minute. The largest example is 2 KB; 2 MiB parses in ~10 s.
MAX_BYTES = 2 * 1024 * 1024

KEYWORDS = ("network", "block", "train", "profile", "input", "repeat")


# ---- the grammar ------------------------------------------------------------------
def _grammar_text() -> str:
    package = Path(__file__).resolve().parents[1]
    candidates = [
        package.parent / "grammar" / "cnn.lark",  # a source checkout or editable install
        package / "grammar" / "cnn.lark",  # a wheel: pyproject.toml copies grammar/ into the package
    ]
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise RuntimeError("grammar/cnn.lark not found")  # pragma: no cover - broken install


_LARK_OPTIONS = {"parser": "lalr", "propagate_positions": True, "maybe_placeholders": True}


def _parser_cache_path(grammar: str) -> Path | None:
    """Where the built parser is kept: a file named after the grammar, the options and the Lark and
    Python versions, in cnndsl's cache folder (None: no home to keep it in)."""
    import hashlib
    import sys

    import lark

    from cnndsl.kernel_cache import cache_root

    key = repr((grammar, sorted(_LARK_OPTIONS.items()), lark.__version__, sys.version_info[:2]))
    try:
        return cache_root() / "parser" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".lark")
    except (OSError, RuntimeError):  # no home folder
        return None


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    """The LALR parser of grammar/cnn.lark. Building it takes 45 to 72 ms (Lark computes the tables
    each time), a twelfth of a warm `cnndsl train`'s start and of every compile-pool worker's;
    loading the saved tables takes 4 ms. So the first build is saved (Lark.save, written
    atomically) and later processes load it; a file that cannot be read back (truncated, another
    Lark's) is built again and replaced, and a folder that cannot be written is no error."""
    grammar = _grammar_text()
    path = _parser_cache_path(grammar)
    if path is not None:
        try:
            with open(path, "rb") as f:
                return Lark.load(f)
        except Exception:  # absent, unreadable or not a saved parser: build it  # noqa: BLE001
            pass
    parser = Lark(grammar, **_LARK_OPTIONS)
    if path is not None:
        try:
            from cnndsl.io.atomic import atomic_writer

            with atomic_writer(path) as f:
                parser.save(f)
        except Exception:  # a read-only or full cache folder: parse without keeping it  # noqa: BLE001
            pass
    return parser


@functools.lru_cache(maxsize=1)
def _terminal_patterns() -> dict[str, str]:
    """Terminal name -> the literal it stands for ('{', '->', 'network'), for error messages."""
    out = {}
    for t in _parser().terminals:
        if t.pattern.type == "str":
            out[t.name] = t.pattern.value
    return out


# ---- reading files ----------------------------------------------------------------
def read_source(path) -> str:
    """The text of a .cnn file, or a CnnError that says what is wrong with the file."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        near = _near_files(p)
        raise file_error(name, f"no such file: {name}", help=f"did you mean '{near}'?" if near else None,
                         code="file-missing")
    if p.is_dir():
        cnns = sorted(x.name for x in p.glob("*.cnn"))[:5]
        raise file_error(name, f"{name} is a directory, not a .cnn file", expected="a .cnn text file",
                         found="a directory" + (f" containing {', '.join(cnns)}" if cnns else ""),
                         code="file-directory")
    # A FIFO, /dev/zero or /dev/urandom is refused before it is opened: reading a FIFO waits for a
    # writer (`check` hung), /dev/zero has st_size 0 and never ends (it grew to gigabytes).
    try:
        with open_regular(name, "model file") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise file_error(name, f"{name} is too large for a model description ({size} bytes)",
                                 expected=f"at most {MAX_BYTES} bytes", code="file-too-large")
            data = f.read(MAX_BYTES + 1)
    except CnnError:
        raise
    except OSError as e:
        raise file_error(name, f"cannot read {name}: {e.strerror or e}", code="file-unreadable") from None
    if len(data) > MAX_BYTES:  # it grew while being read
        raise file_error(name, f"{name} is too large for a model description (over {MAX_BYTES} bytes)",
                         expected=f"at most {MAX_BYTES} bytes", code="file-too-large")
    return decode_source(data, name)


def _near_files(p: Path) -> str | None:
    try:
        parent = p.parent if str(p.parent) else Path(".")
        names = [x.name for x in parent.iterdir()] if parent.is_dir() else []
    except OSError:
        return None
    hint = did_you_mean(p.name, names)
    if hint is None:
        return None
    return str(p.parent / hint.split("'")[1]) if str(p.parent) not in ("", ".") else hint.split("'")[1]


def decode_source(data: bytes, name: str) -> str:
    """Bytes -> text; binary files and invalid UTF-8 are errors at the offending byte."""
    for bom, encoding in _OTHER_BOMS:  # Notepad's "Unicode": not a binary file, text to save as UTF-8
        if data.startswith(bom):
            raise file_error(name, f"{name} is {encoding} text, not UTF-8", expected="UTF-8 text",
                             found=f"the {encoding} byte order mark {bom.hex(' ')}", help="save the file as UTF-8",
                             code="file-encoding")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise file_error(name, f"{name} is a binary file, not a .cnn text file",
                         expected="UTF-8 text", found=f"a NUL byte at offset {nul}",
                         code="file-binary")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise CnnError([Diagnostic(
            "error", f"{name} is not valid UTF-8 text (byte 0x{data[e.start]:02x} at line {line}, column {col})",
            Span(name, 0, 0), ["expected: UTF-8 text", f"found: byte 0x{data[e.start]:02x} at offset {e.start}"],
            help="save the file as UTF-8", code="file-encoding")]) from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte order mark
    if "\r" in text:  # classic Mac line ends (CR alone): else the file was one line ("defines no network")
        text = re.sub(r"\r(?!\n)", "\n", text)
    return text


_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
               (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


# ---- parsing ------------------------------------------------------------------
def parse_text(text: str, filename: str = "<string>") -> ast.Module:
    """Parse a whole file; raise CnnError with one syntax diagnostic when it does not parse."""
    SourceFiles.add(filename, text)
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise CnnError([Diagnostic("error", f"{filename} is empty: it defines no network", Span(filename, 0, 0),
                                   help="start with `network NAME {` ... `}`; see docs/language.md",
                                   code="empty-file")])
    _check_nesting(text, filename)
    try:
        tree = _parser().parse(text + "\n")
    except UnexpectedInput as e:
        raise CnnError([_syntax_diagnostic(e, text, filename)]) from None
    except LarkError as e:  # pragma: no cover - any other Lark failure is still a syntax error
        raise CnnError([Diagnostic("error", f"cannot parse {filename}", Span(filename, 0, 0), code="syntax")]) from None
    try:
        return _Builder(filename).module(tree)
    except RecursionError:
        raise CnnError([Diagnostic("error", "an expression is nested too deeply", Span(filename, 0, 0),
                                   help="split it into parameters", code="too-deep")]) from None


def _check_nesting(text: str, filename: str) -> None:
    depth = 0
    line, col = 1, 0
    in_comment = in_string = False
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            in_comment = in_string = False
            continue
        if in_comment:
            continue
        if in_string:
            in_string = ch != '"'
            continue
        if ch == "#":
            in_comment = True
        elif ch == '"':
            in_string = True
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise CnnError([Diagnostic(
                    "error", f"brackets are nested more than {MAX_NESTING} levels deep",
                    Span(filename, line, col, line, col + 1), help="split the expression or the blocks",
                    code="too-deep")])
        elif ch in ")]}":
            depth = max(depth - 1, 0)


# ---- syntax errors ------------------------------------------------------------------
_VALUE_STARTS = {"NUMBER", "DIMS", "NAME", "STRING", "LPAR", "LSQB", "CALL", "MINUS", "PLUS"}
_LAYER_STARTS = {"NAME", "CALL", "INPUT", "REPEAT"}
_ITEM_STARTS = {"NETWORK", "BLOCK", "TRAIN", "PROFILE"}


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "_NL":
        return "the end of the line"
    value = str(tok)
    if len(value) > 20:
        value = value[:17] + "..."
    return f"'{value}'"


def _describe_expected(expected: set[str], in_settings: bool = False) -> str:
    patterns = _terminal_patterns()
    parts: list[str] = []
    exp = set(expected)
    if in_settings and {"NAME", "RBRACE"} <= exp:
        parts.append("a setting")
        exp -= _LAYER_STARTS | {"_NL"}
    if _ITEM_STARTS <= exp:
        parts.append("'network', 'block', 'train' or 'profile'")
        exp -= _ITEM_STARTS | {"_NL", "$END"}
    if {"NAME", "CALL", "RBRACE"} <= exp:
        parts.append("a layer")
        exp -= _LAYER_STARTS | {"_NL"}
    if {"NUMBER", "DIMS", "NAME"} <= exp:
        parts.append("a value")
        exp -= _VALUE_STARTS
    if "NAME" in exp and "RBRACE" in exp and not parts:
        parts.append("a setting")
        exp -= {"NAME", "_NL"}
    if {"NAME", "CALL"} <= exp and not parts:
        parts.append("an op")
        exp -= {"NAME", "CALL"}
    names = {"NAME": "a name", "CALL": "an op", "_NL": "the end of the line", "NUMBER": "a number",
             "DIMS": "a size like 3x3", "STRING": "a string", "$END": "the end of the file"}
    for t in sorted(exp, key=lambda t: (t not in patterns, t)):
        if t in names:
            parts.append(names[t])
        elif t in patterns:
            parts.append(f"'{patterns[t]}'")
    parts = list(dict.fromkeys(parts))
    if not parts:
        return "something else"
    if len(parts) > 5:
        parts = parts[:5] + ["..."]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _syntax_diagnostic(e: UnexpectedInput, text: str, filename: str) -> Diagnostic:
    lines = text.splitlines()
    if isinstance(e, UnexpectedCharacters):
        line, col = e.line, e.column
        ch = e.char
        shown = repr(ch)[1:-1] if ch.isprintable() else f"U+{ord(ch):04X}"
        help = None
        if ch == "'":
            help = 'strings use double quotes: "data/digits"'
        elif ch == "\\":
            help = "a statement must fit on one line"
        elif ch == ";":
            help = "put each statement on its own line"
        elif not ch.isascii():
            help = "names and numbers are plain ASCII"
        return Diagnostic("error", f"unexpected character '{shown}'", Span(filename, line, col, line, col + 1),
                          help=help, code="syntax")
    if not isinstance(e, UnexpectedToken):  # pragma: no cover - LALR reports everything else as tokens
        line, col = max(getattr(e, "line", 1) or 1, 1), max(getattr(e, "column", 1) or 1, 1)
        return Diagnostic("error", "the file does not parse here", Span(filename, line, col), code="syntax")
    tok = e.token
    expected = set(e.expected or ())
    got = _describe_token(tok)
    notes: list[tuple[Span | None, str]] = []
    help = None
    opened = None
    here = _enclosing(text, tok.line, tok.column) if tok.type != "$END" else None
    in_settings = here in ("train", "profile", "augment")
    before = lines[tok.line - 1][:tok.column - 1].split() if tok.type != "$END" and tok.line <= len(lines) else []
    after_keyword = bool(before) and before[-1] in ("network", "block", "profile")
    if tok.type == "$END":
        nonblank = [i for i, ln in enumerate(lines, start=1) if ln.strip()]
        line = nonblank[-1] if nonblank else 1
        col = len(lines[line - 1].rstrip()) + 1 if lines else 1
        opened = _unclosed_brace(text, filename)
        if opened is not None:
            notes.append((opened, "the '{' opened here is never closed"))
    else:
        line, col = tok.line, tok.column
    end_col = col + max(len(str(tok)), 1) if tok.type not in ("$END", "_NL") else col + 1
    span = Span(filename, line, col, line, end_col)
    if tok.type == "COMMA" and "COMMA" not in expected:
        help = "options are separated by spaces: conv 16 kernel=3 stride=2"
    elif tok.type == "EQUAL" and "EQUAL" not in expected:
        if before and before[-1] in KEYWORDS:
            help = f"'{before[-1]}' is a reserved word; pick another name"
        elif not before and not in_settings:
            help = "write NAME = OP ..., e.g. c1 = conv 16"
        elif in_settings:
            help = "a setting is written `NAME value key=value`, e.g. `optimizer sgd lr=0.1`"
        else:
            help = "write options as key=value after the op: conv 16 kernel=3"
    elif tok.type == "NAME" and _ITEM_STARTS <= expected:
        help = did_you_mean(str(tok), ("network", "block", "train", "profile"))
        if help is None:
            help = "a file holds `network NAME { ... }`, `block NAME(...) { ... }`, `train { ... }` and " \
                   "`profile NAME { ... }`"
    elif tok.type == "RBRACE" and _ITEM_STARTS <= expected:
        help = "this '}' closes nothing"
    elif tok.type == "_NL" and "RPAR" in expected:
        help = "close the ')' on the same line"
    elif after_keyword:
        help = f"'{before[-1]}' is followed by a name: {before[-1]} NAME {{"
    elif tok.type == "NAME" and str(tok).startswith("x") and before and before[-1][-1:].isdigit():
        help = "a size is written without spaces, whole numbers joined by x: 3x28x28"
    elif tok.type == "LBRACE" and "LBRACE" not in expected:
        help = "'{' goes at the end of a `network`, `block`, `repeat N`, `train`, `profile` or `augment` line"
    elif tok.type in ("INPUT", "REPEAT", "NETWORK", "BLOCK", "TRAIN", "PROFILE") and "NAME" in expected:
        help = f"'{tok}' is a reserved word; pick another name"
    if "NUMBER" in expected and "DIMS" in expected:
        expected.discard("LBRACE")  # after a value: '{' only continues settings lines, never layers
    what = "a name" if after_keyword else _describe_expected(expected, in_settings)
    message = f"expected {what}, got {got}"
    if tok.type == "$END" and opened is not None:
        message = "the file ends before the closing '}'"
        help = "add '}' on its own line"
    elif tok.type == "COMMA" and "COMMA" not in expected:
        message = "unexpected ','"
    return Diagnostic("error", message, span, help=help, notes=notes, code="syntax")


def _braces(text: str):
    """(line, column, '{' or '}', the line) of every brace outside strings and comments, in order."""
    for i, raw in enumerate(text.splitlines(), start=1):
        in_string = False
        for j, ch in enumerate(raw, start=1):
            if in_string:
                in_string = ch != '"'
            elif ch == '"':
                in_string = True
            elif ch == "#":
                break
            elif ch in "{}":
                yield i, j, ch, raw


def _enclosing(text: str, line: int, col: int) -> str | None:
    """The first word of the line that opened the innermost '{' around (line, col)."""
    stack: list[str] = []
    for i, j, ch, raw in _braces(text):
        if (i, j) >= (line, col):
            break
        if ch == "{":
            words = raw.split()
            stack.append(words[0] if words else "")
        elif stack:
            stack.pop()
    return stack[-1] if stack else None


def _unclosed_brace(text: str, filename: str) -> Span | None:
    stack: list[tuple[int, int]] = []
    for i, j, ch, _ in _braces(text):
        if ch == "{":
            stack.append((i, j))
        elif stack:
            stack.pop()
    if not stack:
        return None
    i, j = stack[-1]
    return Span(filename, i, j, i, j + 1)


# ---- Lark tree -> AST -------------------------------------------------------------
class _Builder:
    def __init__(self, filename: str) -> None:
        self.file = filename

    def span(self, x) -> Span:
        if isinstance(x, Token):
            return Span(self.file, x.line, x.column, x.end_line, x.end_column)
        m = x.meta
        if getattr(m, "empty", True):
            return Span(self.file, 0, 0)
        return Span(self.file, m.line, m.column, m.end_line, m.end_column)

    def join(self, a: Span, b: Span) -> Span:
        return Span(self.file, a.line, a.column, b.end_line, b.end_column)

    def module(self, tree: Tree) -> ast.Module:
        mod = ast.Module(self.file)
        for item in tree.children:
            if not isinstance(item, Tree):
                continue
            if item.data == "network":
                name, name_span, params, body, head_span = self.header(item)
                mod.networks.append(ast.Network(name, params, body, head_span, name_span))
            elif item.data == "block":
                name, name_span, params, body, head_span = self.header(item)
                mod.blocks.append(ast.Block(name, params, body, head_span, name_span))
            elif item.data == "train":
                mod.trains.append(ast.Train(self.settings(item.children[0]), self.span(item)))
            elif item.data == "profile":
                tok, sets = item.children
                mod.profiles.append(ast.Profile(str(tok), self.settings(sets), self.span(item), self.span(tok)))
        return mod

    def header(self, item: Tree):
        tok = item.children[0]
        name = str(tok).rstrip("(")
        name_span = self.span(tok)
        if str(tok).endswith("("):
            name_span = Span(self.file, tok.line, tok.column, tok.line, tok.column + len(name))
        params: list[ast.Param] = []
        body = None
        for ch in item.children[1:]:
            if isinstance(ch, Tree) and ch.data == "params":
                params = [self.param(p) for p in ch.children]
            elif isinstance(ch, Tree) and ch.data == "body":
                body = ch
        first = self.span(item)
        head_span = Span(self.file, first.line, first.column, first.line, None)
        return name, name_span, params, self.body(body), head_span

    def param(self, p: Tree) -> ast.Param:
        tok, default = p.children
        return ast.Param(str(tok), self.expr(default) if default is not None else None, self.span(p))

    def body(self, body: Tree) -> list:
        return [self.stmt(s) for s in body.children if isinstance(s, Tree)]

    def stmt(self, s: Tree):
        if s.data == "layer":
            return self.layer(s)
        if s.data == "input":
            tok, shape = s.children
            return ast.Input(str(tok), self.span(tok), self.expr(shape) if shape is not None else None, self.span(s))
        if s.data == "repeat":
            count, what = s.children
            if what.data == "body":
                return ast.Repeat(self.expr(count), self.body(what), self.span(s), True)
            return ast.Repeat(self.expr(count), [self.layer(what)], self.span(s), False)
        raise AssertionError(s.data)  # pragma: no cover

    def layer(self, s: Tree) -> ast.Layer:
        children = list(s.children)
        target = children.pop(0)
        head = children.pop(0)
        heads_tree = children.pop() if children and (children[-1] is None or (
            isinstance(children[-1], Tree) and children[-1].data == "heads")) else None
        args = [self.arg(a) for a in children]
        heads = [(str(t), self.span(t)) for t in heads_tree.children] if heads_tree is not None else []
        inputs = None
        if head.data == "op":
            tok = head.children[0]
            op, op_span = str(tok), self.span(tok)
        else:
            tok, arglist = head.children
            op = str(tok)[:-1]
            op_span = Span(self.file, tok.line, tok.column, tok.line, tok.column + len(op))
            inputs = [self.arg(a) for a in arglist.children] if arglist is not None else []
        return ast.Layer(op, op_span, args, self.span(s),
                         target=str(target) if target is not None else None,
                         target_span=self.span(target) if target is not None else None,
                         inputs=inputs, heads=heads)

    def arg(self, a: Tree) -> ast.Arg:
        if a.data == "keyword":
            key, value = a.children
            return ast.Arg(str(key), self.expr(value), self.span(a), self.span(key))
        return ast.Arg(None, self.expr(a.children[0]), self.span(a))

    def settings(self, t: Tree) -> list[ast.Setting]:
        return [self.setting(s) for s in t.children if isinstance(s, Tree)]

    def setting(self, s: Tree) -> ast.Setting:
        tok, *rest = s.children
        children = None
        if rest and (rest[-1] is None or (isinstance(rest[-1], Tree) and rest[-1].data == "settings")):
            last = rest.pop()
            children = self.settings(last) if last is not None else None
        args = [self.arg(a) for a in rest]
        return ast.Setting(str(tok), args, self.span(s), self.span(tok), children)

    def expr(self, e) -> ast.Expr:
        if isinstance(e, Token):  # pragma: no cover - atoms are always wrapped
            raise AssertionError(e)
        sp = self.span(e)
        kind = e.data
        if kind == "number":
            text = str(e.children[0])
            if re.fullmatch(r"[0-9]+", text):
                return ast.Number(int(text) if len(text) <= 4000 else float("inf"), sp, text)
            return ast.Number(float(text), sp, text)
        if kind == "dims":
            text = str(e.children[0])
            parts = text.split("x")
            return ast.Dims(tuple(int(p) if len(p) <= 4000 else 10 ** 100 for p in parts), sp, text)
        if kind == "name":
            return ast.Name(str(e.children[0]), sp)
        if kind == "string":
            raw = str(e.children[0])[1:-1]
            return ast.String(re.sub(r"\\(.)", r"\1", raw), sp)
        if kind == "list":
            return ast.ListExpr([self.expr(x) for x in e.children if x is not None], sp)
        if kind == "tuple":
            return ast.TupleExpr([self.expr(x) for x in e.children if x is not None], sp)
        if kind == "call":
            tok, arglist = e.children
            name = str(tok)[:-1]
            return ast.Call(name, [self.arg(a) for a in arglist.children] if arglist is not None else [], sp,
                            Span(self.file, tok.line, tok.column, tok.line, tok.column + len(name)))
        if kind == "neg":
            return ast.Neg(self.expr(e.children[0]), sp)
        if kind == "pos":
            return self.expr(e.children[0])
        ops = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%"}
        if kind in ops:
            left, right = e.children
            return ast.BinOp(ops[kind], self.expr(left), self.expr(right), sp)
        raise AssertionError(kind)  # pragma: no cover


def parse_file(path) -> tuple[ast.Module, str]:
    """Read and parse a file: (module, text)."""
    text = read_source(path)
    return parse_text(text, str(path)), text


__all__ = ["parse_text", "parse_file", "read_source", "decode_source", "KEYWORDS", "MAX_NESTING"]
