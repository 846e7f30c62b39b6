"""Boxes and the metrics of localization, detection and segmentation (NumPy, no framework).

Boxes are (cx, cy, w, h): centre and size, normalized to the image (0..1), the layout of
the localization head and of decoded detections. `to_corners` gives (x0, y0, x1, y1).

* `iou(a, b)`: IoU of boxes a (..., 4) and b (..., 4), broadcast; `iou_matrix(a, b)`: (N, M).
* `nms(boxes, scores, threshold)`: greedy non-maximum suppression -> kept indices, best first.
* `average_precision(scores, matched, n_gt)`: VOC all-point interpolated AP of one class.
* `mean_average_precision(detections, ground_truth, classes, iou_threshold=0.5)`: mAP@0.5.
* `confusion(pred, target, k)` and `mean_iou(confusion)`: per-class IoU of label maps.
"""
from __future__ import annotations

import numpy as np


def to_corners(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def to_centre(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    x0, y0, x1, y1 = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (cx, cy, w, h) boxes, element-wise with broadcasting; 0 where the union is empty.
    Negative widths or heights count as empty boxes."""
    ca, cb = to_corners(a), to_corners(b)
    ix = np.clip(np.minimum(ca[..., 2], cb[..., 2]) - np.maximum(ca[..., 0], cb[..., 0]), 0, None)
    iy = np.clip(np.minimum(ca[..., 3], cb[..., 3]) - np.maximum(ca[..., 1], cb[..., 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(ca[..., 2] - ca[..., 0], 0, None) * np.clip(ca[..., 3] - ca[..., 1], 0, None)
    area_b = np.clip(cb[..., 2] - cb[..., 0], 0, None) * np.clip(cb[..., 3] - cb[..., 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoUs of boxes a (N, 4) against b (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return iou(a[:, None, :], b[None, :, :])


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.5, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: take the best-scoring box, drop every remaining box whose
    IoU with it is above `threshold`, repeat. Returns the kept indices, best first (ties: lower
    index first)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    ious = iou_matrix(boxes, boxes)
    keep: list[int] = []
    alive = np.ones(len(scores), bool)
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        if max_keep is not None and len(keep) >= max_keep:
            break
        alive &= ious[i] <= threshold
        alive[i] = False
    return np.asarray(keep, dtype=np.int64)


def average_precision(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+, COCO-style monotone precision envelope) of one
    class: detections with `scores` and whether each matched a ground-truth box (true positive).
    nan when the class has no ground truth."""
    if n_gt == 0:
        return float("nan")
    scores = np.asarray(scores, dtype=np.float64)
    matched = np.asarray(matched, dtype=bool)
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1e-12)
    r = np.concatenate([[0.0], recall, [recall[-1]]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def match_detections(boxes, classes, scores, gt_boxes, gt_classes, iou_threshold: float = 0.5) -> np.ndarray:
    """For one image: which detections are true positives (VOC rule: in score order, a detection
    matches the unmatched ground-truth box of its class with the highest IoU >= threshold)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    classes, gt_classes = np.asarray(classes).reshape(-1), np.asarray(gt_classes).reshape(-1)
    matched = np.zeros(len(boxes), bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return matched
    ious = iou_matrix(boxes, gt_boxes)
    used = np.zeros(len(gt_boxes), bool)
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        cand = np.where((gt_classes == classes[i]) & ~used, ious[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            used[j] = True
            matched[i] = True
    return matched


def mean_average_precision(detections, ground_truth, classes: int, iou_threshold: float = 0.5,
                           per_class: bool = False):
    """mAP over the classes that have ground truth.

    detections: per image a tuple (boxes (D, 4), classes (D,), scores (D,));
    ground_truth: per image a tuple (boxes (G, 4), classes (G,)).
    With per_class, returns (mAP, {class: AP})."""
    scores = {c: [] for c in range(classes)}
    hits = {c: [] for c in range(classes)}
    n_gt = np.zeros(classes, np.int64)
    for (b, c, s), (gb, gc) in zip(detections, ground_truth):
        c, gc = np.asarray(c, np.int64).reshape(-1), np.asarray(gc, np.int64).reshape(-1)
        n_gt += np.bincount(gc, minlength=classes)[:classes]
        m = match_detections(b, c, s, gb, gc, iou_threshold)
        for k in range(len(c)):
            scores[int(c[k])].append(float(np.asarray(s).reshape(-1)[k]))
            hits[int(c[k])].append(bool(m[k]))
    aps = {c: average_precision(np.asarray(scores[c]), np.asarray(hits[c], bool), int(n_gt[c]))
           for c in range(classes) if n_gt[c] > 0}
    m_ap = float(np.mean(list(aps.values()))) if aps else float("nan")
    return (m_ap, aps) if per_class else m_ap


def confusion(pred: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: rows the true class, columns the predicted one (label maps of any shape)."""
    t = np.asarray(target, np.int64).reshape(-1)
    p = np.asarray(pred, np.int64).reshape(-1)
    ok = (t >= 0) & (t < k)
    return np.bincount(t[ok] * k + p[ok], minlength=k * k).reshape(k, k)


def class_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); nan for a class absent from both maps."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean of the per-class IoUs over the classes present in the ground truth or the prediction."""
    ious = class_iou(conf)
    ious = ious[~np.isnan(ious)]
    return float(ious.mean()) if len(ious) else float("nan")
