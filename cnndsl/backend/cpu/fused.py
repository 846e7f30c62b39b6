"""Launchers for the fused ops (cnndsl/ops/fused/) and their gradients (fused_batchnorm: batchnorm's
launch with an activation code, cnndsl/backend/cpu/elementwise.py).

Folded batchnorm: a fused layer with `folded_bn=<bn layer>` runs with weights and bias
folded from the CURRENT stored values of `<layer>.weight`, `<layer>.bias` and the batchnorm's
gamma, beta and running statistics, into per-node scratch (RunContext.ws). The stored
parameters are never written, so weight files, checkpoints and a training graph sharing the
same ParamStore see exactly the unfolded values. Folding costs O(weights) per launch against
O(batch * pixels * weights) for the layer itself, and it cannot go stale: an evaluation
executable compiled before further training (or before load_weights) folds the new values.
"""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.conv import (_conv_ws, conv_workspace, direct_forward, direct_plan, input_grad,
                                     kept_col, params_grad)
from cnndsl.backend.cpu.elementwise import batchnorm_backward, batchnorm_forward
from cnndsl.backend.cpu.launch import buffers_of, flat, grads_of, launches, params_of
from cnndsl.kernels.cpu import activation as A
from cnndsl.kernels.cpu import dense as D
from cnndsl.kernels.cpu import fused as K
from cnndsl.kernels.cpu import pool as P
from cnndsl.kernels.cpu.epilogue import KERNEL_CODE

_NO_BIAS = np.zeros(1, np.float32)


def layer_weights(rc, node) -> tuple[np.ndarray, np.ndarray, bool]:
    """(weight, bias, has_bias) the kernel runs with: the layer's own, or folded with its batchnorm."""
    p = params_of(rc, node.name)
    bn = node.attrs.get("folded_bn")
    if not bn:
        return p["weight"], p.get("bias", _NO_BIAS), "bias" in p
    g, s = params_of(rc, bn), buffers_of(rc, bn)
    w = rc.ws(node.name, "folded_weight", p["weight"].shape)
    b = rc.ws(node.name, "folded_bias", g["gamma"].shape)
    K.fold_batchnorm(p["weight"], p.get("bias", _NO_BIAS), "bias" in p, g["gamma"], g["beta"],
                     s["running_mean"], s["running_var"], float(node.attrs["bn_eps"]), w, b)
    return w, b, True


@launches("fused_conv")
def fused_conv(rc, node, ins, out):
    w, b, has_bias = layer_weights(rc, node)
    geometry = node.geometry
    sh, sw, pt, pl, dh, dw, g = geometry.cpu_args
    res = ins[1] if node.attrs["residual"] else out
    st = direct_plan(rc, node, ins[0], w, out.shape, KERNEL_CODE[node.attrs["activation"]], node.attrs["alpha"])
    if st is not None:
        rc.cache["kept_col:" + node.name] = False
        direct_forward(rc, st, ins[0], w, b, bool(has_bias), res, bool(node.attrs["residual"]), out)
        return
    nb, col, tmp = _conv_ws(rc, ins[0], out, w, g)
    keep = kept_col(rc, node, ins[0], out, w, nb, sh, sw, pt, pl)
    K.fused_conv2d_forward(ins[0], w, b, has_bias, res, node.attrs["residual"],
                           KERNEL_CODE[node.attrs["activation"]], float(node.attrs["alpha"]),
                           sh, sw, pt, pl, dh, dw, g, nb, col if keep is None else keep, tmp, out, keep is not None)


@launches("fused_conv_pool")
def fused_conv_pool(rc, node, ins, out):
    """The im2col + GEMM path pools each output chunk in place; the direct path (depthwise) runs
    the fused conv into a per-node buffer and pools that."""
    w, b, has_bias = layer_weights(rc, node)
    geometry = node.geometry
    sh, sw, pt, pl, dh, dw, g = geometry.cpu_args
    n, f = out.shape[:2]
    oh, ow = geometry.out_hw  # the conv's map before the 2x2 pool
    res = ins[1] if node.attrs["residual"] else out
    act, alpha = KERNEL_CODE[node.attrs["activation"]], float(node.attrs["alpha"])
    st = direct_plan(rc, node, ins[0], w, (n, f, oh, ow), act, alpha)
    if st is not None:  # the direct conv into a per-node buffer, then the pool
        full = rc.ws(node.name, "conv_out", (n, f, oh, ow))
        direct_forward(rc, st, ins[0], w, b, bool(has_bias), res, bool(node.attrs["residual"]), full)
        P.maxpool2d_forward(full, 2, 2, 2, 2, 0, 0, 1, 1, out, rc.ws(node.name, "argmax", out.shape, np.int32))
        return
    nb, col, tmp = conv_workspace(rc, ins[0], w, g, oh, ow)
    if nb > 0:
        K.fused_conv_pool_forward(ins[0], w, b, has_bias, res, node.attrs["residual"], act, alpha,
                                  sh, sw, pt, pl, dh, dw, g, oh, ow, nb, col, tmp, out)
        return
    full = rc.ws(node.name, "conv_out", (n, f, oh, ow))
    K.fused_conv2d_forward(ins[0], w, b, has_bias, res if node.attrs["residual"] else full, node.attrs["residual"],
                           act, alpha, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, full, False)
    P.maxpool2d_forward(full, 2, 2, 2, 2, 0, 0, 1, 1, out, rc.ws(node.name, "argmax", out.shape, np.int32))


@launches("fused_dense")
def fused_dense(rc, node, ins, out):
    w, b, has_bias = layer_weights(rc, node)
    K.fused_dense_forward(ins[0], w, b, has_bias, KERNEL_CODE[node.attrs["activation"]],
                          float(node.attrs["alpha"]), out)


@launches("fused_batchnorm")
def fused_batchnorm(rc, node, ins, out):
    batchnorm_forward(rc, node, ins[0], out, KERNEL_CODE[node.attrs["activation"]], node.attrs["alpha"])


def activation_backward(activation: str, alpha: float, y, dy, dz) -> None:
    """dz = dL/dz of the epilogue's activation, from its output y."""
    if activation == "none":
        np.copyto(dz, dy)
    else:
        A.activation_backward(flat(y), flat(dy), KERNEL_CODE[activation], np.float32(alpha), flat(dz))


@launches("epilogue_grad")
def epilogue_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    activation_backward(fwd.attrs["activation"], fwd.attrs["alpha"], ins[1], ins[0], out)


def _epilogue_dz(rc, fwd, dy, y) -> np.ndarray:
    """dz in scratch shared by every fused gradient node (it lives only during one launch)."""
    dz = rc.scratch("fused_dz", dy.size)[:dy.size].reshape(dy.shape)
    activation_backward(fwd.attrs["activation"], fwd.attrs["alpha"], y, dy, dz)
    return dz


@launches("fused_conv_grad")
def fused_conv_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x, y = ins
    dz = _epilogue_dz(rc, fwd, dy, y)
    w = params_of(rc, fwd.name)["weight"]
    geometry = fwd.geometry
    if node.attrs["params_grad"]:
        grads = grads_of(rc, fwd.name)
        params_grad(rc, fwd, x, dz, geometry, grads["weight"], grads.get("bias", _NO_BIAS), "bias" in grads)
    if node.attrs["input_grad"]:
        input_grad(rc, dz, w, geometry, x, out)


@launches("fused_dense_grad")
def fused_dense_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x, y = ins
    dz = _epilogue_dz(rc, fwd, dy, y)
    if node.attrs["params_grad"]:
        grads = grads_of(rc, fwd.name)
        D.dense_backward_weight(x, dz, "bias" in grads, grads["weight"], grads.get("bias", _NO_BIAS))
    if node.attrs["input_grad"]:
        D.dense_backward_data(dz, params_of(rc, fwd.name)["weight"], out)


@launches("fused_batchnorm_grad")
def fused_batchnorm_grad(rc, node, ins, out):
    """No dz anywhere: the batchnorm backward recomputes it from (dy, y) in each of its two sweeps."""
    fwd = rc.forward_node(node)
    dy, x, y = ins
    batchnorm_backward(rc, node, x, y, dy, out, KERNEL_CODE[fwd.attrs["activation"]], fwd.attrs["alpha"])
