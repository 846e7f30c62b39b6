"""Import an ONNX model: the ops the language has become layers of a readable .cnn file.

    builder = import_onnx("model.onnx")             # a NetBuilder (cnndsl/interop/cnn_writer.py)
    text, program = finish(builder, "model.cnn")

Weights must be initializers (or Constant nodes); the first dimension of every graph input is the
batch. A model with ops the language does not have is refused with one error listing every such
node (`Shape` x2: nodes 3 '/Shape', 7 '/Shape_1'; ...), and a node whose options cannot be written
in the language (asymmetric padding no cnndsl padding reproduces, a Softmax over the spatial axes,
average pooling that counts padding with ceil rounding, ...) is an error naming the node and why.

A few ONNX patterns have a cnndsl form of their own: MatMul + Add(bias) is one dense, Add of a
per-channel constant after a conv or dense without bias becomes its bias, Sub/Div of per-channel
constants right after the input become the training section's `normalize`, other per-channel
affine constants a depthwise 1x1 conv, GlobalAveragePool + Flatten a global_avgpool.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnndsl.diagnostics import CnnError, Diagnostic, Span, abbreviated, file_error
from cnndsl.interop.cnn_writer import NetBuilder
from cnndsl.interop.deps import require
from cnndsl.ops.registry import get_op


class Unsupported(Exception):
    """This node (op or options) has no cnndsl form; the message says why."""


def _f32(v: float) -> float:
    """A float32 attribute as the shortest decimal that gives the same float32 (0.1, not 0.10000000149)."""
    return float(str(np.float32(v)))


def load_onnx(path):
    onnx = require("onnx", "ONNX import")
    from cnndsl.io.files import read_regular

    blob = read_regular(path, "ONNX model")
    try:
        model = onnx.load_model_from_string(blob)
    except Exception as e:  # protobuf's DecodeError and friends
        raise file_error(path, "this is not an ONNX model", expected="an ONNX ModelProto (protobuf)",
                         found=f"bytes that do not decode as one ({type(e).__name__})") from None
    if not model.graph.node:
        raise file_error(path, "this ONNX model has no nodes", expected="an ONNX ModelProto with a graph",
                         found=f"{len(blob):,} bytes with an empty graph")
    return model


def import_onnx(path, model=None) -> NetBuilder:
    onnx = require("onnx", "ONNX import")
    model = model if model is not None else load_onnx(path)
    return _Importer(str(path), model, onnx).run()


# ONNX ops that are a cnndsl activation without options, one to one (imported by _registry_activation)
SAME_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus",
                    "HardSwish": "hardswish", "Mish": "mish"}
# ... and those with an op_<OnnxOp> method of _Importer
SUPPORTED = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
             "LeakyRelu", "Softmax", "Gemm", "MatMul", "BatchNormalization", "Concat",
             "Add", "Sum", "Sub", "Mul", "Div", "Flatten", "Reshape", "Squeeze", "Dropout", "Identity", "Upsample",
             "Resize", "Clip", "Constant", "Elu", "HardSigmoid", "PRelu", "Gelu",
             "LRN", "Unsqueeze") + tuple(SAME_ACTIVATIONS)

# element-wise activations written as chains of ONNX ops (what `cnndsl export` writes at opset 17, and what
# other exporters write before Gelu/Mish existed): (activation, steps). A step is (op_type, other input):
# "x" the chain's input, "prev" the previous step's output, a number a constant, None a unary op.
ACTIVATION_CHAINS = (
    ("gelu_tanh", [("Mul", "x"), ("Mul", "x"), ("Mul", 0.044715), ("Add", "x"), ("Mul", 0.7978845608028654),
                   ("Tanh", None), ("Add", 1.0), ("Mul", "x"), ("Mul", 0.5)]),
    ("gelu", [("Mul", 0.7071067811865476), ("Erf", None), ("Add", 1.0), ("Mul", "x"), ("Mul", 0.5)]),
    ("gelu", [("Div", 1.4142135623730951), ("Erf", None), ("Add", 1.0), ("Mul", "x"), ("Mul", 0.5)]),
    ("mish", [("Softplus", None), ("Tanh", None), ("Mul", "x")]),
    ("silu", [("Sigmoid", None), ("Mul", "x")]),
)


class _Importer:
    def __init__(self, path: str, model, onnx):
        self.path, self.model, self.onnx = path, model, onnx
        self.g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.b = NetBuilder(path, "ONNX", name=self.g.name or Path(path).stem)
        self.b.header.append(f"source: opset {self.opset}, IR version {model.ir_version}"
                             + (f", producer {model.producer_name} {model.producer_version}".rstrip()
                                if model.producer_name else ""))
        self.consts: dict[str, np.ndarray] = {}
        self.done: set = set()  # nodes already imported as part of a pattern
        self.value: dict[str, str] = {}  # ONNX tensor -> cnndsl layer
        self.uses: dict[str, int] = {}
        self.outputs = {o.name for o in self.g.output}
        for n in self.g.node:
            for i in n.input:
                if i:
                    self.uses[i] = self.uses.get(i, 0) + 1
        for o in self.outputs:
            self.uses[o] = self.uses.get(o, 0) + 1

    # -- helpers -------------------------------------------------------------------------------
    def where(self, index: int, node) -> Span:
        return Span(self.path, 0, 0)

    def describe(self, index: int, node) -> str:
        return f"node {index} '{node.name or (node.output[0] if node.output else '')}' ({node.op_type})"

    def comment(self, node, extra: str = "") -> str:
        return f"ONNX {node.op_type} '{node.name or node.output[0]}'" + (f" {extra}" if extra else "")

    def wanted(self, node) -> str:
        """The layer name for a node: its graph output's name, else its node name without a trailing
        op type (PyTorch's `/layer1/conv1/Conv` -> layer1_conv1; `/Relu` -> relu), else its output."""
        out = node.output[0]
        if out in self.outputs:
            return out
        name = node.name
        if name.startswith("/") and "/" in name[1:]:
            head, _, last = name.rpartition("/")
            if last.split("_")[0] == node.op_type and head.strip("/"):
                return head.strip("/")
        if name.startswith("/") and name[1:].split("_")[0] == node.op_type:
            return name[1:].lower()
        return name or out

    def attrs(self, node) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str):
        return self.consts.get(name)

    def layer(self, name: str) -> str:
        if name not in self.value:
            raise Unsupported(f"its input '{name}' is neither a graph input, a weight nor the output of an "
                              "imported node")
        return self.value[name]

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.b.type_of(self.layer(tensor))

    # -- the walk ------------------------------------------------------------------------------
    def run(self) -> NetBuilder:
        onnx = self.onnx
        for init in self.g.initializer:
            try:
                self.consts[init.name] = onnx.numpy_helper.to_array(init)
            except Exception as e:  # noqa: BLE001  (data that does not match its declared shape or type)
                raise self.b.error(f"initializer '{init.name}' cannot be read ({type(e).__name__}: {e})") from None
        self.chains = self._find_chains()
        in_chain = {out for _, nodes, _ in self.chains.values() for n in nodes for out in n.output}
        unsupported: dict[str, list[str]] = {}
        for i, node in enumerate(self.g.node):
            if not node.output or not node.output[0]:
                raise self.b.error(f"node {i} '{node.name}' ({node.op_type}) has no output: the model is malformed")
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                try:
                    self.consts[node.output[0]] = self._constant(node)
                except Exception as e:  # noqa: BLE001  (a malformed tensor in a hostile file)
                    raise self.b.error(f"node {i} '{node.name}' (Constant) holds no readable tensor "
                                       f"({type(e).__name__}: {e})") from None
            elif node.domain not in ("", "ai.onnx") or (node.op_type not in SUPPORTED and node.output[0] not in in_chain
                                                          and not (node.op_type == "Sqrt"
                                                                   and self._after_square_pool(node))):
                unsupported.setdefault(f"{node.domain + '.' if node.domain else ''}{node.op_type}", []).append(
                    f"{i} '{node.name or node.output[0]}'")
        if unsupported:
            details = [f"{op} x{len(where)}: node{'s' if len(where) > 1 else ''} {abbreviated(where, 5)}"
                       for op, where in sorted(unsupported.items())]
            raise CnnError([Diagnostic(
                "error", f"{self.path} uses {len(unsupported)} ONNX op{'s' if len(unsupported) > 1 else ''} that "
                f"cnndsl does not have: {', '.join(sorted(unsupported))}", Span(self.path, 0, 0), details,
                help="cnndsl imports " + ", ".join(s for s in SUPPORTED if s != "Constant")
                + " (docs/interop.md)", code="import-unsupported")])
        for inp in self.g.input:
            if inp.name in self.consts:
                continue
            self.value[inp.name] = self.b.add_input(inp.name, self._input_shape(inp), f"ONNX input '{inp.name}'")
        problems, failed = [], set()
        for i, node in enumerate(self.g.node):
            if node.op_type == "Constant":
                continue
            if node.output[0] in self.done:
                continue  # taken by a pattern (l2pool, an activation chain)
            if node.output[0] in self.chains and not any(name in failed for name in node.input):
                act, nodes, x = self.chains[node.output[0]]
                if get_op(act) is not None and x in self.value:
                    last = nodes[-1]
                    layer = self.b.add(act, self.wanted(last), [self.value[x]],
                                       f"ONNX {' -> '.join(n.op_type for n in nodes)} "
                                       f"'{node.name or node.output[0]}' ... '{last.name or last.output[0]}' ({act})")
                    self.value[last.output[0]] = layer
                    self.done.update(n.output[0] for n in nodes)
                    continue
            if any(name in failed for name in node.input):
                failed.update(node.output)  # reported at the node it comes from
                continue
            try:
                if node.op_type in SAME_ACTIVATIONS:
                    out = self._registry_activation(node, SAME_ACTIVATIONS[node.op_type])
                else:
                    out = getattr(self, "op_" + node.op_type)(node)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
                e = Unsupported(f"a malformed node ({type(e).__name__}: {e})")
                problems.append(Diagnostic("error", f"cannot import {self.describe(i, node)}: {e}",
                                           Span(self.path, 0, 0), code="import-unsupported"))
                failed.update(node.output)
                continue
            except Unsupported as e:
                problems.append(Diagnostic("error", f"cannot import {self.describe(i, node)}: {e}",
                                           Span(self.path, 0, 0), code="import-unsupported"))
                failed.update(node.output)
                if len(problems) >= 20:
                    break
                continue
            except CnnError as e:
                raise CnnError([Diagnostic(d.severity, f"{self.describe(i, node)}: {d.message}", Span(self.path, 0, 0),
                                           d.details, d.help, code=d.code) for d in e.diagnostics]) from None
            self.value[node.output[0]] = out
        if problems:
            raise CnnError(problems)
        for o in self.g.output:
            if o.name not in self.value:
                raise self.b.error(f"the graph output '{o.name}' is not computed by an imported node")
            layer = self.value[o.name]
            if self.b.graph.node(layer).op == "input":  # a head must be a layer: an identity (dropout 0)
                layer = self.b.add("dropout", o.name, [layer], f"ONNX output '{o.name}' is the input itself "
                                   "(a cnndsl head is a layer: dropout 0 is the identity)", p=0.0)
            self.b.head(_head_name(o.name), layer)
        _classes_parameter(self.b)
        return self.b

    def _find_chains(self) -> dict:
        """{first node's output: (activation, [nodes], x)} for every ACTIVATION_CHAINS match whose inner
        tensors are read only inside the chain."""
        readers: dict[str, list] = {}
        for n in self.g.node:
            for t in n.input:
                readers.setdefault(t, []).append(n)
        consts = {i.name for i in self.g.initializer} | {n.output[0] for n in self.g.node if n.op_type == "Constant"}
        found = {}
        for start in self.g.node:
            for act, steps in ACTIVATION_CHAINS:
                nodes = self._match_chain(start, steps, readers, consts)
                if nodes is not None and start.output[0] not in found:
                    found[start.output[0]] = (act, nodes, self._chain_x)
        return found

    def _const_value(self, name):
        for init in self.g.initializer:
            if init.name == name:
                return self.onnx.numpy_helper.to_array(init)
        for n in self.g.node:
            if n.op_type == "Constant" and n.output and n.output[0] == name:
                try:
                    return self._constant(n)
                except Unsupported:
                    return None
        return None

    def _match_chain(self, start, steps, readers, consts):
        nodes, prev, x = [], None, None
        node = start
        for k, (op_type, other) in enumerate(steps):
            if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
                return None
            ins = list(node.input)
            if k == 0:
                if other is None:
                    if len(ins) != 1:
                        return None
                    x = ins[0]
                elif other == "x":
                    if len(ins) != 2 or ins[0] != ins[1]:
                        return None
                    x = ins[0]
                else:
                    cands = [i for i in ins if i not in consts]
                    if len(ins) != 2 or len(cands) != 1:
                        return None
                    x = cands[0]
                    if not self._is_const(ins, x, other, consts):
                        return None
            else:
                if prev not in ins:
                    return None
                rest = [i for i in ins if i != prev] or ([prev] if ins.count(prev) == 2 else [])
                if other is None:
                    if len(ins) != 1:
                        return None
                elif other == "x":
                    if rest != [x]:
                        return None
                elif other == "prev":
                    if ins != [prev, prev]:
                        return None
                elif not self._is_const(ins, prev, other, consts) or (op_type in ("Div", "Sub") and ins[0] != prev):
                    return None
            nodes.append(node)
            prev = node.output[0]
            if k + 1 < len(steps):
                nxt = readers.get(prev, [])
                if len(nxt) != 1 or prev in self.outputs:
                    return None
                node = nxt[0]
        self._chain_x = x
        return nodes

    def _is_const(self, ins, var, value, consts) -> bool:
        other = [i for i in ins if i != var]
        if len(other) != 1 or other[0] not in consts:
            return False
        v = self._const_value(other[0])
        return v is not None and np.size(v) == 1 and abs(float(np.asarray(v).reshape(-1)[0]) - value) <= 1e-6 * max(1, abs(value))

    def _after_square_pool(self, node) -> bool:
        """A Sqrt of an AveragePool of Mul(x, x): the l2pool pattern (checked fully on import)."""
        pool = next((n for n in self.g.node if node.input[0] in n.output), None)
        square = pool is not None and pool.op_type == "AveragePool" and next(
            (n for n in self.g.node if pool.input[0] in n.output), None)
        return bool(square) and square.op_type == "Mul" and square.input[0] == square.input[1]

    def op_Sqrt(self, node):
        raise Unsupported("a square root that is not the end of an l2pool (Mul(x, x) -> AveragePool -> Sqrt)")

    def _constant(self, node):
        a = self.attrs(node)
        if "value" in a:
            return self.onnx.numpy_helper.to_array(a["value"])
        for key in ("value_float", "value_int"):
            if key in a:
                return np.array(a[key])
        for key in ("value_floats", "value_ints"):
            if key in a:
                return np.array(list(a[key]))
        raise Unsupported("a Constant without a tensor value")

    def _input_shape(self, inp) -> tuple[int, ...]:
        dims = inp.type.tensor_type.shape.dim
        shown = "x".join(d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in dims)
        if inp.type.tensor_type.elem_type not in (self.onnx.TensorProto.FLOAT,):
            raise self.b.error(f"graph input '{inp.name}' is not float32", help="cnndsl networks take float32 images")
        if len(dims) not in (2, 4) or any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims[1:]):
            raise self.b.error(f"graph input '{inp.name}' is {shown or 'of unknown shape'}: cnndsl takes batch x C x H x W "
                               "images or batch x F vectors of fixed sizes",
                               help="export the model with a 4-D (or 2-D) input of fixed sizes but the batch")
        return tuple(int(d.dim_value) for d in dims[1:])

    # -- ops -----------------------------------------------------------------------------------
    def _weights_of(self, node, index: int, what: str) -> np.ndarray:
        if len(node.input) <= index or not node.input[index]:
            return None
        w = self.const(node.input[index])
        if w is None:
            raise Unsupported(f"its {what} '{node.input[index]}' is not a constant (an initializer): cnndsl layers "
                              "hold their weights")
        return np.asarray(w, np.float32)

    def _window_padding(self, a, in_hw, kernel, strides, dilations, allow_ceil=True):
        """cnndsl (padding, rounding) that reproduce ONNX's pads/auto_pad/ceil_mode. Windows are equal
        when they start at the same places: the top/left padding is the same and the output size is
        the same; everything outside the input is padding on both sides (-inf for max, not counted by
        the average, zeros for conv). Raises Unsupported when no cnndsl padding does that."""
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        ceil_mode = bool(a.get("ceil_mode", 0))
        k_eff = [dilations[i] * (kernel[i] - 1) + 1 for i in range(2)]
        same_out = [math.ceil(in_hw[i] / strides[i]) for i in range(2)]
        same_total = [max((same_out[i] - 1) * strides[i] + k_eff[i] - in_hw[i], 0) for i in range(2)]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if auto == "SAME_UPPER" or all(t % 2 == 0 for t in same_total):
                return "same", None
            raise Unsupported("auto_pad=SAME_LOWER puts the odd padding row on the top/left; cnndsl's `same` puts "
                              "it on the bottom/right")
        pads = [0, 0, 0, 0] if auto == "VALID" else [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4:
            raise Unsupported(f"pads {pads} are not 2-D")
        before, after = (pads[0], pads[1]), (pads[2], pads[3])
        outs = []
        for i in range(2):
            span = in_hw[i] + before[i] + after[i] - k_eff[i]
            if span < 0:
                raise Unsupported(f"its window {k_eff[i]} is larger than the padded input {in_hw[i] + before[i] + after[i]}")
            o = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
            if ceil_mode and (o - 1) * strides[i] >= in_hw[i] + before[i]:
                o -= 1  # no window starts in the end padding (ONNX Runtime; the ONNX spec from opset 19)
            outs.append(o)
        fits = []
        for i in range(2):
            p, s = before[i], strides[i]
            span = in_hw[i] + 2 * p - k_eff[i]
            ok = set()
            if span >= 0:
                floor_o = span // s + 1
                ceil_o = -(-span // s) + 1
                if (ceil_o - 1) * s >= in_hw[i] + p:
                    ceil_o -= 1
                if span % s == 0 and outs[i] == floor_o:
                    ok.add("strict")
                if outs[i] == floor_o:
                    ok.add("floor")
                if outs[i] == ceil_o and allow_ceil:
                    ok.add("ceil")
            fits.append(ok)
        is_same = (outs == same_out and list(before) == [t // 2 for t in same_total]
                   and list(after) == [t - t // 2 for t in same_total])
        if is_same and any(same_total):
            return "same", None
        for rounding in ("strict", "same", "floor", "ceil"):
            if rounding == "same":
                if is_same:
                    return "same", None
                continue
            if all(rounding in f or ("strict" in f and rounding != "strict") for f in fits):
                padding = before if before[0] != before[1] else before[0]
                return padding, (None if rounding == "strict" else rounding)
        raise Unsupported(f"its pads [top, left, bottom, right] = {pads} (ceil_mode={int(ceil_mode)}) give windows "
                          "no cnndsl padding gives: cnndsl pads both sides of an axis alike (then drops or adds "
                          "windows at the end with rounding=floor/ceil), or uses `same`")

    def _spatial(self, node, a, kernel=None):
        x = node.input[0]
        c, h, w = self._map(x, node)
        kernel = tuple(int(k) for k in (kernel or a["kernel_shape"]))
        if len(kernel) != 2:
            raise Unsupported(f"its kernel {list(kernel)} is not 2-D")
        strides = tuple(int(s) for s in a.get("strides", [1, 1]))
        dilations = tuple(int(d) for d in a.get("dilations", [1, 1]))
        return (c, h, w), kernel, strides, dilations

    def _map(self, tensor, node):
        shape = self.shape(tensor)
        if len(shape) != 3:
            raise Unsupported(f"its input is a {len(shape) + 1}-D tensor; cnndsl's {node.op_type} equivalent takes "
                              "batch x C x H x W")
        return shape

    def op_Conv(self, node):
        a = self.attrs(node)
        w = self._weights_of(node, 1, "weight")
        b = self._weights_of(node, 2, "bias")
        (c, h, wd), kernel, strides, dilations = self._spatial(node, a, a.get("kernel_shape", w.shape[2:]))
        padding, rounding = self._window_padding(a, (h, wd), kernel, strides, dilations)
        weights = {"weight": w} | ({"bias": b} if b is not None else {})
        return self.b.add("conv", self.wanted(node), [self.layer(node.input[0])], self.comment(node),
                          weights=weights, filters=int(w.shape[0]), kernel=kernel, stride=strides, padding=padding,
                          dilation=dilations, groups=int(a.get("group", 1)), bias=b is not None, rounding=rounding)

    def op_ConvTranspose(self, node):
        a = self.attrs(node)
        w = self._weights_of(node, 1, "weight")
        b = self._weights_of(node, 2, "bias")
        groups = int(a.get("group", 1))
        (c, h, wd), kernel, strides, dilations = self._spatial(node, a, a.get("kernel_shape", w.shape[2:]))
        out_pad = list(a.get("output_padding", [0, 0]))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        k_eff = [dilations[i] * (kernel[i] - 1) + 1 for i in range(2)]
        full = [(hw - 1) * strides[i] + k_eff[i] + out_pad[i] for i, hw in enumerate((h, wd))]
        if "output_shape" in a:
            want = list(a["output_shape"])[-2:]
            totals = [full[i] - want[i] for i in range(2)]
            if auto == "SAME_LOWER":
                pads = [totals[0] - totals[0] // 2, totals[1] - totals[1] // 2, totals[0] // 2, totals[1] // 2]
            else:
                pads = [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            totals = [full[i] - (h, wd)[i] * strides[i] for i in range(2)]
            if auto == "SAME_UPPER":
                pads = [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]
            else:
                pads = [totals[0] - totals[0] // 2, totals[1] - totals[1] // 2, totals[0] // 2, totals[1] // 2]
        else:
            pads = list(a.get("pads", [0, 0, 0, 0]))
        top, left, bottom, right = pads
        # ONNX: crop pads[top] rows at the top and pads[bottom] - output_padding at the bottom of the
        # full (W-1)*S + K_eff scatter. cnndsl (PyTorch's rule): crop P at the top and P - output_padding
        # at the bottom; `same` crops (K_eff - S)//2 at the top and the rest at the bottom.
        tops, bottoms = (top, left), (bottom - out_pad[0], right - out_pad[1])
        same = all(tops[i] == max(k_eff[i] - strides[i], 0) // 2
                   and bottoms[i] == max(k_eff[i] - strides[i], 0) - max(k_eff[i] - strides[i], 0) // 2
                   - max(strides[i] - k_eff[i], 0) for i in range(2))
        extra = [tops[i] - bottoms[i] for i in range(2)]
        if same:
            padding, extra = "same", [0, 0]
        elif all(0 <= extra[i] < strides[i] for i in range(2)) and min(tops) >= 0:
            padding = tops if tops[0] != tops[1] else tops[0]
        else:
            raise Unsupported(f"its pads {pads} with output_padding {out_pad} crop the output in a way cnndsl "
                              "cannot write (cnndsl crops P on both sides, then adds output_padding < stride "
                              "rows at the bottom/right; or uses `same`)")
        weights = {"weight": w} | ({"bias": b} if b is not None else {})
        return self.b.add("conv_transpose", self.wanted(node), [self.layer(node.input[0])], self.comment(node),
                          weights=weights, filters=int(w.shape[1]) * groups, kernel=kernel, stride=strides,
                          padding=padding, output_padding=tuple(extra), dilation=dilations, groups=groups,
                          bias=b is not None)

    def _pool(self, node, op):
        a = self.attrs(node)
        if len(node.output) > 1 and node.output[1]:
            raise Unsupported("its second output (the argmax indices) has no cnndsl form")
        (c, h, w), kernel, strides, dilations = self._spatial(node, a)
        if dilations != (1, 1):
            raise Unsupported(f"cnndsl pools have no dilation (it has {list(dilations)})")
        padding, rounding = self._window_padding(a, (h, w), kernel, strides, dilations)
        extra = {"rounding": rounding} if rounding else {}
        return self.b.add(op, self.wanted(node), [self.layer(node.input[0])], self.comment(node), kernel=kernel,
                          stride=strides, padding=padding, **extra)

    def op_MaxPool(self, node):
        return self._pool(node, "maxpool")

    def op_AveragePool(self, node):
        a = self.attrs(node)
        pads = list(a.get("pads", [0, 0, 0, 0]))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if a.get("count_include_pad", 0) and (any(pads) or auto in ("SAME_UPPER", "SAME_LOWER")):
            # the padding counts: a depthwise conv with constant weights 1/(KH*KW) over zero padding
            if a.get("ceil_mode", 0):
                raise Unsupported("count_include_pad=1 with ceil_mode=1: the windows past the padding divide by "
                                  "a smaller count, which no cnndsl layer does")
            (c, h, w), kernel, strides, dilations = self._spatial(node, a)
            padding, rounding = self._window_padding(a, (h, w), kernel, strides, dilations, allow_ceil=False)
            weight = np.full((c, 1) + kernel, 1.0 / (kernel[0] * kernel[1]), np.float32)
            return self.b.add("conv", self.wanted(node), [self.layer(node.input[0])],
                              self.comment(node, "(count_include_pad=1: a depthwise conv of constant 1/(KH*KW))"),
                              weights={"weight": weight}, filters=c, kernel=kernel, stride=strides, padding=padding,
                              groups=c, bias=False, rounding=rounding)
        return self._pool(node, "avgpool")

    def op_LpPool(self, node):
        a = self.attrs(node)
        if int(a.get("p", 2)) != 2:
            raise Unsupported(f"p={a.get('p')}: cnndsl has the L2 pool only")
        if any(a.get("pads", [0])) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise Unsupported("padded LpPool: cnndsl's l2pool divides by the number of input values in each window")
        (c, h, w), kernel, strides, dilations = self._spatial(node, a)
        if dilations != (1, 1):
            raise Unsupported(f"cnndsl pools have no dilation (it has {list(dilations)})")
        padding, rounding = self._window_padding(a, (h, w), kernel, strides, dilations, allow_ceil=False)
        extra = {"rounding": rounding} if rounding else {}
        pooled = self.b.add("l2pool", self.wanted(node) + "_mean", [self.layer(node.input[0])],
                            self.comment(node, "(root of the mean of squares)"), kernel=kernel, stride=strides,
                            padding=padding, **extra)
        scale = np.full((c, 1, 1, 1), math.sqrt(kernel[0] * kernel[1]), np.float32)
        return self.b.add("conv", self.wanted(node), [pooled],
                          self.comment(node, f"(x sqrt({kernel[0]}*{kernel[1]}): ONNX's LpPool is the root of the sum)"),
                          weights={"weight": scale}, filters=c, kernel=1, groups=c, bias=False)

    def _global(self, node, op, global_op):
        c, h, w = self._map(node.input[0], node)
        consumers = [n for n in self.g.node if node.output[0] in n.input]
        flat = (len(consumers) == 1 and node.output[0] not in self.outputs
                and self._is_flatten(consumers[0]) and get_op(global_op) is not None)
        if flat:  # GlobalAveragePool + Flatten: cnndsl's global pool gives the vector (the Flatten is then a no-op)
            flatten = consumers[0]
            # named after the Flatten when it is an output or when the pool is its step (`x/pool` -> `x`,
            # what cnndsl export writes), else after the pool (PyTorch's `/gap/GlobalAveragePool`)
            ours = bool(flatten.name) and node.name.startswith(flatten.name + "/")
            named = flatten if flatten.output[0] in self.outputs or ours else node
            return self.b.add(global_op, self.wanted(named), [self.layer(node.input[0])],
                              self.comment(node, f"+ {consumers[0].op_type} '{consumers[0].name or consumers[0].output[0]}'"))
        return self.b.add(op, self.wanted(node), [self.layer(node.input[0])],
                          self.comment(node, "(a window over the whole map: the output stays C x 1 x 1)"),
                          kernel=(h, w), stride=(h, w))

    def _is_flatten(self, n) -> bool:
        if n.op_type == "Flatten":
            return int(self.attrs(n).get("axis", 1)) == 1
        if n.op_type == "Squeeze":
            axes = self.attrs(n).get("axes") or (list(self.const(n.input[1])) if len(n.input) > 1 else None)
            return axes is not None and sorted(int(x) % 4 for x in axes) == [2, 3]
        if n.op_type == "Reshape":
            target = self.const(n.input[1])
            return target is not None and len(target) == 2 and (int(target[1]) == -1 or int(target[0]) in (0, -1))
        return False

    def op_GlobalAveragePool(self, node):
        return self._global(node, "avgpool", "global_avgpool")

    def op_GlobalMaxPool(self, node):
        return self._global(node, "maxpool", "global_maxpool")

    def _flatten_like(self, node):
        src = self.layer(node.input[0])
        if len(self.b.type_of(src)) == 1:
            return src  # already a vector (after a global pool, or a dense)
        return self.b.add("flatten", self.wanted(node), [src], self.comment(node))

    def op_Flatten(self, node):
        if int(self.attrs(node).get("axis", 1)) != 1:
            raise Unsupported(f"axis={self.attrs(node)['axis']}: cnndsl flattens everything but the batch")
        return self._flatten_like(node)

    def op_Squeeze(self, node):
        if len(self.shape(node.input[0])) == 1:
            return self._flatten_like(node)
        if not self._is_flatten(node) or self.shape(node.input[0])[1:] != (1, 1):
            raise Unsupported("only squeezing the 1x1 spatial axes of a C x 1 x 1 map is a cnndsl flatten")
        return self._flatten_like(node)

    def op_Reshape(self, node):
        target = self.const(node.input[1])
        if target is None:
            raise Unsupported("its shape is computed at run time; cnndsl needs it constant")
        shape = self.shape(node.input[0])
        size = int(np.prod(shape))
        t = [int(v) for v in target]
        if len(t) == 2 and (t[1] in (-1, size)) and (t[0] in (0, -1) or t[1] == size):
            return self._flatten_like(node)
        if get_op("reshape") is not None:
            dims = [shape[i - 1] if v == 0 else v for i, v in enumerate(t)][1:]
            if -1 in dims:
                known = int(np.prod([d for d in dims if d != -1]))
                dims[dims.index(-1)] = size // known
            return self.b.add("reshape", self.wanted(node), [self.layer(node.input[0])], self.comment(node),
                              shape=tuple(dims))
        raise Unsupported(f"reshape to {t}: cnndsl's flatten takes a whole sample to a vector, no other reshape")

    def op_Gemm(self, node):
        a = self.attrs(node)
        if a.get("transA", 0):
            raise Unsupported("transA=1: cnndsl's dense takes the batch as rows")
        b = self._weights_of(node, 1, "weight")
        w = b if a.get("transB", 0) else b.T
        w = w * _f32(a.get("alpha", 1.0))
        c = self._weights_of(node, 2, "bias")
        src = self.layer(node.input[0])
        if len(self.b.type_of(src)) != 1:
            raise Unsupported("its input is not a batch x F matrix")
        weights = {"weight": w}
        if c is not None:
            c = np.asarray(c, np.float32) * _f32(a.get("beta", 1.0))
            if c.ndim == 2 and c.shape[0] == 1:
                c = c[0]
            if c.ndim > 1 or c.size not in (1, w.shape[0]):
                raise Unsupported(f"its C of shape {list(c.shape)} is not a per-output bias (it varies by row)")
            c = np.broadcast_to(c.reshape(-1), (w.shape[0],)).astype(np.float32)
            weights["bias"] = c
        return self.b.add("dense", self.wanted(node), [src], self.comment(node), weights=weights,
                          units=int(w.shape[0]), bias=c is not None)

    def op_MatMul(self, node):
        b = self._weights_of(node, 1, "weight")
        src = self.layer(node.input[0])
        if b is None or b.ndim != 2 or len(self.b.type_of(src)) != 1:
            raise Unsupported("only a batch x F matrix times a constant F x U matrix is a cnndsl dense")
        return self.b.add("dense", self.wanted(node), [src], self.comment(node), weights={"weight": b.T},
                          units=int(b.shape[1]), bias=False)

    def op_BatchNormalization(self, node):
        a = self.attrs(node)
        if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
            raise Unsupported("training mode (running statistics as outputs); cnndsl imports inference graphs")
        src = self.layer(node.input[0])
        gamma, beta, mean, var = (self._weights_of(node, i, w) for i, w in
                                  ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
        momentum = min(max(1.0 - _f32(a.get("momentum", 0.9)), 0.0), 1.0)
        return self.b.add("batchnorm", self.wanted(node), [src], self.comment(node),
                          weights={"gamma": gamma, "beta": beta, "running_mean": mean, "running_var": var},
                          eps=_f32(a.get("epsilon", 1e-5)), momentum=float(round(momentum, 6)))

    def _activation(self, node, op, **attrs):
        return self.b.add(op, self.wanted(node), [self.layer(node.input[0])], self.comment(node), **attrs)

    def _registry_activation(self, node, act, **attrs):
        if get_op(act) is None:
            raise Unsupported(f"cnndsl has no {act} activation")
        return self._activation(node, act, **attrs)

    def op_Elu(self, node):
        return self._registry_activation(node, "elu", alpha=_f32(self.attrs(node).get("alpha", 1.0)))

    def op_HardSigmoid(self, node):
        a = self.attrs(node)
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
            raise Unsupported(f"alpha={alpha:g}, beta={beta:g}: cnndsl's hardsigmoid is x/6 + 1/2 clipped to [0, 1]")
        return self._registry_activation(node, "hardsigmoid")

    def op_Gelu(self, node):
        approx = self.attrs(node).get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        return self._registry_activation(node, "gelu_tanh" if approx == "tanh" else "gelu")

    def op_PRelu(self, node):
        if get_op("prelu") is None:
            raise Unsupported("cnndsl has no prelu")
        slope = self._weights_of(node, 1, "slope")
        shape = self.shape(node.input[0])
        per = self._per_channel(slope, shape)
        if per is None:
            raise Unsupported(f"its slope of shape {list(slope.shape)} is not one value per channel")
        return self.b.add("prelu", self.wanted(node), [self.layer(node.input[0])], self.comment(node),
                          weights={"slope": per})

    def op_LRN(self, node):
        a = self.attrs(node)
        size = int(a["size"])
        if get_op("lrn") is None:
            raise Unsupported("cnndsl has no lrn")
        if size % 2 == 0:
            raise Unsupported(f"an even size ({size}): ONNX centres the window one channel apart from cnndsl's lrn")
        return self.b.add("lrn", self.wanted(node), [self.layer(node.input[0])], self.comment(node), size=size,
                          alpha=_f32(a.get("alpha", 1e-4)), beta=_f32(a.get("beta", 0.75)), k=_f32(a.get("bias", 1.0)))

    def op_Unsqueeze(self, node):
        axes = self.attrs(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.const(node.input[1])
        shape = self.shape(node.input[0])
        if axes is None or len(shape) != 1 or sorted(int(v) % 4 for v in axes) != [2, 3] or get_op("reshape") is None:
            raise Unsupported("only a batch x C vector made batch x C x 1 x 1 is a cnndsl reshape")
        return self.b.add("reshape", self.wanted(node), [self.layer(node.input[0])], self.comment(node),
                          shape=(shape[0], 1, 1))

    def op_LeakyRelu(self, node):
        return self._activation(node, "leaky_relu", alpha=_f32(self.attrs(node).get("alpha", 0.01)))

    def op_Softmax(self, node):
        shape = self.shape(node.input[0])
        default = -1 if self.opset >= 13 else 1
        axis = int(self.attrs(node).get("axis", default)) % (len(shape) + 1)
        if self.opset >= 13 and len(shape) == 3 and axis in (2, 3) and get_op("softmax_axis") is not None:
            return self.b.add("softmax_axis", self.wanted(node), [self.layer(node.input[0])], self.comment(node),
                              axis="height" if axis == 2 else "width")
        if axis != 1 or (self.opset < 13 and len(shape) == 3 and shape[1:] != (1, 1)):
            raise Unsupported(f"a softmax over axis {axis} of a {len(shape) + 1}-D tensor (opset {self.opset}); "
                              "cnndsl's softmax is over the channels of each pixel, or the features of a vector")
        return self._activation(node, "softmax")

    def op_Clip(self, node):
        a = self.attrs(node)
        lo = a.get("min") if self.opset < 11 else (self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
        hi = a.get("max") if self.opset < 11 else (self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None)
        lo = None if lo is None or np.size(lo) != 1 else float(np.asarray(lo).reshape(-1)[0])
        hi = None if hi is None or np.size(hi) != 1 else float(np.asarray(hi).reshape(-1)[0])
        if lo == 0.0 and (hi is None or math.isinf(hi)):
            return self._activation(node, "relu")
        if lo == 0.0 and hi == 6.0 and get_op("relu6") is not None:
            return self._activation(node, "relu6")
        raise Unsupported(f"Clip to [{lo}, {hi}]: cnndsl has relu (Clip to [0, inf))"
                          + (" and relu6" if get_op("relu6") is not None else ""))

    def op_Dropout(self, node):
        a = self.attrs(node)
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            raise Unsupported("its mask output is used")
        ratio = a.get("ratio", 0.5)
        if len(node.input) > 1 and node.input[1]:
            r = self.const(node.input[1])
            ratio = 0.5 if r is None else float(np.asarray(r))
        ratio = min(_f32(ratio), 0.99)
        return self.b.add("dropout", self.wanted(node), [self.layer(node.input[0])], self.comment(node), p=ratio)

    def op_Identity(self, node):
        return self.layer(node.input[0])

    def op_Concat(self, node):
        shape = self.shape(node.input[0])
        axis = int(self.attrs(node)["axis"]) % (len(shape) + 1)
        if axis != 1:
            raise Unsupported(f"a concat along axis {axis}; cnndsl concatenates channels (or vector features)")
        ins = [self.layer(i) for i in node.input]
        if len(ins) == 1:
            return ins[0]
        return self.b.add("concat", self.wanted(node), ins, self.comment(node))

    def op_Sum(self, node):
        ins = [self.layer(i) for i in node.input]
        if len(ins) == 1:
            return ins[0]
        return self.b.add("add", self.wanted(node), ins, self.comment(node))

    # elementwise with constants: bias, normalize, per-channel affine
    def _per_channel(self, const, shape):
        """The constant as one value per channel (C,) / feature (F,), or None when it varies otherwise."""
        c = np.asarray(const, np.float32)
        n = shape[0]
        rank = len(shape) + 1
        if c.ndim > rank:
            return None
        full = c.reshape((1,) * (rank - c.ndim) + c.shape)
        if any(full.shape[i] != 1 for i in (0,) + tuple(range(2, rank))):
            return None
        if full.shape[1] not in (1, n):
            return None
        return np.broadcast_to(full.reshape(-1), (n,)).astype(np.float32) if full.shape[1] == 1 \
            else full.reshape(n).astype(np.float32)

    def _l2pool_pattern(self, node):
        """Mul(x, x) -> AveragePool (padding not counted) -> Sqrt, each read once: cnndsl's l2pool
        (what `cnndsl export` writes for it). Returns the layer, or None."""
        def only_reader(tensor, op_type):
            readers = [n for n in self.g.node if tensor in n.input]
            if len(readers) == 1 and self.uses.get(tensor) == 1 and readers[0].op_type == op_type:
                return readers[0]
            return None

        pool = only_reader(node.output[0], "AveragePool")
        root = pool is not None and only_reader(pool.output[0], "Sqrt")
        if not root or self.attrs(pool).get("count_include_pad", 0):
            return None
        a = self.attrs(pool)
        (c, h, w), kernel, strides, dilations = self._spatial(node, a)
        padding, rounding = self._window_padding(a, (h, w), kernel, strides, dilations)
        extra = {"rounding": rounding} if rounding else {}
        layer = self.b.add("l2pool", self.wanted(root), [self.layer(node.input[0])],
                           self.comment(root, f"(with ONNX Mul '{node.name}', AveragePool '{pool.name}': the root "
                                        "of the mean of squares)"), kernel=kernel, stride=strides, padding=padding,
                           **extra)
        self.value[pool.output[0]] = self.value[root.output[0]] = layer
        self.done.update((pool.output[0], root.output[0]))
        return layer

    def _binary(self, node, kind):
        a, b = node.input[0], node.input[1]
        if kind == "mul" and a == b:
            layer = self._l2pool_pattern(node)
            if layer is not None:
                return layer
        ca, cb = self.const(a), self.const(b)
        if ca is None and cb is None:
            return self._two_tensors(node, kind)
        if ca is not None and cb is not None:
            raise Unsupported("both inputs are constants")
        if kind in ("sub", "div") and ca is not None:
            raise Unsupported(f"a constant {kind}tracted by a tensor (constant first)" if kind == "sub"
                              else "a constant divided by a tensor")
        x, c = (b, ca) if ca is not None else (a, cb)
        shape = self.shape(x)
        per = self._per_channel(c, shape)
        if per is None:
            raise Unsupported(f"its constant of shape {list(np.shape(c))} is not one value per channel of the "
                              f"{'x'.join(map(str, shape))} input")
        scale = np.ones_like(per)
        shift = np.zeros_like(per)
        if kind == "add":
            shift = per
        elif kind == "sub":
            shift = -per
        elif kind == "mul":
            scale = per
        else:
            if np.any(per == 0):
                raise Unsupported("a division by zero")
            scale = 1.0 / per
        return self._affine(node, x, scale, shift, kind)

    def _affine(self, node, x, scale, shift, kind):
        src = self.layer(x)
        prod = self.b.graph.node(src)
        # a bias after a conv/dense that has none: that layer's bias
        if (kind in ("add", "sub") and prod.op in ("conv", "dense", "conv_transpose") and not prod.attrs["bias"]
                and self.uses.get(x, 0) == 1 and x not in self.outputs and not self.b.graph.consumers(src)
                and src not in self.b.graph.heads.values()):
            prod.attrs["bias"] = True
            self.b._infer(src)
            self.b.weights[f"{src}.bias"] = shift.astype(np.float32)
            self.b.comments[src] += f" + {self.comment(node)} (its bias)"
            return src
        # Sub/Div (or Mul) of constants right after a graph input: the training section's normalize
        if (prod.op == "input" and self.uses.get(x, 0) == 1 and not self.b.graph.consumers(src)
                and len(self.b.graph.inputs) == 1):
            mean, std = self.b.normalize or (np.zeros_like(scale), np.ones_like(scale))
            # y = (x - mean) / std, then the new op: shift (y + t) or scale (y * s)
            if kind in ("add", "sub"):
                mean = mean - shift * std
            elif np.all(scale > 0):
                std = std / scale
            else:
                mean = None
            if mean is not None:
                self.b.normalize = (mean, std)
                self.b.comments[src] = (self.b.comments.get(src, "") + f"; {self.comment(node)} -> `normalize`").lstrip("; ")
                return src
        shape = self.b.type_of(src)
        c = shape[0]
        if len(shape) == 3:
            return self.b.add("conv", self.wanted(node), [src],
                              self.comment(node, "(per-channel constant: a depthwise 1x1 conv)"),
                              weights={"weight": scale.reshape(c, 1, 1, 1), "bias": shift}, filters=c, kernel=1,
                              groups=c, bias=True)
        return self.b.add("dense", self.wanted(node), [src],
                          self.comment(node, "(per-feature constant: a diagonal dense)"),
                          weights={"weight": np.diag(scale), "bias": shift}, units=c, bias=True)

    def _two_tensors(self, node, kind):
        ins = [self.layer(i) for i in node.input]
        shapes = {self.b.type_of(i) for i in ins}
        if kind == "mul" and get_op("multiply") is not None and len(ins) == 2:
            a, b = (self.b.type_of(i) for i in ins)
            if a == b or (len(a) == 3 and b in ((a[0],), (a[0], 1, 1))) or (len(b) == 3 and a in ((b[0],), (b[0], 1, 1))):
                return self.b.add("multiply", self.wanted(node), ins, self.comment(node))
        if len(shapes) != 1:
            raise Unsupported(f"broadcasting between {' and '.join('x'.join(map(str, s)) for s in shapes)}; "
                              "cnndsl merges tensors of one shape")
        if kind == "add":
            return self.b.add("add", self.wanted(node), ins, self.comment(node))
        if kind == "mul" and get_op("multiply") is not None:
            return self.b.add("multiply", self.wanted(node), ins, self.comment(node))
        raise Unsupported(f"{kind} of two tensors: cnndsl has add" + (" and multiply" if get_op("multiply") else ""))

    def op_Add(self, node):
        return self._binary(node, "add")

    def op_Sub(self, node):
        return self._binary(node, "sub")

    def op_Mul(self, node):
        return self._binary(node, "mul")

    def op_Div(self, node):
        return self._binary(node, "div")

    def _nearest_scale(self, node, in_hw, scales, mode, ctm, nearest_mode):
        if mode != "nearest":
            raise Unsupported(f"mode={mode}: cnndsl's upsample is nearest-neighbour")
        s = scales
        if len(s) != 4 or s[0] != 1 or s[1] != 1 or s[2] != s[3] or s[2] < 1 or float(s[2]) != int(s[2]):
            raise Unsupported(f"scales {list(s)}: cnndsl's upsample repeats pixels by one whole factor for "
                              "height and width")
        k = int(s[2])
        # the source pixel ONNX picks for each output pixel must be x // k
        for size in set(in_hw):
            out = np.arange(size * k, dtype=np.float64)
            if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and size * k > 1):
                src = (out + 0.5) / k - 0.5
            elif ctm == "pytorch_half_pixel":
                src = np.zeros_like(out)
            elif ctm == "asymmetric":
                src = out / k
            elif ctm == "align_corners":
                src = out * (size - 1) / max(size * k - 1, 1)
            else:
                raise Unsupported(f"coordinate_transformation_mode={ctm}")
            if nearest_mode == "floor":
                idx = np.floor(src)
            elif nearest_mode == "ceil":
                idx = np.ceil(src)
            elif nearest_mode == "round_prefer_ceil":
                idx = np.floor(src + 0.5)
            else:  # round_prefer_floor
                idx = np.ceil(src - 0.5)
            idx = np.clip(idx, 0, size - 1)
            if not np.array_equal(idx, np.arange(size * k) // k):
                raise Unsupported(f"nearest with coordinate_transformation_mode={ctm}, nearest_mode={nearest_mode} "
                                  f"at scale {k} does not repeat each pixel {k} times")
        return self.b.add("upsample", self.wanted(node), [self.layer(node.input[0])], self.comment(node), scale=k)

    def op_Upsample(self, node):
        a = self.attrs(node)
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        scales = a.get("scales") if self.opset < 9 else self.const(node.input[1])
        if scales is None:
            raise Unsupported("its scales are computed at run time")
        c, h, w = self._map(node.input[0], node)
        return self._nearest_scale(node, (h, w), [float(s) for s in scales], mode, "asymmetric", "floor")

    def op_Resize(self, node):
        a = self.attrs(node)

        def text(key, default):
            v = a.get(key, default)
            return v.decode() if isinstance(v, bytes) else v

        c, h, w = self._map(node.input[0], node)
        scales = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        sizes = self.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if self.opset < 11:
            scales = self.const(node.input[1])
        axes = a.get("axes")
        if axes is not None:
            axes = [int(x) % 4 for x in axes]
            if sorted(axes) != [2, 3]:
                raise Unsupported(f"resizing axes {list(a['axes'])}: cnndsl's upsample scales height and width")
            order = np.argsort(axes)
            if scales is not None and len(scales):
                scales = [1.0, 1.0] + [float(scales[i]) for i in order]
            if sizes is not None and len(sizes):
                sizes = [0, 0] + [int(sizes[i]) for i in order]
        if scales is None or len(scales) == 0:
            if sizes is None:
                raise Unsupported("its scales and sizes are computed at run time")
            sizes = [int(v) for v in sizes]
            if sizes[2] % h or sizes[3] % w:
                raise Unsupported(f"sizes {sizes} are not a whole multiple of {h}x{w}")
            scales = [1, 1, sizes[2] / h, sizes[3] / w]
        ctm = text("coordinate_transformation_mode", "half_pixel" if self.opset >= 11 else "asymmetric")
        mode = text("mode", "nearest")
        if mode == "linear" and "bilinear" in get_op("upsample").attr("mode").choices:
            s_ = [float(v) for v in scales]
            if len(s_) != 4 or s_[:2] != [1.0, 1.0] or s_[2] != s_[3] or s_[2] < 1 or s_[2] != int(s_[2]):
                raise Unsupported(f"scales {s_}: cnndsl's bilinear upsample scales height and width by one whole factor")
            if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
                raise Unsupported(f"linear with coordinate_transformation_mode={ctm}: cnndsl's bilinear is PyTorch's "
                                  "(half_pixel, or align_corners)")
            if ctm == "pytorch_half_pixel" and min(h, w) * int(s_[2]) == 1:
                raise Unsupported("pytorch_half_pixel on a 1-pixel output")
            return self.b.add("upsample", self.wanted(node), [self.layer(node.input[0])], self.comment(node),
                              scale=int(s_[2]), mode="bilinear", align_corners=ctm == "align_corners")
        return self._nearest_scale(node, (h, w), [float(s) for s in scales], mode, ctm,
                                   text("nearest_mode", "round_prefer_floor"))


def _head_name(name: str) -> str:
    from cnndsl.interop.cnn_writer import sanitize

    return sanitize(name, "output")


def _classes_parameter(b: NetBuilder) -> None:
    """`classes = K` as a header parameter when the first head is a K-way classifier: a dense (or a
    1x1 conv before global pooling) producing it, through activations, dropout, flatten, pooling."""
    if not b.graph.heads:
        return
    node = b.graph.node(next(iter(b.graph.heads.values())))
    pooled = False
    while node.op in ("softmax", "sigmoid", "relu", "dropout", "flatten", "global_avgpool", "avgpool", "maxpool",
                      "global_maxpool", "leaky_relu", "tanh"):
        src = b.graph.inputs_of(node.name)
        if len(src) != 1:
            return
        pooled |= node.op in ("global_avgpool", "avgpool", "maxpool", "global_maxpool")
        node = b.graph.node(src[0])
    key = {"dense": "units", "conv": "filters"}.get(node.op)
    # a conv gives the class count only when pooled to one score per channel (NiN); a conv head
    # (a detection grid, a segmentation map) has channels that are not classes
    if key is None or node.attrs[key] < 2 or (node.op == "conv" and (node.attrs["groups"] != 1 or not pooled)):
        return
    b.params["classes"] = node.attrs[key]
    b.uses[(node.name, key)] = "classes"
