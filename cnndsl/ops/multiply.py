"""multiply(a, b): the element-wise product of two tensors, one of which may hold one value per
channel (a vector of C, or Cx1x1) that scales every pixel of a CxHxW map: the scale of a
squeeze-and-excitation block (`multiply(x, s)` with `s` from global_avgpool, dense, sigmoid)."""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.training.gradients import FORWARD, LIKE, _like


def _per_channel(t: TensorType, channels: int) -> bool:
    """A vector of `channels`, or a channels x 1 x 1 map."""
    return t.shape == (channels,) or t.shape == (channels, 1, 1)


def multiply_shape(ctx: ShapeContext) -> TensorType:
    a, b = ctx.inputs
    na, nb = ctx.input_names
    if a.shape == b.shape:
        return a
    for big, small, bn, sn in ((a, b, na, nb), (b, a, nb, na)):
        if len(big.shape) == 3 and _per_channel(small, big.shape[0]):
            return big
    details = [f"'{na}' is {a}", f"'{nb}' is {b}"]
    fix = None
    for big, small, bn, sn in ((a, b, na, nb), (b, a, nb, na)):
        if len(big.shape) == 3 and len(small.shape) == 1:
            fix = (f"a per-channel scale of '{bn}' needs {big.shape[0]} values, and '{sn}' has {small.shape[0]}: "
                   f"make the layer before it `dense {big.shape[0]}`")
        elif len(big.shape) == 3 and len(small.shape) == 3 and small.shape[0] == big.shape[0]:
            fix = f"'{sn}' must have the size of '{bn}' ({big.shape[1]}x{big.shape[2]}) or be 1x1 (global_avgpool it)"
    ctx.error(f"{ctx.describe()} multiplies tensors of shapes that do not broadcast: {a} and {b}",
              details=details + ["expected: equal shapes, or a CxHxW map and a vector of C (or Cx1x1)"],
              help=fix, code="multiply-shape")


def multiply_gradient(b, node, dy):
    """Each input gets dy times the other (summed over the pixels for a per-channel operand)."""
    ins = b.graph.inputs_of(node.name)
    grads = []
    for port, src in enumerate(ins):
        if not b.needs(src):
            grads.append(None)
            continue
        grads.append(b.add("multiply_grad", node, [dy] + list(ins), f"grad_input{port}" if port else "grad_input",
                           like=port + 1, port=port))
    return grads


MULTIPLY = register(OpDef(
    gradient=multiply_gradient,
    name="multiply",
    aliases=("mul",),
    category="merge",
    doc="Element-wise product of two tensors of the same shape, or of a CxHxW map and a per-channel scale (a "
        "vector of C or a Cx1x1 map, broadcast over the pixels): the scale of a squeeze-and-excitation block.",
    min_inputs=2,
    max_inputs=2,
    shape=multiply_shape,
    flops=lambda a, ins, out: out.size,
    shape_doc="the larger input's shape: equal shapes, or CxHxW times C (or Cx1x1)",
    params_doc="none",
    flops_doc="1 multiply per output element",
))

MULTIPLY_GRAD = register(OpDef(
    name="multiply_grad",
    doc="dL/d(input `port`) of multiply: dy times the other input, summed over the pixels for a per-channel "
        "input. Inputs: dy, a, b.",
    attrs=(FORWARD, LIKE, Attr("port", "int", 0, "which input's gradient (0: a, 1: b)", minimum=0, maximum=1)),
    min_inputs=3,
    max_inputs=3,
    shape=_like,
    category="gradient",
    shape_doc="the type of input port `like`",
))
