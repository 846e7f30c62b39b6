"""The typed syntax tree of a .cnn file. Every node carries the Span it was written at.

The parser (cnndsl/frontend/parser.py) builds these from the Lark tree; the
lowering (cnndsl/frontend/lower.py) turns a `Network` into the graph IR and
the training section (cnndsl/frontend/training.py) into a `TrainingConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from cnndsl.diagnostics import Span


# ---- expressions --------------------------------------------------------------
@dataclass
class Number:
    value: int | float
    span: Span
    text: str = ""  # as written (for messages)


@dataclass
class Dims:
    """`3x5`, `1x28x28`: a tuple of whole numbers."""

    value: tuple[int, ...]
    span: Span
    text: str = ""  # as written (for messages: a part of over 4,000 digits is held as 10**100)


@dataclass
class Name:
    """A bare word: a parameter, `true`/`false`, a tensor name (in inputs) or a word value (`same`)."""

    name: str
    span: Span


@dataclass
class String:
    value: str
    span: Span


@dataclass
class ListExpr:
    """`[a, b, c]`: a tuple of values."""

    items: list["Expr"]
    span: Span


@dataclass
class TupleExpr:
    """`(a, b)` with a space before "(": almost always a misplaced input list."""

    items: list["Expr"]
    span: Span


@dataclass
class BinOp:
    op: str  # + - * / // %
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass
class Neg:
    operand: "Expr"
    span: Span


@dataclass
class Call:
    """`leaky_relu(0.2)`: an op with its own arguments, used as a trailing activation."""

    name: str
    args: list["Arg"]
    span: Span
    name_span: Span


Expr = Union[Number, Dims, Name, String, ListExpr, TupleExpr, BinOp, Neg, Call]


@dataclass
class Arg:
    """A positional value (`key` is None) or `key=value`."""

    key: str | None
    value: Expr
    span: Span
    key_span: Span | None = None


# ---- statements ---------------------------------------------------------------
@dataclass
class Layer:
    """`[NAME =] OP[(inputs)] args... [-> HEAD]`."""

    op: str
    op_span: Span
    args: list[Arg]
    span: Span
    target: str | None = None
    target_span: Span | None = None
    inputs: list[Arg] | None = None  # None: the previous statement's output
    heads: list[tuple[str, Span]] = field(default_factory=list)


@dataclass
class Input:
    """`input NAME: SHAPE` in a network, `input NAME` in a block."""

    name: str
    name_span: Span
    shape: Expr | None
    span: Span


@dataclass
class Repeat:
    """`repeat N STATEMENT` or `repeat N { ... }`."""

    count: Expr
    body: list["Stmt"]
    span: Span
    braced: bool


Stmt = Union[Layer, Input, Repeat]


@dataclass
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass
class Network:
    name: str
    params: list[Param]
    body: list[Stmt]
    span: Span  # the header line
    name_span: Span


@dataclass
class Block:
    name: str
    params: list[Param]
    body: list[Stmt]
    span: Span
    name_span: Span


@dataclass
class Setting:
    """One line of a training section: `NAME args...` or `NAME { ... }`."""

    name: str
    args: list[Arg]
    span: Span
    name_span: Span
    children: list["Setting"] | None = None


@dataclass
class Train:
    settings: list[Setting]
    span: Span


@dataclass
class Profile:
    name: str
    settings: list[Setting]
    span: Span
    name_span: Span


@dataclass
class Module:
    """A whole file, items in source order."""

    file: str
    networks: list[Network] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    trains: list[Train] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
