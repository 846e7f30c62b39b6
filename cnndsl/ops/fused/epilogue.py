"""The epilogue options shared by fused_conv and fused_dense: what happens to each output
value while it is still in cache, in this order:

    z = layer(x) + bias          (the layer's own bias, or the folded batchnorm's)
    z = z + residual             (fused_conv with residual=true: its second input)
    y = activation(z)            (none, relu, leaky_relu, sigmoid, tanh)
"""
from __future__ import annotations

from cnndsl.ops.registry import Attr

ACTIVATIONS = ("none", "relu", "leaky_relu", "sigmoid", "tanh")
# the codes the Numba kernels branch on (cnndsl/kernels/cpu/fused.py)
ACTIVATION_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
# FLOPs per element of each activation, as the standalone ops count them (cnndsl/ops/activation.py)
ACTIVATION_FLOPS = {"none": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 1}

EPILOGUE_ATTRS = (
    Attr("activation", "enum", "none", "activation applied in the epilogue", choices=ACTIVATIONS),
    Attr("alpha", "float", 0.01, "leaky_relu slope for negative inputs", minimum=0),
    Attr("folded_bn", "name", None, "the inference batchnorm layer folded into the weights and bias "
         "(its gamma, beta and running statistics are read at run time)"),
    Attr("bn_eps", "float", None, "eps of the folded batchnorm (set with folded_bn)", above=0),
)


def epilogue_flops(a, out_size: int) -> int:
    return ACTIVATION_FLOPS[a["activation"]] * out_size


def epilogue_gradient(b, node, dy) -> str:
    """dL/dz from dL/dy: the activation's gradient (from the output y), or dy itself."""
    if node.attrs["activation"] == "none":
        return dy
    return b.add("epilogue_grad", node, [dy, node.name], "grad_epilogue", like=0)
