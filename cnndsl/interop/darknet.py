"""Import a Darknet model: the `.cfg` (INI-like sections) and optionally its `.weights`.

    [net] width, height, channels            the input (channels x height x width)
    [convolutional] filters size stride pad padding groups batch_normalize activation
    [connected] output batch_normalize activation
    [maxpool] size stride padding             (padding defaults to size - 1: size 2 stride 1 keeps the size)
    [avgpool]                                 global average pooling
    [route] layers=-1,8                       concat of earlier layers (one: a reference)
    [shortcut] from=-3 activation             add of the previous layer and another
    [upsample] stride                          nearest
    [dropout] probability    [softmax]
    [yolo] mask anchors classes num           the head: see below
    [cost]                                     the training loss: left out

`.weights`: a header (major, minor, revision as int32; `seen` as int64 from version 0.2, int32
before), then per [convolutional] layer: biases, and with batch_normalize the scales, rolling
means and rolling variances, then the weights (filters x channels/groups x size x size); per
[connected] layer: biases, weights (outputs x inputs), then with batch_normalize scales, means,
variances. All float32, in layer order. Batchnorm is Darknet's (x - mean) / sqrt(var + 1e-6)
(AlexeyAB's form: eps 1e-6); `leaky` is slope 0.1.

A [yolo] layer makes the layer before it a head, `classes` and `boxes` (its mask count) header
parameters and that conv's filters `(classes + 5) * boxes`; its filters are checked against them
(Darknet's most reported configuration error). What cnndsl does not express is said in the file:
the anchors and the box decoding (sigmoid offsets, anchor * exp(size)), the per-class logistic,
ignore_thresh and the other loss options. The head's numbers are Darknet's (same channel layout).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnndsl.diagnostics import CnnError, Diagnostic, Span, file_error
from cnndsl.interop.cnn_writer import NetBuilder
from cnndsl.ops.registry import get_op

ACTIVATIONS = {"linear": None, "leaky": ("leaky_relu", {"alpha": 0.1}), "relu": ("relu", {}),
               "logistic": ("sigmoid", {}), "tanh": ("tanh", {})}
OPTIONAL_ACTIVATIONS = {"relu6": "relu6", "mish": "mish", "swish": "silu", "elu": "elu", "selu": "selu",
                        "gelu": "gelu", "hardtan": None}
DARKNET_BN_EPS = 1e-6


@dataclass
class Section:
    kind: str
    span: Span
    options: dict[str, tuple[str, Span]] = field(default_factory=dict)

    def get(self, key, default=None):
        return self.options[key][0] if key in self.options else default

    def span_of(self, key) -> Span:
        return self.options[key][1] if key in self.options else self.span


def parse_cfg(text: str, path: str) -> list[Section]:
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[\s*([A-Za-z_0-9]+)\s*\]", line)
            if m is None:
                raise CnnError([Diagnostic("error", f"a malformed section header {line!r}", Span(path, lineno, 1),
                                           ["expected: [name], e.g. [convolutional]", f"found: {line}"],
                                           code="darknet-syntax")])
            sections.append(Section(m.group(1).lower(), Span(path, lineno, 1)))
            continue
        if "=" not in line:
            raise CnnError([Diagnostic("error", f"a line that is neither [section] nor key=value: {line!r}",
                                       Span(path, lineno, 1), ["expected: key=value", f"found: {line}"],
                                       code="darknet-syntax")])
        if not sections:
            raise CnnError([Diagnostic("error", "an option before the first [section]", Span(path, lineno, 1),
                                       ["expected: [net] first"], code="darknet-syntax")])
        key, value = (s.strip() for s in line.split("=", 1))
        col = raw.find(key) + 1
        sections[-1].options[key] = (value, Span(path, lineno, max(col, 1)))
    return sections


def import_darknet(path, weights_path=None) -> NetBuilder:
    from cnndsl.io.files import read_text

    text = read_text(path, "Darknet cfg", "a .cfg file of [sections] and key=value lines",
                     "binary data (a .weights file? give it with --weights)")
    sections = parse_cfg(text, str(path))
    if not sections or sections[0].kind not in ("net", "network"):
        raise file_error(path, "this is not a Darknet cfg", expected="a first section [net] with width, height, channels",
                         found=f"[{sections[0].kind}]" if sections else "no sections")
    return _Darknet(str(path), sections, weights_path).run()


class _Weights:
    """The .weights file, read in layer order; every short read names the layer and the numbers."""

    def __init__(self, path):
        from cnndsl.io.files import read_regular

        self.path = str(path)
        self.raw = read_regular(path, "Darknet weights")
        if len(self.raw) < 12:
            raise file_error(path, "this Darknet .weights file is too short for its header",
                             expected="12 to 20 bytes of header (major, minor, revision, seen)",
                             found=f"{len(self.raw)} bytes")
        major, minor, revision = np.frombuffer(self.raw[:12], "<i4")
        self.version = (int(major), int(minor), int(revision))
        if major > 1000 or minor > 1000 or major < 0 or minor < 0:
            raise file_error(path, "this Darknet .weights header is not one cnndsl reads",
                             expected="a version major.minor.revision below 1000 (not transposed)",
                             found=f"{major}.{minor}.{revision}")
        self.pos = 20 if major * 10 + minor >= 2 else 16
        if len(self.raw) < self.pos:
            raise file_error(path, "this Darknet .weights file ends inside its header",
                             expected=f"{self.pos} bytes of header", found=f"{len(self.raw)} bytes")
        self.start = self.pos

    def take(self, n: int, what: str) -> np.ndarray:
        end = self.pos + 4 * n
        if end > len(self.raw):
            have = (len(self.raw) - self.pos) // 4
            raise file_error(self.path, f"the weights end inside {what}",
                             expected=f"{n:,} float32 values from byte {self.pos:,}",
                             found=f"{have:,} values left (the file has {len(self.raw):,} bytes)",
                             help="the .weights file belongs to another cfg, or is truncated")
        out = np.frombuffer(self.raw[self.pos:end], "<f4").astype(np.float32)
        self.pos = end
        return out

    def finish(self) -> None:
        left = len(self.raw) - self.pos
        if left:
            raise file_error(self.path, f"{left:,} bytes of the weights are left over after the last layer",
                             expected=f"{self.pos:,} bytes for this cfg's layers",
                             found=f"{len(self.raw):,} bytes", help="the .weights file belongs to another cfg")


def _int(sec: Section, key: str, default=None) -> int:
    v = sec.get(key)
    if v is None:
        if default is None:
            raise CnnError([Diagnostic("error", f"[{sec.kind}] needs {key}=", sec.span, code="darknet-option")])
        return default
    try:
        return int(float(v)) if float(v) == int(float(v)) else _bad(sec, key, "a whole number")
    except (ValueError, OverflowError):  # OverflowError: inf, 1e400 ([net] width=inf was an internal error)
        return _bad(sec, key, "a whole number")


def _positive(sec: Section, key: str, default=None) -> int:
    v = _int(sec, key, default)
    if v < 1:
        return _bad(sec, key, "a whole number of at least 1")
    return v


def _float(sec: Section, key: str, default: float) -> float:
    v = sec.get(key)
    if v is None:
        return default
    try:
        return float(v)
    except ValueError:
        return _bad(sec, key, "a number")


def _bad(sec, key, expected):
    raise CnnError([Diagnostic("error", f"[{sec.kind}] {key}={sec.get(key)} is not {expected}", sec.span_of(key),
                               [f"expected: {expected}", f"found: {sec.get(key)}"], code="darknet-option")])


class _Darknet:
    def __init__(self, path, sections, weights_path):
        self.path, self.sections, self.weights_path = path, sections, weights_path
        self.b = NetBuilder(path, "Darknet", name=Path(path).stem)
        self.w = _Weights(weights_path) if weights_path else None
        self.b.source_weights = self.w is not None
        self.outputs: list[str] = []  # cnndsl layer of each Darknet layer (index = Darknet layer number)
        self.dropped: list[str] = []
        self.yolo: list[tuple[int, Section]] = []

    def error(self, message, span, help=None, details=()):
        return CnnError([Diagnostic("error", message, span, list(details), help, code="import-darknet")])

    def run(self) -> NetBuilder:
        net = self.sections[0]
        shape = (_int(net, "channels", 3), _int(net, "height"), _int(net, "width"))
        x = self.b.add_input("image", shape, f"Darknet [net] (line {net.span.line})")
        prev = x
        for i, sec in enumerate(self.sections[1:]):
            handler = getattr(self, "sec_" + sec.kind, None)
            if handler is None:
                kinds = sorted(k[4:] for k in dir(self) if k.startswith("sec_"))
                raise self.error(f"Darknet layer {i} is [{sec.kind}], which cnndsl cannot import", sec.span,
                                 help="cnndsl imports [" + "], [".join(kinds) + "]")
            try:
                prev = handler(i, sec, prev)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
                raise self.error(f"Darknet layer {i} [{sec.kind}] has an option of the wrong kind or a missing one "
                                 f"({type(e).__name__}: {e})", sec.span) from None
            self.outputs.append(prev)
        if self.w is not None:
            self.w.finish()
        if self.yolo:
            for i, _ in self.yolo:
                self.b.head(f"yolo{i}", self.outputs[i - 1])
        else:
            self.b.head(prev, prev)
        if self.yolo:
            self._yolo_parameters()
        else:
            from cnndsl.interop.onnx_import import _classes_parameter

            _classes_parameter(self.b)
        if self.dropped:
            self.b.header.append("left out: " + "; ".join(self.dropped))
        if self.w is not None:
            self.b.header.append(f"weights file version {'.'.join(map(str, self.w.version))}")
        return self.b

    def _name(self, i, sec):
        return {"convolutional": "conv", "connected": "fc"}.get(sec.kind, sec.kind) + str(i)

    def _comment(self, i, sec, extra=""):
        return f"Darknet layer {i} [{sec.kind}] (line {sec.span.line})" + (f" {extra}" if extra else "")

    def _activation(self, i, sec, x):
        act = sec.get("activation", "linear")
        if act in ACTIVATIONS:
            spec = ACTIVATIONS[act]
        elif OPTIONAL_ACTIVATIONS.get(act) and get_op(OPTIONAL_ACTIVATIONS[act]) is not None:
            spec = (OPTIONAL_ACTIVATIONS[act], {})
        else:
            raise self.error(f"Darknet activation={act} has no cnndsl activation", sec.span_of("activation"),
                             help="cnndsl reads " + ", ".join(ACTIVATIONS))
        if spec is None:
            return x
        return self.b.add(spec[0], f"{x}_{act}", [x], self._comment(i, sec, f"activation={act}"),
                          where=sec.span_of("activation"), **spec[1])

    def _bn_weights(self, n, what):
        scales = self.w.take(n, f"the batchnorm scales of {what}")
        mean = self.w.take(n, f"the rolling means of {what}")
        var = self.w.take(n, f"the rolling variances of {what}")
        return scales, mean, var

    def sec_convolutional(self, i, sec, prev):
        c, h, w = self._map(i, sec, prev)
        filters, size = _positive(sec, "filters", 1), _positive(sec, "size", 1)
        stride = _positive(sec, "stride", 1)
        pad = _int(sec, "padding", 0)
        if _int(sec, "pad", 0):
            pad = size // 2
        groups = _positive(sec, "groups", 1)
        dilation = _positive(sec, "dilation", 1)
        bn = bool(_int(sec, "batch_normalize", 0))
        name = self._name(i, sec)
        what = f"layer {i} [convolutional] (line {sec.span.line})"
        weights = bnw = None
        if self.w is not None:
            biases = self.w.take(filters, f"the biases of {what}")
            if bn:
                scales, mean, var = self._bn_weights(filters, what)
                bnw = {"gamma": scales, "beta": biases, "running_mean": mean, "running_var": var}
            kernel = self.w.take(filters * (c // max(groups, 1)) * size * size, f"the weights of {what}")
            weights = {"weight": kernel.reshape(filters, c // groups, size, size)}
            if not bn:
                weights["bias"] = biases
        k_eff = dilation * (size - 1) + 1
        tiles = all((d + 2 * pad - k_eff) % stride == 0 for d in (h, w))
        extra = {} if tiles else {"rounding": "floor"}
        y = self.b.add("conv", name, [prev], self._comment(i, sec), where=sec.span, weights=weights, filters=filters,
                       kernel=size, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=not bn, **extra)
        if bn:
            y = self.b.add("batchnorm", f"{name}_bn", [y], self._comment(i, sec, "batch_normalize=1"),
                           where=sec.span_of("batch_normalize"), weights=bnw, eps=DARKNET_BN_EPS)
        return self._activation(i, sec, y)

    def sec_connected(self, i, sec, prev):
        units = _positive(sec, "output", 1)
        bn = bool(_int(sec, "batch_normalize", 0))
        name = self._name(i, sec)
        if len(self.b.type_of(prev)) == 3:
            prev = self.b.add("flatten", f"{name}_flatten", [prev], self._comment(i, sec, "(flattens its input)"),
                              where=sec.span)
        k = self.b.type_of(prev)[0]
        weights = bnw = None
        what = f"layer {i} [connected] (line {sec.span.line})"
        if self.w is not None:
            biases = self.w.take(units, f"the biases of {what}")
            weights = {"weight": self.w.take(units * k, f"the weights of {what}").reshape(units, k)}
            if bn:
                scales, mean, var = self._bn_weights(units, what)
                bnw = {"gamma": scales, "beta": biases, "running_mean": mean, "running_var": var}
            else:
                weights["bias"] = biases
        y = self.b.add("dense", name, [prev], self._comment(i, sec), where=sec.span, weights=weights, units=units,
                       bias=not bn)
        if bn:
            y = self.b.add("batchnorm", f"{name}_bn", [y], self._comment(i, sec, "batch_normalize=1"),
                           where=sec.span_of("batch_normalize"), weights=bnw, eps=DARKNET_BN_EPS)
        return self._activation(i, sec, y)

    def _map(self, i, sec, prev):
        shape = self.b.type_of(prev)
        if len(shape) != 3:
            raise self.error(f"[{sec.kind}] (layer {i}) reads a vector of {shape[0]}; it needs a C x H x W map",
                             sec.span)
        return shape

    def sec_maxpool(self, i, sec, prev):
        c, h, w = self._map(i, sec, prev)
        size = _positive(sec, "size", 1)
        stride = _positive(sec, "stride", size)
        padding = _int(sec, "padding", size - 1)  # total; Darknet puts padding // 2 before
        before = padding // 2
        outs = [(d + padding - size) // stride + 1 for d in (h, w)]
        same_outs = [-(-d // stride) for d in (h, w)]
        same_before = [max((o - 1) * stride + size - d, 0) // 2 for o, d in zip(same_outs, (h, w))]
        name = self._name(i, sec)
        comment = self._comment(i, sec, f"size={size} stride={stride}")
        if outs == same_outs and all(b_ == before for b_ in same_before):
            pad, rounding = ("same", None) if padding else (0, None)
            if padding and all((d - size) % stride == 0 and (d - size) // stride + 1 == o for d, o in zip((h, w), outs)):
                pad = 0  # `same` needs no padding here: plain windows
        else:
            pad = before
            rounding = None
            for d, o in zip((h, w), outs):
                span = d + 2 * before - size
                if span < 0 or o not in (span // stride + 1, -(-span // stride) + 1):
                    raise self.error(f"[maxpool] (layer {i}) with size={size} stride={stride} padding={padding} has "
                                     "windows no cnndsl padding reproduces", sec.span)
                if span % stride:
                    rounding = "floor" if o == span // stride + 1 else "ceil"
        extra = {"rounding": rounding} if rounding else {}
        return self.b.add("maxpool", name, [prev], comment, where=sec.span, kernel=size, stride=stride, padding=pad,
                          **extra)

    def sec_avgpool(self, i, sec, prev):
        c, h, w = self._map(i, sec, prev)
        name = self._name(i, sec)
        return self.b.add("global_avgpool", name, [prev], self._comment(i, sec, "(global average)"), where=sec.span)

    def _layer_ref(self, i, sec, key, text):
        try:
            k = int(text.strip())
        except ValueError:
            raise self.error(f"[{sec.kind}] {key}={sec.get(key)}: '{text}' is not a layer number", sec.span_of(key)) \
                from None
        j = i + k if k < 0 else k
        if not 0 <= j < i:
            raise self.error(f"[{sec.kind}] (layer {i}) {key}={sec.get(key)} refers to layer {j}, which is not an "
                             f"earlier layer (0 to {i - 1})", sec.span_of(key))
        return self.outputs[j]

    def sec_route(self, i, sec, prev):
        if sec.get("groups") and _int(sec, "groups", 1) != 1:
            raise self.error("[route] with groups (a channel split) has no cnndsl form", sec.span_of("groups"))
        refs = [self._layer_ref(i, sec, "layers", t) for t in (sec.get("layers") or "").split(",") if t.strip()]
        if not refs:
            raise self.error("[route] needs layers=", sec.span)
        if len(refs) == 1:
            return refs[0]
        shapes = [self.b.type_of(r) for r in refs]
        if len({s[1:] for s in shapes}) != 1:
            raise self.error(f"[route] (layer {i}) joins maps of different sizes: "
                             + ", ".join(f"{r} {'x'.join(map(str, s))}" for r, s in zip(refs, shapes)),
                             sec.span_of("layers"))
        return self.b.add("concat", f"route{i}", refs, self._comment(i, sec, f"layers={sec.get('layers')}"),
                          where=sec.span)

    def sec_shortcut(self, i, sec, prev):
        other = self._layer_ref(i, sec, "from", sec.get("from", ""))
        if self.b.type_of(other) != self.b.type_of(prev):
            raise self.error(f"[shortcut] (layer {i}) adds {'x'.join(map(str, self.b.type_of(other)))} to "
                             f"{'x'.join(map(str, self.b.type_of(prev)))}; cnndsl adds tensors of one shape",
                             sec.span_of("from"))
        if _float(sec, "alpha", 1.0) != 1.0 or _float(sec, "beta", 1.0) != 1.0:
            raise self.error("[shortcut] with alpha/beta weights has no cnndsl form", sec.span)
        y = self.b.add("add", f"shortcut{i}", [other, prev], self._comment(i, sec, f"from={sec.get('from')}"),
                       where=sec.span)
        return self._activation(i, sec, y)

    def sec_upsample(self, i, sec, prev):
        self._map(i, sec, prev)
        if _float(sec, "scale", 1.0) != 1.0:
            raise self.error("[upsample] with scale= (a multiplier) has no cnndsl form", sec.span_of("scale"))
        stride = _int(sec, "stride", 2)
        if stride < 1:
            raise self.error("[upsample] with a negative stride (a downsample) has no cnndsl form", sec.span_of("stride"))
        return self.b.add("upsample", f"upsample{i}", [prev], self._comment(i, sec), where=sec.span, scale=stride)

    def sec_dropout(self, i, sec, prev):
        return self.b.add("dropout", f"dropout{i}", [prev], self._comment(i, sec), where=sec.span,
                          p=_float(sec, "probability", 0.5))

    def sec_softmax(self, i, sec, prev):
        if _int(sec, "groups", 1) != 1:
            raise self.error("[softmax] with groups has no cnndsl form", sec.span_of("groups"))
        return self.b.add("softmax", f"softmax{i}", [prev], self._comment(i, sec), where=sec.span)

    def sec_cost(self, i, sec, prev):
        self.dropped.append(f"[cost] layer {i} (the training loss)")
        return prev

    def sec_yolo(self, i, sec, prev):
        if i == 0:
            raise self.error("[yolo] needs a layer before it", sec.span)
        classes = _int(sec, "classes", 20)
        mask = [t for t in (sec.get("mask") or "").split(",") if t.strip()]
        boxes = len(mask) or _int(sec, "num", 1)
        conv = self.b.graph.node(prev)
        # the grid is the conv before the (linear) [yolo]
        node = conv
        while node.op not in ("conv",) and self.b.graph.inputs_of(node.name):
            node = self.b.graph.node(self.b.graph.inputs_of(node.name)[0])
        want = (classes + 5) * boxes
        if self.b.type_of(prev)[0] != want:
            conv_sec = self.sections[i]  # the section before this one (sections[0] is [net])
            raise self.error(f"the [convolutional] before [yolo] (layer {i}) has filters={self.b.type_of(prev)[0]}, "
                             f"but [yolo] needs (classes + 5) * masks = ({classes} + 5) * {boxes} = {want}",
                             conv_sec.span_of("filters"), help=f"filters={want}",
                             details=[f"[yolo] at line {sec.span.line}: classes={classes}, mask={sec.get('mask')}"])
        self.yolo.append((i, sec))
        anchors = sec.get("anchors", "")
        self.b.comments[prev] = self.b.comments.get(prev, "") + (
            f"; the grid of Darknet layer {i} [yolo] (line {sec.span.line}): mask={sec.get('mask')}, "
            f"anchors={anchors.replace(' ', '')}")
        return prev

    def _yolo_parameters(self):
        classes = {_int(s, "classes", 20) for _, s in self.yolo}
        boxes = {len([t for t in (s.get("mask") or "").split(",") if t.strip()]) or _int(s, "num", 1)
                 for _, s in self.yolo}
        if len(classes) == 1:
            self.b.params["classes"] = classes.pop()
        if len(boxes) == 1:
            self.b.params["boxes"] = boxes.pop()
        for i, _ in self.yolo:
            layer = self.outputs[i - 1]
            node = self.b.graph.node(layer)
            if node.op == "conv" and "classes" in self.b.params and "boxes" in self.b.params:
                self.b.uses[(layer, "filters")] = "(classes + 5) * boxes"
        self.b.header.append(
            "[yolo] heads are the grids of the convolutions before them (Darknet's channel layout: per box x, y, "
            "w, h, objectness, class scores). Not expressed in the .cnn: the anchors and the box decoding (sigmoid "
            "offsets, anchor * exp(w, h)), the per-class logistic, ignore_thresh and the other loss options; "
            "cnndsl's `yolo` loss decodes sqrt sizes with a softmax over classes (docs/tasks.md)")
