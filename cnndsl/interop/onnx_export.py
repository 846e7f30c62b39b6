"""Export a checked forward graph and its weights as an ONNX model (docs/interop.md).

    model = export_model(program, tensors, level=1)      # onnx.ModelProto, checked
    onnx.save(model, "model.onnx")

The exported graph is the inference graph: dropout is gone (an identity at inference), batchnorm is
ONNX's BatchNormalization with the running statistics (or folded into the conv/dense weights at
-O2), and the fused ops the optimization passes make (fused_conv, fused_dense, fused_batchnorm,
fused_conv_pool) are written back as the standard ops they fuse. Every tensor is named after the
layer that makes it, every ONNX node after its layer (`<layer>` for the node that makes the
layer's output, `<layer>/<step>` for the ones before it), so Netron shows the .cnn's names.
The batch dimension is symbolic (`batch`); the opset and IR version are pinned (OPSET, IR_VERSION).

Every op of the registry is either in EXPORTERS or refused with a located error naming the op and
the reason (NOT_EXPORTED, or "no ONNX exporter" for an op added since).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.interop.deps import require
from cnndsl.ir.graph import Graph, Node
from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.version import __version__

OPSET = 17  # ONNX Runtime >= 1.13 runs it; 17 has Resize, Softmax over one axis, LpPool, Clip with inputs
IR_VERSION = 8  # the IR version of opset 17 (onnx 1.12): ONNX Runtime refuses IR versions newer than it knows
PRODUCER = "cnndsl"

# ops that only exist in training graphs (cnndsl/ops/training/): never in an inference graph
TRAINING_CATEGORIES = ("gradient", "loss", "optimizer")


@dataclass
class Emitter:
    """What an op's exporter writes into: ONNX nodes and initializers, one tensor name per layer."""

    onnx: object
    graph: Graph
    tensors: dict[str, np.ndarray]
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # cnndsl node -> the ONNX tensor holding its output
    _used: set = field(default_factory=set)  # tensor names
    _node_names: set = field(default_factory=set)

    def input(self, node: Node, port: int = 0) -> str:
        return self.names[self.graph.inputs_of(node.name)[port]]

    def inputs(self, node: Node) -> list[str]:
        return [self.names[s] for s in self.graph.inputs_of(node.name)]

    def const(self, name: str, value) -> str:
        """An initializer (float32 unless `value` is an integer array); returns its name."""
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        name = self._unique(name)
        arr = arr if arr.ndim == 0 else np.ascontiguousarray(arr)  # a scalar stays 0-d (Clip's min and max)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def param(self, layer: str, what: str) -> np.ndarray:
        key = f"{layer}.{what}"
        if key not in self.tensors:
            raise CnnError([Diagnostic("error", f"the weights have no tensor '{key}'", code="export-weights")])
        return np.asarray(self.tensors[key], np.float32)

    def op(self, op_type: str, inputs: list[str], node: Node, step: str | None = None, **attrs) -> str:
        """Add one ONNX node for `node`; `step` names an intermediate one (`<layer>/<step>`), None the
        node making the layer's output (named `<layer>`, its output the tensor `<layer>`)."""
        label = node.name if step is None else f"{node.name}/{step}"
        name, out = self._unique(label, self._node_names), self._unique(label)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def _unique(self, name: str, used: set | None = None) -> str:
        """`name`, or `name_2`, `name_3`, ... when taken (tensor names by default, else `used`)."""
        used = self._used if used is None else used
        base, i = name, 1
        while name in used:
            i += 1
            name = f"{base}_{i}"
        used.add(name)
        return name


def _pads(g: ConvGeometry) -> list[int]:
    """ONNX pads [top, left, bottom, right] that reproduce the layer's output size in ONNX's floor
    mode: rounding=ceil (and `same`) windows that run past the bottom/right become explicit extra
    padding there (-inf for max, not counted by the average), so no ceil_mode is needed."""
    bottom = max(g.pb, (g.OH - 1) * g.sh + g.dh * (g.KH - 1) + 1 - g.H - g.pt)
    right = max(g.pr, (g.OW - 1) * g.sw + g.dw * (g.KW - 1) + 1 - g.W - g.pl)
    return [int(g.pt), int(g.pl), int(bottom), int(right)]


def _window(g: ConvGeometry) -> dict:
    """kernel_shape, strides and pads of a pool (its stride as resolved: the kernel by default)."""
    return {"kernel_shape": list(g.kernel), "strides": list(g.stride), "pads": _pads(g)}


# -- exporters: fn(emitter, node) -> the ONNX tensor holding the layer's output -------------------

def _scalar(e: Emitter, node: Node, name: str, value: float) -> str:
    return e.const(f"{node.name}.{name}", np.array(value, np.float32))


def _gelu(e, node, x, alpha, step):
    # opset 17 has no Gelu (opset 20): 0.5 * x * (1 + erf(x / sqrt(2)))
    base = step or "gelu"
    t = e.op("Mul", [x, _scalar(e, node, "inv_sqrt2", 0.7071067811865476)], node, f"{base}/scaled")
    t = e.op("Erf", [t], node, f"{base}/erf")
    t = e.op("Add", [t, _scalar(e, node, "one", 1.0)], node, f"{base}/plus1")
    t = e.op("Mul", [x, t], node, f"{base}/times_x")
    return e.op("Mul", [t, _scalar(e, node, "half", 0.5)], node, step)


def _gelu_tanh(e, node, x, alpha, step):
    # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
    base = step or "gelu_tanh"
    cube = e.op("Mul", [e.op("Mul", [x, x], node, f"{base}/square"), x], node, f"{base}/cube")
    inner = e.op("Add", [x, e.op("Mul", [cube, _scalar(e, node, "c", 0.044715)], node, f"{base}/c_cube")], node,
                 f"{base}/inner")
    t = e.op("Tanh", [e.op("Mul", [inner, _scalar(e, node, "k", 0.7978845608028654)], node, f"{base}/k")], node,
             f"{base}/tanh")
    t = e.op("Mul", [x, e.op("Add", [t, _scalar(e, node, "one", 1.0)], node, f"{base}/plus1")], node, f"{base}/times_x")
    return e.op("Mul", [t, _scalar(e, node, "half", 0.5)], node, step)


# name -> fn(emitter, node, x, alpha, step): the ONNX nodes of each element-wise activation (opset 17);
# `step` None names the last node after the layer (it makes the layer's output)
ACTIVATION_EXPORT = {
    "relu": lambda e, n, x, a, step: e.op("Relu", [x], n, step),
    "leaky_relu": lambda e, n, x, a, step: e.op("LeakyRelu", [x], n, step, alpha=float(a)),
    "sigmoid": lambda e, n, x, a, step: e.op("Sigmoid", [x], n, step),
    "tanh": lambda e, n, x, a, step: e.op("Tanh", [x], n, step),
    "relu6": lambda e, n, x, a, step: e.op("Clip", [x, _scalar(e, n, "min", 0.0), _scalar(e, n, "max", 6.0)], n, step),
    "hardswish": lambda e, n, x, a, step: e.op("HardSwish", [x], n, step),
    "hardsigmoid": lambda e, n, x, a, step: e.op("HardSigmoid", [x], n, step, alpha=1.0 / 6.0, beta=0.5),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": lambda e, n, x, a, step: e.op("Mul", [x, e.op("Sigmoid", [x], n, f"{step or 'silu'}/sigmoid")], n, step),
    "mish": lambda e, n, x, a, step: e.op("Mul", [x, e.op("Tanh", [e.op("Softplus", [x], n, f"{step or 'mish'}/softplus")],
                                                            n, f"{step or 'mish'}/tanh")], n, step),
    "elu": lambda e, n, x, a, step: e.op("Elu", [x], n, step, alpha=float(a)),
    "softplus": lambda e, n, x, a, step: e.op("Softplus", [x], n, step),
}


def _activation(e: Emitter, node: Node, x: str, activation: str, alpha: float, final: bool) -> str:
    """The epilogue activation of a fused op (or a standalone one)."""
    if activation == "none":
        return x
    if activation not in ACTIVATION_EXPORT:
        raise _refuse(node, f"its epilogue activation '{activation}' has no ONNX exporter")
    return ACTIVATION_EXPORT[activation](e, node, x, alpha, None if final else activation)


def _conv_weights(e: Emitter, node: Node):
    w = e.param(node.name, "weight")
    b = e.param(node.name, "bias") if node.attrs.get("bias") else None
    bn = node.attrs.get("folded_bn")
    if bn:
        from cnndsl.kernels.reference.fused import fold_batchnorm

        w, b = fold_batchnorm(w, b, e.param(bn, "gamma"), e.param(bn, "beta"), e.param(bn, "running_mean"),
                              e.param(bn, "running_var"), node.attrs["bn_eps"])
    return w, b


def _conv_node(e: Emitter, node: Node, final: bool) -> str:
    a = node.attrs
    w, b = _conv_weights(e, node)
    ins = [e.input(node), e.const(f"{node.name}.weight", w)]
    if b is not None:
        ins.append(e.const(f"{node.name}.bias", b))
    g = node.geometry
    return e.op("Conv", ins, node, None if final else "conv", kernel_shape=list(g.kernel),
                strides=list(g.stride), dilations=list(g.dilation), group=int(g.G), pads=_pads(g))


def export_conv(e: Emitter, node: Node) -> str:
    return _conv_node(e, node, final=True)


def _epilogue(e: Emitter, node: Node, z: str, final: bool) -> str:
    a = node.attrs
    last_is_add = a.get("residual") and a["activation"] == "none"
    if a.get("residual"):
        z = e.op("Add", [z, e.input(node, 1)], node, None if (final and last_is_add) else "residual")
    return _activation(e, node, z, a["activation"], a["alpha"], final)


def _fused_conv_parts(e: Emitter, node: Node, final: bool) -> str:
    a = node.attrs
    simple = not a.get("residual") and a["activation"] == "none"
    z = _conv_node(e, node, final=final and simple)
    return _epilogue(e, node, z, final)


def export_fused_conv(e: Emitter, node: Node) -> str:
    return _fused_conv_parts(e, node, final=True)


def export_fused_conv_pool(e: Emitter, node: Node) -> str:
    # the conv's own output size is the pool's input (the node's geometry is the conv's)
    c = node.type.shape[0]
    conv_node = Node(node.name, node.op, node.attrs, meta=dict(node.meta), geometry=node.geometry)
    conv_node.type = type(node.type)((c,) + node.geometry.out_hw)
    y = _fused_conv_parts(e, conv_node, final=False)
    return e.op("MaxPool", [y], node, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])


def _dense_node(e: Emitter, node: Node, final: bool) -> str:
    w, b = _conv_weights(e, node)
    ins = [e.input(node), e.const(f"{node.name}.weight", w)]
    if b is not None:
        ins.append(e.const(f"{node.name}.bias", b))
    return e.op("Gemm", ins, node, None if final else "gemm", transB=1)


def export_dense(e: Emitter, node: Node) -> str:
    return _dense_node(e, node, final=True)


def export_fused_dense(e: Emitter, node: Node) -> str:
    z = _dense_node(e, node, final=node.attrs["activation"] == "none")
    return _activation(e, node, z, node.attrs["activation"], node.attrs["alpha"], final=True)


def _batchnorm_node(e: Emitter, node: Node, final: bool) -> str:
    ins = [e.input(node)] + [e.const(f"{node.name}.{p}", e.param(node.name, p))
                             for p in ("gamma", "beta", "running_mean", "running_var")]
    # ONNX's momentum weighs the running value (1 - PyTorch's); it only matters in training
    return e.op("BatchNormalization", ins, node, None if final else "batchnorm", epsilon=float(node.attrs["eps"]),
                momentum=float(1.0 - node.attrs["momentum"]))


def export_batchnorm(e: Emitter, node: Node) -> str:
    return _batchnorm_node(e, node, final=True)


def export_fused_batchnorm(e: Emitter, node: Node) -> str:
    z = _batchnorm_node(e, node, final=node.attrs["activation"] == "none")
    return _activation(e, node, z, node.attrs["activation"], node.attrs["alpha"], final=True)


def export_conv_transpose(e: Emitter, node: Node) -> str:
    a = node.attrs
    ins = [e.input(node), e.const(f"{node.name}.weight", e.param(node.name, "weight"))]
    if a["bias"]:
        ins.append(e.const(f"{node.name}.bias", e.param(node.name, "bias")))
    g = node.geometry  # the adjoint conv's: kernel, stride, dilation and groups are the layer's, pads its crop
    return e.op("ConvTranspose", ins, node, kernel_shape=list(g.kernel), strides=list(g.stride),
                dilations=list(g.dilation), group=int(g.G), pads=[g.pt, g.pl, g.pb, g.pr],
                output_padding=list(node.meta["output_padding"]))


def export_maxpool(e: Emitter, node: Node) -> str:
    return e.op("MaxPool", [e.input(node)], node, **_window(node.geometry))


def export_avgpool(e: Emitter, node: Node) -> str:
    return e.op("AveragePool", [e.input(node)], node, **_window(node.geometry), count_include_pad=0)


def export_l2pool(e: Emitter, node: Node) -> str:
    # sqrt of the mean of squares over the input values of each window: ONNX's LpPool has no divisor
    # (sqrt of the sum), so the exact form is Mul -> AveragePool (padding not counted) -> Sqrt
    x = e.input(node)
    sq = e.op("Mul", [x, x], node, "square")
    mean = e.op("AveragePool", [sq], node, "mean", **_window(node.geometry), count_include_pad=0)
    return e.op("Sqrt", [mean], node)


def export_global_avgpool(e: Emitter, node: Node) -> str:
    pooled = e.op("GlobalAveragePool", [e.input(node)], node, "pool")  # N x C x 1 x 1
    return e.op("Flatten", [pooled], node, axis=1)


def export_flatten(e: Emitter, node: Node) -> str:
    return e.op("Flatten", [e.input(node)], node, axis=1)


def export_upsample(e: Emitter, node: Node) -> str:
    s = float(node.attrs["scale"])
    scales = e.const(f"{node.name}.scales", np.array([1.0, 1.0, s, s], np.float32))
    mode = node.attrs.get("mode", "nearest")
    if mode == "nearest":
        return e.op("Resize", [e.input(node), "", scales], node, mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if mode == "bilinear":  # PyTorch's bilinear: pixel centres (half_pixel), or align_corners
        ctm = "align_corners" if node.attrs.get("align_corners") else "half_pixel"
        return e.op("Resize", [e.input(node), "", scales], node, mode="linear", coordinate_transformation_mode=ctm)
    raise _refuse(node, f"upsample mode={mode} has no ONNX exporter")


def export_dropout(e: Emitter, node: Node) -> str:
    return e.input(node)  # identity at inference: no node, the layer's readers read its input


def _activation_op(name: str):
    def export(e: Emitter, node: Node) -> str:
        return ACTIVATION_EXPORT[name](e, node, e.input(node), node.attrs.get("alpha", 0.0), None)
    return export


def export_prelu(e: Emitter, node: Node) -> str:
    slope = e.param(node.name, "slope")
    shape = node.type.shape
    slope = slope.reshape((len(slope),) + (1,) * (len(shape) - 1))  # per channel of a map, per feature of a vector
    return e.op("PRelu", [e.input(node), e.const(f"{node.name}.slope", slope)], node)


def _unary(op_type: str, **fixed):
    def export(e: Emitter, node: Node) -> str:
        return e.op(op_type, [e.input(node)], node, **fixed)
    return export


def export_softmax(e: Emitter, node: Node) -> str:
    # over the channels of each pixel (maps) or the features (vectors): axis 1 (opset >= 13 meaning)
    return e.op("Softmax", [e.input(node)], node, axis=1)


def export_global_maxpool(e: Emitter, node: Node) -> str:
    pooled = e.op("GlobalMaxPool", [e.input(node)], node, "pool")  # N x C x 1 x 1
    return e.op("Flatten", [pooled], node, axis=1)


def _axes(e: Emitter, node: Node, name: str, axes) -> str:
    return e.const(f"{node.name}.{name}", np.array(axes, np.int64))


def export_multiply(e: Emitter, node: Node) -> str:
    (a, b), (ta, tb) = e.inputs(node), [e.graph.node(s).type.shape for s in e.graph.inputs_of(node.name)]
    # a per-channel vector of C times a C x H x W map: the vector as N x C x 1 x 1 (ONNX broadcasts that)
    if len(ta) == 1 and len(tb) == 3:
        a = e.op("Unsqueeze", [a, _axes(e, node, "axes", [2, 3])], node, "per_channel")
    elif len(tb) == 1 and len(ta) == 3:
        b = e.op("Unsqueeze", [b, _axes(e, node, "axes", [2, 3])], node, "per_channel")
    return e.op("Mul", [a, b], node)


def export_reshape(e: Emitter, node: Node) -> str:
    shape = e.const(f"{node.name}.shape", np.array([0, *node.type.shape], np.int64))  # 0: keep the batch
    return e.op("Reshape", [e.input(node), shape], node)


def export_lrn(e: Emitter, node: Node) -> str:
    a = node.attrs
    if a["size"] % 2 == 0:
        # ONNX's window is [c - (size-1)//2, c + size//2]; cnndsl's (PyTorch's) [c - size//2, c + (size-1)//2]
        raise _refuse(node, f"an even size ({a['size']}) centres its window one channel apart from ONNX's LRN")
    x = e.input(node)
    vector = len(node.type.shape) == 1
    if vector:  # ONNX's LRN takes N x C x D1 ...: a vector as N x C x 1 x 1
        x = e.op("Unsqueeze", [x, _axes(e, node, "axes", [2, 3])], node, "as_map")
    y = e.op("LRN", [x], node, "lrn" if vector else None, size=int(a["size"]), alpha=float(a["alpha"]),
             beta=float(a["beta"]), bias=float(a["k"]))
    return e.op("Flatten", [y], node, axis=1) if vector else y


def export_softmax_axis(e: Emitter, node: Node) -> str:
    axis = node.attrs["axis"]
    x = e.input(node)
    if axis == "channels":
        return e.op("Softmax", [x], node, axis=1)
    if axis in ("height", "width"):
        return e.op("Softmax", [x], node, axis=2 if axis == "height" else 3)
    c, h, w = node.type.shape  # spatial: over the H*W pixels of each channel
    flat = e.op("Reshape", [x, e.const(f"{node.name}.flat", np.array([0, c, h * w], np.int64))], node, "pixels")
    soft = e.op("Softmax", [flat], node, "softmax", axis=2)
    return e.op("Reshape", [soft, e.const(f"{node.name}.map", np.array([0, c, h, w], np.int64))], node)


def export_add(e: Emitter, node: Node) -> str:
    ins = e.inputs(node)
    return e.op("Add" if len(ins) == 2 else "Sum", ins, node)


def export_concat(e: Emitter, node: Node) -> str:
    return e.op("Concat", e.inputs(node), node, axis=1)


EXPORTERS: dict[str, Callable[[Emitter, Node], str]] = {
    "conv": export_conv,
    "conv_transpose": export_conv_transpose,
    "maxpool": export_maxpool,
    "avgpool": export_avgpool,
    "l2pool": export_l2pool,
    "global_avgpool": export_global_avgpool,
    "dropout": export_dropout,
    "batchnorm": export_batchnorm,
    "dense": export_dense,
    "flatten": export_flatten,
    "upsample": export_upsample,
    **{name: _activation_op(name) for name in ACTIVATION_EXPORT},
    "prelu": export_prelu,
    "softmax": export_softmax,
    "add": export_add,
    "concat": export_concat,
    "global_maxpool": export_global_maxpool,
    "multiply": export_multiply,
    "reshape": export_reshape,
    "lrn": export_lrn,
    "softmax_axis": export_softmax_axis,
    "fused_conv": export_fused_conv,
    "fused_conv_pool": export_fused_conv_pool,
    "fused_dense": export_fused_dense,
    "fused_batchnorm": export_fused_batchnorm,
}

# ops of the registry that are not part of an inference graph, with the reason given to the user
NOT_EXPORTED = {
    "input": "a graph input, exported as the ONNX graph's input, not as a node",
    "target": "a training target, not part of the inference graph",
    "unflatten": "a training-graph op (the gradient of flatten)",
    "depthwise": "written as a conv by the front end: never a node of a graph",
}


def refusal_reason(op: str) -> str | None:
    """Why `op` cannot be exported, or None when it can."""
    from cnndsl.ops.registry import get_op

    if op in EXPORTERS:
        return None
    if op in NOT_EXPORTED:
        return NOT_EXPORTED[op]
    opdef = get_op(op)
    if opdef is not None and opdef.category in TRAINING_CATEGORIES:
        return f"a {opdef.category} op of the training graph, not part of the inference graph"
    return "it has no ONNX exporter yet (cnndsl/interop/onnx_export.py)"


def _refuse(node: Node, why: str) -> CnnError:
    return CnnError([Diagnostic(
        "error", f"cannot export {node.op} '{node.name}' to ONNX: {why}", node.span,
        help="export a network without this layer, or add an exporter to cnndsl/interop/onnx_export.py "
             "(docs/interop.md lists the ops)", code="export-unsupported")])


def check_exportable(graph: Graph) -> None:
    """Every node of `graph` has an exporter, or one located error per refused layer."""
    errors = []
    for node in graph.nodes():
        if node.op == "input":
            continue
        why = refusal_reason(node.op)
        if why is not None:
            errors.extend(_refuse(node, why).diagnostics)
    if errors:
        raise CnnError(errors)


def inference_graph(program, level: int) -> Graph:
    """The graph to export: the forward graph through the inference pipeline at `level`
    (0: as written, dropout skipped by the exporter; 1: clean-ups; 2: fusions, batchnorm folded)."""
    from cnndsl.passes.pipeline import optimize

    return optimize(program.graph, "inference", level)


def export_graph(graph: Graph, tensors: dict[str, np.ndarray], normalize=None, doc: str = ""):
    """An onnx.ModelProto for a checked inference graph and its weights (layer.param -> array).
    `normalize` (a Normalize of the training section) becomes Sub/Div nodes after the input, so the
    ONNX model takes the same raw images as Model.predict."""
    onnx = require("onnx", "ONNX export")
    check_exportable(graph)
    e = Emitter(onnx, graph, tensors)
    e._used.update(graph.inputs)
    # a head named unlike its layer is an output tensor of that name: no other tensor may take it
    e._used.update(h for h, layer in graph.heads.items() if h != layer)
    graph_inputs = []
    for name in graph.inputs:
        shape = graph.node(name).type.shape
        graph_inputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", *shape]))
        e.names[name] = name
    if normalize is not None:
        name = graph.inputs[0]
        shape = graph.node(name).type.shape
        bshape = (len(normalize.mean),) + (1,) * (len(shape) - 1)
        mean = e.const(f"{name}.mean", np.asarray(normalize.mean, np.float32).reshape(bshape))
        std = e.const(f"{name}.std", np.asarray(normalize.std, np.float32).reshape(bshape))
        fake = Node(name, "input")
        centred = e.op("Sub", [name, mean], fake, "normalize/sub")
        e.names[name] = e.op("Div", [centred, std], fake, "normalize")
    for node in graph.nodes():
        if node.op == "input":
            continue
        e.names[node.name] = EXPORTERS[node.op](e, node)
    outputs, renames = [], []
    for head, layer in graph.heads.items():
        tensor = e.names[layer]
        if tensor != head:  # a head named unlike its layer, or a dropout head: an Identity gives the name
            renames.append(onnx.helper.make_node("Identity", [tensor], [head],
                                                 name=e._unique(f"{head}/output", e._node_names)))
        shape = graph.node(layer).type.shape
        outputs.append(onnx.helper.make_tensor_value_info(head, onnx.TensorProto.FLOAT, ["batch", *shape]))
    g = onnx.helper.make_graph(e.nodes + renames, graph.name, graph_inputs, outputs, e.initializers, doc_string=doc)
    model = onnx.helper.make_model(g, producer_name=PRODUCER, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.producer_version = __version__
    onnx.checker.check_model(model, full_check=True)
    return model


def export_program(program, tensors: dict[str, np.ndarray], level: int = 1, normalize: bool = True):
    """Export a loaded program (cnndsl.frontend.load) with its weights (layer.param -> array)."""
    graph = inference_graph(program, level)
    norm = program.training.normalize if (normalize and program.training is not None) else None
    return export_graph(graph, tensors, norm, doc=f"exported by cnndsl from network {program.graph.name}")
