"""What every importer builds into, and the readable .cnn text written from it.

An importer (ONNX, Caffe, Darknet) adds layers to a `NetBuilder`: cnndsl ops with checked options
(cnndsl/ops/build.py), shapes inferred as they are added, weights named `<layer>.<param>`, and a
comment per layer naming the source layer(s) it came from. `write_cnn` turns it into a .cnn file:

    # Imported from lenet.prototxt (Caffe) by `cnndsl import`; weights: lenet.safetensors
    network LeNet(classes = 10) {
      input data: 1x28x28
      conv1 = conv 20 kernel=5                       # Caffe Convolution 'conv1'
      pool1 = maxpool 2                              # Caffe Pooling 'pool1' (MAX)
      ...
      ip2 = dense classes -> ip2                     # Caffe InnerProduct 'ip2'
    }

Options at their default are left out, the positional option is written first without its name,
and a layer that reads the statement just above it does not list its input. `finish` loads the
text back through the front end, so what is written is checked like any model file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnndsl.diagnostics import CnnError, Diagnostic, Diagnostics, Span
from cnndsl.frontend.values import LIMIT
from cnndsl.ir.dump import show
from cnndsl.ir.graph import Graph
from cnndsl.ops.build import default_value, make_node
from cnndsl.ops.registry import AttrError, ShapeContext, ShapeError, get_op

RESERVED = {"network", "block", "train", "profile", "input", "repeat", "true", "false", "rounding"}


def sanitize(name: str, fallback: str = "layer") -> str:
    """A .cnn name (ASCII letters, digits, _; not starting with a digit, not reserved) for a source
    name such as `conv1/3x3_reduce`, `/features/0/Conv`, `input.1` or `onnx::Gemm_12`."""
    s = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_")
    if not s:
        s = fallback
    if s[0].isdigit():
        s = f"{fallback}_{s}"
    if s in RESERVED:
        s += "_"
    return s


@dataclass
class NetBuilder:
    """A network being imported: a cnndsl Graph with shapes, weights, comments and header parameters."""

    source: str  # the file imported from
    kind: str  # "ONNX", "Caffe", "Darknet"
    name: str = "imported"
    graph: Graph = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # header parameters: classes = 10
    uses: dict[tuple[str, str], str] = field(default_factory=dict)  # (layer, option) -> expression text
    notes: list[Diagnostic] = field(default_factory=list)  # warnings about the import
    normalize: tuple | None = None  # (mean, std) for a training section's `normalize`
    header: list[str] = field(default_factory=list)  # extra comment lines at the top
    source_weights: bool = True  # False: a Caffe/Darknet model imported without its weights file
    _taken: set = field(default_factory=set)

    def __post_init__(self):
        self.name = sanitize(self.name, "imported")
        self.graph = Graph(self.name)

    # -- building ------------------------------------------------------------------------------
    def unique(self, wanted: str, fallback: str = "layer") -> str:
        base = sanitize(wanted, fallback)
        name, i = base, 1
        while name in self._taken:
            i += 1
            name = f"{base}_{i}"
        self._taken.add(name)
        return name

    def add_input(self, wanted: str, shape: tuple[int, ...], comment: str = "") -> str:
        name = self.unique(wanted, "input")
        try:
            node = make_node("input", name, shape=tuple(int(d) for d in shape))
        except AttrError as e:
            raise self.error(f"input '{name}': {e}") from None
        self._check_numbers(node, f"input '{name}'", None)
        self.graph.add(node)
        self.graph.inputs.append(name)
        self._infer(name)
        if comment:
            self.comments[name] = comment
        return name

    def add(self, op: str, wanted: str, inputs: list[str], comment: str, where: Span | None = None,
            weights: dict[str, np.ndarray] | None = None, **attrs) -> str:
        """Add one layer; a located error (at `where`, the source layer) when its options or its
        shape do not fit. Returns the layer's name."""
        name = self.unique(wanted)
        try:
            node = make_node(op, name, span=where, **attrs)
        except AttrError as e:
            raise self.error(f"{comment}: cannot be written as cnndsl {op}: {e}", where) from None
        self._check_numbers(node, comment, where)
        self.graph.add(node, inputs)
        self._infer(name, where)
        self.comments[name] = comment
        expected = node.params
        for pname, arr in (weights or {}).items():
            arr = np.asarray(arr, np.float32)
            want = expected.get(pname) or node.meta.get("buffers", {}).get(pname)
            if want is None or tuple(want) != arr.shape:
                raise self.error(f"{comment}: its {pname} has shape {_shape(arr.shape)}, but cnndsl {op} '{name}' "
                                 f"needs {_shape(want) if want else 'none'}", where)
            self.weights[f"{name}.{pname}"] = np.ascontiguousarray(arr)
        return name

    def _check_numbers(self, node, what: str, where: Span | None) -> None:
        """A number beyond what a .cnn file may hold (values.LIMIT) is an error at the source layer:
        else `finish` refused the written text, naming the .cnn file that was never written."""
        def numbers(v):
            if isinstance(v, (tuple, list)):
                for x in v:
                    yield from numbers(x)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield v

        for attr, value in node.attrs.items():
            big = [v for v in numbers(value) if abs(v) > LIMIT]
            if big:
                raise self.error(f"{what}: {attr} {show(big[0])} is too large for cnndsl (at most {LIMIT:,})",
                                 where, help=f"check {self.source} for a typo")

    def _infer(self, name: str, where: Span | None = None) -> None:
        node = self.graph.node(name)
        op = get_op(node.op)
        sources = self.graph.inputs_of(name)
        ins = [self.graph.node(s).type for s in sources]
        for attr in op.attrs:
            if attr.name not in node.attrs and not attr.required:
                node.attrs[attr.name] = default_value(attr)
        diags = Diagnostics()
        ctx = ShapeContext(node, ins, sources, diags, self.graph.attrs.get("rounding", "strict"))
        try:
            node.type = op.shape(ctx)
        except ShapeError as e:
            if e.diagnostic.span is None:  # located in the file imported from, not on the command line
                e.diagnostic.span = where or Span(self.source, 0, 0)
            raise CnnError([e.diagnostic]) from None
        node.params = op.params(node.attrs, ins, node.type) if op.params else {}
        node.meta["buffers"] = op.buffers(node.attrs, ins, node.type) if op.buffers else {}

    def type_of(self, name: str) -> tuple[int, ...]:
        return self.graph.node(name).type.shape

    def error(self, message: str, where: Span | None = None, help: str | None = None) -> CnnError:
        return CnnError([Diagnostic("error", message, where or Span(self.source, 0, 0), help=help,
                                    code="import")])

    def note(self, message: str, where: Span | None = None, help: str | None = None) -> None:
        self.notes.append(Diagnostic("warning", message, where or Span(self.source, 0, 0), help=help,
                                     code="import"))

    def head(self, head: str, layer: str) -> None:
        self.graph.heads[head] = layer


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "a scalar"


def _value(v) -> str:
    if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1]:
        return show(v[0])
    return show(v)


def layer_line(b: NetBuilder, node, previous: str | None) -> str:
    op = get_op(node.op)
    if node.op == "input":
        shape = node.attrs["shape"]
        return f"input {node.name}: " + (f"[{shape[0]}]" if len(shape) == 1 else "x".join(map(str, shape)))
    inputs = b.graph.inputs_of(node.name)
    text = f"{node.name} = {node.op}"
    if len(inputs) != 1 or inputs[0] != previous or op.category == "merge":
        text += "(" + ", ".join(inputs) + ")"
    for attr in op.attrs:
        value = node.attrs.get(attr.name)
        expr = b.uses.get((node.name, attr.name))
        if expr is None:
            if value is None or (not attr.required and value == default_value(attr)):
                continue
            if attr.name == "stride" and attr.default is None and value == node.attrs.get("kernel"):
                continue  # a pool's stride defaults to its kernel
            expr = _value(value)
        text += f" {expr}" if attr.positional else f" {attr.name}={expr}"
    heads = [h for h, n in b.graph.heads.items() if n == node.name]
    if heads:
        text += " -> " + ", ".join(heads)
    return text


def write_cnn(b: NetBuilder, weights_file: str | None = None) -> str:
    lines = [f"# Imported from {b.source} ({b.kind}) by `cnndsl import`"
             + (f"; weights: {weights_file}" if weights_file else "") + "."]
    lines += [f"# {h}" for h in b.header]
    header = f"network {b.name}"
    if b.params:
        header += "(" + ", ".join(f"{k} = {show(v)}" for k, v in b.params.items()) + ")"
    lines.append(header + " {")
    body, previous = [], None
    for node in b.graph.nodes():
        body.append((layer_line(b, node, previous), b.comments.get(node.name, "")))
        previous = node.name
    width = min(max(len(t) for t, _ in body), 60)
    for text, comment in body:
        lines.append("  " + (f"{text.ljust(width)}  # {comment}" if comment else text))
    lines.append("}")
    if b.normalize is not None:
        mean, std = b.normalize
        lines += ["", "train {", f"  normalize mean={_list(mean)} std={_list(std)}", "}"]
    return "\n".join(lines) + "\n"


def _list(values) -> str:
    values = [float(str(np.float32(v))) for v in values]  # float32 values, shortest decimal
    return _value(values[0]) if len(values) == 1 else "[" + ", ".join(_value(v) for v in values) + "]"


def finish(b: NetBuilder, cnn_path: str, weights_file: str | None = None):
    """(text, program): the .cnn text and the program the front end loads from it. The loaded graph
    must have the builder's layers, with the same shapes (a check of the writer)."""
    from cnndsl.frontend import loads

    if not b.graph.heads:
        sinks = [n.name for n in b.graph.nodes() if n.op != "input" and not b.graph.consumers(n.name)]
        for s in sinks:
            b.head(s, s)
    text = write_cnn(b, weights_file)
    program = loads(text, str(cnn_path))
    for node in b.graph.nodes():
        got = program.graph.node(node.name)
        if got.type != node.type or got.op != node.op:
            raise AssertionError(f"the written .cnn gives {got.op} {got.type} for {node.name}, "
                                 f"the import had {node.op} {node.type}")
    return text, program
