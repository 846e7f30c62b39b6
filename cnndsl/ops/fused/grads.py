"""Gradient ops of the fused layers.

`epilogue_grad` is dL/dz of a fused layer's activation, computed from its output y
(what activation_grad is for the standalone activations). The backward fusion pass
(cnndsl/passes/fuse_backward.py) folds it, and the layer's two gradient ops that
read it, into one `fused_conv_grad` / `fused_dense_grad` node; for fused_batchnorm it
folds it and the one batchnorm_grad that reads it into `fused_batchnorm_grad`.
"""
from __future__ import annotations

from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.training.gradients import EFFECT, FORWARD, LIKE, _grad_op


def _fused_grad_shape(ctx: ShapeContext):
    return ctx.inputs[1] if ctx.attrs["input_grad"] else EFFECT


EPILOGUE_GRAD = _grad_op("epilogue_grad", "dL/dz of a fused layer's activation, from its output. "
                         "Inputs: dy, y.", 2)


def _fused_grad_op(name: str, layer: str) -> OpDef:
    return register(OpDef(
        name=name,
        doc=f"The whole backward of a {layer} with an activation epilogue: dz from (dy, y) in scratch, "
            f"then the parameter gradients and (input_grad=true) dL/dx. Inputs: dy, x, y.",
        attrs=(FORWARD, LIKE,
               Attr("params_grad", "bool", True, "write the layer's parameter gradients"),
               Attr("input_grad", "bool", True, "produce dL/dx (otherwise the output is empty)")),
        min_inputs=3,
        max_inputs=3,
        shape=_fused_grad_shape,
        category="gradient",
        shape_doc="the type of x, or () without input_grad",
    ))


FUSED_CONV_GRAD = _fused_grad_op("fused_conv_grad", "fused_conv")
FUSED_DENSE_GRAD = _fused_grad_op("fused_dense_grad", "fused_dense")
FUSED_BATCHNORM_GRAD = _grad_op("fused_batchnorm_grad", "The whole backward of a fused_batchnorm: "
                                "batchnorm_grad with dz = act'(y) * dy computed on the fly in both of "
                                "its sweeps; writes dL/dgamma, dL/dbeta. Inputs: dy, x, y.", 3)
