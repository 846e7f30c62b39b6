"""Loss ops and their targets.

A loss node reads (head, target) and its tensor is dL/d(head), already scaled
by the loss weight: computing the loss and its gradient together is cheaper
and numerically stable (softmax and log-sum-exp share one pass). The loss
value itself is reported by the backend next to the tensor.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, get_op, register
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
    return get_op(op_name).target(head)


def _class_index_target(head: TensorType):
    return (), "int64"


def _pixel_target(head: TensorType):
    return head.shape[1:], "int64"


def _same_target(head: TensorType):
    return head.shape, "float32"


HEAD_OF_RANK = {1: "a vector of K class scores", 3: "a K x H x W map of class scores"}  # how messages name them


def _head_rule(ctx: ShapeContext) -> TensorType:
    """The loss op's declared `head_rank` (None: any head), then its target's shape."""
    head, rank = ctx.inputs[0], get_op(ctx.node.op).head_rank
    if rank is not None and len(head.shape) != rank:
        ctx.error(f"{ctx.describe()} needs {HEAD_OF_RANK[rank]}, but head '{ctx.input_names[0]}' is {head}",
                  help="use cross_entropy on class vectors (K) and pixel_cross_entropy on maps (K x H x W)",
                  code="loss-head")
    _target_shape(ctx)
    return head


def _loss(name, doc, head_rank, target, shape_doc, values):
    return register(OpDef(name=name, doc=doc, attrs=(WEIGHT, HEAD), min_inputs=2, max_inputs=2, shape=_head_rule,
                          category="loss", head_rank=head_rank, target=target, target_values=values,
                          shape_doc=shape_doc))


CROSS_ENTROPY = _loss("cross_entropy", "Softmax + cross-entropy over K class scores, mean over the batch.",
                      1, _class_index_target, "head K, target a class index per sample", ClassIndices())
PIXEL_CROSS_ENTROPY = _loss("pixel_cross_entropy", "Softmax + cross-entropy per pixel, mean over N*H*W.",
                            3, _pixel_target, "head K x H x W, target H x W class indices (-1: ignored)",
                            ClassIndices(ignore=IGNORE_INDEX))
MSE = _loss("mse", "Mean squared error over all elements.", None, _same_target, "target shaped like the head",
            RealValues())
SMOOTH_L1 = _loss("smooth_l1", "Smooth L1 (Huber, beta=1) over all elements, for box regression.", None,
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

