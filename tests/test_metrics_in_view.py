"""Every metric a train section declares: its value is right (a perfect prediction gives exactly
its best value, per task), it is printed in the epoch line and it has a panel in curves.png (and
a metric the task does not have has none). The unet's train accuracy is a fraction of pixels."""
from __future__ import annotations

import numpy as np
import pytest

from cnndsl.frontend import loads
from cnndsl.model import Model
from cnndsl.tasks import detection as D
from cnndsl.tasks.metrics import RANGES, metric_names, train_metric_name
from cnndsl.train.metrics import panel_metrics, plot, plot_panels


def _model(text: str) -> Model:
    return Model(loads(text, "<metrics>"))


def _identity(model: Model) -> None:
    """Every layer's weight the identity (a 1x1 conv or a square dense), biases 0: the head
    outputs its input, so the test chooses the prediction exactly."""
    state = model.state_dict()
    for name, arr in state.items():
        if name.endswith(".weight"):
            eye = np.eye(arr.shape[0], arr.shape[1], dtype=np.float32)
            state[name] = eye.reshape(arr.shape)
        else:
            state[name] = np.zeros_like(arr)
    model.store.load_state_dict(state)


def _best(kind: str) -> float:
    lo, hi, best = RANGES[kind]
    return hi if best == "max" else lo


CLASSIFY = """network C {
  input x: [6]
  dense 6 -> logits
}
train {
  loss logits cross_entropy
  metric logits accuracy top5
}"""

SEGMENT = """network S {
  input x: 3x4x4
  conv 3 kernel=1 -> masks
}
train {
  loss masks pixel_cross_entropy
  metric masks mean_iou pixel_accuracy
}"""

REGRESS = """network R {
  input x: [4]
  dense 4 -> box
}
train {
  loss box smooth_l1
  metric box box_iou mae mse
}"""

DETECT = """network G(classes = 2, boxes = 1) {
  input x: [7, 3, 3]
  conv (classes + 5) * boxes kernel=1 -> grid
}
train {
  loss grid mse
  metric grid map50
}"""


def test_classification_perfect_prediction_is_exactly_the_best_value():
    model = _model(CLASSIFY)
    _identity(model)
    y = np.array([0, 1, 2, 3, 4, 5, 2, 2])
    x = np.eye(6, dtype=np.float32)[y] * 4.0  # the logits: the true class scores highest
    result = model.evaluate(x, y)
    assert metric_names(model) == ["accuracy", "top5"]
    for kind in ("accuracy", "top5"):
        assert result[kind] == _best(kind) == 1.0
    wrong = model.evaluate(x, (y + 1) % 6)
    assert wrong["accuracy"] == 0.0 and 0.0 <= wrong["top5"] <= 1.0


def test_segmentation_perfect_prediction_and_accuracy_is_a_fraction_of_pixels():
    model = _model(SEGMENT)
    _identity(model)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (5, 4, 4))
    x = np.moveaxis(np.eye(3, dtype=np.float32)[y], -1, 1) * 3.0
    result = model.evaluate(x, y)
    assert metric_names(model) == ["mean_iou", "pixel_accuracy"]
    for kind in ("mean_iou", "pixel_accuracy"):
        assert result[kind] == _best(kind) == 1.0
    assert result["accuracy"] == 1.0  # a share of the 16 pixels, not 16
    half = y.copy()
    half[:, :2] = (half[:, :2] + 1) % 3  # half the rows wrong
    assert model.evaluate(x, half)["pixel_accuracy"] == 0.5


def test_box_and_regression_perfect_prediction_is_exactly_the_best_value():
    model = _model(REGRESS)
    _identity(model)
    boxes = np.array([[0.5, 0.5, 0.4, 0.2], [0.3, 0.6, 0.25, 0.5], [0.1, 0.9, 0.125, 0.0625]], np.float32)
    result = model.evaluate(boxes, boxes)
    assert metric_names(model) == ["box_iou", "mae", "mse"]
    for kind in ("box_iou", "mae", "mse"):
        assert result[kind] == _best(kind)
    assert result["box_iou"] == 1.0 and result["mae"] == 0.0 and result["mse"] == 0.0
    assert train_metric_name(model) is None  # no accuracy to show for a regression


def test_detection_perfect_prediction_is_exactly_the_best_value():
    model = _model(DETECT)
    _identity(model)
    images = [[(0, (0.2, 0.2, 0.3, 0.3)), (1, (0.8, 0.5, 0.2, 0.4))], [(1, (0.5, 0.5, 0.5, 0.5))]]
    y = np.stack([D.encode(objects, (3, 3), 2, 1) for objects in images])
    result = model.evaluate(y, y)  # the prediction is the target map itself
    assert result["map50"] == _best("map50") == 1.0


def test_panels_one_per_declared_metric_and_none_for_a_metric_the_task_lacks(tmp_path):
    detector = [{"epoch": 1, "train_loss": 2.0, "train_accuracy": None, "test_loss": 1.5,
                 "test_accuracy": None, "test_map50": 0.5, "lr": 0.01},
                {"epoch": 2, "train_loss": 1.0, "train_accuracy": None, "test_loss": 1.0,
                 "test_accuracy": None, "test_map50": 0.877, "lr": 0.005}]
    assert plot_panels(detector) == ["loss", "mAP@0.5", "learning rate"]
    assert plot_panels(detector, ["map50"]) == ["loss", "mAP@0.5", "learning rate"]
    assert plot(tmp_path, detector, metrics=["map50"]).stat().st_size > 1000
    unet = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.7, "train_pixel_accuracy": 0.7,
             "test_loss": 0.9, "test_accuracy": 0.75, "test_mean_iou": 0.4, "test_pixel_accuracy": 0.75,
             "lr": 0.1}]
    # the file declares mean_iou and pixel_accuracy: no separate "accuracy" panel beside them
    assert plot_panels(unet, ["mean_iou", "pixel_accuracy"]) == ["loss", "mean IoU", "pixel accuracy",
                                                                 "learning rate"]
    localizer = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.0, "test_accuracy": 0.6,
                  "test_box_iou": 0.3}]
    assert plot_panels(localizer) == ["loss", "accuracy", "box IoU"]
    assert panel_metrics(localizer) == ["accuracy", "box_iou"]


def test_epoch_line_shows_every_declared_metric_and_the_learning_rate():
    from cnndsl.cli.train import _epoch_line

    r = {"epoch": 3, "train_loss": 0.5, "train_accuracy": None, "test_loss": 0.4, "test_accuracy": None,
         "test_map50": 0.877, "images_per_s": 100.0, "seconds": 2.0, "lr": 0.0125}
    line = _epoch_line(r, ["map50"])
    assert line == ("epoch 3: train loss 0.5000  held-out loss 0.4000 map50 0.8770  lr 0.0125  "
                    "(100 images/s, 2.0 s)")
    r2 = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.75, "test_loss": 0.4, "test_accuracy": 0.8,
          "test_box_iou": 0.25, "images_per_s": 10.0, "seconds": 1.0, "lr": 0.1}
    assert "train loss 0.5000 accuracy 0.7500  held-out loss 0.4000 accuracy 0.8000 box_iou 0.2500" in \
        _epoch_line(r2, ["accuracy", "box_iou"])


def test_unet_train_accuracy_is_a_fraction(tmp_path):
    """The running train accuracy of a per-pixel head divides by the pixels (it was ~1,022 for
    unet_tiny's 32x32 masks: correct pixels per image)."""
    from cnndsl.data.dataset import Dataset
    from cnndsl.train.trainer import Trainer

    model = _model(SEGMENT.replace("train {", "train {\n  epochs 1\n  batch 4\n  optimizer sgd lr=0.01"))
    _identity(model)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, (8, 4, 4))
    x = np.moveaxis(np.eye(3, dtype=np.float32)[y], -1, 1) * 3.0
    data = Dataset(x, y, "train")
    trainer = Trainer(model, data, data, model.config, tmp_path, progress=False)
    [record] = trainer.fit()
    assert 0.0 <= record["train_accuracy"] <= 1.0
    assert record["train_accuracy"] > 0.9  # identity weights and a small step: nearly every pixel right
    assert record["train_pixel_accuracy"] == record["train_accuracy"]
    assert trainer.metric_names == ["mean_iou", "pixel_accuracy"]
