"""The metrics of the train section (`metric HEAD KIND...`), each declared once.

A `MetricDef` says what one metric is: its name, the head it needs (`head_rank`: 1 a vector, 3 a
KxHxW map, None any; `head_shape`, `head_what`: an exact shape, for box_iou's 4 box numbers), the range of its
values and which end is best, and its title on plots. Everything else reads them:
  - the frontend checks a `metric` line against them (cnndsl/frontend/training.py)
  - the evaluation hook computes them and `RANGES` is derived (cnndsl/tasks/metrics.py)
  - plots title them (cnndsl/train/metrics.py)
Their arithmetic lives in cnndsl/tasks/metrics.py (MetricHook) and cnndsl/tasks/boxes.py; this
module is kept free of it so that the frontend, below the trainer, can read it (tests/test_layering.py).
"""
from __future__ import annotations

from dataclasses import dataclass

INF = float("inf")


@dataclass(frozen=True)
class MetricDef:
    name: str
    doc: str
    title: str  # on plots and in reports
    head_rank: int | None  # the rank of the head it reads: 1 a vector, 3 a KxHxW map, None any
    low: float = 0.0  # the lowest value it can take
    high: float = 1.0  # the highest
    best: str = "max"  # which end is best: "max" or "min"
    head_shape: tuple[int, ...] | None = None  # an exact head shape it needs (box_iou: (4,))
    head_what: str = ""  # that shape in words, for messages ("4 box numbers")
    hooked: bool = True  # computed by the evaluation hook (accuracy is computed by Model.evaluate itself)


METRICS: dict[str, MetricDef] = {m.name: m for m in (
    MetricDef("accuracy", "share of argmax == class (vector heads; also computed by Model.evaluate)", "accuracy",
              1, hooked=False),
    MetricDef("top5", "share of targets among the 5 highest scores", "top-5 accuracy", 1),
    MetricDef("mean_iou", "per-pixel heads: IoU per class over the whole set (TP / (TP + FP + FN)), averaged over "
              "the classes present in the targets or the predictions", "mean IoU", 3),
    MetricDef("pixel_accuracy", "share of pixels whose argmax is the target class", "pixel accuracy", 3),
    MetricDef("mae", "mean absolute error over all elements", "mean absolute error", None, high=INF, best="min"),
    MetricDef("mse", "mean squared error over all elements", "mean squared error", None, high=INF, best="min"),
    MetricDef("box_iou", "4-number box heads (cx, cy, w, h): mean IoU of predicted and target boxes", "box IoU", 1,
              head_shape=(4,), head_what="4 box numbers"),
    MetricDef("map50", "detection grids: mAP at IoU 0.5 of the decoded detections (cnndsl.tasks.detection)",
              "mAP@0.5", 3),
)}
