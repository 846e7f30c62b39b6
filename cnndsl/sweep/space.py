"""Search spaces: network parameters whose default is `choice(...)`, `int(...)`, `float(...)` or
`log(...)`, and `--space NAME=SPEC` on the command line.

    network Net(width = choice(8, 16, 32), k = choice(3, 5), depth = int(1, 4), lr = log(1e-4, 1e-1))

A dimension is either a network parameter (its value reaches the layers and the training section
through the parameter, exactly like `-D NAME=VALUE`: `optimizer sgd lr=lr`, `dropout p`,
`rotate degrees=rot`), or, from the command line only, a training setting the file does not
expose as a parameter (TRAINING_KNOBS: lr, batch, weight_decay, momentum), applied to the
training configuration like `cnndsl train --lr`.

The grammar knows none of this: a space is an ordinary call expression (`NAME(args)`), and
`cnndsl.frontend` refuses it anywhere but as a parameter's default (values.SPACE_FUNCTIONS).
"""
from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field, replace
from typing import Any

from cnndsl.diagnostics import CnnError, Diagnostic, Span, did_you_mean
from cnndsl.frontend import ast
from cnndsl.frontend.training import OPTIMIZERS, SETTING_OPTIONS
from cnndsl.frontend.values import LIMIT, SPACE_FUNCTIONS, EvalError, Evaluator, parse_define
from cnndsl.ir.dump import show
from cnndsl.ops.registry import Attr

CLI_SPAN = Span("<command line>", 0, 0)



def _knob(what: str, a: Attr) -> tuple[str, str, float, bool, float | None, bool]:
    """(what it sets, kind, low bound, low open, high bound, high open) from the option's declaration."""
    low, low_open = (a.minimum, False) if a.minimum is not None else (a.above, True)
    top, top_open = (a.maximum, False) if a.maximum is not None else (a.below, a.below is not None)
    return what, a.kind, low, low_open, top, top_open


# Training settings `--space` may sweep directly, their ranges as the train section declares them
TRAINING_KNOBS: dict[str, tuple[str, str, float, bool, float | None, bool]] = {
    "lr": _knob("the optimizer's learning rate", OPTIMIZERS["sgd"]["lr"]),
    "batch": _knob("the batch size", SETTING_OPTIONS["batch"]),
    "weight_decay": _knob("the optimizer's weight decay", OPTIMIZERS["sgd"]["weight_decay"]),
    "momentum": _knob("SGD's momentum", OPTIMIZERS["sgd"]["momentum"]),
}

CHECK_LIMIT = 256  # points `cnndsl check` examines before it samples instead


@dataclass(frozen=True)
class Dim:
    """One dimension of a search space."""

    name: str
    kind: str  # choice | int | float | log
    values: tuple = ()  # choice
    low: float | int | None = None  # int, float, log
    high: float | int | None = None
    step: int = 1  # int
    span: Span | None = None  # the call in the file, or None (command line)
    knob: bool = False  # a training setting (TRAINING_KNOBS), not a network parameter

    def text(self) -> str:
        if self.kind == "choice":
            return "choice(" + ", ".join(show(v) for v in self.values) + ")"
        step = f", step={self.step}" if self.kind == "int" and self.step != 1 else ""
        return f"{self.kind}({show(self.low)}, {show(self.high)}{step})"

    @property
    def discrete(self) -> bool:
        return self.kind in ("choice", "int")

    def grid(self) -> list:
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step))
        raise ValueError(f"{self.kind} is continuous")

    def size(self) -> int | None:
        if self.kind == "choice":
            return len(self.values)
        if self.kind == "int":
            return (int(self.high) - int(self.low)) // self.step + 1
        return None

    def sample(self, rng: random.Random):
        if self.kind in ("choice", "int"):
            g = self.grid()
            return g[rng.randrange(len(g))]
        if self.kind == "float":
            return rng.uniform(self.low, self.high)
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))

    # optuna ------------------------------------------------------------------------
    def categorical(self) -> tuple:
        """The choices as Optuna stores them (None, bool, int, float or str; a tuple by its text)."""
        return tuple(v if isinstance(v, (bool, int, float, str)) else show(v) for v in self.values)

    def suggest(self, trial):
        if self.kind == "choice":
            stored = self.categorical()
            picked = trial.suggest_categorical(self.name, stored)
            return self.values[stored.index(picked)]
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=self.step)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.kind == "log")

    def from_stored(self, value):
        """A value read back from Optuna's storage, as the space's own value."""
        if self.kind == "choice":
            stored = self.categorical()
            return self.values[stored.index(value)] if value in stored else value
        return value


@dataclass
class Space:
    dims: list[Dim] = field(default_factory=list)
    file: str = "<string>"
    defines: dict[str, str] = field(default_factory=dict)  # -D values, fixed in every point

    def __bool__(self) -> bool:
        return bool(self.dims)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def describe(self) -> str:
        return ", ".join(f"{d.name} = {d.text()}" for d in self.dims)

    def size(self) -> int | None:
        """Number of points; None when a dimension is continuous."""
        n = 1
        for d in self.dims:
            s = d.size()
            if s is None:
                return None
            n *= s
        return n

    def discrete_size(self) -> int:
        return math.prod(d.size() for d in self.dims if d.discrete)

    def points(self, limit: int = CHECK_LIMIT, seed: int = 0) -> tuple[list[dict[str, Any]], bool]:
        """Points to check: every combination of the discrete dimensions when there are at most
        `limit` (continuous ones drawn once per point, seeded), else `limit` distinct seeded draws.
        Returns (points, exhaustive over the discrete dimensions)."""
        rng = random.Random(seed)
        discrete = [d for d in self.dims if d.discrete]
        if self.discrete_size() <= limit:
            out = []
            for combo in itertools.product(*(d.grid() for d in discrete)):
                fixed = dict(zip((d.name for d in discrete), combo))
                out.append({d.name: fixed[d.name] if d.discrete else d.sample(rng) for d in self.dims})
            return out, True
        seen, out = set(), []
        while len(out) < limit:
            p = {d.name: d.sample(rng) for d in self.dims}
            key = tuple(show(p[d.name]) for d in discrete)
            if key in seen:
                continue
            seen.add(key)
            out.append(p)
        return out, False

    def split(self, point: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """(-D values for the network parameters, training-knob values) of a point."""
        defines = dict(self.defines)
        knobs = {}
        for d in self.dims:
            if d.knob:
                knobs[d.name] = point[d.name]
            else:
                defines[d.name] = show(point[d.name])
        return defines, knobs


def show_point(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in point.items())


def _short(v) -> str:
    if isinstance(v, float) and not isinstance(v, bool):
        return f"{v:.4g}"
    return show(v)


# ---- building a space ---------------------------------------------------------------------
def _err(message: str, span: Span | None, help: str | None = None, code: str = "search-space") -> CnnError:
    return CnnError([Diagnostic("error", message, span or CLI_SPAN, help=help, code=code)])


def make_dim(name: str, kind: str, values: list, keywords: dict[str, Any], span: Span | None,
             where: str, knob: bool = False) -> Dim:
    """A dimension from a function name and its arguments, checked; `where` prefixes messages."""
    if kind not in SPACE_FUNCTIONS:
        hint = did_you_mean(kind, SPACE_FUNCTIONS)
        raise _err(f"{where}: '{kind}(...)' is not a search space", span,
                   help=hint or "a space is choice(a, b, ...), int(low, high), float(low, high) or log(low, high)")
    allowed = ("step",) if kind == "int" else ()
    for key in keywords:
        if key not in allowed:
            raise _err(f"{where}: {kind}(...) takes no option '{key}'", span,
                       help="int(low, high, step=2) is the only option" if kind != "int"
                       else did_you_mean(key, allowed) or "its only option is step")
    if kind == "choice":
        if not values:
            raise _err(f"{where}: choice() needs at least one value", span, help="for example choice(8, 16, 32)")
        shown = [show(v) for v in values]
        dup = next((s for i, s in enumerate(shown) if s in shown[:i]), None)
        if dup is not None:
            raise _err(f"{where}: choice(...) lists {dup} twice", span, help="list each value once")
        return Dim(name, kind, tuple(values), span=span, knob=knob)
    if len(values) != 2:
        raise _err(f"{where}: {kind}(...) takes two numbers (low, high), got {len(values)}", span,
                   help=f"for example {kind}({'1, 4' if kind == 'int' else '1e-4, 1e-1' if kind == 'log' else '0.1, 0.5'})")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _err(f"{where}: {kind}(...) takes numbers, got {show(v)}", span)
    low, high = values
    if kind == "int":
        step = keywords.get("step", 1)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (low, high, step)):
            raise _err(f"{where}: int(...) takes whole numbers, got int({show(low)}, {show(high)}"
                       + (f", step={show(step)}" if "step" in keywords else "") + ")", span,
                       help="for a real number use float(low, high) or log(low, high)")
        if step < 1:
            raise _err(f"{where}: int(...) needs step >= 1, got {step}", span)
        if low > high:
            raise _err(f"{where}: int({low}, {high}) is empty: low is above high", span,
                       help=f"int({high}, {low})")
        if (high - low) % step:
            raise _err(f"{where}: int({low}, {high}, step={step}): the step does not reach {high} from {low}", span,
                       help=f"int({low}, {low + (high - low) // step * step}, step={step})")
        return Dim(name, kind, low=low, high=high, step=step, span=span, knob=knob)
    if not low < high:
        raise _err(f"{where}: {kind}({show(low)}, {show(high)}) needs low < high", span,
                   help=f"{kind}({show(min(low, high))}, {show(max(low, high))})" if low != high
                   else f"a single value is not a range: write {show(low)}")
    if kind == "log" and low <= 0:
        raise _err(f"{where}: log({show(low)}, {show(high)}) needs low > 0 (it is uniform in the logarithm)", span,
                   help="use float(low, high) for a range that includes 0")
    return Dim(name, kind, low=float(low), high=float(high), span=span, knob=knob)


def _knob_check(dim: Dim, where: str) -> None:
    """A training knob's range must lie within the setting's valid values."""
    what, kind, lo, lo_open, hi, hi_open = TRAINING_KNOBS[dim.name]
    vals = dim.values if dim.kind == "choice" else (dim.low, dim.high)
    if kind == "int" and (dim.kind in ("float", "log") or any(not isinstance(v, int) or isinstance(v, bool)
                                                               for v in vals)):
        raise _err(f"{where}: {dim.name} ({what}) takes whole numbers", None,
                   help=f"for example --space {dim.name}=16,32,64")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _err(f"{where}: {dim.name} ({what}) takes numbers, got {show(v)}", None)
        bad = v < lo or (lo_open and v == lo) or (hi is not None and (v > hi or (hi_open and v == hi)))
        if bad:
            rng = f"{'>' if lo_open else '>='} {lo:g}" + (f" and {'<' if hi_open else '<='} {hi:g}" if hi else "")
            raise _err(f"{where}: {dim.name} ({what}) must be {rng}, but the space reaches {show(v)}", None)


def file_dims(net: ast.Network) -> list[Dim]:
    """The dimensions declared in a network's header, checked (located errors)."""
    dims = []
    for p in net.params:
        e = p.default
        if not (isinstance(e, ast.Call) and e.name in SPACE_FUNCTIONS):
            continue
        ev = Evaluator({})
        values, keywords = [], {}
        for a in e.args:
            try:
                v = ev.value(a.value)
            except EvalError as err:
                if err.diagnostic is not None and err.diagnostic.code == "search-space-place":
                    raise _err(f"parameter '{p.name}': search spaces do not nest", a.span) from None
                raise CnnError([err.diagnostic] if err.diagnostic else []) from None
            if isinstance(v, str) and isinstance(a.value, ast.Name) and e.name != "choice":
                raise _err(f"parameter '{p.name}': {e.name}(...) takes numbers; '{v}' is a word", a.span,
                           help="the bounds of a space are numbers written out, not other parameters")
            if a.key is None:
                values.append(v)
            else:
                keywords[a.key] = v
        dims.append(make_dim(p.name, e.name, values, keywords, e.span, f"parameter '{p.name}'"))
    return dims


_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\((.*)\)\s*$", re.S)


def parse_cli_space(item: str, params: dict[str, ast.Param], file: str) -> Dim:
    """`--space NAME=SPEC`: SPEC is choice(...)/int(...)/float(...)/log(...), a,b,c (a choice) or one value."""
    name, sep, spec = item.partition("=")
    name, spec = name.strip(), spec.strip()
    where = f"--space {item}"
    if not sep or not name or not spec:
        raise _err(f"--space takes NAME=SPEC, got '{item}'",
                   None, help="for example --space width=8,16,32 or --space lr=log(1e-4,1e-1)", code="cli-space")
    knob = name not in params
    if knob and name not in TRAINING_KNOBS:
        hint = did_you_mean(name, list(params) + list(TRAINING_KNOBS))
        raise _err(f"--space {name}: {file} has no network parameter '{name}', and it is not a training setting "
                   "the sweep can set", None,
                   help=hint or f"network parameters: {', '.join(params) or 'none'}; training settings: "
                                f"{', '.join(TRAINING_KNOBS)}", code="cli-space")
    m = _CALL.match(spec)
    if m:
        kind, inner = m.group(1), m.group(2)
        values, keywords = [], {}
        for part in [x for x in inner.split(",")] if inner.strip() else []:
            key, eq, text = part.partition("=")
            target = text if eq else key
            v = parse_define(target)
            if v is None:
                raise _err(f"{where}: cannot read '{target.strip()}'", None,
                           help="values are numbers, true/false, words or HxW", code="cli-space")
            if eq:
                keywords[key.strip()] = v
            else:
                values.append(v)
    else:
        kind = "choice"
        values, keywords = [], {}
        for part in spec.split(","):
            v = parse_define(part)
            if v is None:
                raise _err(f"{where}: cannot read '{part.strip()}'", None,
                           help="for example --space width=8,16,32", code="cli-space")
            values.append(v)
    dim = make_dim(name, kind, values, keywords, None, where, knob=knob)
    if knob:
        _knob_check(dim, where)
    return dim


def build_space(module: ast.Module, net: ast.Network, defines: dict[str, str] | None = None,
                cli: tuple[str, ...] = (), file: str = "<string>") -> Space:
    """The search space of `net`: its header's spaces not fixed by -D, then --space items (which
    replace a header space of the same name, or sweep a parameter with a plain default)."""
    defines = dict(defines or {})
    params = {p.name: p for p in net.params}
    dims = {d.name: d for d in file_dims(net) if d.name not in defines}
    for item in cli:
        d = parse_cli_space(item, params, file)
        if d.name in defines:
            raise _err(f"--space {d.name}: {d.name} is also fixed with -D {d.name}={defines[d.name]}", None,
                       help="give one of them", code="cli-space")
        dims[d.name] = d
    order = {p.name: i for i, p in enumerate(net.params)}
    ordered = sorted(dims.values(), key=lambda d: (d.knob, order.get(d.name, 0)))
    return Space(ordered, file, defines)


def read_space(path: str, defines: dict[str, str] | None = None, network: str | None = None,
               cli: tuple[str, ...] = ()) -> tuple[Space, str, ast.Module, ast.Network] | None:
    """(space, text, module, network) of a file, or None when the file does not parse or has
    no search space (the ordinary load then reports whatever is wrong)."""
    from cnndsl.frontend.parser import parse_text, read_source
    from cnndsl.frontend.program import _choose_network

    try:
        text = read_source(path)
        module = parse_text(text, str(path))
        net = _choose_network(module, network, str(path))
    except CnnError:
        if cli:
            raise
        return None
    space = build_space(module, net, defines, cli, str(path))
    if not space:
        return None
    return space, text, module, net


def apply_knobs(config, knobs: dict[str, Any]):
    """A TrainingConfig with the training-knob values of a point."""
    if not knobs:
        return config
    opt = config.optimizer
    changes = {k: knobs[k] for k in ("lr", "weight_decay", "momentum") if k in knobs}
    if changes:  # an option the optimizer does not declare (adam's momentum) changes nothing, as with --lr
        opt = opt.with_options(**{k: float(v) for k, v in changes.items()})
    out = replace(config, optimizer=opt)
    if "batch" in knobs:
        out = replace(out, batch=int(knobs["batch"]))
    return out


__all__ = ["CHECK_LIMIT", "Dim", "LIMIT", "Space", "TRAINING_KNOBS", "apply_knobs", "build_space", "make_dim",
           "parse_cli_space", "read_space", "show_point"]
