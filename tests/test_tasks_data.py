"""The digit task data sets, the metric hook in evaluation/metrics.json, and `predict -o`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl.cli.train  # noqa: F401  (registers predict)
from cnndsl.cli.main import cli
from cnndsl.data.digits import load_digits
from cnndsl.diagnostics import CnnError
from cnndsl.frontend import load, loads
from cnndsl.model import Model
from cnndsl.tasks import boxes as B
from cnndsl.tasks import datasets as T
from cnndsl.tasks import detection as D
from cnndsl.train.data import resolve_datasets

ROOT = Path(__file__).resolve().parents[1]


def test_canvases_are_deterministic_and_well_formed():
    x1, o1, _ = T.make_task.__wrapped__("detection_digits", "test", (48, 48), (6, 6), 50)
    x2, o2, _ = T.make_task.__wrapped__("detection_digits", "test", (48, 48), (6, 6), 50)
    assert np.array_equal(x1, x2) and o1 == o2
    assert x1.dtype == np.float32 and x1.shape == (50, 1, 48, 48) and 0 <= x1.min() and x1.max() <= 1
    for objs in o1:
        assert 1 <= len(objs) <= 4
        b = np.array([box for _, box in objs])
        corners = B.to_corners(b)
        assert (corners >= -1e-9).all() and (corners <= 1 + 1e-9).all()
        cells = {(int(cy * 6), int(cx * 6)) for cx, cy, _, _ in b}
        assert len(cells) == len(objs)  # never two centres in one cell
        if len(b) > 1:
            m = B.iou_matrix(b, b)
            assert (m[~np.eye(len(b), dtype=bool)] <= 0.05 + 1e-9).all()


def test_boxes_and_masks_match_the_pixels():
    x, objects, masks = T.make_task.__wrapped__("segmentation_digits", "train", (32, 32), None, 20)
    for img, objs, mask in zip(x[:, 0], objects, masks):
        assert set(np.unique(mask)) <= {0} | {c + 1 for c, _ in objs}
        assert (img[mask > 0] >= T.MASK).all()  # mask pixels are ink
        for cls, (cx, cy, w, h) in objs:
            x0, y0 = int(round((cx - w / 2) * 32)), int(round((cy - h / 2) * 32))
            x1, y1 = int(round((cx + w / 2) * 32)), int(round((cy + h / 2) * 32))
            ink = img[y0:y1, x0:x1] > T.INK
            assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()  # a tight box
            assert (mask[y0:y1, x0:x1] == cls + 1).any()


def test_localization_uses_each_digit_of_its_split():
    x, objects, _ = T.make_task("localization_digits", "test", (64, 64))
    _, y = load_digits("test", shuffle=False)  # the stored order the task data sets are built from
    assert len(x) == 1000 and [o[0][0] for o in objects] == y.tolist()
    xt, ot, _ = T.make_task("localization_digits", "train", (64, 64))
    assert len(xt) == 12000 and not np.array_equal(xt[:1000], x)
    # every training digit three times, each at its own position and size
    assert [o[0][0] for o in ot[:4000]] == [o[0][0] for o in ot[4000:8000]] == load_digits("train", shuffle=False)[1].tolist()
    assert not np.array_equal(xt[:4000], xt[4000:8000])


HEADS = [
    ("localizer", {"class_logits": ((), "int64"), "box": ((4,), "float32")}),
    ("detector", {"grid": ((15, 8, 8), "float32")}),
    ("unet_tiny", {"masks": ((32, 32), "int64")}),
]


def test_localizer_gets_both_splits():
    model = Model(load(ROOT / "examples" / "localizer.cnn"))
    train, test = resolve_datasets(model)  # the `dataset localization_digits` of the file
    assert len(train) == 12000 and len(test) == 1000 and set(train.y) == {"class_logits", "box"}


@pytest.mark.parametrize("example,heads", HEADS)
def test_examples_get_targets_by_head(example, heads):
    model = Model(load(ROOT / "examples" / f"{example}.cnn"))
    test = T.task_dataset(model.config.dataset, model, "test")
    assert len(test) == 1000
    assert test.x.shape[1:] == model.input_shape
    for head, (shape, dtype) in heads.items():
        assert test.y[head].shape[1:] == shape and str(test.y[head].dtype) == dtype
    assert set(test.y) == set(heads)


@pytest.mark.slow
@pytest.mark.parametrize("example,heads", HEADS)
def test_examples_training_splits(example, heads):
    model = Model(load(ROOT / "examples" / f"{example}.cnn"))
    train, test = resolve_datasets(model)
    assert len(train) == T.COUNTS[model.config.dataset][0] and len(test) == 1000
    assert set(train.y) == set(heads)


def test_detection_targets_decode_to_the_objects():
    model = Model(load(ROOT / "examples" / "detector.cnn"))
    test = T.task_dataset("detection_digits", model, "test")
    _, objects, _ = T.make_task("detection_digits", "test", (64, 64), (8, 8))
    for grid, objs in zip(test.y["grid"][:20], objects[:20]):
        gb, gc = D.ground_truth(grid, 10)
        order = np.lexsort((gb[:, 0], gc))
        want = sorted(objs, key=lambda o: (o[0], o[1][0]))
        assert gc[order].tolist() == [c for c, _ in want]
        assert np.allclose(gb[order], [b for _, b in want], atol=1e-6)


def test_wrong_head_for_a_task_is_explained():
    src = ("network n(classes = 3) {\n  input image: 1x32x32\n  conv classes kernel=1 -> masks\n}\n"
           "train {\n  dataset segmentation_digits\n}\n")
    with pytest.raises(CnnError) as e:
        T.task_dataset("segmentation_digits", Model(loads(src)), "test")
    assert "11x32x32" in e.value.diagnostics[0].message
    with pytest.raises(CnnError) as e:
        T.task_dataset("segmentation_digits", Model(loads(src.replace("1x32x32", "3x32x32"))), "test")
    assert "grey" in e.value.diagnostics[0].message


TINY_DET = """network TinyDet(classes = 10, boxes = 1) {
  input image: 1x32x32
  conv 8 kernel=3 stride=2 padding=same relu
  maxpool 2
  conv 16 kernel=3 padding=same relu
  conv (classes + 5) * boxes kernel=1 -> grid
}
train {
  dataset detection_digits
  epochs 1
  batch 32
  optimizer adam lr=1e-3
  loss grid mse
  metric grid map50 mae
}
"""


def test_metrics_hook_in_evaluate_and_metrics_json(tmp_path):
    from cnndsl.train.trainer import Trainer

    model = Model(loads(TINY_DET))
    test = T.task_dataset("detection_digits", model, "test")
    train, test = test.subset(np.arange(64)), test.subset(np.arange(64, 104))
    result = model.evaluate(test.x, test.y)
    assert set(result) == {"loss", "map50", "mae"}
    assert 0 <= result["map50"] <= 1
    # a perfect prediction scores 1: the metric against its own targets
    from cnndsl.tasks.metrics import MetricHook

    hook = MetricHook.for_model(model)
    hook.add({"grid": test.y["grid"]}, {"grid": test.y["grid"]})
    assert hook.result() == {"map50": 1.0, "mae": 0.0}
    Trainer(model, train, test, model.config, tmp_path, progress=False).fit()
    record = json.loads((tmp_path / "metrics.json").read_text())[0]
    assert "test_map50" in record and "test_mae" in record and record["test_loss"] is not None


def test_segmentation_and_box_metrics_through_evaluate():
    seg = Model(load(ROOT / "examples" / "unet_tiny.cnn"))
    test = T.task_dataset("segmentation_digits", seg, "test")
    r = seg.evaluate(test.x[:16], {"masks": test.y["masks"][:16]})
    assert {"loss", "accuracy", "mean_iou", "pixel_accuracy"} <= set(r)
    loc = Model(load(ROOT / "examples" / "localizer.cnn"))
    test = T.task_dataset("localization_digits", loc, "test")
    r = loc.evaluate(test.x[:16], {h: v[:16] for h, v in test.y.items()})
    assert {"loss", "accuracy", "box_iou"} <= set(r) and 0 <= r["box_iou"] <= 1


@pytest.mark.parametrize("example,expect", [
    ("localizer", "box cx="), ("detector", "object"), ("unet_tiny", "")])
def test_predict_draws_a_png(tmp_path, example, expect):
    model = Model(load(ROOT / "examples" / f"{example}.cnn"))
    weights = tmp_path / "w.safetensors"
    model.save_weights(weights)
    test = T.task_dataset(model.config.dataset, model, "test")
    img = tmp_path / "canvas.npy"
    np.save(img, test.x[0])
    out = tmp_path / "out.png"
    r = CliRunner().invoke(cli, ["predict", str(ROOT / "examples" / f"{example}.cnn"), "--weights", str(weights),
                                 str(img), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert expect in r.output and f"wrote {out}" in r.output
    from PIL import Image

    with Image.open(out) as pic:
        assert pic.size == (4 * model.input_shape[2], 4 * model.input_shape[1]) and pic.mode == "RGB"
