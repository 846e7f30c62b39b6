"""Launchers for activations, dropout and batchnorm, fused_batchnorm included (per-element or
per-channel work)."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.elementwise import _dropout_seed  # the same per-layer seed: the same masks
from cnndsl.backend.cuda.launch import buffers_of, flat, grads_of, launch, launches, params_of, split3, steps
from cnndsl.kernels.cuda import elementwise as E
from cnndsl.kernels.cuda import reduce as R
from cnndsl.kernels.cuda.common import NONE, grid1d
from cnndsl.kernels.activations import CODE
from cnndsl.ops.activation import ACTIVATION_OF
from cnndsl.ops.fused.epilogue import ACTIVATION_CODE


@launches(*ACTIVATION_OF)
def activation(rc, node, ins, out):
    """Every element-wise activation: one kernel, branching on the activation's code."""
    n = out.size
    run = launch(E.activation_forward, grid1d(n), flat(ins[0]), flat(out), CODE[node.op],
                 np.float32(node.attrs.get("alpha", 0.0)), n)
    return lambda rc: run()


@launches("softmax")
def softmax(rc, node, ins, out):
    n, k, s = split3(out.shape)
    run = launch(E.softmax_forward, grid1d(n * s), flat(ins[0]), flat(out), n, k, s)
    return lambda rc: run()


def activation_backward(op: str, alpha: float, v, dy, dx, shape):
    """A prepared launch of dx = dL/dx of activation `op` from v (its output y or input x, as its
    gradient reads; all flat)."""
    n = dx.size
    if op == "softmax":
        b, k, s = split3(shape)
        return launch(E.softmax_backward, grid1d(b * s), v, dy, dx, b, k, s)
    if op == "none":
        return launch(E.copy, grid1d(n), dy, dx, n)  # no activation: dz = dy
    return launch(E.activation_backward, grid1d(n), v, dy, dx, CODE[op], np.float32(alpha), n)


@launches("activation_grad")
def activation_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, saved = ins
    run = activation_backward(fwd.op, fwd.attrs.get("alpha", 0.0), flat(saved), flat(dy), flat(out), out.shape)
    return lambda rc: run()


def epilogue_backward(fwd, y, dy, dz):
    """dz from (dy, y) through a fused layer's epilogue activation (flat arrays)."""
    return activation_backward(fwd.attrs["activation"], fwd.attrs["alpha"], y, dy, dz, None)


@launches("epilogue_grad")
def epilogue_grad(rc, node, ins, out):
    run = epilogue_backward(rc.forward_node(node), flat(ins[1]), flat(ins[0]), flat(out))
    return lambda rc: run()


@launches("prelu")
def prelu(rc, node, ins, out):
    n, c, s = split3(out.shape)
    run = launch(E.prelu_forward, grid1d(out.size), flat(ins[0]), flat(params_of(rc, node.name)["slope"]),
                 flat(out), n, c, s)
    return lambda rc: run()


@launches("prelu_grad")
def prelu_grad(rc, node, ins, out):
    """dx, and dslope (scratch when frozen): the slope reduction first, since dx may overwrite dy."""
    fwd = rc.forward_node(node)
    dy, x = ins
    n, c, s = split3(x.shape)
    g = grads_of(rc, fwd.name)
    dslope = flat(g["slope"]) if "slope" in g else rc.ws(node.name, "dslope", (c,))
    slope = flat(params_of(rc, fwd.name)["slope"])
    x, dy = flat(x), flat(dy)
    reduce = launch(E.prelu_backward_slope, grid1d(c), x, dy, dslope, n, c, s)
    apply = launch(E.prelu_backward_data, grid1d(x.size), x, dy, slope, flat(out), n, c, s)

    def run(rc):
        reduce()
        apply()
    return run


def _dropout(rc, layer: str, p: float, x, y, always: bool = False):
    """run(rc): y = dropout(x) with the CPU backend's mask for (layer, rc.seed, rc.step), in
    training (`always`: also outside it, for the gradient); a copy otherwise. Both are prepared
    launches; the mask's base, which changes every step, is the one argument passed per call."""
    n = y.size
    x, y = flat(x), flat(y)
    copy = launch(E.copy, grid1d(n), x, y, n)
    if p <= 0:
        return lambda rc: copy()
    _, thr, scale = E.dropout_params(p, 0, 0)
    apply = launch(E.dropout_apply, grid1d(n), x, np.uint64(0), thr, scale, y, n, varying=(1,))

    def run(rc):
        if always or rc.training:
            apply(E.dropout_base(_dropout_seed(rc, layer), rc.step))
        else:
            copy()
    return run


@launches("dropout")
def dropout(rc, node, ins, out):
    return _dropout(rc, node.name, node.attrs["p"], ins[0], out)


@launches("dropout_grad")
def dropout_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    return _dropout(rc, fwd.name, fwd.attrs["p"], ins[0], out, always=True)


def batchnorm_forward(rc, node, x, out, act: int = NONE, alpha: float = 0.0):
    """run(rc): out = act(batchnorm(x)) for batchnorm (act none) and fused_batchnorm. Training
    normalizes with the batch statistics (saved as the node's "mean" / "invstd" for the backward)
    and updates the running ones; inference, and layers frozen with their statistics, use the
    running ones."""
    p, b = params_of(rc, node.name), buffers_of(rc, node.name)
    n, c, s = split3(out.shape)
    total = out.size
    eps, momentum = np.float32(node.attrs["eps"]), np.float32(node.attrs["momentum"])
    mean, invstd = rc.ws(node.name, "mean", (c,)), rc.ws(node.name, "invstd", (c,))
    scale, shift = rc.ws(node.name, "scale", (c,)), rc.ws(node.name, "shift", (c,))
    x, y = flat(x), flat(out)
    gamma, beta, rm, rv = flat(p["gamma"]), flat(p["beta"]), flat(b["running_mean"]), flat(b["running_var"])
    part = rc.scratch("cuda_channel_runs", R.workspace(c, n * s, 2))
    stats = steps(R.bn_train_stats_steps(x, n, c, s, gamma, beta, eps, momentum, rm, rv, mean, invstd, scale, shift,
                                         part))
    coeffs = launch(R.bn_inference_coeffs, grid1d(c), gamma, beta, rm, rv, eps, scale, shift, c)
    apply = launch(R.channel_affine, grid1d(total), x, scale, shift, act, np.float32(alpha), y, c, s, total)

    def run(rc):
        if rc.training and not node.meta.get("frozen_statistics"):
            stats()
        else:
            coeffs()
        apply()
    return run


def batchnorm_backward(rc, node, x, y, dy, dx, act: int = NONE, alpha: float = 0.0):
    """run(rc): dx, and dgamma, dbeta (scratch when frozen), of batchnorm_grad / fused_batchnorm_grad
    `node`, for dz = act'(y) * dy recomputed where dy is read (act none: dz = dy)."""
    fwd = rc.forward_node(node)
    n, c, s = split3(x.shape)
    g = grads_of(rc, fwd.name)
    dgamma = flat(g["gamma"]) if "gamma" in g else rc.ws(node.name, "dgamma", (c,))
    dbeta = flat(g["beta"]) if "beta" in g else rc.ws(node.name, "dbeta", (c,))
    mean, invstd = rc.ws(fwd.name, "mean", (c,)), rc.ws(fwd.name, "invstd", (c,))
    coef = rc.ws(node.name, "coef", (3 * c,))
    total = x.size
    x, y, dy, alpha = flat(x), flat(y), flat(dy), np.float32(alpha)
    part = rc.scratch("cuda_channel_runs", R.workspace(c, n * s, 2))
    reduce = steps(R.bn_backward_reduce_steps(x, dy, y, act, alpha, n, c, s, flat(params_of(rc, fwd.name)["gamma"]),
                                              mean, invstd, dgamma, dbeta, coef, part))
    apply = launch(R.bn_backward_apply, grid1d(total), x, dy, y, act, alpha, flat(dx), mean, coef, c, s, total)

    def run(rc):
        reduce()
        apply()
    return run


@launches("batchnorm")
def batchnorm(rc, node, ins, out):
    return batchnorm_forward(rc, node, ins[0], out)


@launches("batchnorm_grad")
def batchnorm_grad(rc, node, ins, out):
    dy, x = ins
    return batchnorm_backward(rc, node, x, dy, dy, out)


@launches("fused_batchnorm")
def fused_batchnorm(rc, node, ins, out):
    return batchnorm_forward(rc, node, ins[0], out, ACTIVATION_CODE[node.attrs["activation"]], node.attrs["alpha"])


@launches("fused_batchnorm_grad")
def fused_batchnorm_grad(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x, y = ins
    return batchnorm_backward(rc, node, x, y, dy, out, ACTIVATION_CODE[fwd.attrs["activation"]], fwd.attrs["alpha"])
