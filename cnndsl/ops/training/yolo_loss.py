"""The YOLO-style detection loss op `yolo` (`loss grid yolo noobj=0.5 coord=5`).

Head and target: a (classes + 5) * boxes x GH x GW grid (cnndsl.tasks.detection.encode makes
the target). Objectness (BCE on its sigmoid) is trained on every predictor, times `noobj`
where the target has no object; box (x, y, sqrt(w), sqrt(h) as sigmoids, squared error
times `coord`) and class (softmax cross-entropy) only on the predictors holding an object.
Sum over predictors and cells, mean over the batch. Formulas and gradient:
cnndsl/kernels/reference/yolo_loss.py; kernels: cnndsl/kernels/cpu/yolo_loss.py,
cnndsl/kernels/cuda/yolo_loss.py. Decoding with the same parameterization:
cnndsl.tasks.detection.decode(..., activation="yolo").
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register
from cnndsl.ops.training.losses import HEAD, WEIGHT, _same_target, _target_shape
from cnndsl.ops.training.targets import RealValues

NOOBJ = Attr("noobj", "float", 0.5, "weight of the objectness loss of predictors without an object", minimum=0)
COORD = Attr("coord", "float", 5.0, "weight of the box loss", minimum=0)
BOXES = Attr("boxes", "int", 1, "predictors per cell (the head has (classes + 5) * boxes channels)", minimum=1)
# `loss HEAD yolo` options as the train section writes them (cnndsl/frontend/training.py)
OPTIONS = (NOOBJ, COORD, BOXES)


YOLO_RANK = 3  # the head is a grid: channels x GH x GW


def _shape(ctx: ShapeContext) -> TensorType:
    head = ctx.inputs[0]
    boxes = int(ctx.attrs.get("boxes", 1))
    if len(head.shape) != YOLO_RANK:
        ctx.error(f"{ctx.describe()} needs a (classes + 5) * boxes x GH x GW grid, but head "
                  f"'{ctx.input_names[0]}' is {head}", code="loss-head")
    elif head.shape[0] % boxes or head.shape[0] // boxes < 6:
        ctx.error(f"{ctx.describe()}: head '{ctx.input_names[0]}' has {head.shape[0]} channels, not "
                  f"(classes + 5) * {boxes} with at least one class", attr="boxes", code="loss-head")
    _target_shape(ctx)
    return head


YOLO = register(OpDef(name="yolo", doc="YOLO-style detection loss: objectness BCE on every grid cell (times noobj "
                      "where empty), box squared error (times coord) and class cross-entropy where an object is.",
                      attrs=(WEIGHT, HEAD) + OPTIONS, min_inputs=2, max_inputs=2, shape=_shape, category="loss",
                      head_rank=YOLO_RANK, target=_same_target, target_values=RealValues(unit_from=4), shape_doc="head (classes+5)*boxes x GH x GW, target the same (encoded grid)"))
