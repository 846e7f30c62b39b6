"""The YOLO-style grid of a single-shot detector: target encoding and decoding.

A detection head is a map of (classes + 5) * boxes channels over a GH x GW grid (the
compiler derives the width from the network parameters, see examples/detector.cnn).
Each grid cell has `boxes` predictors; predictor b of a cell owns the channels
b*(classes+5) ... (b+1)*(classes+5) - 1:

    0: x   the box centre's offset in the cell, 0..1 (left to right)
    1: y   the same, top to bottom
    2: sqrt(w)  the square root of the box width as a fraction of the image
    3: sqrt(h)  the same for the height (square roots: an error on a small box costs more)
    4: objectness, 1 where a box's centre falls in the cell, else 0
    5...: one score per class (one-hot in the target)

Encoding: an object belongs to the cell holding its centre (objectness 1); a cell with
several objects gives them to its predictors by decreasing area (objects beyond `boxes`
are dropped: the digit datasets never put two centres in one cell). Every other predictor
(objectness 0) regresses the box and class of the object whose centre is nearest to its
cell, its x, y offsets then lying outside 0..1 (clipped to -1..2, so that far cells do
not dominate the loss with large offsets). So the target is dense: no value of the map
is "don't care", and a plain `mse` (or `smooth_l1`) loss over the whole map needs no mask
(with zeros there instead, the many empty cells pull an mse-trained head's box and class
channels to 0). The `yolo` loss (cnndsl/ops/training/yolo_loss.py) reads only the objectness
of those predictors and trains box and class where an object is.

Decoding: score = objectness x the best class score (both clipped to 0..1), boxes above
a confidence threshold, then non-maximum suppression per class.

Two parameterizations of the predicted map, by the head's loss (`activation_for`):

    linear  (loss mse / smooth_l1) the channels are the target's numbers themselves
    yolo    (loss yolo, cnndsl/ops/training/yolo_loss.py) raw scores: x, y, sqrt(w), sqrt(h)
            and objectness are sigmoid(channel), the class scores softmax(channels 5...);
            the dense "nearest object" targets of empty cells are ignored by that loss
"""
from __future__ import annotations

import numpy as np

from cnndsl.tasks.boxes import nms


def layout(channels: int, classes: int | None = None, boxes: int | None = None) -> tuple[int, int]:
    """(classes, boxes) of a head with `channels` channels, from whichever of the two is known."""
    if boxes is None and classes is None:
        boxes = 1
    if boxes is None:
        if channels % (classes + 5):
            raise ValueError(f"a grid of {channels} channels is not (classes + 5) * boxes with classes={classes}")
        return classes, channels // (classes + 5)
    if channels % boxes or channels // boxes < 6:
        raise ValueError(f"a grid of {channels} channels is not (classes + 5) * boxes with boxes={boxes}")
    return channels // boxes - 5, boxes


def encode(objects, grid: tuple[int, int], classes: int, boxes: int = 1) -> np.ndarray:
    """The target map ((classes+5)*boxes, GH, GW) float32 of one image's objects
    [(class, (cx, cy, w, h)), ...], boxes normalized to the image."""
    gh, gw = grid
    per = classes + 5
    out = np.zeros((per * boxes, gh, gw), np.float32)
    cells: dict[tuple[int, int], list] = {}
    for cls, (cx, cy, w, h) in objects:
        i = min(int(cy * gh), gh - 1)
        j = min(int(cx * gw), gw - 1)
        cells.setdefault((i, j), []).append((w * h, int(cls), cx, cy, w, h))
    if not cells:
        return out
    assigned = np.zeros((boxes, gh, gw), bool)
    for (i, j), objs in cells.items():
        objs.sort(key=lambda o: -o[0])
        for b, (_, cls, cx, cy, w, h) in enumerate(objs[:boxes]):
            _fill(out[b * per:(b + 1) * per, i, j], cls, cx, cy, w, h, i, j, gh, gw, 1.0)
            assigned[b, i, j] = True
    # every other predictor: the object with the nearest centre (objectness 0)
    objs = [o for group in cells.values() for o in group]
    centres = np.array([[o[3] * gh, o[2] * gw] for o in objs])
    for i in range(gh):
        for j in range(gw):
            d = np.square(centres - [i + 0.5, j + 0.5]).sum(axis=1)
            _, cls, cx, cy, w, h = objs[int(np.argmin(d))]
            for b in range(boxes):
                if not assigned[b, i, j]:
                    v = out[b * per:(b + 1) * per, i, j]
                    _fill(v, cls, cx, cy, w, h, i, j, gh, gw, 0.0)
                    v[:2] = np.clip(v[:2], -1.0, 2.0)
    return out


def _fill(v, cls, cx, cy, w, h, i, j, gh, gw, objectness) -> None:
    v[0] = cx * gw - j
    v[1] = cy * gh - i
    v[2] = np.sqrt(max(w, 0.0))
    v[3] = np.sqrt(max(h, 0.0))
    v[4] = objectness
    v[5 + cls] = 1.0


ACTIVATIONS = ("linear", "yolo")


def activation_for(model, head: str) -> str:
    """How `decode` reads a model's grid head: "yolo" when its loss is `yolo`, else "linear"."""
    return "yolo" if any(s.head == head and s.kind == "yolo" for s in model.losses) else "linear"


def activate(grid_map: np.ndarray, classes: int, boxes: int = 1, activation: str = "linear") -> np.ndarray:
    """The map in the target's units: for "yolo", sigmoid on x, y, sqrt(w), sqrt(h), objectness
    and softmax over the class scores of every predictor; "linear" returns it unchanged."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
    if activation == "linear":
        return grid_map
    c, gh, gw = grid_map.shape
    g = grid_map.reshape(boxes, classes + 5, gh, gw).astype(np.float64)
    out = np.empty_like(g)
    out[:, :5] = 1.0 / (1.0 + np.exp(-g[:, :5]))
    z = g[:, 5:] - g[:, 5:].max(axis=1, keepdims=True)
    e = np.exp(z)
    out[:, 5:] = e / e.sum(axis=1, keepdims=True)
    return out.reshape(c, gh, gw)


def _cells(grid_map: np.ndarray, classes: int, boxes: int):
    """Per predictor of every cell: (cx, cy, w, h), objectness, class scores (all flattened)."""
    c, gh, gw = grid_map.shape
    per = classes + 5
    g = grid_map.reshape(boxes, per, gh, gw).astype(np.float64)
    jj, ii = np.meshgrid(np.arange(gw), np.arange(gh))
    cx = (np.clip(g[:, 0], 0, 1) + jj) / gw
    cy = (np.clip(g[:, 1], 0, 1) + ii) / gh
    w = np.clip(g[:, 2], 0, 1) ** 2
    h = np.clip(g[:, 3], 0, 1) ** 2
    xywh = np.stack([cx, cy, w, h], axis=-1).reshape(-1, 4)
    obj = g[:, 4].reshape(-1)
    cls = g[:, 5:].transpose(0, 2, 3, 1).reshape(-1, classes)
    return xywh, obj, cls


def ground_truth(target: np.ndarray, classes: int, boxes: int = 1):
    """(boxes (G, 4), classes (G,)) of one image from its target map."""
    xywh, obj, cls = _cells(target, classes, boxes)
    keep = obj > 0.5
    return xywh[keep], cls[keep].argmax(axis=1).astype(np.int64)


def decode(grid_map: np.ndarray, classes: int, boxes: int = 1, threshold: float = 0.01,
           nms_threshold: float = 0.5, max_detections: int = 50, activation: str = "linear"):
    """Detections of one image's predicted map: (boxes (D, 4), classes (D,), scores (D,)), best first.
    `activation`: "linear" (the map holds the target's numbers) or "yolo" (raw scores of the yolo loss)."""
    xywh, obj, cls = _cells(activate(grid_map, classes, boxes, activation), classes, boxes)
    label = cls.argmax(axis=1)
    score = np.clip(obj, 0, 1) * np.clip(cls[np.arange(len(label)), label], 0, 1)
    cand = np.flatnonzero(score > threshold)
    kept = []
    for c in np.unique(label[cand]):
        idx = cand[label[cand] == c]
        kept.extend(idx[nms(xywh[idx], score[idx], nms_threshold)])
    kept = np.asarray(kept, np.int64)
    if len(kept):
        kept = kept[np.argsort(-score[kept], kind="stable")][:max_detections]
    return xywh[kept], label[kept].astype(np.int64), score[kept]
