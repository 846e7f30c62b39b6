"""Element-wise activations (and softmax): one input, same shape out, no parameters."""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register


def same_shape(ctx: ShapeContext) -> TensorType:
    return ctx.inputs[0]


def _per_element(n: int):
    return lambda a, ins, out: n * out.size


def activation_gradient(b, node, dy):
    """Every activation differentiates from its output y (for leaky_relu, y > 0 exactly when x > 0)."""
    return [b.input_grad("activation_grad", node, [dy, node.name])]


def _activation(name: str, doc: str, flops: int, flops_doc: str, attrs=(), aliases=()) -> OpDef:
    return register(OpDef(
        name=name,
        aliases=aliases,
        category="activation",
        doc=doc,
        attrs=attrs,
        shape=same_shape,
        gradient=activation_gradient,
        flops=_per_element(flops),
        shape_doc="same as the input",
        params_doc="none",
        flops_doc=flops_doc,
    ))


RELU = _activation("relu", "max(x, 0).", 1, "1 per element (a comparison)")
LEAKY_RELU = _activation(
    "leaky_relu", "x for x > 0, alpha*x otherwise.", 2, "2 per element (a comparison and a multiply)",
    attrs=(Attr("alpha", "float", 0.01, "slope for negative inputs", positional=True, minimum=0),),
    aliases=("leaky",),
)
TANH = _activation("tanh", "Hyperbolic tangent.", 1, "1 per element (tanh counted as one operation)")
SIGMOID = _activation("sigmoid", "1 / (1 + exp(-x)).", 3, "3 per element (exp, add, divide)",
                      aliases=("logistic",))
SOFTMAX = _activation(
    "softmax",
    "exp(x) / sum(exp(x)) over the channels of each pixel of a CxHxW map, or over the features of a vector "
    "(the maximum is subtracted first for stability).",
    5, "5 per element (max, subtract, exp, sum, divide)",
)
