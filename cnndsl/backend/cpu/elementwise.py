"""Launchers for activations, dropout and batchnorm (per-element or per-channel work)."""
from __future__ import annotations

import zlib

import numpy as np

from cnndsl.backend.cpu.launch import buffers_of, flat, grads_of, launches, params_of
from cnndsl.kernels.cpu import activation as A
from cnndsl.kernels.cpu import batchnorm as B
from cnndsl.kernels.cpu import dropout as D
from cnndsl.kernels.cpu.epilogue import KERNEL_CODE
from cnndsl.ops.activation import ACTIVATION_OF


@launches(*ACTIVATION_OF)
def activation(rc, node, ins, out):
    """Every element-wise activation: one kernel, branching on the activation's code."""
    A.activation_forward(flat(ins[0]), KERNEL_CODE[node.op], np.float32(node.attrs.get("alpha", 0.0)), flat(out))


@launches("softmax")
def softmax(rc, node, ins, out):
    A.softmax_forward(ins[0], out)


@launches("activation_grad")
def activation_grad(rc, node, ins, out):
    """From what the activation's gradient reads (its rule chose the second input: y or x)."""
    fwd = rc.forward_node(node)
    dy, saved = ins
    if fwd.op == "softmax":
        A.softmax_backward(saved, dy, out)
    else:
        A.activation_backward(flat(saved), flat(dy), KERNEL_CODE[fwd.op], np.float32(fwd.attrs.get("alpha", 0.0)),
                              flat(out))


@launches("prelu")
def prelu(rc, node, ins, out):
    A.prelu_forward(ins[0], params_of(rc, node.name)["slope"], out)


@launches("prelu_grad")
def prelu_grad(rc, node, ins, out):
    """dx, and dslope (scratch when frozen)."""
    fwd = rc.forward_node(node)
    dy, x = ins
    slope = params_of(rc, fwd.name)["slope"]
    dslope = grads_of(rc, fwd.name).get("slope", rc.ws(node.name, "dslope", slope.shape))
    A.prelu_backward(x, dy, slope, out, dslope)


def _dropout_seed(rc, layer: str) -> int:
    """Each dropout layer draws its own mask: the run's seed salted with the layer's name."""
    return (rc.seed * 1_000_003 + zlib.crc32(layer.encode())) & 0x7FFFFFFF


@launches("dropout")
def dropout(rc, node, ins, out):
    if rc.training and node.attrs["p"] > 0:
        D.dropout_forward(ins[0], np.float32(node.attrs["p"]), _dropout_seed(rc, node.name), rc.step, out)
    else:
        D.dropout_inference(ins[0], out)  # exactly the identity at inference


@launches("dropout_grad")
def dropout_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    p = fwd.attrs["p"]
    if p > 0:
        D.dropout_backward(ins[0], np.float32(p), _dropout_seed(rc, fwd.name), rc.step, out)
    else:
        D.dropout_inference(ins[0], out)


def batchnorm_forward(rc, node, x, out, act: np.integer = KERNEL_CODE["none"], alpha: float = 0.0) -> None:
    """out = act(batchnorm(x)) for batchnorm (act none) and fused_batchnorm. Training normalizes with
    the batch statistics, saved in the node's "mean" / "invstd" workspaces for the backward, and
    updates the running ones; inference, and layers frozen with their statistics, use the running ones."""
    p, b = params_of(rc, node.name), buffers_of(rc, node.name)
    eps = float(node.attrs["eps"])
    if rc.training and not node.meta.get("frozen_statistics"):
        c = out.shape[1]
        mean, invstd = rc.ws(node.name, "mean", (c,)), rc.ws(node.name, "invstd", (c,))
        B.fused_batchnorm_train_forward(x, p["gamma"], p["beta"], eps, float(node.attrs["momentum"]),
                                        b["running_mean"], b["running_var"], act, np.float32(alpha), out, mean, invstd)
    else:
        B.fused_batchnorm_inference_forward(x, p["gamma"], p["beta"], b["running_mean"], b["running_var"], eps,
                                            act, np.float32(alpha), out)


def batchnorm_backward(rc, node, x, y, dy, dx, act: np.integer = KERNEL_CODE["none"], alpha: float = 0.0) -> None:
    """dx, and dgamma, dbeta (scratch when frozen), of batchnorm_grad / fused_batchnorm_grad `node`,
    for dz = act'(y) * dy (act none: dz = dy, and y is not read)."""
    fwd = rc.forward_node(node)
    c = x.shape[1]
    g = grads_of(rc, fwd.name)
    dgamma = g.get("gamma", rc.ws(node.name, "dgamma", (c,)))
    dbeta = g.get("beta", rc.ws(node.name, "dbeta", (c,)))
    B.fused_batchnorm_backward(x, y, dy, act, np.float32(alpha), params_of(rc, fwd.name)["gamma"],
                               rc.ws(fwd.name, "mean", (c,)), rc.ws(fwd.name, "invstd", (c,)), dx, dgamma, dbeta)


@launches("batchnorm")
def batchnorm(rc, node, ins, out):
    batchnorm_forward(rc, node, ins[0], out)


@launches("batchnorm_grad")
def batchnorm_grad(rc, node, ins, out):
    dy, x = ins
    batchnorm_backward(rc, node, x, dy, dy, out)
