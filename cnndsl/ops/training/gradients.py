"""Gradient ops: the nodes the autodiff pass adds to make a training graph.

Gradients are coarse ops (conv input-grad, conv weight-grad, pool grad, ...),
each an ordinary registered op with a shape rule, so the backward graph is
shape-checked, planned and (later) optimized like the forward one.

Conventions of every gradient node:
  attrs["forward"]  the forward node it differentiates (its attrs, resolved
                    padding and saved state are read from there);
  attrs["like"]     the input port whose type the output has (the gradient of
                    a tensor has that tensor's type);
  a `*_grad_params` node writes the gradients of the forward node's learnable
  tensors into the gradient buffer and produces an empty tensor (type ()).
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register

FORWARD = Attr("forward", "name", doc="the forward node this gradient belongs to")
LIKE = Attr("like", "int", 0, "input port whose type the output has", minimum=0)
EFFECT = TensorType(())


def _like(ctx: ShapeContext) -> TensorType:
    return ctx.inputs[ctx.attrs.get("like", 0)]


def _effect(ctx: ShapeContext) -> TensorType:
    return EFFECT


def _grad_op(name: str, doc: str, inputs: int, params_only: bool = False) -> OpDef:
    return register(OpDef(
        name=name,
        doc=doc,
        attrs=(FORWARD, LIKE),
        min_inputs=inputs,
        max_inputs=inputs,
        shape=_effect if params_only else _like,
        category="gradient",
        shape_doc="() (writes parameter gradients)" if params_only else "the type of input port `like`",
    ))


# -- input gradients: (dy, forward tensors...) -> dx ------------------------------------
CONV_GRAD_INPUT = _grad_op("conv_grad_input", "dL/dx of conv. Inputs: dy, x.", 2)
CONV_GRAD_PARAMS = _grad_op("conv_grad_params", "dL/dW and dL/db of conv. Inputs: dy, x.", 2, True)
CONV_T_GRAD_INPUT = _grad_op("conv_transpose_grad_input", "dL/dx of conv_transpose. Inputs: dy, x.", 2)
CONV_T_GRAD_PARAMS = _grad_op("conv_transpose_grad_params", "dL/dW, dL/db of conv_transpose. Inputs: dy, x.", 2, True)
DENSE_GRAD_INPUT = _grad_op("dense_grad_input", "dL/dx of dense. Inputs: dy, x.", 2)
DENSE_GRAD_PARAMS = _grad_op("dense_grad_params", "dL/dW and dL/db of dense. Inputs: dy, x.", 2, True)
POOL_GRAD = _grad_op("pool_grad", "dL/dx of max/avg/l2 pooling. Inputs: dy, x, y.", 3)
GLOBAL_POOL_GRAD = _grad_op("global_avgpool_grad", "dL/dx of global average pooling. Inputs: dy, x.", 2)
ACTIVATION_GRAD = _grad_op("activation_grad", "dL/dx of an element-wise activation or softmax, from what its "
                           "gradient reads. Inputs: dy, then y (the forward output) or x (the input: gelu, silu, "
                           "hardswish, mish).", 2)
PRELU_GRAD = _grad_op("prelu_grad", "dL/dx of prelu; also writes dL/dslope. Inputs: dy, x.", 2)
DROPOUT_GRAD = _grad_op("dropout_grad", "dL/dx of dropout with the forward mask. Inputs: dy.", 1)
BATCHNORM_GRAD = _grad_op("batchnorm_grad", "dL/dx of batchnorm; also writes dL/dgamma, dL/dbeta. "
                          "Inputs: dy, x.", 2)
FLATTEN_GRAD = _grad_op("unflatten", "dy reshaped back to the flattened input. Inputs: dy, x.", 2)
UPSAMPLE_GRAD = _grad_op("upsample_grad", "dL/dx of nearest upsampling. Inputs: dy, x.", 2)

CONCAT_GRAD = register(OpDef(
    name="concat_grad",
    doc="The slice of dy that belongs to one concat input. Inputs: dy, x_i.",
    attrs=(FORWARD, LIKE, Attr("offset", "int", 0, "first channel (or feature) of this input", minimum=0)),
    min_inputs=2,
    max_inputs=2,
    shape=_like,
    category="gradient",
    shape_doc="the type of input port `like`",
))
