"""Evaluating values and expressions: numbers, words, HxW pairs, lists and arithmetic over parameters.

A value is an int, float, bool, str (a word such as `same`) or a tuple of those.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from cnndsl.diagnostics import Diagnostic, Span, did_you_mean
from cnndsl.frontend import ast
from cnndsl.ir.dump import show

LIMIT = 10**12  # numbers beyond this are typos, and would overflow later stages
# Search-space values (`width = choice(8, 16, 32)`), allowed only as a network parameter's default;
# cnndsl/sweep/space.py reads them (cnndsl check / shapes / sweep), a plain load asks for a point.
SPACE_FUNCTIONS = ("choice", "int", "float", "log")


class EvalError(Exception):
    """A value that cannot be computed; carries the diagnostic (None: already reported)."""

    def __init__(self, diagnostic: Diagnostic | None):
        self.diagnostic = diagnostic
        super().__init__(diagnostic.message if diagnostic else "")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # the value of a parameter whose own definition failed (reported there)


def _error(message: str, span: Span | None, help: str | None = None, code: str = "value",
           notes=()) -> EvalError:
    return EvalError(Diagnostic("error", message, span, help=help, notes=list(notes), code=code))


# `channels(x)`, `height(x)`, `width(x)`: a dimension of a tensor's per-sample shape, in a layer's options
SHAPE_FUNCTIONS = {"channels": 0, "height": 1, "width": 2}


class Evaluator:
    """Evaluates expressions against a mapping of parameter values.

    `shapes(name, span)`: the per-sample shape of the tensor `name` (raising EvalError when it
    has none), which makes `channels(x)`, `height(x)` and `width(x)` numbers; None where no
    tensor is in reach (parameter defaults, the training section)."""

    def __init__(self, params: Mapping[str, Any], notes=(), shapes=None):
        self.params = params
        self.notes = list(notes)  # block use sites, added to every error
        self.shapes = shapes

    def shape_function(self, e: "ast.Call") -> int:
        """The value of `channels(x)`, `height(x)` or `width(x)`."""
        if self.shapes is None:
            raise self.err(f"{e.name}(...) reads a tensor's shape, which only a layer's options can do",
                           e.span, help="use it in an option of a layer in a network or block", code="call")
        if len(e.args) != 1 or e.args[0].key is not None or not isinstance(e.args[0].value, ast.Name):
            raise self.err(f"{e.name}(...) takes one tensor name, as in {e.name}(x)", e.span, code="call")
        name = e.args[0].value.name
        shape = self.shapes(name, e.args[0].span)
        axis = SHAPE_FUNCTIONS[e.name]
        if len(shape) == 1 and axis > 0:
            raise self.err(f"'{name}' is a vector ({shape[0]}) and has no {e.name}", e.span,
                           help=f"channels({name}) is its length", code="shape-function")
        return int(shape[axis] if axis < len(shape) else shape[0])

    def err(self, message, span, help=None, code="value") -> EvalError:
        return _error(message, span, help, code, self.notes)

    def value(self, e: ast.Expr) -> Any:
        """The value of an argument: a bare word stays a word unless it names a parameter."""
        if isinstance(e, ast.Name):
            if e.name in self.params:
                if self.params[e.name] is MISSING:
                    raise EvalError(None)
                return self.params[e.name]
            if e.name == "true":
                return True
            if e.name == "false":
                return False
            return e.name
        if isinstance(e, ast.String):
            return e.value
        if isinstance(e, ast.Dims):
            parts = e.text.split("x") if e.text else [str(d) for d in e.value]
            for d, text in zip(e.value, parts):
                if d > LIMIT:
                    raise self.err(f"the number {shown_number(text)} is too large", e.span, code="number-too-large")
            return e.value
        if isinstance(e, ast.ListExpr):
            return tuple(self.value(x) for x in e.items)
        if isinstance(e, ast.TupleExpr):
            raise self.err("a list of values in parentheses is not a value", e.span,
                           help="inputs go right after the op with no space, as in add(x, y); "
                                "a list of numbers is written [a, b]", code="tuple")
        if isinstance(e, ast.Call) and e.name in SPACE_FUNCTIONS:
            raise self.err(f"a search space ({e.name}(...)) can only be the default of a network parameter",
                           e.span, help=f"declare it in the network's header, e.g. `network Net(x = {e.name}(...))`, "
                                        "and write the parameter's name here", code="search-space-place")
        if isinstance(e, ast.Call) and e.name in SHAPE_FUNCTIONS:
            return self.shape_function(e)
        if isinstance(e, ast.Call):
            raise self.err(f"'{e.name}(...)' is not a value", e.span,
                           help="only a trailing activation may be written as a call, as in leaky_relu(0.2)",
                           code="call")
        return self.number(e)

    def number(self, e: ast.Expr) -> int | float:
        """The value of an arithmetic expression; every name must be a parameter."""
        if isinstance(e, ast.Number):
            v = e.value
            if isinstance(v, float) and not math.isfinite(v) or abs(v) > LIMIT:
                raise self.err(f"the number {shown_number(e.text or str(v))} is too large", e.span,
                               code="number-too-large")
            return v
        if isinstance(e, ast.Name):
            if e.name in self.params:
                v = self.params[e.name]
                if v is MISSING:
                    raise EvalError(None)
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise self.err(f"parameter '{e.name}' is {show(v)}, not a number", e.span, code="not-a-number")
                return v
            hint = did_you_mean(e.name, self.params)
            known = ", ".join(sorted(self.params)) or "none"
            raise self.err(f"unknown parameter '{e.name}' in an expression", e.span,
                           help=hint or f"parameters here: {known}", code="unknown-parameter")
        if isinstance(e, ast.Call) and e.name in SHAPE_FUNCTIONS:
            return self.shape_function(e)
        if isinstance(e, ast.Neg):
            return -self.number(e.operand)
        if isinstance(e, ast.BinOp):
            a, b = self.number(e.left), self.number(e.right)
            try:
                if e.op == "+":
                    r = a + b
                elif e.op == "-":
                    r = a - b
                elif e.op == "*":
                    r = a * b
                elif e.op == "/":
                    if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
                        r = a // b
                    else:
                        r = a / b
                elif e.op == "//":
                    r = a // b
                    if isinstance(r, float):
                        r = int(r)
                else:
                    r = a % b
            except ZeroDivisionError:
                raise self.err("division by zero", e.span, code="division-by-zero") from None
            except (OverflowError, ValueError):
                raise self.err("the result is too large", e.span, code="number-too-large") from None
            if isinstance(r, float) and not math.isfinite(r) or abs(r) > LIMIT:
                raise self.err(f"the result {show(r) if abs(r) < 1e300 else ''} is too large".replace("  ", " "),
                               e.span, code="number-too-large")
            return r
        if isinstance(e, (ast.Dims, ast.ListExpr, ast.String, ast.TupleExpr, ast.Call)):
            v = self.value(e)
            raise self.err(f"arithmetic needs numbers, got {show(v)}", e.span, code="not-a-number")
        raise AssertionError(e)  # pragma: no cover


def shown_number(text: str) -> str:
    """A number (or -D value) as written, cut short when long: a 5,000-digit literal made a
    5,000-character message."""
    return text if len(text) <= 40 else f"{text[:20]}...({len(text):,} characters)"


DEFINE_CHARS = 1000  # the longest -D value read: far beyond any number within LIMIT, or any name


_DEFINE_INT = r"[+-]?[0-9]+"
_DEFINE_FLOAT = r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?"
_DEFINE_DIMS = r"[0-9]+(x[0-9]+)+"


def is_define_number(text: str) -> bool:
    """Whether a -D value is written as a number or HxW (whatever its size): parse_define's None for
    it means out of range; for `5+5` or `1.2.3` it means not a value at all."""
    t = text.strip()
    return any(re.fullmatch(p, t) for p in (_DEFINE_INT, _DEFINE_FLOAT, _DEFINE_DIMS))


def parse_define(text: str) -> Any:
    """A -D value: a number, true/false, a word, HxW or a quoted string; None when it is none of those."""
    t = text.strip()
    if len(t) > DEFINE_CHARS:  # int() of 5,000 digits raises (Python's conversion limit); no value is that long
        return None
    if re.fullmatch(_DEFINE_INT, t):
        v = int(t)
        return v if abs(v) <= LIMIT else None
    if re.fullmatch(_DEFINE_FLOAT, t):
        v = float(t)
        return v if math.isfinite(v) and abs(v) <= LIMIT else None
    if t in ("true", "false"):
        return t == "true"
    if re.fullmatch(_DEFINE_DIMS, t):
        v = tuple(int(x) for x in t.split("x"))
        return v if all(x <= LIMIT for x in v) else None
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t):
        return t
    if len(t) >= 2 and t[0] == t[-1] == '"':
        return t[1:-1]
    return None
