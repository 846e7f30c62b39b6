"""The epilogue options shared by fused_conv and fused_dense: what happens to each output
value while it is still in cache, in this order:

    z = layer(x) + bias          (the layer's own bias, or the folded batchnorm's)
    z = z + residual             (fused_conv with residual=true: its second input)
    y = activation(z)            (none, or any element-wise activation: cnndsl/kernels/activations.py)
"""
from __future__ import annotations

from cnndsl.kernels.activations import ACTIVATIONS as _RECORDS
from cnndsl.kernels.activations import BY_NAME as _BY_NAME
from cnndsl.kernels.activations import CODE as ACTIVATION_CODE  # noqa: F401  (what the CUDA kernels branch on;
# the CPU launchers pass cnndsl/kernels/cpu/epilogue.py's KERNEL_CODE, the same codes typed)
from cnndsl.ops.registry import Attr

ACTIVATIONS = tuple(a.name for a in _RECORDS)
# FLOPs per element of each activation, as the standalone ops count them
ACTIVATION_FLOPS = {a.name: a.flops for a in _RECORDS}

EPILOGUE_ATTRS = (
    Attr("activation", "enum", "none", "activation applied in the epilogue", choices=ACTIVATIONS),
    Attr("alpha", "float", 0.01, "the activation's alpha (leaky_relu's slope, elu's scale)", minimum=0),
    Attr("folded_bn", "name", None, "the inference batchnorm layer folded into the weights and bias "
         "(its gamma, beta and running statistics are read at run time)"),
    Attr("bn_eps", "float", None, "eps of the folded batchnorm (set with folded_bn)", above=0),
)


def epilogue_flops(a, out_size: int) -> int:
    return ACTIVATION_FLOPS[a["activation"]] * out_size


def epilogue_gradient(b, node, dy) -> str:
    """dL/dz from dL/dy: the activation's gradient (from the output y), or dy itself."""
    act = node.attrs["activation"]
    if act == "none":
        return dy
    if _BY_NAME[act].grad_from != "output":
        raise ValueError(f"{node.op} '{node.name}' cannot be differentiated: {act}'s gradient needs its input, "
                         f"which a fused layer does not keep (the fusion passes do not fuse it in training)")
    return b.add("epilogue_grad", node, [dy, node.name], "grad_epilogue", like=0)
