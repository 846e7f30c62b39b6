"""fused_batchnorm: batchnorm + activation in one sweep over the output.

    b = batchnorm(x) ; r = relu(b)        ->   b = fused_batchnorm(x) activation=relu

Options: batchnorm's (eps, momentum), then the epilogue's activation and alpha
(cnndsl/ops/fused/epilogue.py). Params and buffers: exactly batchnorm's, and the node keeps
the batchnorm's name, so the weights stay `<bn>.gamma`, `<bn>.running_mean`, ...
Training uses the batch statistics and updates the running ones, inference the running
ones, exactly as batchnorm (cnndsl/ops/batchnorm.py).
"""
from __future__ import annotations

from cnndsl.ops.batchnorm import BATCHNORM, batchnorm_gradient
from cnndsl.ops.fused.epilogue import EPILOGUE_ATTRS, epilogue_flops, epilogue_gradient
from cnndsl.ops.registry import OpDef, register

# the activation part of the epilogue only: a batchnorm has no residual and nothing to fold
ACTIVATION_ATTRS = tuple(a for a in EPILOGUE_ATTRS if a.name in ("activation", "alpha"))


def fused_batchnorm_shape(ctx):
    # a function of this module (not batchnorm's): docs/layers.md lists only the language's layers
    return ctx.inputs[0]


def fused_batchnorm_gradient(b, node, dy):
    """dz through the activation (from the output), then batchnorm's own gradient node on dz."""
    return batchnorm_gradient(b, node, epilogue_gradient(b, node, dy))


FUSED_BATCHNORM = register(OpDef(
    name="fused_batchnorm",
    doc="batchnorm with an activation applied in the same pass over the output (made by the "
        "optimization passes).",
    attrs=BATCHNORM.attrs + ACTIVATION_ATTRS,
    shape=fused_batchnorm_shape,
    params=BATCHNORM.params,
    buffers=BATCHNORM.buffers,
    flops=lambda a, ins, out: BATCHNORM.flops(a, ins, out) + epilogue_flops(a, out.size),
    gradient=fused_batchnorm_gradient,
    shape_doc="same as the input",
    params_doc="as batchnorm",
    flops_doc="batchnorm + activation",
))
