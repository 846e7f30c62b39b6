"""A NumPy evaluation of a Darknet cfg, written from Darknet's layer code (not from cnndsl's
kernels), and a writer of .weights files in Darknet's order: the oracle of the Darknet tests.

Kept from Darknet: conv output (W + 2*pad - size)/stride + 1 with pad = size/2 when pad=1; batchnorm
(x - mean)/sqrt(var + 1e-6) * scale + bias; leaky slope 0.1; maxpool output (W + padding - size)/stride + 1
with padding defaulting to size-1 and padding/2 of it before, -inf outside; [avgpool] global;
[route] concat; [shortcut] add; [upsample] nearest."""
from __future__ import annotations

import math

import numpy as np

from cnndsl.interop.darknet import parse_cfg

ACT = {"linear": lambda x: x, "leaky": lambda x: np.where(x > 0, x, 0.1 * x), "relu": lambda x: np.maximum(x, 0),
       "logistic": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh}


def _conv(x, w, stride, pad, groups):
    n, c, h, wd = x.shape
    f, cg, k, _ = w.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, f, oh, ow))
    fg = f // groups
    for g in range(groups):
        for i in range(k):
            for j in range(k):
                patch = xp[:, g * cg:(g + 1) * cg, i: i + stride * (oh - 1) + 1: stride, j: j + stride * (ow - 1) + 1: stride]
                out[:, g * fg:(g + 1) * fg] += np.einsum("nchw,fc->nfhw", patch, w[g * fg:(g + 1) * fg, :, i, j])
    return out


def _maxpool(x, size, stride, padding):
    n, c, h, w = x.shape
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    off = -(padding // 2)
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            for a in range(size):
                for b in range(size):
                    y, z = off + i * stride + a, off + j * stride + b
                    if 0 <= y < h and 0 <= z < w:
                        out[:, :, i, j] = np.maximum(out[:, :, i, j], x[:, :, y, z])
    return out


def _layers(cfg_text):
    return parse_cfg(cfg_text, "oracle.cfg")


def run(cfg_text: str, params: list, x: np.ndarray) -> list[np.ndarray]:
    """The output of every layer (index = Darknet layer number); params[i] = dict of arrays or None."""
    secs = _layers(cfg_text)
    outs, cur = [], x.astype(np.float64)
    for i, s in enumerate(secs[1:]):
        g = lambda k, d=None: s.get(k, d)  # noqa: E731
        p = params[i]
        if s.kind == "convolutional":
            size, stride = int(g("size", 1)), int(g("stride", 1))
            pad = size // 2 if int(g("pad", 0)) else int(g("padding", 0))
            y = _conv(cur, p["weights"], stride, pad, int(g("groups", 1)))
            shape = (1, -1, 1, 1)
            if int(g("batch_normalize", 0)):
                y = (y - p["mean"].reshape(shape)) / np.sqrt(p["var"].reshape(shape) + 1e-6)
                y = y * p["scales"].reshape(shape)
            y = ACT[g("activation", "linear")](y + p["biases"].reshape(shape))
        elif s.kind == "connected":
            y = cur.reshape(len(cur), -1) @ p["weights"].T.astype(np.float64)
            if int(g("batch_normalize", 0)):
                y = (y - p["mean"]) / np.sqrt(p["var"] + 1e-6) * p["scales"]
            y = ACT[g("activation", "linear")](y + p["biases"])
        elif s.kind == "maxpool":
            size = int(g("size", 1))
            y = _maxpool(cur, size, int(g("stride", size)), int(g("padding", size - 1)))
        elif s.kind == "avgpool":
            y = cur.mean(axis=(2, 3))
        elif s.kind == "route":
            refs = [int(t) for t in g("layers").split(",")]
            y = np.concatenate([outs[i + r if r < 0 else r] for r in refs], axis=1)
        elif s.kind == "shortcut":
            r = int(g("from"))
            y = ACT[g("activation", "linear")](cur + outs[i + r if r < 0 else r])
        elif s.kind == "upsample":
            k = int(g("stride", 2))
            y = cur.repeat(k, axis=2).repeat(k, axis=3)
        elif s.kind == "softmax":
            e = np.exp(cur - cur.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        elif s.kind in ("dropout", "cost", "yolo"):
            y = cur
        else:
            raise NotImplementedError(s.kind)
        outs.append(y)
        cur = y
    return outs


def random_params(cfg_text: str, input_shape, seed=0) -> list:
    rng = np.random.default_rng(seed)
    secs = _layers(cfg_text)
    params = []
    x = np.zeros((1,) + tuple(input_shape))
    for i, s in enumerate(secs[1:]):
        outs = run_prefix(cfg_text, params, x, i)
        cur = outs[-1] if outs else x
        p = None
        if s.kind in ("convolutional", "connected"):
            n = int(s.get("filters" if s.kind == "convolutional" else "output", 1))
            if s.kind == "convolutional":
                size, groups, c = int(s.get("size", 1)), int(s.get("groups", 1)), cur.shape[1]
                w = rng.normal(0, 1 / math.sqrt(c * size * size / groups), (n, c // groups, size, size))
            else:
                k = int(np.prod(cur.shape[1:]))
                w = rng.normal(0, 1 / math.sqrt(k), (n, k))
            p = {"biases": rng.normal(0, 0.2, n), "weights": w}
            if int(s.get("batch_normalize", 0)):
                p |= {"scales": rng.normal(1, 0.3, n), "mean": rng.normal(0, 0.3, n), "var": rng.uniform(0.5, 1.5, n)}
            p = {k: v.astype(np.float32) for k, v in p.items()}
        params.append(p)
    return params


def run_prefix(cfg_text, params, x, upto):
    """The outputs of layers 0 .. upto-1."""
    lines = cfg_text.splitlines()
    secs = _layers(cfg_text)
    if upto == 0:
        return []
    cut = secs[upto + 1].span.line - 1 if upto + 1 < len(secs) else len(lines)
    return run("\n".join(lines[:cut]), params, x)


def write_weights(path, cfg_text: str, params: list, version=(0, 2, 0)) -> None:
    """Darknet's order: header, then per conv: biases, [scales, means, variances], weights;
    per connected: biases, weights, [scales, means, variances]."""
    secs = _layers(cfg_text)
    chunks = [np.array(version, "<i4").tobytes()]
    chunks.append(np.array([1234], "<i8" if version[0] * 10 + version[1] >= 2 else "<i4").tobytes())
    for s, p in zip(secs[1:], params):
        if p is None:
            continue
        bn = int(s.get("batch_normalize", 0))
        parts = [p["biases"]]
        if s.kind == "convolutional":
            parts += ([p["scales"], p["mean"], p["var"]] if bn else []) + [p["weights"]]
        else:
            parts += [p["weights"]] + ([p["scales"], p["mean"], p["var"]] if bn else [])
        chunks += [np.asarray(a, "<f4").reshape(-1).tobytes() for a in parts]
    with open(path, "wb") as f:
        f.write(b"".join(chunks))
