"""The op registry: the one place where an op declares everything about itself.

`Attr` is also the one declaration of every option of the language outside the layers: the
training section's optimizers (cnndsl/ops/training/optimizers.py), schedules (cnndsl/train/schedule.py),
augmentations (cnndsl/augment/ops.py), losses (their ops' attrs), early stopping
(cnndsl/train/watch.py) and the plain settings (cnndsl/frontend/training.py) declare theirs with
it beside their implementation, and the frontend checks what a file writes against them.

An `OpDef` holds an op's options (name, kind, default, doc, range check), its
input arity, its shape rule, its parameter and FLOP counts, its receptive-field
window, its gradient rule and (filled by the backends) its kernels per backend.
Its NumPy references live in cnndsl/kernels/reference/ (element-wise activations: their
records in cnndsl/kernels/activations.py). Each op lives in its own module under `cnndsl/ops/` and
calls `register(...)`; stages look ops up with `get_op(name)`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from cnndsl.diagnostics import Diagnostic, Diagnostics, Span, did_you_mean
from cnndsl.ir.graph import Node, TensorType

REQUIRED = object()  # default of an option the user must give


class AttrError(ValueError):
    """A value that does not fit an option; the message says what was expected."""


@dataclass(frozen=True)
class Attr:
    """One option of an op.

    kind is one of:
      int      a whole number                      `filters=16`
      float    a real number                       `p=0.5`
      bool     true / false                        `bias=false`
      pair     one whole number or HxW             `kernel=3`, `kernel=3x5` -> (3, 5)
      padding  a number, a pair, `same` or `valid` `padding=same` -> "same" | (ph, pw)
      enum     one word out of `choices`           `mode=nearest`
      name     a node or parameter name (internal ops of the training graph)
      shape    F or CxHxW, positive whole numbers  `shape=3x32x32` -> (3, 32, 32)
      text     a name or a "quoted path"           `dataset "data/shapes"`
      floats   one number or a list of numbers     `mean=[0.49, 0.48, 0.45]` -> (0.49, 0.48, 0.45)
      ints     one whole number or a list of distinct ones   `classes=[5, 6]` -> (5, 6)
      multipliers  a factor per name (internal: the optimizer step's per-layer lr_mult), from a
               mapping or (name, number) pairs -> ((name, factor), ...) sorted by name; each factor
               checked against the range

    A range violation names the option and its unit (`patience must be at least 1 epochs, got 0`);
    a number must be finite.
    """

    name: str
    kind: str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple[str, ...] = ()
    positional: bool = False  # may be written without `name=` (in declaration order)
    minimum: float | None = None  # inclusive lower bound for numbers
    below: float | None = None  # exclusive upper bound for numbers
    unit: str = ""
    above: float | None = None  # exclusive lower bound for numbers (eps > 0)
    maximum: float | None = None  # inclusive upper bound for numbers (momentum <= 1)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any) -> Any:
        """Check a parsed value against this option; raise AttrError when it does not fit."""
        fn = _COERCE[self.kind]
        result = fn(self, value)
        for v in result if isinstance(result, tuple) else (result,):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self._check_range(v)
        return result

    def _check_range(self, v: float) -> None:
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and v < self.minimum:
            raise AttrError(f"{self.name} must be at least {_num(self.minimum)}{unit}, got {_num(v)}")
        if self.below is not None and v >= self.below:
            raise AttrError(f"{self.name} must be below {_num(self.below)}{unit}, got {_num(v)}")
        if self.above is not None and v <= self.above:
            raise AttrError(f"{self.name} must be above {_num(self.above)}{unit}, got {_num(v)}")
        if self.maximum is not None and v > self.maximum:
            raise AttrError(f"{self.name} must be at most {_num(self.maximum)}{unit}, got {_num(v)}")


def declare(*attrs: Attr) -> dict[str, Attr]:
    """The options of one thing (an optimizer, a schedule kind, an augmentation, a setting) by name,
    in the order written (which is also the order of positional values and of the docs)."""
    out: dict[str, Attr] = {}
    for a in attrs:
        if a.name in out:
            raise ValueError(f"option {a.name!r} declared twice")
        out[a.name] = a
    return out


def defaults(options: dict[str, Attr]) -> dict[str, Any]:
    """{name: default} of declared options (REQUIRED ones included, as REQUIRED)."""
    return {name: a.default for name, a in options.items()}


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _is_number(v: Any) -> bool:
    # numbers.Real admits NumPy scalars (the Python API of augment passes them); bool is no number here
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _as_int(attr: Attr, v: Any) -> int:
    if not _is_number(v) or not math.isfinite(float(v)) or float(v) != int(v):
        raise AttrError(f"{attr.name} takes a whole number, got {_show(v)}")
    return int(v)


def _as_float(attr: Attr, v: Any) -> float:
    if not _is_number(v):
        raise AttrError(f"{attr.name} takes a number, got {_show(v)}")
    if not math.isfinite(float(v)):
        raise AttrError(f"{attr.name} takes a finite number, got {_show(v)}")
    return float(v)


def _as_bool(attr: Attr, v: Any) -> bool:
    if not isinstance(v, bool):
        raise AttrError(f"{attr.name} takes true or false, got {_show(v)}")
    return v


def _as_pair(attr: Attr, v: Any) -> tuple[int, int]:
    if isinstance(v, tuple):
        if len(v) != 2:
            raise AttrError(f"{attr.name} takes a whole number or HxW, got {_show(v)}")
        return (_as_int(attr, v[0]), _as_int(attr, v[1]))
    n = _as_int(attr, v)
    return (n, n)


def _as_padding(attr: Attr, v: Any) -> str | tuple[int, int]:
    if isinstance(v, str):
        if v not in ("same", "valid"):
            hint = did_you_mean(v, ("same", "valid"))
            raise AttrError(f"padding takes a number, HxW, 'same' or 'valid', got '{v}'" + (f"; {hint}" if hint else ""))
        return v
    return _as_pair(attr, v)


def _as_name(attr: Attr, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise AttrError(f"{attr.name} takes a name, got {_show(v)}")
    return v


def _as_shape(attr: Attr, v: Any) -> tuple[int, ...]:
    if not isinstance(v, tuple):
        return (_as_int(attr, v),)
    if len(v) == 2:
        raise AttrError(f"{attr.name} takes F (a vector) or CxHxW (a feature map), got {_show(v)}; "
                        f"for a one-channel image write 1x{_show(v)}")
    if len(v) not in (1, 3):
        raise AttrError(f"{attr.name} takes F (a vector) or CxHxW (a feature map), got {_show(v)}")
    return tuple(_as_int(attr, x) for x in v)


def _as_text(attr: Attr, v: Any) -> str:
    if not isinstance(v, str):
        raise AttrError(f"{attr.name} takes a name or a \"quoted path\", got {_show(v)}")
    return v


def _as_floats(attr: Attr, v: Any) -> tuple[float, ...]:
    items = v if isinstance(v, tuple) else (v,)
    if not items or not all(_is_number(x) for x in items):
        raise AttrError(f"{attr.name} takes a number or a list [a, b, c], got {_show(v)}")
    return tuple(_as_float(attr, x) for x in items)


def _as_ints(attr: Attr, v: Any) -> tuple[int, ...]:
    items = v if isinstance(v, tuple) else (v,)
    if not items or not all(_is_number(x) and float(x) == int(x) for x in items):
        raise AttrError(f"{attr.name} takes a whole number or a list [a, b, c], got {_show(v)}")
    out = tuple(int(x) for x in items)
    if len(set(out)) != len(out):
        raise AttrError(f"{attr.name} lists a value twice: {_show(v)}")
    return out


def _as_multipliers(attr: Attr, v: Any) -> tuple[tuple[str, float], ...]:
    pairs = list(v.items()) if isinstance(v, dict) else v
    if not isinstance(pairs, (tuple, list)) or not all(
            isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and p[0] for p in pairs):
        raise AttrError(f"{attr.name} takes a factor per name, got {_show(v)}")
    names = [p[0] for p in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AttrError(f"{attr.name} names {', '.join(twice)} twice")
    out = tuple(sorted((name, _as_float(attr, f)) for name, f in pairs))
    for _, f in out:
        attr._check_range(f)
    return out


def _as_enum(attr: Attr, v: Any) -> str:
    if not isinstance(v, str) or v not in attr.choices:
        hint = did_you_mean(str(v), attr.choices) if isinstance(v, str) else None
        msg = f"{attr.name} takes one of {', '.join(attr.choices)}, got {_show(v)}"
        raise AttrError(msg + (f"; {hint}" if hint else ""))
    return v


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        if len(v) > 1 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
            return "x".join(str(x) for x in v)  # a size, as written: 3x32x32
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, str):
        return f"'{v}'"
    return _num(v) if _is_number(v) else repr(v)


_COERCE: dict[str, Callable[[Attr, Any], Any]] = {
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "pair": _as_pair,
    "padding": _as_padding,
    "enum": _as_enum,
    "name": _as_name,
    "shape": _as_shape,
    "text": _as_text,
    "floats": _as_floats,
    "ints": _as_ints,
    "multipliers": _as_multipliers,
}


class ShapeError(Exception):
    """Raised by a shape rule; carries the diagnostic to report."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic
        super().__init__(diagnostic.message)


@dataclass
class ShapeContext:
    """What a shape rule sees: the node, its input types and a way to report problems."""

    node: Node
    inputs: list[TensorType]
    input_names: list[str]
    diagnostics: Diagnostics
    rounding: str = "strict"  # network default; a node's own `rounding` option wins

    @property
    def attrs(self) -> dict[str, Any]:
        return self.node.attrs

    def span_of(self, attr: str | None) -> Span | None:
        if attr and attr in self.node.attr_spans:
            return self.node.attr_spans[attr]
        return self.node.span

    def _diag(self, severity, message, attr, details, help, code) -> Diagnostic:
        notes = [(site, "in the block used here") for site in self.node.trace]
        return Diagnostic(severity, message, self.span_of(attr), list(details), help, notes, code)

    def error(self, message: str, attr: str | None = None, details=(), help=None, code: str = "shape") -> None:
        """Stop inferring this node: raise a ShapeError with a diagnostic."""
        raise ShapeError(self._diag("error", message, attr, details, help, code))

    def warn(self, message: str, attr: str | None = None, details=(), help=None, code: str = "shape") -> None:
        self.diagnostics.add(self._diag("warning", message, attr, details, help, code))

    def describe(self) -> str:
        """How messages name this node, e.g. "conv 'c2'"."""
        return f"{self.node.op} '{self.node.name}'"


@dataclass
class OpDef:
    name: str
    doc: str
    attrs: tuple[Attr, ...] = ()
    min_inputs: int = 1
    max_inputs: int | None = 1  # None: any number (concat, add)
    shape: Callable[[ShapeContext], TensorType] | None = None
    # learnable tensors: (attrs, input types, output type) -> {param name: shape}
    params: Callable[[dict, list[TensorType], TensorType], dict[str, tuple[int, ...]]] | None = None
    # non-learnable state saved with the weights (batchnorm running statistics)
    buffers: Callable[[dict, list[TensorType], TensorType], dict[str, tuple[int, ...]]] | None = None
    # forward FLOPs per sample (a multiply-add counts 2)
    flops: Callable[[dict, list[TensorType], TensorType], int] | None = None
    # receptive-field window per spatial axis: attrs -> ((k_eff_h, k_eff_w), (s_h, s_w)).
    # Both may be fractions.Fraction: upsampling by 2 has stride 1/2 (it shrinks the jump).
    window: Callable[[dict], tuple[tuple[Any, Any], tuple[Any, Any]]] | None = None
    category: str = "layer"  # layer | activation | merge | input | loss
    shape_doc: str = ""  # the shape rule in words, for docs/layers.md
    aliases: tuple[str, ...] = ()
    training_only: bool = False  # identity at inference (dropout)
    params_doc: str = ""  # the learnable tensors and buffers in words, for docs/layers.md
    flops_doc: str = ""  # how `flops` counts, for docs/layers.md
    # loss ops: the rank of the head the loss trains (1 a vector of class scores, 3 a KxHxW map;
    # None any); the shape rule and the training section's `loss` line both read it
    head_rank: int | None = None
    # loss ops: head type -> (shape, dtype) of the target a head's loss compares against
    target: Callable[[TensorType], tuple[tuple[int, ...], str]] | None = None
    # loss ops: the values a target may hold (cnndsl/ops/training/targets.py), checked where data
    # enters, since loss kernels index with class targets and Numba does not check bounds
    target_values: Any = None
    gradient: Callable | None = None  # (GradBuilder, node, dy) -> input gradients (cnndsl/training_graph.py)
    kernels: dict[str, Any] = field(default_factory=dict)

    def attr(self, name: str) -> Attr | None:
        return next((a for a in self.attrs if a.name == name), None)

    @property
    def positional(self) -> list[Attr]:
        return [a for a in self.attrs if a.positional]


_REGISTRY: dict[str, OpDef] = {}
_ALIASES: dict[str, str] = {}


def register(op: OpDef) -> OpDef:
    if op.name in _REGISTRY or op.name in _ALIASES:
        raise ValueError(f"op {op.name!r} registered twice")
    _REGISTRY[op.name] = op
    for alias in op.aliases:
        _ALIASES[alias] = op.name
    return op


def get_op(name: str) -> OpDef | None:
    """The op called `name` (or one of its aliases), or None."""
    _load_all()
    return _REGISTRY.get(_ALIASES.get(name, name))


def all_ops() -> dict[str, OpDef]:
    _load_all()
    return dict(_REGISTRY)


def ops_of(category: str) -> dict[str, OpDef]:
    """The registered ops of one category ("loss", "activation", ...), in registration order."""
    _load_all()
    return {name: op for name, op in _REGISTRY.items() if op.category == category}


def op_names() -> list[str]:
    _load_all()
    return sorted(set(_REGISTRY) | set(_ALIASES))


def _load_all() -> None:
    # Importing the package registers every op module listed in cnndsl/ops/__init__.py.
    import cnndsl.ops  # noqa: F401
