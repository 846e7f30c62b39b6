"""fused_dense: dense + bias [+ folded batchnorm] [+ activation] in one kernel."""
from __future__ import annotations

from cnndsl.ops.dense import DENSE, dense_flops, dense_params, dense_shape
from cnndsl.ops.fused.epilogue import EPILOGUE_ATTRS, epilogue_flops, epilogue_gradient
from cnndsl.ops.registry import OpDef, register


def fused_dense_shape(ctx):
    # a function of this module (not dense_shape itself): docs/layers.md lists only the language's layers
    return dense_shape(ctx)


def fused_dense_gradient(b, node, dy):
    x = b.graph.inputs_of(node.name)[0]
    dz = epilogue_gradient(b, node, dy)
    b.params_grad("dense_grad_params", node, [dz, x])
    return [b.input_grad("dense_grad_input", node, [dz, x])]


FUSED_DENSE = register(OpDef(
    name="fused_dense",
    doc="dense with its bias, an optional folded batchnorm and activation applied in the same "
        "pass over the output (made by the optimization passes).",
    attrs=DENSE.attrs + EPILOGUE_ATTRS,
    shape=fused_dense_shape,
    params=dense_params,
    flops=lambda a, ins, out: dense_flops(a, ins, out) + epilogue_flops(a, out.size),
    gradient=fused_dense_gradient,
    shape_doc="as dense",
    params_doc="as dense",
    flops_doc="dense + activation",
))
