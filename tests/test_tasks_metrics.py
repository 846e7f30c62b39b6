"""IoU, NMS, AP/mAP, mean IoU and the YOLO grid encoding against small hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from cnndsl.tasks import boxes as B
from cnndsl.tasks import detection as D


def test_iou_hand_cases():
    a = np.array([0.25, 0.5, 0.5, 1.0])  # corners (0, 0, 0.5, 1)
    b = np.array([0.5, 0.5, 0.5, 1.0])  # corners (0.25, 0, 0.75, 1): overlap 0.25, union 0.75
    assert B.iou(a, b) == pytest.approx(1 / 3)
    assert B.iou(a, a) == pytest.approx(1.0)
    assert B.iou(a, np.array([0.9, 0.5, 0.1, 0.1])) == 0.0  # disjoint
    # a box inside another: 0.2*0.2 / (0.4*0.4)
    assert B.iou(np.array([0.5, 0.5, 0.4, 0.4]), np.array([0.5, 0.5, 0.2, 0.2])) == pytest.approx(0.25)
    # touching edges: no overlap; an empty box: 0, not nan
    assert B.iou(np.array([0.25, 0.5, 0.5, 1]), np.array([0.75, 0.5, 0.5, 1])) == 0.0
    assert B.iou(np.zeros(4), np.zeros(4)) == 0.0
    m = B.iou_matrix([a, b], [a, b, [0.9, 0.9, 0.1, 0.1]])
    assert m.shape == (2, 3) and m[0, 1] == pytest.approx(1 / 3) and m[1, 2] == 0.0


def test_corners_round_trip():
    c = np.array([[0.1, 0.2, 0.5, 0.9]])
    assert np.allclose(B.to_centre(c), [[0.3, 0.55, 0.4, 0.7]])
    assert np.allclose(B.to_corners(B.to_centre(c)), c)


def test_nms_keeps_best_and_disjoint():
    boxes = np.array([[0.3, 0.3, 0.2, 0.2],      # A .9
                      [0.31, 0.3, 0.2, 0.2],     # B .8, IoU with A = 0.19/0.21 = 0.905 -> dropped
                      [0.7, 0.7, 0.2, 0.2],      # C .7, disjoint -> kept
                      [0.35, 0.3, 0.2, 0.2]])    # D .95, IoU with A = 0.15*0.2/(0.08-0.03) = 0.6
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert B.nms(boxes, scores, 0.5).tolist() == [3, 2]      # D suppresses A (0.6) and B; C stays
    assert B.nms(boxes, scores, 0.7).tolist() == [3, 0, 2]   # A survives D at 0.7; B does not survive A
    assert B.nms(boxes, scores, 0.5, max_keep=1).tolist() == [3]
    assert B.nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_average_precision_hand_case():
    # 2 ground-truth boxes; detections by score: TP, FP, TP
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> envelope 1 up to recall 1/2, 2/3 up to 1
    ap = B.average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert B.average_precision(np.array([0.9]), np.array([True]), 1) == pytest.approx(1.0)
    assert B.average_precision(np.array([0.9, 0.5]), np.array([False, True]), 1) == pytest.approx(0.5)
    assert B.average_precision(np.array([]), np.array([], bool), 3) == 0.0
    assert np.isnan(B.average_precision(np.array([0.5]), np.array([False]), 0))


def test_map_two_images_two_classes():
    gt = [(np.array([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]]), np.array([0, 1])),
          (np.array([[0.5, 0.5, 0.4, 0.4]]), np.array([0]))]
    det = [
        # image 1: class 0 hit (score .9), class 1 box with the wrong class 0 (.6): a false positive
        (np.array([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]]), np.array([0, 0]), np.array([0.9, 0.6])),
        # image 2: class 0 found twice: the second is a duplicate (FP), IoU of the first 0.75 >= 0.5
        (np.array([[0.5, 0.55, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]]), np.array([0, 0]), np.array([0.8, 0.7])),
    ]
    m, per = B.mean_average_precision(det, gt, classes=2, per_class=True)
    # class 0: scores .9 TP, .8 TP, .7 FP, .6 FP over 2 gt -> AP 1; class 1: no detection -> AP 0
    assert per[0] == pytest.approx(1.0) and per[1] == 0.0 and m == pytest.approx(0.5)
    # at IoU 0.8 the shifted box (IoU 0.0.36/0.44 = 0.818) still counts; at 0.9 it does not
    m9, per9 = B.mean_average_precision(det, gt, classes=2, iou_threshold=0.9, per_class=True)
    # class 0 at 0.9: .9 TP, .8 FP, .7 TP (the exact box), .6 FP -> P 1, .5, .667 at R .5, .5, 1
    assert per9[0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_confusion_and_mean_iou():
    target = np.array([[0, 0, 1], [2, 2, 1]])
    pred = np.array([[0, 1, 1], [2, 0, 1]])
    conf = B.confusion(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU: class 0: 1/(2+2-1) = 1/3; class 1: 2/(3+2-2) = 2/3; class 2: 1/(1+2-1) = 1/2
    assert np.allclose(B.class_iou(conf), [1 / 3, 2 / 3, 1 / 2])
    assert B.mean_iou(conf) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    # a class absent from both maps is left out of the mean
    conf4 = B.confusion(pred, target, 4)
    assert np.isnan(B.class_iou(conf4)[3]) and B.mean_iou(conf4) == pytest.approx(B.mean_iou(conf))


def test_grid_encoding_round_trip():
    objects = [(3, (0.30, 0.40, 0.2, 0.3)), (7, (0.80, 0.15, 0.1, 0.25))]
    t = D.encode(objects, (4, 4), classes=10, boxes=1)
    assert t.shape == (15, 4, 4)
    # object 1: centre (0.3, 0.4) -> cell row 1, col 1; offsets (0.2, 0.6); sqrt sizes; objectness; class 3
    assert np.allclose(t[:5, 1, 1], [0.2, 0.6, np.sqrt(0.2), np.sqrt(0.3), 1.0])
    assert t[5 + 3, 1, 1] == 1.0 and t[5:, 1, 1].sum() == 1.0
    assert t[4].sum() == 2.0
    gb, gc = D.ground_truth(t, 10)
    order = np.argsort(gc)
    assert gc[order].tolist() == [3, 7]
    assert np.allclose(gb[order], [o[1] for o in objects])
    b, c, s = D.decode(t, 10)
    assert sorted(c.tolist()) == [3, 7] and np.allclose(s, 1.0)
    assert B.mean_average_precision([(b, c, s)], [(gb, gc)], 10) == pytest.approx(1.0)


def test_grid_two_boxes_per_cell_by_area():
    objects = [(1, (0.1, 0.1, 0.1, 0.1)), (2, (0.2, 0.2, 0.3, 0.3)), (3, (0.15, 0.15, 0.05, 0.05))]
    t = D.encode(objects, (2, 2), classes=4, boxes=2)
    assert t.shape == (18, 2, 2)
    # cell (0, 0) holds all three: the two largest go to predictors 0 and 1, the smallest is dropped
    assert t[4, 0, 0] == 1 and t[5 + 2, 0, 0] == 1 and t[9 + 4, 0, 0] == 1 and t[9 + 5 + 1, 0, 0] == 1
    gb, gc = D.ground_truth(t, 4, 2)
    assert sorted(gc.tolist()) == [1, 2]


def test_decode_suppresses_duplicates_per_class():
    t = D.encode([(0, (0.45, 0.3, 0.8, 0.4))], (4, 4), classes=2)  # cell (1, 1), x offset 0.8
    # a second, weaker box of the same class from the next cell: centre x 0.5, IoU 0.75 / 0.85
    t[:, 1, 2] = t[:, 1, 1]
    t[0, 1, 2] = 0.0
    t[4, 1, 2] = 0.6
    b, c, s = D.decode(t, 2)
    assert len(b) == 1 and s[0] == pytest.approx(1.0)
    t[5:7, 1, 2] = [0.0, 1.0]  # the duplicate now says class 1: NMS is per class, both stay
    b, c, s = D.decode(t, 2)
    assert sorted(c.tolist()) == [0, 1]


def test_layout_from_parameters():
    assert D.layout(15) == (10, 1)
    assert D.layout(30, boxes=2) == (10, 2)
    assert D.layout(16, classes=3) == (3, 2)
    with pytest.raises(ValueError):
        D.layout(16, classes=10)
