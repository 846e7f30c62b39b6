"""Loss ops and their targets.

A loss node reads (head, target) and its tensor is dL/d(head), already scaled
by the loss weight: computing the loss and its gradient together is cheaper
and numerically stable (softmax and log-sum-exp share one pass). The loss
value itself is reported by the backend next to the tensor.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.training.targets import ClassIndices, RealValues

WEIGHT = Attr("weight", "float", 1.0, "multiplier of this loss in the total", minimum=0)
HEAD = Attr("head", "name", doc="the output head this loss belongs to")
IGNORE_INDEX = -1  # pixel_cross_entropy skips pixels labelled so (zero loss and gradient)


def _target_shape(ctx: ShapeContext) -> None:
    head, target = ctx.inputs
    want, dtype = get_target(ctx.node.op, head)
    if target.shape != want or target.dtype != dtype:
        ctx.error(f"{ctx.describe()} compares head '{ctx.input_names[0]}' ({head}) with a target of shape "
                  f"{target or '()'} {target.dtype}, expected {TensorType(want) or '()'} {dtype}",
                  code="loss-target")


def get_target(op_name: str, head: TensorType):
    from cnndsl.ops.registry import get_op

    return get_op(op_name).target(head)


def _class_index_target(head: TensorType):
    return (), "int64"


def _pixel_target(head: TensorType):
    return head.shape[1:], "int64"


def _same_target(head: TensorType):
    return head.shape, "float32"


def _needs_rank(rank: int, what: str):
    def rule(ctx: ShapeContext) -> TensorType:
        head = ctx.inputs[0]
        if len(head.shape) != rank:
            ctx.error(f"{ctx.describe()} needs {what}, but head '{ctx.input_names[0]}' is {head}",
                      help="use cross_entropy on class vectors (K) and pixel_cross_entropy on maps (K x H x W)",
                      code="loss-head")
        _target_shape(ctx)
        return head
    return rule


def _any_rank(ctx: ShapeContext) -> TensorType:
    _target_shape(ctx)
    return ctx.inputs[0]


def _loss(name, doc, shape, target, shape_doc, values):
    return register(OpDef(name=name, doc=doc, attrs=(WEIGHT, HEAD), min_inputs=2, max_inputs=2, shape=shape,
                          category="loss", target=target, target_values=values, shape_doc=shape_doc))


CROSS_ENTROPY = _loss("cross_entropy", "Softmax + cross-entropy over K class scores, mean over the batch.",
                      _needs_rank(1, "a vector of K class scores"), _class_index_target,
                      "head K, target a class index per sample", ClassIndices())
PIXEL_CROSS_ENTROPY = _loss("pixel_cross_entropy", "Softmax + cross-entropy per pixel, mean over N*H*W.",
                            _needs_rank(3, "a K x H x W map of class scores"), _pixel_target,
                            "head K x H x W, target H x W class indices (-1: ignored)",
                            ClassIndices(ignore=IGNORE_INDEX))
MSE = _loss("mse", "Mean squared error over all elements.", _any_rank, _same_target, "target shaped like the head",
            RealValues())
SMOOTH_L1 = _loss("smooth_l1", "Smooth L1 (Huber, beta=1) over all elements, for box regression.", _any_rank,
                  _same_target, "target shaped like the head", RealValues())

TARGET = register(OpDef(
    name="target",
    doc="The training target of one head, fed from the dataset.",
    attrs=(Attr("head", "name", doc="the head it belongs to"),),
    min_inputs=0,
    max_inputs=0,
    shape=lambda ctx: TensorType(tuple(ctx.node.meta["target_shape"]), ctx.node.meta["target_dtype"]),
    category="input",
    shape_doc="set by the loss of its head",
))

