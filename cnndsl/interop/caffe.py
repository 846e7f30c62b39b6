"""Import a Caffe net: `.prototxt` (read by cnndsl/interop/prototxt.py, every value located) and
optionally its `.caffemodel` weights (cnndsl/interop/caffe_proto.py, through protobuf).

Caffe's rules kept exactly:
  * Convolution rounds down: a stride that does not tile becomes `rounding=floor` (with the
    front end's warning of what is dropped).
  * Pooling rounds up (ceil), and never starts a window in the bottom/right padding: written as
    `rounding=ceil`, with a warning at the Pooling layer's line, because other frameworks
    (PyTorch's default, Keras) would give a smaller map.
  * AVE pooling divides by the window clipped to the padded input, so with `pad` > 0 the padding is
    counted: written as a depthwise conv of constant weights 1/(KH*KW) when no window runs past the
    padding, an error otherwise. Without `pad` it is cnndsl's avgpool.
  * InnerProduct flattens a map first (an explicit `flatten` here); BatchNorm's blobs are divided by
    its scale factor; BatchNorm followed by Scale is one batchnorm (gamma, beta from the Scale).
  * Layers of the TRAIN phase only, data layers, losses and Accuracy are left out (said in the
    file's header); a SoftmaxWithLoss's input becomes a head.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnndsl.diagnostics import CnnError, Diagnostic, Span, file_error
from cnndsl.interop.cnn_writer import NetBuilder
from cnndsl.interop.prototxt import Message, parse
from cnndsl.ops.registry import get_op

V1_NAMES = {"CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "POOLING": "Pooling",
            "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU", "SIGMOID": "Sigmoid", "TANH": "TanH",
            "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "DROPOUT": "Dropout", "CONCAT": "Concat",
            "ELTWISE": "Eltwise", "FLATTEN": "Flatten", "LRN": "LRN", "SPLIT": "Split", "DATA": "Data",
            "ACCURACY": "Accuracy", "IMAGE_DATA": "ImageData", "MEMORY_DATA": "MemoryData"}
DATA_LAYERS = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData"}
DROPPED = {"Accuracy": "an evaluation metric", "SoftmaxWithLoss": "the training loss (its input is a head)",
           "EuclideanLoss": "the training loss (its input is a head)",
           "SigmoidCrossEntropyLoss": "the training loss (its input is a head)", "Silence": "no output"}


def import_caffe(path, weights_path=None) -> NetBuilder:
    from cnndsl.io.files import read_text

    text = read_text(path, "Caffe prototxt", "protobuf text format (UTF-8)",
                     "binary data (a .caffemodel? give it with --weights)")
    net = parse(text, str(path))
    layers = net.all("layer") or net.all("layers")
    if not layers:
        raise file_error(path, "this prototxt has no layers", expected="`layer { ... }` blocks (a Caffe NetParameter)",
                         found=", ".join(sorted({k for k, _ in net.fields})) or "nothing")
    for layer in layers:
        if not isinstance(layer, Message):  # `layer: 3`: the parser keeps it; the importer needs blocks
            raise CnnError([Diagnostic("error", f"a `layer` must be a block `layer {{ ... }}`, found the value "
                                                f"{layer.value!r}", layer.span, code="import-caffe")])
    blobs = _read_caffemodel(weights_path) if weights_path else None
    return _Caffe(str(path), net, blobs, weights_path).run()


def _read_caffemodel(path) -> dict[str, list[np.ndarray]]:
    from cnndsl.interop.caffe_proto import blob_array, messages
    from cnndsl.io.files import read_regular

    Net, _ = messages()
    raw = read_regular(path, "Caffe weights")
    msg = Net()
    try:
        msg.ParseFromString(raw)
    except Exception as e:
        raise file_error(path, "this is not a Caffe .caffemodel", expected="a binary NetParameter (protobuf)",
                         found=f"{len(raw):,} bytes that do not decode as one ({type(e).__name__})") from None
    out: dict[str, list[np.ndarray]] = {}
    for layer in list(msg.layer) + list(msg.layers):
        arrays = []
        for blob in layer.blobs:
            data, shape = blob_array(blob)
            if int(np.prod(shape)) != data.size:
                raise file_error(path, f"blob {len(arrays)} of layer '{layer.name}' holds {data.size:,} values",
                                 expected=f"{int(np.prod(shape)):,} values for its shape {'x'.join(map(str, shape))}",
                                 found=f"{data.size:,}")
            arrays.append(data.reshape(shape))
        if arrays:
            out[layer.name] = arrays
    if not out and raw:
        raise file_error(path, "this .caffemodel holds no weights", expected="layers with blobs",
                         found=f"{len(msg.layer) + len(msg.layers)} layers without blobs")
    return out


def _ints(param: Message | None, name: str, default=None) -> list[int]:
    if param is None:
        return [] if default is None else [default]
    vals = [int(v) for v in param.values(name)]
    return vals or ([] if default is None else [default])


def _pair(param, name, h_name, w_name, default):
    """Caffe's `kernel_size: 3` / `kernel_size: 3 kernel_size: 5` / `kernel_h: 3 kernel_w: 5`."""
    if param is not None and (param.first(h_name) is not None or param.first(w_name) is not None):
        return (int(param.get(h_name, default)), int(param.get(w_name, default)))
    vals = _ints(param, name)
    if not vals:
        return (default, default)
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


class _Caffe:
    def __init__(self, path, net: Message, blobs, weights_path):
        self.path, self.net, self.blobs, self.weights_path = path, net, blobs, weights_path
        self.b = NetBuilder(path, "Caffe", name=str(net.get("name") or Path(path).stem))
        self.b.source_weights = blobs is not None
        self.tensor: dict[str, str] = {}  # Caffe blob (top) name -> cnndsl layer
        self.dropped: list[str] = []
        self.used_blobs: set[str] = set()

    def error(self, message: str, span: Span, help: str | None = None) -> CnnError:
        return CnnError([Diagnostic("error", message, span, help=help, code="import-caffe")])

    def run(self) -> NetBuilder:
        net = self.net
        self._net_inputs()
        layers = [layer for layer in (net.all("layer") or net.all("layers")) if self._in_test_phase(layer)]
        self.consumers = {}
        for layer in layers:
            for bottom in _strs(layer, "bottom"):
                self.consumers.setdefault(bottom, []).append(layer)
        skip = set()
        heads = []
        for i, layer in enumerate(layers):
            if i in skip:
                continue
            kind = self._type(layer)
            name = str(layer.get("name") or f"layer{i}")
            if kind in DATA_LAYERS:
                self.dropped.append(f"{kind} '{name}' (a data layer: give the input shape with an Input layer)")
                continue
            if kind in DROPPED:
                self.dropped.append(f"{kind} '{name}' ({DROPPED[kind]})")
                if "Loss" in kind and _strs(layer, "bottom"):
                    heads.append(_strs(layer, "bottom")[0])
                continue
            handler = getattr(self, "layer_" + kind, None)
            if handler is None:
                supported = sorted(k[len("layer_"):] for k in dir(self) if k.startswith("layer_"))
                raise self.error(f"Caffe layer '{name}' has type {kind}, which cnndsl cannot import",
                                 layer.span_of("type"), help="cnndsl imports " + ", ".join(supported))
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            try:
                out = handler(layer, name, nxt)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
                raise self.error(f"Caffe layer '{name}' ({kind}) has an option of the wrong kind or a missing one "
                                 f"({type(e).__name__}: {e})", layer.span) from None
            if isinstance(out, tuple):  # the handler took the next layer too (BatchNorm + Scale)
                out, took = out
                if took:
                    skip.add(i + 1)
                    layer = nxt
            for top in _strs(layer, "top"):
                self.tensor[top] = out
        if not self.b.graph.inputs:
            raise self.error("the net has no input with a shape", self.net.span,
                             help="add `input: \"data\"` with `input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }`, or an "
                                  "Input layer")
        # heads: the inputs of dropped losses, else every top no layer reads
        read = {b for layer in layers for b in _strs(layer, "bottom")}
        tops = [t for layer in layers for t in _strs(layer, "top") if self._type(layer) not in DROPPED
                and self._type(layer) not in DATA_LAYERS]
        if not heads:
            heads = [t for t in dict.fromkeys(tops) if t not in read or t in self._last_tops(layers)]
        for h in dict.fromkeys(heads):
            if h in self.tensor and self.b.graph.node(self.tensor[h]).op != "input":
                self.b.head(self.b.unique(h, "output") if h in self.b.graph.heads else _safe(h), self.tensor[h])
        if self.blobs is not None:
            unused = sorted(set(self.blobs) - self.used_blobs)
            if unused:
                self.b.note(f"{self.weights_path} has weights for {len(unused)} layer(s) the prototxt does not "
                            f"use: {', '.join(unused[:10])}", Span(str(self.weights_path), 0, 0))
        if self.dropped:
            self.b.header.append("left out: " + "; ".join(self.dropped))
        from cnndsl.interop.onnx_import import _classes_parameter

        _classes_parameter(self.b)
        return self.b

    def _last_tops(self, layers):
        return set(_strs(layers[-1], "top")) if layers else set()

    def _in_test_phase(self, layer: Message) -> bool:
        for inc in layer.all("include"):
            if isinstance(inc, Message) and inc.get("phase") == "TRAIN":
                return False
        for exc in layer.all("exclude"):
            if isinstance(exc, Message) and exc.get("phase") == "TEST":
                return False
        return True

    def _type(self, layer: Message) -> str:
        t = layer.get("type", "")
        return V1_NAMES.get(t, t) if isinstance(t, str) else str(t)

    def _whole_numbers(self, msg: Message, name: str, what: str) -> list[int]:
        """The values of `name` in `msg` as ints, or a located error (the net's inputs are read before,
        and outside, the per-layer conversion that turns a bad value into a diagnostic)."""
        try:
            return [int(v) for v in msg.values(name)]
        except (ValueError, TypeError, OverflowError) as e:
            raise self.error(f"{what} must be whole numbers ({type(e).__name__}: {e})", msg.span_of(name)) from None

    def _net_inputs(self):
        net = self.net
        names = [str(n) for n in net.values("input")]
        shapes = [self._whole_numbers(s, "dim", "input_shape's dims") for s in net.all("input_shape")]
        dims = self._whole_numbers(net, "input_dim", "input_dim")
        if dims:
            shapes = [dims[i:i + 4] for i in range(0, len(dims), 4)]
        for i, name in enumerate(names):
            if i >= len(shapes):
                raise self.error(f"input '{name}' has no shape", net.all("input")[i].span,
                                 help="add input_shape { dim: N dim: C dim: H dim: W }")
            self._input(name, shapes[i], net.all("input")[i].span)

    def _input(self, name, shape, span):
        if len(shape) not in (2, 4) or any(d < 1 for d in shape[1:]):
            raise self.error(f"input '{name}' has shape {'x'.join(map(str, shape))}", span,
                             help="cnndsl takes N x C x H x W images or N x F vectors")
        self.tensor[name] = self.b.add_input(name, tuple(shape[1:]), f"Caffe input '{name}'")

    def _bottom(self, layer, k=0) -> str:
        bottoms = _strs(layer, "bottom")
        if len(bottoms) <= k:
            raise self.error(f"layer '{layer.get('name')}' has no bottom {k}", layer.span)
        b = bottoms[k]
        if b not in self.tensor:
            raise self.error(f"layer '{layer.get('name')}' reads '{b}', which no layer above makes",
                             layer.all("bottom")[k].span)
        return self.tensor[b]

    def _weights(self, layer, name, count: int, what: str) -> list[np.ndarray] | None:
        if self.blobs is None:
            return None
        got = self.blobs.get(name)
        if got is None:
            raise file_error(self.weights_path, f"the weights have no blobs for layer '{name}'",
                             expected=f"{what} for Caffe layer '{name}' (line {layer.span.line} of {self.path})",
                             found="no layer of that name")
        self.used_blobs.add(name)
        if len(got) < count:
            raise file_error(self.weights_path, f"layer '{name}' has {len(got)} blob(s)", expected=what,
                             found=f"{len(got)} blob(s) of shapes {', '.join('x'.join(map(str, a.shape)) for a in got)}")
        return got

    def _comment(self, layer, name, extra=""):
        return f"Caffe {self._type(layer)} '{name}' (line {layer.span.line})" + (f" {extra}" if extra else "")

    def _reshape(self, arr, shape, layer, name, what):
        if arr.size != int(np.prod(shape)):
            raise file_error(self.weights_path, f"the {what} of layer '{name}' has {arr.size:,} values",
                             expected=f"{'x'.join(map(str, shape))} = {int(np.prod(shape)):,} values "
                                      f"(line {layer.span.line} of {self.path})",
                             found=f"shape {'x'.join(map(str, arr.shape))}")
        return arr.reshape(shape)

    # -- layers --------------------------------------------------------------------------------
    def layer_Input(self, layer, name, nxt):
        p = layer.first("input_param")
        shapes = [[int(d) for d in s.values("dim")] for s in (p.all("shape") if p else [])]
        tops = _strs(layer, "top")
        if len(shapes) < len(tops):
            raise self.error(f"Input layer '{name}' has no shape for each top", layer.span)
        for top, shape in zip(tops, shapes):
            self._input(top, shape, layer.span)
        return self.tensor[tops[0]]

    def layer_Convolution(self, layer, name, nxt, transpose=False):
        p = layer.first("convolution_param")
        if p is None:
            raise self.error(f"Convolution '{name}' has no convolution_param", layer.span)
        filters = int(p.get("num_output", 0))
        kernel = _pair(p, "kernel_size", "kernel_h", "kernel_w", 0)
        if filters < 1 or min(kernel) < 1:
            raise self.error(f"{self._type(layer)} '{name}' needs num_output and kernel_size", p.span)
        stride = _pair(p, "stride", "stride_h", "stride_w", 1)
        pad = _pair(p, "pad", "pad_h", "pad_w", 0)
        dilation = tuple(_ints(p, "dilation", 1) * 2)[:2] if len(_ints(p, "dilation", 1)) == 1 else tuple(_ints(p, "dilation"))
        groups = int(p.get("group", 1))
        bias = bool(p.get("bias_term", True))
        x = self._bottom(layer)
        c = self.b.type_of(x)[0]
        weights = None
        blobs = self._weights(layer, name, 2 if bias else 1, "weights" + (" and bias" if bias else ""))
        if blobs is not None:
            wshape = (c, filters // groups) + kernel if transpose else (filters, c // groups) + kernel
            weights = {"weight": self._reshape(blobs[0], wshape, layer, name, "weights")}
            if bias:
                weights["bias"] = self._reshape(blobs[1], (filters,), layer, name, "bias")
        if transpose:
            return self.b.add("conv_transpose", name, [x], self._comment(layer, name), where=layer.span,
                              weights=weights, filters=filters, kernel=kernel, stride=stride,
                              padding=pad if pad[0] != pad[1] else pad[0], dilation=dilation, groups=groups, bias=bias)
        h, w = self.b.type_of(x)[1:]
        k_eff = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
        tiles = all((hw + 2 * pad[i] - k_eff[i]) % stride[i] == 0 for i, hw in enumerate((h, w)))
        extra = {} if tiles else {"rounding": "floor"}
        return self.b.add("conv", name, [x], self._comment(layer, name), where=layer.span, weights=weights,
                          filters=filters, kernel=kernel, stride=stride, padding=pad if pad[0] != pad[1] else pad[0],
                          dilation=dilation, groups=groups, bias=bias, **extra)

    def layer_Deconvolution(self, layer, name, nxt):
        return self.layer_Convolution(layer, name, nxt, transpose=True)

    def layer_Pooling(self, layer, name, nxt):
        p = layer.first("pooling_param") or Message(layer.span)
        method = p.get("pool", "MAX")
        method = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}.get(method, method)
        if method not in ("MAX", "AVE"):
            raise self.error(f"Pooling '{name}' uses pool: {method}; cnndsl has MAX and AVE", p.span_of("pool"))
        x = self._bottom(layer)
        c, h, w = self._map(x, layer, name)
        if p.get("global_pooling", False):
            readers = {self._type(r) for top in _strs(layer, "top") for r in self.consumers.get(top, [])}
            op = "global_avgpool" if method == "AVE" else "global_maxpool"
            if readers and readers <= {"InnerProduct", "Flatten", "Softmax", "SoftmaxWithLoss", "Accuracy"} \
                    and get_op(op) is not None:
                return self.b.add(op, name, [x], self._comment(layer, name, "(global)"), where=layer.span)
            return self.b.add("avgpool" if method == "AVE" else "maxpool", name, [x],
                              self._comment(layer, name, "(global: a window over the whole map)"), where=layer.span,
                              kernel=(h, w), stride=(h, w))
        kernel = _pair(p, "kernel_size", "kernel_h", "kernel_w", 0)
        stride = _pair(p, "stride", "stride_h", "stride_w", 1)
        pad = _pair(p, "pad", "pad_h", "pad_w", 0)
        if min(kernel) < 1:
            raise self.error(f"Pooling '{name}' needs kernel_size", p.span)
        # Caffe: O = ceil((W + 2P - K) / S) + 1, minus one when that window starts in the padding (P > 0)
        outs, ceiled = [], False
        for i, size in enumerate((h, w)):
            span = size + 2 * pad[i] - kernel[i]
            if span < 0:
                raise self.error(f"Pooling '{name}': its kernel {kernel[i]} is larger than the padded input "
                                 f"{size + 2 * pad[i]}", p.span_of("kernel_size"))
            o = -(-span // stride[i]) + 1
            if pad[i] and (o - 1) * stride[i] >= size + pad[i]:
                o -= 1
            outs.append(o)
            ceiled |= o != span // stride[i] + 1
        padding = pad if pad[0] != pad[1] else pad[0]
        extra = {"rounding": "ceil"} if ceiled else {}
        if ceiled:
            self.b.note(f"Caffe's pooling rounds up: '{name}' gives {outs[0]}x{outs[1]} from {h}x{w} with a "
                        f"{kernel[0]}x{kernel[1]} window, stride {stride[0]}x{stride[1]}, padding {pad[0]}x{pad[1]}; "
                        "written with rounding=ceil (a partial window at the bottom/right)",
                        layer.span, help="PyTorch's and Keras's default (floor) would give "
                        f"{(h + 2 * pad[0] - kernel[0]) // stride[0] + 1}x{(w + 2 * pad[1] - kernel[1]) // stride[1] + 1}"
                        ": a network rebuilt there needs ceil_mode=True")
        if method == "AVE" and any(pad):
            if ceiled:
                raise self.error(f"Pooling '{name}': AVE with pad > 0 counts the padding in its divisor and its "
                                 "last window runs past it, which no cnndsl layer reproduces", layer.span)
            weight = np.full((c, 1) + kernel, 1.0 / (kernel[0] * kernel[1]), np.float32)
            self.b.note(f"Caffe's AVE pooling with pad counts the padding: '{name}' is written as a depthwise conv "
                        "of constant weights 1/(KH*KW) (cnndsl's avgpool does not count padding)", layer.span)
            return self.b.add("conv", name, [x], self._comment(layer, name, "(AVE counting its padding)"),
                              where=layer.span, weights={"weight": weight}, filters=c, kernel=kernel, stride=stride,
                              padding=padding, groups=c, bias=False)
        return self.b.add("maxpool" if method == "MAX" else "avgpool", name, [x], self._comment(layer, name),
                          where=layer.span, kernel=kernel, stride=stride, padding=padding, **extra)

    def _map(self, x, layer, name):
        shape = self.b.type_of(x)
        if len(shape) != 3:
            raise self.error(f"{self._type(layer)} '{name}' reads a vector of {shape[0]}; it needs a C x H x W map",
                             layer.span)
        return shape

    def layer_InnerProduct(self, layer, name, nxt):
        p = layer.first("inner_product_param")
        units = int(p.get("num_output", 0)) if p else 0
        if units < 1:
            raise self.error(f"InnerProduct '{name}' needs num_output", layer.span)
        if p.get("transpose", False):
            raise self.error(f"InnerProduct '{name}' has transpose: true", p.span_of("transpose"))
        if int(p.get("axis", 1)) != 1:
            raise self.error(f"InnerProduct '{name}' has axis {p.get('axis')}; cnndsl's dense takes axis 1",
                             p.span_of("axis"))
        bias = bool(p.get("bias_term", True))
        x = self._bottom(layer)
        if len(self.b.type_of(x)) == 3:
            x = self.b.add("flatten", f"{name}_flatten", [x], self._comment(layer, name, "(flattens its input)"),
                           where=layer.span)
        k = self.b.type_of(x)[0]
        weights = None
        blobs = self._weights(layer, name, 2 if bias else 1, "weights" + (" and bias" if bias else ""))
        if blobs is not None:
            weights = {"weight": self._reshape(blobs[0], (units, k), layer, name, "weights")}
            if bias:
                weights["bias"] = self._reshape(blobs[1], (units,), layer, name, "bias")
        return self.b.add("dense", name, [x], self._comment(layer, name), where=layer.span, weights=weights,
                          units=units, bias=bias)

    def layer_ReLU(self, layer, name, nxt):
        p = layer.first("relu_param")
        slope = float(p.get("negative_slope", 0)) if p else 0.0
        x = self._bottom(layer)
        if slope:
            return self.b.add("leaky_relu", name, [x], self._comment(layer, name), where=layer.span, alpha=slope)
        return self.b.add("relu", name, [x], self._comment(layer, name), where=layer.span)

    def layer_ELU(self, layer, name, nxt):
        if get_op("elu") is None:
            raise self.error(f"ELU '{name}': cnndsl has no elu", layer.span)
        p = layer.first("elu_param")
        return self.b.add("elu", name, [self._bottom(layer)], self._comment(layer, name), where=layer.span,
                          alpha=float(p.get("alpha", 1.0)) if p else 1.0)

    def layer_PReLU(self, layer, name, nxt):
        if get_op("prelu") is None:
            raise self.error(f"PReLU '{name}': cnndsl has no prelu", layer.span)
        x = self._bottom(layer)
        c = self.b.type_of(x)[0]
        p = layer.first("prelu_param")
        blobs = self._weights(layer, name, 1, "slope")
        weights = None
        if blobs is not None:
            slope = blobs[0].reshape(-1)
            weights = {"slope": np.broadcast_to(slope, (c,)).astype(np.float32) if slope.size == 1
                       else self._reshape(slope, (c,), layer, name, "slope")}
        elif p is not None and p.get("channel_shared", False):
            self.b.note(f"PReLU '{name}' shares one slope across channels: cnndsl's prelu has one per channel "
                        "(they start equal)", layer.span)
        return self.b.add("prelu", name, [x], self._comment(layer, name), where=layer.span, weights=weights)

    def layer_LRN(self, layer, name, nxt):
        p = layer.first("lrn_param") or Message(layer.span)
        region = p.get("norm_region", "ACROSS_CHANNELS")
        if get_op("lrn") is None or region not in ("ACROSS_CHANNELS", 0):
            raise self.error(f"LRN '{name}' ({region}) has no cnndsl form"
                             + ("" if get_op("lrn") else ": cnndsl has no lrn"), layer.span)
        size = int(p.get("local_size", 5))
        if size % 2 == 0:
            raise self.error(f"LRN '{name}' has an even local_size ({size}); Caffe requires an odd one",
                             p.span_of("local_size"))
        return self.b.add("lrn", name, [self._bottom(layer)], self._comment(layer, name), where=layer.span, size=size,
                          alpha=float(p.get("alpha", 1.0)), beta=float(p.get("beta", 0.75)), k=float(p.get("k", 1.0)))

    def layer_Sigmoid(self, layer, name, nxt):
        return self.b.add("sigmoid", name, [self._bottom(layer)], self._comment(layer, name), where=layer.span)

    def layer_TanH(self, layer, name, nxt):
        return self.b.add("tanh", name, [self._bottom(layer)], self._comment(layer, name), where=layer.span)

    def layer_Softmax(self, layer, name, nxt):
        p = layer.first("softmax_param")
        if p is not None and int(p.get("axis", 1)) != 1:
            raise self.error(f"Softmax '{name}' has axis {p.get('axis')}; cnndsl's softmax is over the channels",
                             p.span_of("axis"))
        return self.b.add("softmax", name, [self._bottom(layer)], self._comment(layer, name), where=layer.span)

    def layer_Dropout(self, layer, name, nxt):
        p = layer.first("dropout_param")
        ratio = float(p.get("dropout_ratio", 0.5)) if p else 0.5
        return self.b.add("dropout", name, [self._bottom(layer)], self._comment(layer, name), where=layer.span,
                          p=ratio)

    def layer_Flatten(self, layer, name, nxt):
        x = self._bottom(layer)
        if len(self.b.type_of(x)) == 1:
            return x
        return self.b.add("flatten", name, [x], self._comment(layer, name), where=layer.span)

    def layer_Split(self, layer, name, nxt):
        return self._bottom(layer)

    def layer_Concat(self, layer, name, nxt):
        p = layer.first("concat_param")
        axis = int(p.get("axis", p.get("concat_dim", 1))) if p else 1
        if axis != 1:
            raise self.error(f"Concat '{name}' joins along axis {axis}; cnndsl concatenates channels", layer.span)
        ins = [self._bottom(layer, k) for k in range(len(_strs(layer, "bottom")))]
        return self.b.add("concat", name, ins, self._comment(layer, name), where=layer.span)

    def layer_Eltwise(self, layer, name, nxt):
        p = layer.first("eltwise_param")
        op = p.get("operation", "SUM") if p else "SUM"
        op = {0: "PROD", 1: "SUM", 2: "MAX"}.get(op, op)
        coeffs = [float(c) for c in p.values("coeff")] if p else []
        ins = [self._bottom(layer, k) for k in range(len(_strs(layer, "bottom")))]
        if op == "SUM" and all(c == 1.0 for c in coeffs):
            return self.b.add("add", name, ins, self._comment(layer, name), where=layer.span)
        if op == "PROD" and get_op("multiply") is not None:
            return self.b.add("multiply", name, ins, self._comment(layer, name), where=layer.span)
        raise self.error(f"Eltwise '{name}' is {op}" + (f" with coefficients {coeffs}" if coeffs else "")
                         + "; cnndsl has SUM (add)" + (" and PROD (multiply)" if get_op("multiply") else ""),
                         layer.span)

    def layer_BatchNorm(self, layer, name, nxt):
        p = layer.first("batch_norm_param")
        eps = float(p.get("eps", 1e-5)) if p else 1e-5
        frac = float(p.get("moving_average_fraction", 0.999)) if p else 0.999
        x = self._bottom(layer)
        c = self.b.type_of(x)[0]
        blobs = self._weights(layer, name, 3, "mean, variance and scale factor")
        scale_layer = None
        if nxt is not None and self._type(nxt) == "Scale" and _strs(nxt, "bottom")[:1] == _strs(layer, "top")[:1]:
            scale_layer = nxt
        weights = None
        if blobs is not None:
            factor = float(blobs[2].reshape(-1)[0]) if blobs[2].size else 1.0
            factor = 0.0 if factor == 0 else 1.0 / factor
            weights = {"running_mean": self._reshape(blobs[0], (c,), layer, name, "mean") * factor,
                       "running_var": self._reshape(blobs[1], (c,), layer, name, "variance") * factor,
                       "gamma": np.ones(c, np.float32), "beta": np.zeros(c, np.float32)}
        comment = self._comment(layer, name)
        if scale_layer is not None:
            sname = scale_layer.get("name")
            sp = scale_layer.first("scale_param")
            sbias = bool(sp.get("bias_term", False)) if sp else False
            sblobs = self._weights(scale_layer, sname, 2 if sbias else 1, "scale" + (" and bias" if sbias else ""))
            if weights is not None:
                weights["gamma"] = self._reshape(sblobs[0], (c,), scale_layer, sname, "scale")
                if sbias:
                    weights["beta"] = self._reshape(sblobs[1], (c,), scale_layer, sname, "bias")
            comment += f" + Scale '{sname}' (line {scale_layer.span.line})"
        out = self.b.add("batchnorm", name, [x], comment, where=layer.span, weights=weights, eps=eps,
                         momentum=round(1.0 - frac, 6))
        return out, scale_layer is not None

    def layer_Scale(self, layer, name, nxt):
        p = layer.first("scale_param")
        bias = bool(p.get("bias_term", False)) if p else False
        x = self._bottom(layer)
        if len(_strs(layer, "bottom")) > 1:
            raise self.error(f"Scale '{name}' multiplies by a second input; cnndsl has constant scales only",
                             layer.span)
        c = self.b.type_of(x)[0]
        blobs = self._weights(layer, name, 2 if bias else 1, "scale" + (" and bias" if bias else ""))
        weights = None
        if blobs is not None:
            s = self._reshape(blobs[0], (c,), layer, name, "scale")
            weights = {"weight": s.reshape(c, 1, 1, 1) if len(self.b.type_of(x)) == 3 else np.diag(s)}
            if bias:
                weights["bias"] = self._reshape(blobs[1], (c,), layer, name, "bias")
        if len(self.b.type_of(x)) == 3:
            return self.b.add("conv", name, [x], self._comment(layer, name, "(per-channel scale: a depthwise 1x1 conv)"),
                              where=layer.span, weights=weights, filters=c, kernel=1, groups=c, bias=bias)
        return self.b.add("dense", name, [x], self._comment(layer, name, "(per-feature scale: a diagonal dense)"),
                          where=layer.span, weights=weights, units=c, bias=bias)


def _strs(layer: Message, key: str) -> list[str]:
    """A layer's bottoms or tops as names (a hostile file may write numbers)."""
    return [str(v) for v in layer.values(key)]


def _safe(name: str) -> str:
    from cnndsl.interop.cnn_writer import sanitize

    return sanitize(name, "output")
