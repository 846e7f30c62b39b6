"""Launchers for dense and fused_dense, forward and backward: the GEMM kernels on 1x1 maps."""
from __future__ import annotations

from cnndsl.backend.cuda.conv import layer_weights, weight_grad
from cnndsl.backend.cuda.launch import flat, grads_of, launches, no_bias, params_of, sequence, splitk
from cnndsl.kernels.cuda import gemm as K
from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.ops.fused.epilogue import ACTIVATION_CODE


def _geo(x_shape, units: int) -> ConvGeometry:
    return ConvGeometry.dense(x_shape[0], x_shape[1], units)


@launches("dense")
def dense(rc, node, ins, out):
    p = params_of(rc, node.name)
    bias = flat(p["bias"]) if "bias" in p else no_bias(rc)
    geo = _geo(ins[0].shape, out.shape[1])
    return sequence([K.conv_forward(flat(ins[0]), flat(p["weight"]), bias, "bias" in p, flat(out), geo,
                                    workspace=splitk(rc))])


@launches("dense_grad_input")
def dense_grad_input(rc, node, ins, out):
    w = params_of(rc, node.attrs["forward"])["weight"]
    geo = _geo(out.shape, ins[0].shape[1])
    return sequence([K.conv_backward_data(flat(ins[0]), flat(w), no_bias(rc), False, flat(out), geo,
                                          workspace=splitk(rc))])


@launches("dense_grad_params")
def dense_grad_params(rc, node, ins, out):
    dy, x = ins
    return sequence([weight_grad(rc, flat(x), flat(dy), grads_of(rc, node.attrs["forward"]),
                                 _geo(x.shape, dy.shape[1]))])


@launches("fused_dense")
def fused_dense(rc, node, ins, out):
    steps, w, b, has_bias = layer_weights(rc, node)
    geo = _geo(ins[0].shape, out.shape[1])
    steps.append(K.conv_forward(flat(ins[0]), w, b, has_bias, flat(out), geo,
                                act=ACTIVATION_CODE[node.attrs["activation"]], alpha=node.attrs["alpha"],
                                workspace=splitk(rc)))
    return sequence(steps)


@launches("fused_dense_grad")
def fused_dense_grad(rc, node, ins, out):
    from cnndsl.backend.cuda.elementwise import epilogue_backward

    fwd = rc.forward_node(node)
    dy, x, y = ins
    geo = _geo(x.shape, dy.shape[1])
    dz = rc.scratch("fused_dz", dy.size)
    steps = [epilogue_backward(fwd, flat(y), flat(dy), dz)]
    if node.attrs["params_grad"]:
        steps.append(weight_grad(rc, flat(x), dz, grads_of(rc, fwd.name), geo))
    if node.attrs["input_grad"]:
        w = params_of(rc, fwd.name)["weight"]
        steps.append(K.conv_backward_data(dz, flat(w), no_bias(rc), False, flat(out), geo, workspace=splitk(rc)))
    return sequence(steps)
