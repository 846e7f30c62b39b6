"""AST -> graph IR: parameters, expressions, names, blocks, repeat, heads.

Errors are collected in a Diagnostics bag, so several independent mistakes are
reported in one run. A statement that fails produces no node; statements that
read its tensor are still checked (their options) but produce no node either,
so one mistake is reported once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnndsl.analysis.infer import infer_shapes
from cnndsl.diagnostics import Diagnostic, Diagnostics, Span, did_you_mean
from cnndsl.frontend import ast
from cnndsl.frontend.values import (LIMIT, MISSING, SPACE_FUNCTIONS, EvalError, Evaluator, is_define_number,
                                    parse_define, shown_number)
from cnndsl.ir.dump import show
from cnndsl.ir.graph import Graph, Node
from cnndsl.ops.registry import AttrError, OpDef, all_ops, get_op

ROUNDINGS = ("strict", "floor", "ceil")
USER_CATEGORIES = ("layer", "activation", "merge")  # ops a network statement may use
MAX_NODES = 20_000
MAX_REPEAT = 10_000
DEFINE_SPAN = Span("<command line>", 0, 0)


class _Poison(str):
    """The tensor of a statement that failed: readers are checked but not built."""


POISON = _Poison("<error>")


def user_ops() -> dict[str, OpDef]:
    """Ops (and aliases) that may be written as a statement in a network or block."""
    out = {}
    for name, op in all_ops().items():
        if op.category in USER_CATEGORIES:
            out[name] = op
            for alias in op.aliases:
                out[alias] = op
    return out


# Layers of other frameworks that cnndsl writes another way
OP_HINTS = {
    "separable_conv": "a separable conv is `depthwise 3 padding=same` then `conv F kernel=1`",
    "separableconv2d": "a separable conv is `depthwise 3 padding=same` then `conv F kernel=1`",
    "sepconv": "a separable conv is `depthwise 3 padding=same` then `conv F kernel=1`",
    "depthwiseconv2d": "did you mean 'depthwise'? (`depthwise 3` is `conv C kernel=3 groups=C` of its input)",
    "group_conv": "a grouped conv is `conv F groups=G`",
    "groupconv": "a grouped conv is `conv F groups=G`",
    "mul": "did you mean 'multiply'? (`multiply(a, b)`)",
    "elementwise_mul": "did you mean 'multiply'? (`multiply(a, b)`)",
    "view": "did you mean 'reshape'? (`reshape 4x7x7`, one size may be -1)",
    "global_max_pool": "did you mean 'global_maxpool'?",
    "adaptive_avg_pool": "global_avgpool is adaptive average pooling to 1x1",
    "adaptive_max_pool": "global_maxpool is adaptive max pooling to 1x1",
    "localresponsenorm": "did you mean 'lrn'?",
    "interpolate": "did you mean 'upsample'? (`upsample 2 mode=bilinear`)",
    "resize": "did you mean 'upsample'? (`upsample 2 mode=bilinear`)",
}

# Options of other frameworks, and what cnndsl calls them (did-you-mean by meaning, not spelling)
ACTIVATION_KEYS = ("activation", "act", "nonlinearity", "activation_fn")
INPUT_SIZE_KEYS = ("in_channels", "in_ch", "in_features", "input_channels", "in_planes", "input_dim",
                   "input_shape", "num_input_features")
OPTION_SYNONYMS = {
    "out_channels": "filters", "out_ch": "filters", "kernel_size": "kernel", "pool_size": "kernel",
    "strides": "stride", "out_features": "units", "use_bias": "bias", "dilation_rate": "dilation",
    "num_features": "filters", "scale_factor": "scale", "rate": "p", "depth_multiplier": "multiplier",
    "interpolation": "mode", "ceil_mode": "rounding", "round_mode": "rounding",
}


def is_activation(name: str) -> bool:
    op = get_op(name)
    return op is not None and op.category == "activation"


@dataclass
class Scope:
    """Names visible in a network body or in one block instance."""

    prefix: str  # prepended to node names: "" or "r1."
    params: dict[str, Any]
    trace: tuple[Span, ...] = ()  # block use sites, innermost first
    stack: tuple[str, ...] = ()  # blocks being expanded (recursion check)
    block: ast.Block | None = None
    block_inputs: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # local name -> node name (or POISON)
    defined_at: dict[str, tuple[Span | None, int]] = field(default_factory=dict)  # name -> (span, stmt id)
    counters: dict[str, int] = field(default_factory=dict)
    last: str | None = None
    inputs_bound: int = 0
    repeat: tuple[int, ...] = ()  # iteration numbers of the enclosing repeats

    @property
    def notes(self) -> list[tuple[Span | None, str]]:
        return [(site, "in the block used here") for site in self.trace]


class Lowerer:
    def __init__(self, module: ast.Module, diagnostics: Diagnostics):
        self.module = module
        self.diags = diagnostics
        self.blocks: dict[str, ast.Block] = {}
        self.ops = user_ops()
        for b in module.blocks:
            if b.name in self.blocks:
                first = self.blocks[b.name]
                self.diags.error(f"block '{b.name}' is defined twice", b.name_span,
                                 notes=[(first.name_span, "first defined here")], code="duplicate-block")
                continue
            if b.name in self.ops or get_op(b.name) is not None:
                self.diags.error(f"block '{b.name}' has the name of an op", b.name_span,
                                 help=f"rename the block, e.g. '{b.name}_block'", code="block-shadows-op")
                continue
            self.blocks[b.name] = b
            if not any(isinstance(s, ast.Input) for s in b.body):
                self.diags.error(f"block '{b.name}' has no `input` statement", b.name_span,
                                 help="start the block with `input x`; the block reads x", code="block-no-input")
        self.graph: Graph | None = None
        self.failed_heads: set[str] = set()  # heads whose layer failed (their later uses are not re-reported)
        self._current_network_body: list = []

    # ---- diagnostics -------------------------------------------------------------
    def error(self, scope: Scope, message: str, span: Span | None, help: str | None = None,
              code: str = "", notes=()) -> None:
        self.diags.add(Diagnostic("error", message, span, help=help, notes=list(notes) + scope.notes, code=code))

    def add_eval_error(self, e: EvalError) -> None:
        if e.diagnostic is not None:
            self.diags.add(e.diagnostic)

    # ---- networks ------------------------------------------------------------------
    def network(self, net: ast.Network, defines: dict[str, str] | None) -> tuple[Graph, dict[str, Any]]:
        graph = Graph(net.name)
        self.graph = graph
        self._typed_nodes = -1  # nodes of the graph when its shapes were last inferred (tensor_type)
        self._current_network_body = net.body
        params = self.network_params(net, defines or {})
        graph.attrs["params"] = dict(params)
        scope = Scope("", params)
        self.body(net.body, scope)
        if not graph.inputs and not any(isinstance(s, ast.Input) for s in _walk(net.body)):
            self.diags.error(f"network '{net.name}' has no input", net.span,
                             help="add a first line like `input image: 3x32x32`", code="no-input")
        if not graph.heads and scope.last is not None and not isinstance(scope.last, _Poison):
            graph.heads[scope.last] = scope.last
        if not self.diags.errors:
            self.unused(graph)
        return graph, params

    def network_params(self, net: ast.Network, defines: dict[str, str]) -> dict[str, Any]:
        declared = {p.name: p for p in net.params}
        seen: set[str] = set()
        for p in net.params:
            if p.name in seen:
                self.diags.error(f"parameter '{p.name}' is declared twice", p.span, code="duplicate-parameter")
            seen.add(p.name)
        overrides: dict[str, Any] = {}
        for key, text in defines.items():
            if key not in declared:
                hint = did_you_mean(key, declared)
                known = ", ".join(declared) or "none"
                self.diags.error(f"-D {key}: network '{net.name}' has no parameter '{key}'", DEFINE_SPAN,
                                 help=hint or f"its parameters: {known}", code="unknown-define")
                continue
            value = parse_define(str(text))
            if value is None:
                shown = shown_number(str(text))
                number = is_define_number(str(text))  # not `5+5`: that is no value, not a large one
                self.diags.error(f"-D {key}={shown}: " + (f"the number is out of range (at most {LIMIT:,})" if number
                                 else "expected a number, true/false, a word or HxW"), DEFINE_SPAN,
                                 help=f"for example -D {key}=5", code="bad-define")
                continue
            overrides[key] = value
        values: dict[str, Any] = {}
        for p in net.params:
            if p.name in overrides:
                values[p.name] = overrides[p.name]
            elif isinstance(p.default, ast.Call) and p.default.name in SPACE_FUNCTIONS:
                values[p.name] = MISSING  # a search space: a point is chosen with -D (cnndsl/sweep/)
                self.diags.error(f"parameter '{p.name}' is a search space ({_call_src(p.default)}); this command "
                                 "needs one point of it", p.default.span,
                                 help=f"choose a value with -D {p.name}=..., check every point with `cnndsl check`, "
                                      "or search it with `cnndsl sweep` (docs/sweep.md)", code="search-space")
            elif p.default is not None:
                try:
                    values[p.name] = Evaluator(values).value(p.default)
                except EvalError as e:
                    self.add_eval_error(e)
                    values[p.name] = MISSING
            else:
                values[p.name] = MISSING
                self.diags.error(f"parameter '{p.name}' of network '{net.name}' has no value", p.span,
                                 help=f"give it a default ({p.name} = 10) or set it with -D {p.name}=10",
                                 code="parameter-no-value")
        return values

    def unused(self, graph: Graph) -> None:
        heads = set(graph.heads.values())
        for node in graph.nodes():
            if node.name in heads or graph.consumers(node.name):
                continue
            what = "input" if node.op == "input" else "layer"
            self.diags.add(Diagnostic(
                "warning", f"{what} '{node.name}' is never used: no layer reads it and it is not an output",
                node.span, help="read it in a later layer, declare it as an output (`-> NAME` at the end of its "
                                "line), or remove it",
                notes=[(s, "in the block used here") for s in node.trace], code="unused"))

    # ---- statements ----------------------------------------------------------------
    def body(self, stmts: list, scope: Scope) -> None:
        for s in stmts:
            if len(self.graph) > MAX_NODES:
                self.diags.error(f"the network has more than {MAX_NODES} layers", getattr(s, "span", None),
                                 help="check the repeat counts", code="too-large")
                return
            if isinstance(s, ast.Input):
                self.input(s, scope)
            elif isinstance(s, ast.Repeat):
                self.repeat(s, scope)
            else:
                self.layer(s, scope)

    def input(self, s: ast.Input, scope: Scope) -> None:
        if scope.block is not None:
            if scope.repeat:
                self.error(scope, "`input` cannot be repeated", s.span, code="input-in-repeat")
                return
            if scope.inputs_bound >= len(scope.block_inputs):
                return  # the use site was already reported as having the wrong number of inputs
            tensor = scope.block_inputs[scope.inputs_bound]
            scope.inputs_bound += 1
            if s.shape is not None and not isinstance(tensor, _Poison):
                self.check_block_input(s, scope, tensor)
            if self.define(scope, s.name, s.name_span, id(s)):
                scope.names[s.name] = tensor
            scope.last = tensor
            return
        if scope.repeat:
            self.error(scope, "`input` cannot be repeated", s.span, code="input-in-repeat")
            return
        op = get_op("input")
        if s.shape is None:
            self.error(scope, f"network input '{s.name}' needs a shape", s.span,
                       help=f"write `input {s.name}: 3x32x32` (channels x height x width) or `input {s.name}: [100]`",
                       code="input-no-shape")
            self.define(scope, s.name, s.name_span, id(s))
            scope.names[s.name] = POISON
            scope.last = POISON
            return
        ok = self.define(scope, s.name, s.name_span, id(s))
        attrs: dict[str, Any] = {}
        try:
            value = Evaluator(scope.params, scope.notes).value(s.shape)
            shape_attr = op.positional[0] if op is not None and op.positional else None
            if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], tuple):
                value = value[0]
            attrs[shape_attr.name if shape_attr else "shape"] = _coerce(shape_attr, value) if shape_attr else value
        except EvalError as e:
            self.add_eval_error(e)
            ok = False
        except AttrError as e:
            self.error(scope, str(e), s.shape.span, code="bad-value")
            ok = False
        if not ok:
            scope.names[s.name] = POISON
            scope.last = POISON
            return
        if op is not None:
            self.fill_defaults(op, attrs)
        name = scope.prefix + s.name
        node = Node(name, "input", attrs, s.span, {"shape": s.shape.span}, scope.trace)
        self.graph.add(node, [])
        self.graph.inputs.append(name)
        scope.names[s.name] = name
        scope.last = name

    def repeat(self, s: ast.Repeat, scope: Scope) -> None:
        try:
            n = Evaluator(scope.params, scope.notes).number(s.count)
        except EvalError as e:
            self.add_eval_error(e)
            return
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        if not isinstance(n, int) or n < 1 or n > MAX_REPEAT:
            self.error(scope, f"repeat takes a whole number from 1 to {MAX_REPEAT}, got {show(n)}", s.count.span,
                       code="bad-repeat")
            return
        saved = scope.repeat
        for i in range(1, n + 1):
            scope.repeat = saved + (i,)
            before = len(self.diags.items)
            self.body(s.body, scope)
            if any(d.severity == "error" for d in self.diags.items[before:]):
                break  # the same mistake in every iteration is reported once
        scope.repeat = saved

    def define(self, scope: Scope, name: str, span: Span | None, stmt_id: int) -> bool:
        """Claim a local name; False (with an error) when it is already taken."""
        if name in ("rounding",):
            self.error(scope, f"'{name}' is a setting, not a name", span, code="reserved-name")
            return False
        prev = scope.defined_at.get(name)
        if prev is not None and not (scope.repeat and prev[1] == stmt_id):
            self.error(scope, f"'{name}' is already defined", span,
                       notes=[(prev[0], "first defined here")] if prev[0] else [],
                       help="pick another name", code="duplicate-name")
            return False
        scope.defined_at[name] = (span, stmt_id)
        return True

    def fresh(self, scope: Scope, base: str) -> str:
        """The next `<base><n>` in this scope that no node and no local name uses."""
        n = scope.counters.get(base, 0)
        while True:
            n += 1
            local = f"{base}{n}"
            if local not in scope.names and local not in scope.defined_at \
                    and scope.prefix + local not in self.graph:
                break
        scope.counters[base] = n
        return local

    def count(self, scope: Scope, base: str) -> None:
        """A named layer also advances its op's counter, so naming one layer renames no other."""
        scope.counters[base] = scope.counters.get(base, 0) + 1

    def resolve(self, scope: Scope, name: str, span: Span | None) -> str | None:
        """The node a tensor reference means, or None (with an error)."""
        if name in scope.names:
            return scope.names[name]
        if scope.prefix + name in self.graph:  # a dotted name into an instance: stage1.res2.conv1
            return scope.prefix + name
        candidates = list(scope.names) + [n[len(scope.prefix):] for n in self.graph.nx.nodes
                                          if n.startswith(scope.prefix)]
        hint = did_you_mean(name, candidates)
        later = self._defined_later(scope, name)
        if later is not None:
            help = f"'{name}' is defined on line {later.line}, after this use; tensors must be defined before use"
        else:
            help = hint or ("no tensor is defined yet" if not candidates else None)
        self.error(scope, f"undefined tensor '{name}'", span, help=help, code="undefined-tensor")
        return None

    def check_block_input(self, s: ast.Input, scope: Scope, tensor: str) -> None:
        """`input x: C` (or CxHxW, [c, h, w], [F]) in a block: what the block expects of its input,
        checked against the tensor it is given at this use."""
        try:
            want = Evaluator(scope.params, scope.notes).value(s.shape)
        except EvalError as e:
            self.add_eval_error(e)
            return
        if isinstance(want, tuple) and len(want) == 1 and isinstance(want[0], tuple):
            want = want[0]
        t = self.tensor_type(tensor)
        if t is None:
            return
        got = tuple(t.shape)
        shown = "x".join(map(str, got))
        text = _src(s.shape)
        if isinstance(want, (int, float)) and not isinstance(want, bool):
            if int(want) != got[0]:
                what = "channels" if len(got) == 3 else "features"
                expr = f" ({text} = {show(want)})" if text != show(want) else ""
                self.error(scope, f"block {scope.block.name} expects its input '{s.name}' to have {show(want)} "
                                  f"{what}{expr}, but the tensor it is given ('{tensor}') has {got[0]} ({shown})",
                           s.shape.span, help=f"give {got[0]} where the block is used, or let the block read it: "
                                              f"channels({s.name})", code="block-input-shape")
            return
        if isinstance(want, tuple) and all(isinstance(d, int) and not isinstance(d, bool) for d in want):
            if tuple(want) != got:
                self.error(scope, f"block {scope.block.name} expects its input '{s.name}' to be "
                                  f"{'x'.join(map(str, want))}, but the tensor it is given ('{tensor}') is {shown}",
                           s.shape.span, code="block-input-shape")
            return
        self.error(scope, f"a block input's shape is a number of channels or CxHxW, got {show(want)}", s.shape.span,
                   help=f"for example `input {s.name}: in_ch`", code="block-input-shape")

    def tensor_type(self, node: str):
        """The type of a tensor of the graph built so far (None when it cannot be inferred: its
        error is reported by the shape inference of the whole graph, after lowering)."""
        if self._typed_nodes != len(self.graph.nx):  # something was added since the last inference
            infer_shapes(self.graph, Diagnostics())
            self._typed_nodes = len(self.graph.nx)
        return self.graph.node(node).type

    def shapes_in(self, scope: Scope):
        """`shapes(name, span)` for `channels(x)`, `height(x)`, `width(x)` in this scope."""
        def shapes(name: str, span: Span | None):
            node = self.resolve(scope, name, span)
            if node is None or isinstance(node, _Poison):
                raise EvalError(None)  # reported (undefined tensor), or its layer failed
            t = self.tensor_type(node)
            if t is None:
                raise EvalError(None)  # its own error is reported by shape inference
            return t.shape
        return shapes

    def _defined_later(self, scope: Scope, name: str) -> Span | None:
        body = scope.block.body if scope.block is not None else self._current_network_body
        for s in _walk(body):
            if isinstance(s, ast.Layer) and name in ((s.target,) + tuple(h for h, _ in s.heads)):
                return s.span
        return None

    # ---- layers ------------------------------------------------------------------
    def layer(self, s: ast.Layer, scope: Scope) -> None:
        if self.rounding(s, scope):
            return
        block = self.blocks.get(s.op)
        op = None if block is not None else self.ops.get(s.op)
        if op is not None and op.name == "softmax" and any(a.key == "axis" for a in s.args):
            op = self.ops.get("softmax_axis")  # `softmax axis=width`: softmax along another axis (a layer)
        if block is None and op is None:
            self.unknown_op(s, scope)
            self.finish(s, scope, self.layer_name(s, scope, s.op), POISON, None)
            return
        if s.inputs is None and s.args and s.args[0].key is None and isinstance(s.args[0].value, ast.TupleExpr):
            inner = ", ".join(_src(x) for x in s.args[0].value.items)
            self.error(scope, f"a space separates '{s.op}' from its input list", s.args[0].span,
                       help=f"write {s.op}({inner}) with no space before '('", code="bad-input")
            self.finish(s, scope, self.layer_name(s, scope, op.name if op else s.op), POISON, None)
            return
        inputs = self.layer_inputs(s, scope, op)
        args, activation = self.split_activation(s.args, scope, op)
        if block is not None:
            self.expand(s, block, inputs, args, activation, scope)
            return
        attrs, spans, ok = self.bind(op, args, scope, s, what=op.name)
        if inputs is not None and not self.check_arity(op, inputs, s, scope):
            inputs = None
        name = self.layer_name(s, scope, op.name)
        if name is None:
            ok = False
        if not ok or inputs is None or any(isinstance(i, _Poison) for i in inputs):
            self.finish(s, scope, name, POISON, activation)
            return
        node_name = scope.prefix + name
        if op.name == "depthwise":
            op, attrs = self.depthwise_conv(attrs, inputs[0])
            if op is None:
                self.finish(s, scope, name, POISON, activation)
                return
        node = Node(node_name, op.name, attrs, s.span, spans, scope.trace)
        self.graph.add(node, inputs)
        self.finish(s, scope, name, node_name, activation)

    def depthwise_conv(self, attrs: dict, source: str):
        """`depthwise` as the conv it is: filters = C*multiplier and groups = C for an input of C
        channels. (None, None) when the input's shape is unknown (its error is reported)."""
        t = self.tensor_type(source)
        if t is None:
            return None, None
        conv = get_op("conv")
        channels = t.shape[0]  # a vector input: conv's shape rule reports that it needs a map
        out = {k: v for k, v in attrs.items() if k != "multiplier"}
        out["filters"] = channels * attrs.get("multiplier", 1)
        out["groups"] = channels
        return conv, out

    def rounding(self, s: ast.Layer, scope: Scope) -> bool:
        """`rounding floor` / `rounding = floor`: the network's size rounding. True when s is that."""
        value = None
        if s.op == "rounding" and s.target is None and s.inputs is None:
            if len(s.args) == 1 and s.args[0].key is None and isinstance(s.args[0].value, ast.Name):
                value = s.args[0].value.name
            else:
                value = "?"
        elif s.target == "rounding" and s.inputs is None and not s.args and s.op in ROUNDINGS + ("rounding",):
            value = s.op
        elif s.target == "rounding" and s.op not in self.ops and s.op not in self.blocks:
            value = s.op
        if value is None:
            return False
        if scope.block is not None or scope.repeat:
            self.error(scope, "rounding is a network setting; per layer write rounding=... as an option",
                       s.span, code="rounding-in-block")
            return True
        if value not in ROUNDINGS:
            hint = did_you_mean(value, ROUNDINGS)
            self.error(scope, f"rounding takes strict, floor or ceil, got '{value}'", s.span,
                       help=hint, code="bad-rounding")
            return True
        if "rounding" in self.graph.attrs:
            self.error(scope, "rounding is set twice", s.span, code="duplicate-rounding")
            return True
        self.graph.attrs["rounding"] = value
        return True

    def unknown_op(self, s: ast.Layer, scope: Scope) -> None:
        op = get_op(s.op)
        if op is not None and op.category == "input":
            self.error(scope, f"'{s.op}' is not a layer", s.op_span,
                       help="declare inputs as `input NAME: CxHxW`", code="unknown-op")
            return
        known = sorted(set(self.ops) | set(self.blocks))
        hint = OP_HINTS.get(s.op.lower()) or did_you_mean(s.op, known)
        help = hint
        if hint is None and s.target is None and s.args and s.args[0].key is None and \
                isinstance(s.args[0].value, ast.Name) and s.args[0].value.name in self.ops:
            help = f"to name a layer write `{s.op} = {s.args[0].value.name} ...`"
        elif hint is None:
            help = "see docs/layers.md for the list of layers"
        self.error(scope, f"unknown op '{s.op}'", s.op_span, help=help, code="unknown-op")

    def layer_inputs(self, s: ast.Layer, scope: Scope, op: OpDef | None):
        """The input tensors of a statement (None after an error)."""
        if s.inputs is None:
            if scope.last is None and scope.block is None and not any(
                    isinstance(x, ast.Input) for x in _walk(self._current_network_body)):
                return None  # reported once: the network has no input
            if scope.last is None:
                what = s.op
                self.error(scope, f"{what} has no input: it is the first statement and reads nothing", s.op_span,
                           help="start the network with `input image: CxHxW`, or name the inputs: "
                                f"{s.op}(x)", code="no-input")
                return None
            if op is not None and op.min_inputs > 1:
                self.error(scope, f"{op.name} needs {op.min_inputs} or more inputs; name them in parentheses",
                           s.op_span, help=f"for example {s.op}(a, b) with no space before '('",
                           code="input-count")
                return None
            return [scope.last]
        out: list[str] = []
        ok = True
        for a in s.inputs:
            if a.key is not None or not isinstance(a.value, ast.Name):
                bad = a.value
                help = None
                if is_activation(s.op) or (op is not None and op.positional):
                    first = op.positional[0].name if op is not None and op.positional else "value"
                    help = f"options follow the op after a space: `{s.op} {_src(bad)}` or `{s.op} {first}=...`"
                self.error(scope, f"the parentheses after '{s.op}' list input tensors by name; "
                                  f"{_src(a.value) if a.key is None else a.key + '=...'} is not a tensor name",
                           a.span, help=help, code="bad-input")
                ok = False
                continue
            src = self.resolve(scope, a.value.name, a.value.span)
            if src is None:
                ok = False
                continue
            out.append(src)
        return out if ok else None

    def check_arity(self, op: OpDef, inputs: list[str], s: ast.Layer, scope: Scope) -> bool:
        n = len(inputs)
        lo, hi = op.min_inputs, op.max_inputs
        if n >= lo and (hi is None or n <= hi):
            return True
        if hi is None:
            want = f"at least {lo} inputs"
        elif lo == hi:
            want = f"{lo} input" + ("s" if lo != 1 else "")
        else:
            want = f"{lo} to {hi} inputs"
        self.error(scope, f"{op.name} takes {want}, got {n}", s.span, code="input-count",
                   help=f"for example {op.name}(a, b)" if lo >= 2 else None)
        return False

    def split_activation(self, args: list[ast.Arg], scope: Scope, op: OpDef | None):
        """Separate a trailing activation (`relu`, `leaky_relu(0.2)`) from the options."""
        if not args:
            return args, None
        last = args[-1]
        if last.key is not None:
            return args, None
        v = last.value
        if isinstance(v, ast.Name) and v.name not in scope.params and is_activation(v.name):
            if op is not None:  # a word that is a valid value of the op's enum option stays an option
                pos = op.positional
                if pos and pos[-1].kind == "enum" and v.name in pos[-1].choices:
                    return args, None
            return args[:-1], (v.name, [], last.span, v.span)
        if isinstance(v, ast.Call) and is_activation(v.name):
            return args[:-1], (v.name, v.args, last.span, v.name_span)
        return args, None

    def layer_name(self, s: ast.Layer, scope: Scope, base: str) -> str | None:
        """The local name of a statement's layer: NAME, else the head's name, else <op><n>."""
        if s.target is not None:
            self.count(scope, base)
            name = s.target
            if scope.repeat:
                name = name + "".join(f"_{i}" for i in scope.repeat)
            if not self.define(scope, s.target, s.target_span, id(s)):
                return None
            if name != s.target and scope.prefix + name in self.graph:
                self.error(scope, f"'{name}' is already defined", s.target_span, code="duplicate-name")
                return None
            return name
        if s.heads and not scope.repeat:
            head = s.heads[0][0]
            if head not in scope.names and head not in scope.defined_at and scope.prefix + head not in self.graph:
                self.count(scope, base)
                scope.defined_at[head] = (s.heads[0][1], id(s))
                return head
        return self.fresh(scope, base)

    def finish(self, s: ast.Layer, scope: Scope, name: str | None, node_name: str, activation) -> None:
        """Add the trailing activation, bind the statement's name and declare its heads."""
        out = node_name
        if activation is not None:
            act_name, act_args, act_span, act_name_span = activation
            act_op = get_op(act_name)
            fake = ast.Layer(act_name, act_name_span, act_args, act_span)
            attrs, spans, ok = self.bind(act_op, act_args, scope, fake, what=act_op.name)
            if not ok or isinstance(node_name, _Poison):
                out = POISON
            else:
                out = f"{node_name}.{act_op.name}"
                if out in self.graph:
                    self.error(scope, f"'{out}' is already defined", act_span, code="duplicate-name")
                    out = POISON
                else:
                    self.graph.add(Node(out, act_op.name, attrs, act_span, spans, scope.trace), [node_name])
        if s.target is not None and name is not None:
            scope.names[s.target] = out
        elif name is not None:
            scope.names[name] = out
        scope.last = out
        self.heads(s, scope, out)

    def heads(self, s: ast.Layer, scope: Scope, tensor: str) -> None:
        for head, span in s.heads:
            if scope.block is not None:
                self.error(scope, "outputs (-> HEAD) are declared in the network, not inside a block", span,
                           help="put `-> HEAD` on the line that uses the block", code="head-in-block")
                continue
            if scope.repeat:
                self.error(scope, "an output (-> HEAD) cannot be declared inside repeat", span,
                           help="declare it on a line after the repeat", code="head-in-repeat")
                continue
            if head in self.graph.heads:
                self.error(scope, f"output '{head}' is declared twice", span, code="duplicate-head")
                continue
            if isinstance(tensor, _Poison):
                self.failed_heads.add(head)
                continue
            self.graph.heads[head] = tensor

    # ---- options -----------------------------------------------------------------
    def bind(self, op: OpDef, args: list[ast.Arg], scope: Scope, s: ast.Layer, what: str):
        """Map positional and key=value arguments to the op's options: (attrs, attr_spans, ok)."""
        ev = Evaluator(scope.params, scope.notes, shapes=self.shapes_in(scope))
        attrs: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        ok = True
        positional = list(op.positional)
        pi = 0
        skip = False
        for k, a in enumerate(args):
            if skip:
                skip = False
                continue
            if a.key is None:
                if pi >= len(positional):
                    ok = False
                    skip = self.too_many(op, a, args[k + 1:] if k + 1 < len(args) else [], scope, positional)
                    continue
                attr = positional[pi]
                pi += 1
                while attr.name in attrs and pi < len(positional):
                    attr = positional[pi]
                    pi += 1
            else:
                attr = op.attr(a.key)
                if attr is None:
                    ok = False
                    names = [x.name for x in op.attrs]
                    hint = self.option_hint(op, a) or did_you_mean(a.key, names)
                    help = hint or (f"{op.name} options: {', '.join(names)}" if names else f"{op.name} has no options")
                    self.error(scope, f"'{a.key}' is not an option of {op.name}", a.key_span or a.span,
                               help=help, code="unknown-option")
                    continue
            if attr.name in attrs or attr.name in spans:
                ok = False
                self.error(scope, f"{attr.name} is given twice", a.span,
                           notes=[(spans.get(attr.name), "first given here")], code="duplicate-option")
                continue
            try:
                value = ev.value(a.value)
            except EvalError as e:
                self.add_eval_error(e)
                ok = False
                spans[attr.name] = a.span
                continue
            try:
                attrs[attr.name] = _coerce(attr, value)
            except AttrError as e:
                ok = False
                help = None
                if isinstance(value, str) and isinstance(a.value, ast.Name):
                    hint = did_you_mean(value, scope.params)
                    if hint:
                        help = hint.replace("?", "? (a parameter)")
                    elif value in scope.names:
                        help = f"to read tensor '{value}', write {op.name}({value}) with no space"
                self.error(scope, str(e), a.span, help=help, code="bad-value")
            spans[attr.name] = a.span
        missing = [x for x in op.attrs if x.required and x.name not in attrs and x.name not in spans]
        for x in missing:
            ok = False
            example = f"{op.name} 16" if x.positional and positional and positional[0] is x else f"{x.name}=..."
            doc = f" ({x.doc})" if x.doc else ""
            self.error(scope, f"{what} needs {x.name}{doc}", s.op_span, help=f"for example `{example}`"
                       if x.positional else f"add {x.name}=...", code="missing-option")
        if ok:
            self.fill_defaults(op, attrs)
            attrs = {x.name: attrs[x.name] for x in op.attrs if x.name in attrs}
        return attrs, spans, ok

    def option_hint(self, op: OpDef, a: ast.Arg) -> str | None:
        """A help for an option other frameworks have and cnndsl writes otherwise (checked before
        the spelling did-you-mean, which matched `activation` with `dilation`)."""
        names = [x.name for x in op.attrs]
        value = a.value.name if isinstance(a.value, ast.Name) else a.value.name if isinstance(a.value, ast.Call) \
            else None
        if a.key in ACTIVATION_KEYS or (value is not None and is_activation(value) and a.key not in names):
            act = value if value is not None and is_activation(value) else "relu"
            acts = ", ".join(sorted(n for n, o in self.ops.items() if o.category == "activation" and n == o.name))
            return (f"an activation is a word after the options, not an option: `{op.name} ... {act}` (or `{act}` on "
                    f"the next line); activations: {acts}")
        if a.key in INPUT_SIZE_KEYS:
            return ("the input's size is inferred from the tensor the layer reads: leave it out (an expression can "
                    "read it: channels(x), height(x), width(x))")
        other = OPTION_SYNONYMS.get(a.key)
        if other in names:
            return f"did you mean '{other}'? ({a.key} is what other frameworks call it)"
        return None

    def too_many(self, op: OpDef, a: ast.Arg, rest: list[ast.Arg], scope: Scope, positional) -> bool:
        """Report a surplus positional value; True when the next argument is part of this mistake."""
        names = [x.name for x in op.attrs]
        help = None
        v = a.value
        pair = False
        if isinstance(v, ast.Name):
            if v.name in names and rest and rest[0].key is None:
                help = f"did you mean {v.name}={_src(rest[0].value)}?"
                pair = True
            else:
                hint = did_you_mean(v.name, names + [n for n in self.ops if is_activation(n)])
                help = hint
                if help is None and v.name in scope.names:
                    help = f"to read tensor '{v.name}', write {op.name}({v.name}) with no space"
        if help is None:
            if positional:
                help = f"{op.name} takes {len(positional)} value{'s' if len(positional) > 1 else ''} without a " \
                       f"name ({', '.join(x.name for x in positional)}); write the others as key=value"
            elif names:
                help = f"write options as key=value: {', '.join(names)}"
        what = "no values without a name" if not positional else \
            f"{len(positional)} value{'s' if len(positional) > 1 else ''} without a name"
        span = a.span
        if pair:
            span = Span(a.span.file, a.span.line, a.span.column, rest[0].span.end_line, rest[0].span.end_column)
        self.error(scope, f"{op.name} takes {what}; '{_src(v)}' is one too many", span, help=help,
                   code="too-many-values")
        return pair

    def fill_defaults(self, op: OpDef, attrs: dict) -> None:
        for x in op.attrs:
            if x.name in attrs or x.required:
                continue
            if x.default is None:
                attrs[x.name] = None
                continue
            try:
                attrs[x.name] = _coerce(x, x.default)
            except AttrError:  # pragma: no cover - a default that does not fit its own option
                attrs[x.name] = x.default

    # ---- blocks --------------------------------------------------------------------
    def expand(self, s: ast.Layer, block: ast.Block, inputs, args, activation, scope: Scope) -> None:
        name = self.layer_name(s, scope, block.name)
        if block.name in scope.stack:
            chain = " -> ".join(scope.stack[scope.stack.index(block.name):] + (block.name,))
            self.error(scope, f"block '{block.name}' uses itself ({chain})", s.op_span,
                       help="blocks cannot be recursive; use repeat", code="recursive-block")
            self.finish(s, scope, name, POISON, None)
            return
        params, ok = self.bind_block(block, args, scope, s)
        n_inputs = sum(isinstance(x, ast.Input) for x in block.body)
        if inputs is not None and len(inputs) != n_inputs:
            names = ", ".join(x.name for x in block.body if isinstance(x, ast.Input))
            self.error(scope, f"block {block.name} takes {n_inputs} input{'s' if n_inputs != 1 else ''} ({names}), "
                              f"got {len(inputs)}", s.span,
                       help=f"for example {block.name}({names})" if n_inputs > 1 else None, code="input-count")
            ok = False
        if name is None or not ok or inputs is None or any(isinstance(i, _Poison) for i in inputs):
            self.finish(s, scope, name, POISON, activation)
            return
        child = Scope(scope.prefix + name + ".", params, (s.span,) + scope.trace, scope.stack + (block.name,),
                      block, list(inputs))
        errors_before = len(self.diags.errors)
        self.body(block.body, child)
        out = child.last
        if out is None or len(self.diags.errors) > errors_before:
            out = POISON if out is None or isinstance(out, _Poison) else out
        # the tensor the instance name stands for: the block's output; its activation is named after the instance
        if activation is not None and not isinstance(out, _Poison):
            act_name, act_args, act_span, act_name_span = activation
            act_op = get_op(act_name)
            fake = ast.Layer(act_name, act_name_span, act_args, act_span)
            attrs, spans, ok2 = self.bind(act_op, act_args, scope, fake, what=act_op.name)
            act_node = f"{scope.prefix}{name}.{act_op.name}"
            if ok2 and act_node not in self.graph:
                self.graph.add(Node(act_node, act_op.name, attrs, act_span, spans, scope.trace), [out])
                out = act_node
            else:
                if ok2:
                    self.error(scope, f"'{act_node}' is already defined", act_span, code="duplicate-name")
                out = POISON
        elif activation is not None:
            out = POISON
        if s.target is not None:
            scope.names[s.target] = out
        else:
            scope.names[name] = out
        scope.last = out
        self.heads(s, scope, out)

    def bind_block(self, block: ast.Block, args: list[ast.Arg], scope: Scope, s: ast.Layer):
        ev = Evaluator(scope.params, scope.notes, shapes=self.shapes_in(scope))
        given: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        ok = True
        names = [p.name for p in block.params]
        pi = 0
        for k, a in enumerate(args):
            if a.key is None:
                while pi < len(names) and names[pi] in spans:
                    pi += 1
                if pi >= len(names):
                    ok = False
                    self.error(scope, f"block {block.name} takes {len(names)} parameter"
                                      f"{'s' if len(names) != 1 else ''}; '{_src(a.value)}' is one too many",
                               a.span, help=f"its parameters: {', '.join(names)}" if names else None,
                               code="too-many-values")
                    continue
                key = names[pi]
                pi += 1
            else:
                key = a.key
                if key not in names:
                    ok = False
                    hint = did_you_mean(key, names)
                    self.error(scope, f"'{key}' is not a parameter of block {block.name}", a.key_span or a.span,
                               help=hint or (f"its parameters: {', '.join(names)}" if names else
                                             f"block {block.name} has no parameters"), code="unknown-option")
                    continue
            if key in spans:
                ok = False
                self.error(scope, f"{key} is given twice", a.span, notes=[(spans[key], "first given here")],
                           code="duplicate-option")
                continue
            spans[key] = a.span
            try:
                given[key] = ev.value(a.value)
            except EvalError as e:
                self.add_eval_error(e)
                ok = False
        values: dict[str, Any] = {}
        for p in block.params:
            if p.name in given:
                values[p.name] = given[p.name]
            elif p.name in spans:
                continue  # its value failed
            elif p.default is not None:
                try:
                    values[p.name] = Evaluator(values, [(s.span, "in the block used here")] + scope.notes
                                               ).value(p.default)
                except EvalError as e:
                    self.add_eval_error(e)
                    ok = False
                    values[p.name] = MISSING
            else:
                ok = False
                self.error(scope, f"block {block.name} needs {p.name}", s.op_span,
                           help=f"for example `{block.name} {p.name}=...`", code="missing-option")
        return values, ok


def _coerce(attr, value):
    try:
        return attr.coerce(value)
    except AttrError:
        raise
    except (ValueError, TypeError, OverflowError, KeyError) as e:
        raise AttrError(f"{attr.name} cannot take {show(value)}") from e


def _call_src(e: ast.Call) -> str:
    """A call written back with its arguments: `choice(8, 16, 32)`."""
    return f"{e.name}(" + ", ".join((f"{a.key}=" if a.key else "") + _src(a.value) for a in e.args) + ")"


def _src(e: ast.Expr) -> str:
    """An expression written back as source (for messages)."""
    if isinstance(e, ast.Number):
        return e.text or show(e.value)
    if isinstance(e, ast.Name):
        return e.name
    if isinstance(e, ast.String):
        return show(e.value) if not e.value.isidentifier() else f'"{e.value}"'
    if isinstance(e, ast.Dims):
        return "x".join(str(d) for d in e.value)
    if isinstance(e, ast.ListExpr):
        return "[" + ", ".join(_src(x) for x in e.items) + "]"
    if isinstance(e, ast.TupleExpr):
        return "(" + ", ".join(_src(x) for x in e.items) + ")"
    if isinstance(e, ast.Neg):
        return "-" + _src(e.operand)
    if isinstance(e, ast.BinOp):
        return f"{_src(e.left)} {e.op} {_src(e.right)}"
    if isinstance(e, ast.Call):
        return f"{e.name}(...)"
    return "?"


def _walk(stmts):
    for s in stmts:
        yield s
        if isinstance(s, ast.Repeat):
            yield from _walk(s.body)
