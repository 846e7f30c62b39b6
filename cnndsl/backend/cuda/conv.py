"""Launchers for conv, conv_transpose, fused_conv and fused_conv_pool, forward and backward (tiled implicit GEMM).

conv_transpose runs conv's kernels on the adjoint geometry: the conv from the transposed
conv's OUTPUT space to its input space, whose weight is conv_transpose's (C_in, F/G, KH, KW).
"""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cuda.launch import (buffers_of, chain, channel_sums, flat, grads_of, launch, launches, no_bias,
                                        params_of, sequence, splitk)
from cnndsl.kernels.cuda import gemm as K
from cnndsl.kernels.cuda import pool as POOL
from cnndsl.kernels.cuda.common import grid1d
from cnndsl.kernels.cuda.elementwise import fold_batchnorm
from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.ops.fused.epilogue import ACTIVATION_CODE


def geometry(node, n: int) -> ConvGeometry:
    """The conv of a conv-like node (conv_transpose: its adjoint conv) at batch n."""
    return node.geometry.batch(n)


def weight_grad(rc, x, dy, grads, geo: ConvGeometry):
    """Launch writing dweight and (with a bias) dbias of the conv `geo`; x and dy flat."""
    tile, splits = K.weight_plan(x, dy, geo)
    part = rc.scratch("cuda_splitk", K.weight_workspace(geo, tile, splits))
    steps = [K.conv_backward_weight(x, dy, flat(grads["weight"]), part, geo, tile, splits)]
    if "bias" in grads:
        steps.append(channel_sums(rc, dy, geo.N, geo.F, geo.OH * geo.OW, 1.0, flat(grads["bias"])))
    return chain(steps)


@launches("conv")
def conv(rc, node, ins, out):
    p = params_of(rc, node.name)
    geo = geometry(node, ins[0].shape[0])
    bias = flat(p["bias"]) if "bias" in p else no_bias(rc)
    return sequence([K.conv_forward(flat(ins[0]), flat(p["weight"]), bias, "bias" in p, flat(out), geo,
                                    workspace=splitk(rc))])


@launches("conv_grad_input")
def conv_grad_input(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    w = params_of(rc, fwd.name)["weight"]
    geo = geometry(fwd, x.shape[0])
    return sequence([K.conv_backward_data(flat(dy), flat(w), no_bias(rc), False, flat(out), geo, workspace=splitk(rc))])


@launches("conv_grad_params")
def conv_grad_params(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    grads = grads_of(rc, fwd.name)
    return sequence([weight_grad(rc, flat(x), flat(dy), grads, geometry(fwd, x.shape[0]))])


@launches("conv_transpose")
def conv_transpose(rc, node, ins, out):
    p = params_of(rc, node.name)
    geo = geometry(node, out.shape[0])  # adjoint: y -> x
    bias = flat(p["bias"]) if "bias" in p else no_bias(rc)
    return sequence([K.conv_backward_data(flat(ins[0]), flat(p["weight"]), bias, "bias" in p, flat(out), geo,
                                          workspace=splitk(rc))])


@launches("conv_transpose_grad_input")
def conv_transpose_grad_input(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    w = params_of(rc, fwd.name)["weight"]
    geo = geometry(fwd, dy.shape[0])
    return sequence([K.conv_forward(flat(dy), flat(w), no_bias(rc), False, flat(out), geo, workspace=splitk(rc))])


@launches("conv_transpose_grad_params")
def conv_transpose_grad_params(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    grads = grads_of(rc, fwd.name)
    geo = geometry(fwd, dy.shape[0])
    # the adjoint conv's input is dy and its output gradient is x; the bias sums dy per output channel
    tile, splits = K.weight_plan(flat(dy), flat(x), geo)
    part = rc.scratch("cuda_splitk", K.weight_workspace(geo, tile, splits))
    steps = [K.conv_backward_weight(flat(dy), flat(x), flat(grads["weight"]), part, geo, tile, splits)]
    if "bias" in grads:
        steps.append(channel_sums(rc, flat(dy), geo.N, geo.C, geo.H * geo.W, 1.0, flat(grads["bias"])))
    return sequence(steps)


def layer_weights(rc, node):
    """(steps, weight, bias, has_bias) a fused layer runs with: its own parameters, or weights
    and bias folded from them and its batchnorm's current values by `steps` before each
    launch (as the CPU backend does: the stored parameters are never changed)."""
    p = params_of(rc, node.name)
    bias = flat(p["bias"]) if "bias" in p else no_bias(rc)
    bn = node.attrs.get("folded_bn")
    if not bn:
        return [], flat(p["weight"]), bias, "bias" in p
    g, s = params_of(rc, bn), buffers_of(rc, bn)
    f = p["weight"].shape[0]
    k = p["weight"].size // f
    w = rc.ws(node.name, "folded_weight", (f * k,))
    b = rc.ws(node.name, "folded_bias", (f,))
    fold = K.Launch([(fold_batchnorm[grid1d(f * k)],
                      (flat(p["weight"]), bias, "bias" in p, flat(g["gamma"]), flat(g["beta"]),
                       flat(s["running_mean"]), flat(s["running_var"]), np.float32(node.attrs["bn_eps"]), w, b, f, k))])
    return [fold], w, b, True


@launches("fused_conv")
def fused_conv(rc, node, ins, out):
    steps, w, b, has_bias = layer_weights(rc, node)
    geo = geometry(node, ins[0].shape[0])
    res = flat(ins[1]) if node.attrs["residual"] else None
    steps.append(K.conv_forward(flat(ins[0]), w, b, has_bias, flat(out), geo, res=res,
                                act=ACTIVATION_CODE[node.attrs["activation"]], alpha=node.attrs["alpha"],
                                workspace=splitk(rc)))
    return sequence(steps)


@launches("fused_conv_pool")
def fused_conv_pool(rc, node, ins, out):
    """The fused conv into a per-node buffer, then the 2x2 max pool: a composition of the two
    kernels, not a fusion, so that graphs the fuse_conv_pool pass rewrote run on the GPU too."""
    n, f = out.shape[:2]
    oh, ow = node.geometry.out_hw  # the conv's map before the 2x2 pool
    full = rc.ws(node.name, "conv_out", (n, f, oh, ow))
    steps, w, b, has_bias = layer_weights(rc, node)
    geo = geometry(node, ins[0].shape[0])
    res = flat(ins[1]) if node.attrs["residual"] else None
    steps.append(K.conv_forward(flat(ins[0]), w, b, has_bias, flat(full), geo, res=res,
                                act=ACTIVATION_CODE[node.attrs["activation"]], alpha=node.attrs["alpha"],
                                workspace=splitk(rc)))
    idx = rc.ws(node.name, "argmax", (out.size,), np.int32)
    window = (n, f, oh, ow, out.shape[2], out.shape[3], 2, 2, 2, 2, 0, 0, 1, 1)
    steps.append(launch(POOL.maxpool_forward, grid1d(out.size), flat(full), flat(out), idx, *window))
    return sequence(steps)


@launches("fused_conv_grad")
def fused_conv_grad(rc, node, ins, out):
    from cnndsl.backend.cuda.elementwise import epilogue_backward

    fwd = rc.forward_node(node)
    dy, x, y = ins
    w = params_of(rc, fwd.name)["weight"]
    geo = geometry(fwd, x.shape[0])
    dz = rc.scratch("fused_dz", dy.size)
    steps = [epilogue_backward(fwd, flat(y), flat(dy), dz)]
    if node.attrs["params_grad"]:
        steps.append(weight_grad(rc, flat(x), dz, grads_of(rc, fwd.name), geo))
    if node.attrs["input_grad"]:
        steps.append(K.conv_backward_data(dz, flat(w), no_bias(rc), False, flat(out), geo, workspace=splitk(rc)))
    return sequence(steps)
