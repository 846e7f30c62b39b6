"""The per-head metrics of the train section (`metric HEAD KIND...`), computed at evaluation.

`MetricHook.for_model(model)` gathers the declared metrics whose head has a target (a
loss); `add(outputs, targets)` takes one evaluation batch (head outputs may be views into
reused buffers: everything is reduced at once); `result()` gives {name: value}.

Each metric (its head, range, title) is declared once in cnndsl/tasks/metric_kinds.py; its
arithmetic is here (MetricHook) and in cnndsl/tasks/boxes.py.

A metric's name in the result is its kind (`map50`), or `HEAD_KIND` when two heads declare
the same kind. The trainer writes them to metrics.json as `test_<name>`.
"""
from __future__ import annotations

import numpy as np

from cnndsl.tasks import boxes as B
from cnndsl.tasks.metric_kinds import METRICS

HOOK_KINDS = tuple(k for k, m in METRICS.items() if m.hooked)
CLASSIFICATION_LOSSES = ("cross_entropy", "pixel_cross_entropy")

# What each metric's value can be: (lowest, highest, which end is best). Every metric of a
# perfect prediction is exactly its best value (tests/test_metrics_in_view.py).
RANGES = {k: (m.low, m.high, m.best) for k, m in METRICS.items()}


def metric_names(model) -> list[str]:
    """The names under which the held-out values of the metrics the train section declares
    appear in Model.evaluate's result (and as `test_<name>` in metrics.json), in the order
    written: `accuracy` (or `HEAD_accuracy` with several classification heads), the hook's
    names (`map50`, or `HEAD_KIND` when two heads declare one kind). Without any `metric` line,
    the accuracy of each classification loss."""
    losses = list(getattr(model, "losses", []))
    with_targets = {spec.head for spec in losses}
    classifying = [spec.head for spec in losses if spec.kind in CLASSIFICATION_LOSSES]
    declared = list(getattr(model.config, "metrics", ()) or ())
    hooked = [m for m in declared if m.kind in HOOK_KINDS and m.head in with_targets]
    kinds = [m.kind for m in hooked]
    names = []
    for m in declared:
        if m.kind == "accuracy" and m.head in classifying:
            name = "accuracy" if len(classifying) == 1 else f"{m.head}_accuracy"
        elif m in hooked:
            name = m.kind if kinds.count(m.kind) == 1 else f"{m.head}_{m.kind}"
        else:
            continue
        if name not in names:
            names.append(name)
    if not declared:
        names = ["accuracy" if len(classifying) == 1 else f"{h}_accuracy" for h in classifying]
    return names


def train_metric_name(model) -> str | None:
    """The declared metric that the training loop's running accuracy is (the argmax accuracy of
    the first loss's head: `accuracy`, or `pixel_accuracy` for a per-pixel head), or None."""
    if not model.losses or model.losses[0].kind not in CLASSIFICATION_LOSSES:
        return None
    spec = model.losses[0]
    kind = "accuracy" if spec.kind == "cross_entropy" else "pixel_accuracy"
    names = metric_names(model)
    classifying = [s.head for s in model.losses if s.kind in CLASSIFICATION_LOSSES]
    declared = [m for m in (getattr(model.config, "metrics", ()) or ()) if m.head == spec.head]
    if kind == "pixel_accuracy" and any(m.kind == "pixel_accuracy" for m in declared):
        hooked = [m.kind for m in model.config.metrics if m.kind == "pixel_accuracy"]
        return "pixel_accuracy" if len(hooked) == 1 else f"{spec.head}_pixel_accuracy"
    acc = "accuracy" if len(classifying) == 1 else f"{spec.head}_accuracy"
    return acc if acc in names else None


class MetricHook:
    def __init__(self, model, metrics):
        self.model = model
        self.metrics = list(metrics)
        kinds = [m.kind for m in self.metrics]
        self.names = {(m.head, m.kind): m.kind if kinds.count(m.kind) == 1 else f"{m.head}_{m.kind}"
                      for m in self.metrics}
        self.heads = sorted({m.head for m in self.metrics})
        self.state: dict[tuple[str, str], list] = {(m.head, m.kind): [0.0, 0] for m in self.metrics}
        self.layouts = {}
        self.detections: dict[str, list] = {}
        self.truth: dict[str, list] = {}
        for m in self.metrics:
            if m.kind == "map50":
                from cnndsl.tasks.datasets import detection_layout

                from cnndsl.tasks.detection import activation_for

                self.layouts[m.head] = detection_layout(model, m.head) + (activation_for(model, m.head),)
                self.detections[m.head], self.truth[m.head] = [], []
            elif m.kind in ("mean_iou", "pixel_accuracy"):
                k = model.graph.node(model.graph.heads[m.head]).type.shape[0]
                self.state[(m.head, m.kind)] = np.zeros((k, k), np.int64)

    @classmethod
    def for_model(cls, model) -> "MetricHook | None":
        with_targets = {spec.head for spec in model.losses}
        metrics = [m for m in model.config.metrics if m.kind in HOOK_KINDS and m.head in with_targets]
        return cls(model, metrics) if metrics else None

    def add(self, outputs: dict, targets: dict) -> None:
        for m in self.metrics:
            out, tgt = np.asarray(outputs[m.head]), np.asarray(targets[m.head])
            key = (m.head, m.kind)
            st = self.state[key]
            if m.kind == "top5":
                from cnndsl.train.metrics import count_top_k

                st[0] += count_top_k(out, tgt, min(5, out.shape[1]))
                st[1] += len(tgt)
            elif m.kind in ("mean_iou", "pixel_accuracy"):
                st += B.confusion(out.argmax(axis=1), tgt, st.shape[0])
            elif m.kind == "box_iou":
                st[0] += float(B.iou(out.astype(np.float64), tgt.astype(np.float64)).sum())
                st[1] += len(tgt)
            elif m.kind == "mae":
                st[0] += float(np.abs(out.astype(np.float64) - tgt).sum())
                st[1] += tgt.size
            elif m.kind == "mse":
                st[0] += float(np.square(out.astype(np.float64) - tgt).sum())
                st[1] += tgt.size
            elif m.kind == "map50":
                from cnndsl.tasks import detection

                classes, boxes, activation = self.layouts[m.head]
                for o, t in zip(out, tgt):
                    self.detections[m.head].append(detection.decode(o, classes, boxes, activation=activation))
                    self.truth[m.head].append(detection.ground_truth(t, classes, boxes))

    def result(self) -> dict[str, float]:
        out = {}
        for m in self.metrics:
            key = (m.head, m.kind)
            st = self.state[key]
            if m.kind == "mean_iou":
                value = B.mean_iou(st)
            elif m.kind == "pixel_accuracy":
                value = float(np.trace(st) / max(st.sum(), 1))
            elif m.kind == "map50":
                value = B.mean_average_precision(self.detections[m.head], self.truth[m.head],
                                                 self.layouts[m.head][0], 0.5)
            else:
                value = st[0] / st[1] if st[1] else float("nan")
            out[self.names[key]] = float(value)
        return out
