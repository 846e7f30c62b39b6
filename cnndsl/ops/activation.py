"""Activations: one input, same shape out. Every element-wise activation is declared once, as an
`Activation` record (cnndsl/kernels/activations.py); its op is made here from the record. Then
softmax, and prelu (a learned slope per channel)."""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.kernels.activations import ACTIVATIONS, INPUT, Activation
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register


def same_shape(ctx: ShapeContext) -> TensorType:
    return ctx.inputs[0]


def _per_element(n: int):
    return lambda a, ins, out: n * out.size


def activation_gradient(b, node, dy):
    """dL/dx from what the activation's gradient reads: its output y, or its input x (gelu, silu,
    hardswish, mish: not invertible). softmax reads y."""
    act = ACTIVATION_OF.get(node.op)
    saved = b.graph.inputs_of(node.name)[0] if act is not None and act.grad_from == INPUT else node.name
    return [b.input_grad("activation_grad", node, [dy, saved])]


def _alpha_attr(act: Activation) -> tuple[Attr, ...]:
    if act.alpha is None:
        return ()
    default, doc, minimum = act.alpha
    return (Attr("alpha", "float", default, doc, positional=True, minimum=minimum),)


def _activation_op(act: Activation) -> OpDef:
    return register(OpDef(
        name=act.name,
        aliases=act.aliases,
        category="activation",
        doc=act.doc,
        attrs=_alpha_attr(act),
        shape=same_shape,
        gradient=activation_gradient,
        flops=_per_element(act.flops),
        shape_doc="same as the input",
        params_doc="none",
        flops_doc=act.flops_doc,
    ))


# op name -> its record, for every element-wise activation op (not "none")
ACTIVATION_OF: dict[str, Activation] = {a.name: a for a in ACTIVATIONS if a.code != 0}
ACTIVATION_OPS: dict[str, OpDef] = {name: _activation_op(a) for name, a in ACTIVATION_OF.items()}

SOFTMAX = register(OpDef(
    name="softmax",
    category="activation",
    doc="exp(x) / sum(exp(x)) over the channels of each pixel of a CxHxW map, or over the features of a vector "
        "(the maximum is subtracted first for stability).",
    shape=same_shape,
    gradient=activation_gradient,
    flops=_per_element(5),
    shape_doc="same as the input",
    params_doc="none",
    flops_doc="5 per element (max, subtract, exp, sum, divide)",
))


def _prelu_params(a, ins, out):
    return {"slope": (out.shape[0],)}


def prelu_gradient(b, node, dy):
    """One node computes dx and (unless frozen) writes dslope, from the input x."""
    x = b.graph.inputs_of(node.name)[0]
    if not (b.trains(node) or b.needs(x)):
        return [None]
    name = b.add("prelu_grad", node, [dy, x], "grad", like=1)
    if b.trains(node):
        b.writes_params(name)
    return [name if b.needs(x) else None]


PRELU = register(OpDef(
    name="prelu",
    category="activation",
    doc="x for x > 0, slope[c] * x otherwise, with a slope learned per channel of a CxHxW map (per feature of a "
        "vector), initialized to 0.25 (He et al. 2015). Its gradient reads its input x.",
    shape=same_shape,
    params=_prelu_params,
    gradient=prelu_gradient,
    flops=_per_element(2),
    shape_doc="same as the input",
    params_doc="slope (C), initialized to 0.25",
    flops_doc="2 per element (a comparison and a multiply)",
))
