"""A NumPy evaluation of a Caffe net, written from Caffe's layer semantics (its C++ loops), not from
cnndsl's kernels: the oracle of the Caffe import tests. Also writes .caffemodel files with random
weights (the blob layout Caffe uses) through the importer's protobuf messages.

Caffe's rules kept: convolution output floor((H + 2P - K_eff)/S) + 1; pooling output
ceil((H + 2P - K)/S) + 1, minus one when that window starts in the padding (P > 0); AVE divides by
the window clipped to [-P, H + P) (padding counted, the ceil overhang not); MAX starts at -FLT_MAX;
InnerProduct flattens; BatchNorm divides its blobs by the scale factor blob."""
from __future__ import annotations

import math

import numpy as np

from cnndsl.interop.prototxt import parse

V1 = {"CONVOLUTION": "Convolution", "POOLING": "Pooling", "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU",
      "SOFTMAX": "Softmax", "DROPOUT": "Dropout", "CONCAT": "Concat", "ELTWISE": "Eltwise"}


def _pair(p, name, hn, wn, default):
    if p is not None and (p.first(hn) is not None or p.first(wn) is not None):
        return int(p.get(hn, default)), int(p.get(wn, default))
    v = [int(x) for x in p.values(name)] if p is not None else []
    return (default, default) if not v else ((v[0], v[0]) if len(v) == 1 else (v[0], v[1]))


def conv(x, w, b, stride, pad, dil, groups):
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    out = np.zeros((n, f, oh, ow), np.float64)
    fg = f // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i * dil[0]: i * dil[0] + stride[0] * (oh - 1) + 1: stride[0],
                           j * dil[1]: j * dil[1] + stride[1] * (ow - 1) + 1: stride[1]]
                out[:, g * fg:(g + 1) * fg] += np.einsum("nchw,fc->nfhw", patch, w[g * fg:(g + 1) * fg, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def deconv(x, w, b, stride, pad, groups):
    n, c, h, wd = x.shape
    _, fg, kh, kw = w.shape
    full = np.zeros((n, fg * groups, (h - 1) * stride[0] + kh, (wd - 1) * stride[1] + kw))
    cg = c // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                full[:, g * fg:(g + 1) * fg, i: i + stride[0] * (h - 1) + 1: stride[0],
                     j: j + stride[1] * (wd - 1) + 1: stride[1]] += np.einsum(
                    "nchw,cf->nfhw", x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg, :, i, j])
    out = full[:, :, pad[0]: full.shape[2] - pad[0], pad[1]: full.shape[3] - pad[1]]
    return out + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def pool(x, method, kernel, stride, pad):
    n, c, h, w = x.shape
    oh = int(math.ceil((h + 2 * pad[0] - kernel[0]) / stride[0])) + 1
    ow = int(math.ceil((w + 2 * pad[1] - kernel[1]) / stride[1])) + 1
    if pad[0] or pad[1]:
        if (oh - 1) * stride[0] >= h + pad[0]:
            oh -= 1
        if (ow - 1) * stride[1] >= w + pad[1]:
            ow -= 1
    out = np.zeros((n, c, oh, ow))
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            out[:, :, ph, pw] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / size
    return out


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _layers(prototxt):
    net = parse(prototxt, "oracle.prototxt")
    layers = [la for la in (net.all("layer") or net.all("layers"))
              if not any(inc.get("phase") == "TRAIN" for inc in la.all("include"))]
    return net, layers


def evaluate(prototxt: str, blobs: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every top of the net for the input x (float64)."""
    net, layers = _layers(prototxt)
    t = {}
    inputs = net.values("input")
    if inputs:
        t[inputs[0]] = x.astype(np.float64)
    for layer in layers:
        step(layer, t, blobs, x)
    return t


def step(layer, t, blobs, x):
    if True:
        kind = layer.get("type")
        kind = V1.get(kind, kind)
        name, bottoms, tops = layer.get("name"), layer.values("bottom"), layer.values("top")
        xs = [t[b_] for b_ in bottoms if b_ in t]
        bl = blobs.get(name, [])
        if kind == "Input":
            t[tops[0]] = x.astype(np.float64)
            return
        if kind in ("Data", "Accuracy", "SoftmaxWithLoss"):
            return
        if kind in ("Convolution", "Deconvolution"):
            p = layer.first("convolution_param")
            k = _pair(p, "kernel_size", "kernel_h", "kernel_w", 0)
            s = _pair(p, "stride", "stride_h", "stride_w", 1)
            pd = _pair(p, "pad", "pad_h", "pad_w", 0)
            d = _pair(p, "dilation", "x", "y", 1)
            g = int(p.get("group", 1))
            bias = bl[1] if bool(p.get("bias_term", True)) else None
            y = conv(xs[0], bl[0], bias, s, pd, d, g) if kind == "Convolution" else deconv(xs[0], bl[0], bias, s, pd, g)
        elif kind == "Pooling":
            p = layer.first("pooling_param")
            method = p.get("pool", "MAX")
            if p.get("global_pooling", False):
                k, s, pd = xs[0].shape[2:], (1, 1), (0, 0)
            else:
                k = _pair(p, "kernel_size", "kernel_h", "kernel_w", 0)
                s = _pair(p, "stride", "stride_h", "stride_w", 1)
                pd = _pair(p, "pad", "pad_h", "pad_w", 0)
            y = pool(xs[0], method, k, s, pd)
        elif kind == "InnerProduct":
            p = layer.first("inner_product_param")
            flat = xs[0].reshape(len(xs[0]), -1)
            y = flat @ bl[0].T.astype(np.float64)
            if bool(p.get("bias_term", True)):
                y = y + bl[1]
        elif kind == "ReLU":
            p = layer.first("relu_param")
            slope = float(p.get("negative_slope", 0)) if p else 0.0
            y = np.where(xs[0] > 0, xs[0], slope * xs[0])
        elif kind == "Sigmoid":
            y = 1 / (1 + np.exp(-xs[0]))
        elif kind == "TanH":
            y = np.tanh(xs[0])
        elif kind == "Softmax":
            y = softmax(xs[0])
        elif kind in ("Dropout", "Split"):
            y = xs[0]
        elif kind == "Flatten":
            y = xs[0].reshape(len(xs[0]), -1)
        elif kind == "Concat":
            y = np.concatenate(xs, axis=1)
        elif kind == "Eltwise":
            y = sum(xs)
        elif kind == "BatchNorm":
            p = layer.first("batch_norm_param")
            eps = float(p.get("eps", 1e-5)) if p else 1e-5
            f = 0.0 if bl[2].reshape(-1)[0] == 0 else 1.0 / bl[2].reshape(-1)[0]
            shape = (1, -1) + (1,) * (xs[0].ndim - 2)
            y = (xs[0] - (bl[0] * f).reshape(shape)) / np.sqrt((bl[1] * f).reshape(shape) + eps)
        elif kind == "Scale":
            p = layer.first("scale_param")
            shape = (1, -1) + (1,) * (xs[0].ndim - 2)
            y = xs[0] * bl[0].reshape(shape)
            if p is not None and p.get("bias_term", False):
                y = y + bl[1].reshape(shape)
        else:
            raise NotImplementedError(kind)
        for top in tops:
            t[top] = y


def random_blobs(prototxt: str, input_shape, seed=0) -> dict[str, list[np.ndarray]]:
    """Weights of Caffe's layouts for every layer with blobs, found by running shapes through."""
    rng = np.random.default_rng(seed)
    net, layers = _layers(prototxt)
    x = np.random.default_rng(seed).standard_normal((1,) + tuple(input_shape))
    blobs, shapes = {}, {}
    inputs = net.values("input")
    if inputs:
        shapes[inputs[0]] = x
    for layer in layers:
        kind = V1.get(layer.get("type"), layer.get("type"))
        name = layer.get("name")
        bottoms = [b for b in layer.values("bottom") if b in shapes]
        c = shapes[bottoms[0]].shape[1] if bottoms else None
        if kind in ("Convolution", "Deconvolution"):
            p = layer.first("convolution_param")
            f, g = int(p.get("num_output")), int(p.get("group", 1))
            k = _pair(p, "kernel_size", "kernel_h", "kernel_w", 0)
            shape = ((f, c // g) if kind == "Convolution" else (c, f // g)) + k
            w = rng.normal(0, 1 / math.sqrt(c * k[0] * k[1] / g), shape)
            blobs[name] = [w.astype(np.float32)] + ([rng.normal(0, 0.2, f).astype(np.float32)]
                                                     if p.get("bias_term", True) else [])
        elif kind == "InnerProduct":
            p = layer.first("inner_product_param")
            k = int(np.prod(shapes[bottoms[0]].shape[1:]))
            u = int(p.get("num_output"))
            blobs[name] = [rng.normal(0, 1 / math.sqrt(k), (u, k)).astype(np.float32)] + (
                [rng.normal(0, 0.2, u).astype(np.float32)] if p.get("bias_term", True) else [])
        elif kind == "BatchNorm":
            factor = np.float32(rng.uniform(0.5, 2.0))
            blobs[name] = [(rng.normal(0, 0.3, c) * factor).astype(np.float32),
                           (rng.uniform(0.5, 1.5, c) * factor).astype(np.float32), np.array([factor], np.float32)]
        elif kind == "Scale":
            p = layer.first("scale_param")
            blobs[name] = [rng.normal(1, 0.3, c).astype(np.float32)] + (
                [rng.normal(0, 0.3, c).astype(np.float32)] if p is not None and p.get("bias_term", False) else [])
        step(layer, shapes, blobs, x)
    return blobs


def write_caffemodel(path, blobs: dict, legacy_shapes: bool = False) -> None:
    """A .caffemodel (binary NetParameter) with these blobs; legacy_shapes writes num/channels/height/width."""
    from cnndsl.interop.caffe_proto import messages

    Net, _ = messages()
    net = Net(name="written-by-the-tests")
    for name, arrays in blobs.items():
        layer = net.layer.add(name=name, type="")
        for a in arrays:
            blob = layer.blobs.add()
            if legacy_shapes:
                dims = (1,) * (4 - a.ndim) + a.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(a.shape)
            blob.data.extend(a.reshape(-1).tolist())
    with open(path, "wb") as f:
        f.write(net.SerializeToString())
