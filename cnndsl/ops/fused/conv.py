"""fused_conv: conv + bias [+ folded batchnorm] [+ residual add] [+ activation] in one kernel.

Inputs: x, and with residual=true the tensor added before the activation (the
other input of the `add` the pass absorbed). Options: every conv option, then
the epilogue (cnndsl/ops/fused/epilogue.py). Params: exactly the conv's.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.conv import CONV, conv_flops, conv_params, conv_shape, conv_window
from cnndsl.ops.fused.epilogue import EPILOGUE_ATTRS, epilogue_flops, epilogue_gradient
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register


def fused_conv_shape(ctx: ShapeContext) -> TensorType:
    out = conv_shape(ctx)
    if ctx.attrs["residual"] != (len(ctx.inputs) == 2):
        ctx.error(f"{ctx.describe()} has residual={str(ctx.attrs['residual']).lower()} "
                  f"but {len(ctx.inputs)} input(s)", attr="residual", code="fused-residual")
    if ctx.attrs["residual"] and ctx.inputs[1] != out:
        ctx.error(f"{ctx.describe()} adds '{ctx.input_names[1]}' ({ctx.inputs[1]}) to its output ({out})",
                  code="fused-residual")
    return out


def fused_conv_flops(a, ins, out):
    return conv_flops(a, ins, out) + (out.size if a["residual"] else 0) + epilogue_flops(a, out.size)


def fused_conv_gradient(b, node, dy):
    """dz through the activation, then the conv's own gradient ops; the residual input gets dz."""
    inputs = b.graph.inputs_of(node.name)
    dz = epilogue_gradient(b, node, dy)
    b.params_grad("conv_grad_params", node, [dz, inputs[0]])
    grads = [b.input_grad("conv_grad_input", node, [dz, inputs[0]])]
    if node.attrs["residual"]:
        grads.append(dz if b.needs(inputs[1]) else None)
    return grads


FUSED_CONV = register(OpDef(
    name="fused_conv",
    doc="conv with its bias, an optional folded batchnorm, residual add and activation applied "
        "in the same pass over the output (made by the optimization passes).",
    attrs=CONV.attrs + (Attr("residual", "bool", False, "add the second input before the activation"),)
    + EPILOGUE_ATTRS,
    min_inputs=1,
    max_inputs=2,
    shape=fused_conv_shape,
    params=conv_params,
    flops=fused_conv_flops,
    window=conv_window,
    gradient=fused_conv_gradient,
    shape_doc="as conv",
    params_doc="as conv",
    flops_doc="conv + residual add + activation",
))
