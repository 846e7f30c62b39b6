"""The `yolo` detection loss: the Numba kernel vs the NumPy reference (forward) and finite
differences (gradient), its options in the train section, through a Model, and the decoder
reading the same parameterization."""
from __future__ import annotations

import numpy as np
import pytest

import cnndsl
from cnndsl.diagnostics import CnnError
from cnndsl.kernels.cpu.yolo_loss import yolo_loss as kernel
from cnndsl.kernels.reference.yolo_loss import yolo_loss as reference
from cnndsl.model import Model
from cnndsl.tasks import detection as D
from cnndsl.tasks.boxes import mean_average_precision

OBJECTS = [[(1, (0.3, 0.4, 0.2, 0.3)), (2, (0.8, 0.7, 0.1, 0.2))], [(0, (0.55, 0.1, 0.3, 0.15))], []]


def _targets(classes=3, grid=(3, 4), boxes=1):
    return np.stack([D.encode(o, grid, classes, boxes) for o in OBJECTS])


def _logit(p):
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@pytest.mark.parametrize("boxes,noobj,coord,seed", [(1, 0.5, 5.0, 0), (2, 0.25, 2.0, 1), (1, 0.0, 0.0, 2),
                                                    (3, 1.0, 10.0, 3)])
def test_kernel_matches_reference_and_finite_differences(boxes, noobj, coord, seed):
    t = _targets(boxes=boxes)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(t.shape) * 2
    loss, grad = reference(z, t, boxes, noobj, coord)
    g = np.full(z.shape, np.nan, np.float32)
    value = kernel(z.astype(np.float32), t, boxes, np.float32(noobj), np.float32(coord), g)
    assert abs(value - loss) <= 1e-5 * max(1.0, loss)
    np.testing.assert_allclose(g, grad, rtol=1e-4, atol=1e-6)
    # the kernel's gradient against central differences of the float64 reference, element by element
    eps = 1e-5
    fd = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        plus, minus = z.copy(), z.copy()
        plus[i] += eps
        minus[i] -= eps
        fd[i] = (reference(plus, t, boxes, noobj, coord)[0] - reference(minus, t, boxes, noobj, coord)[0]) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=2e-6)


def test_loss_terms_by_hand():
    """One sample, one 1x1 cell with an object, two classes: every term written out."""
    t = np.array([0.25, 0.5, 0.4, 0.6, 1.0, 0.0, 1.0]).reshape(1, 7, 1, 1)
    z = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]).reshape(1, 7, 1, 1)
    box = 0.25 ** 2 + 0 + 0.1 ** 2 + 0.1 ** 2
    expect = 5 * box + np.log(2) + (np.log(1 + np.e) - 0.0)  # coord * box + BCE(0.5, 1) + CE
    loss, g = reference(z, t, 1, 0.5, 5.0)
    assert np.isclose(loss, expect)
    assert np.isclose(g[0, 4, 0, 0], 0.5 - 1.0)
    # the same cell without an object: only objectness, times noobj
    t[0, 4] = 0
    loss, g = reference(z, t, 1, 0.5, 5.0)
    assert np.isclose(loss, 0.5 * np.log(2)) and np.count_nonzero(g) == 1


def test_huge_scores_stay_finite():
    t = _targets()
    z = np.where(np.random.default_rng(0).random(t.shape) < 0.5, 80.0, -80.0).astype(np.float32)
    g = np.empty_like(z)
    value = kernel(z, t, 1, np.float32(0.5), np.float32(5.0), g)
    assert np.isfinite(value) and np.isfinite(g).all()


def test_decoder_reads_the_loss_parameterization():
    """Scores whose sigmoids / softmax are the encoded targets decode to the objects (mAP 1)."""
    classes, grid = 3, (3, 4)
    t = _targets(classes, grid)
    z = _logit(t).astype(np.float32)
    z[:, 5:] = np.where(t[:, 5:] > 0.5, 8.0, -8.0)
    dets = [D.decode(m, classes, activation="yolo") for m in z]
    truth = [D.ground_truth(m, classes) for m in t]
    assert mean_average_precision(dets, truth, classes, 0.5) == 1.0
    for (b, c, s), objs in zip(dets, OBJECTS):
        assert sorted(c.tolist()) == sorted(o[0] for o in objs)
        for o in objs:
            assert np.abs(b[c == o[0]][0] - o[1]).max() < 1e-3
    # the same scores read as "linear" numbers are not these boxes
    assert mean_average_precision([D.decode(m, classes) for m in z], truth, classes, 0.5) < 1.0
    with pytest.raises(ValueError):
        D.decode(z[0], classes, activation="softmax")


NET = """network det(classes = 3, boxes = 2) {
  input image: 1x16x16
  conv 8 kernel=3 stride=2 padding=same relu
  conv 16 kernel=3 stride=2 padding=same relu
  conv (classes + 5) * boxes kernel=1 -> grid
}
"""


def _load(train: str):
    return cnndsl.loads(NET + "train {\n  batch 2\n" + train + "\n  metric grid map50\n}\n", "d.cnn")


def test_train_section_options():
    loss = _load("  loss grid yolo noobj=0.25 coord=2 weight=3").training.losses[0]
    assert (loss.kind, loss.weight, dict(loss.options)) == ("yolo", 3.0, {"noobj": 0.25, "coord": 2.0, "boxes": 2})
    loss = _load("  loss grid yolo").training.losses[0]  # defaults; boxes from the network parameter
    assert dict(loss.options) == {"noobj": 0.5, "coord": 5.0, "boxes": 2}


@pytest.mark.parametrize("line,code,text", [
    ("loss grid yolo nobj=0.5", "unknown-option", "did you mean 'noobj'?"),
    ("loss grid yolo coord=-1", "bad-value", "at least 0"),
    ("loss grid yolo boxes=3", "loss-head", "not (classes + 5) * boxes"),
    ("loss grid mse noobj=0.5", "unknown-option", None),
])
def test_train_section_rejects_bad_options(line, code, text):
    with pytest.raises(CnnError) as e:
        _load("  " + line)
    err = e.value.errors[0]
    assert err.code == code, err.render()
    if text:
        assert text in err.message + (err.help or ""), err.render()


def test_model_loss_uses_the_written_options():
    """The training graph's loss node carries noobj/coord/boxes: its value is the reference's."""
    program = _load("  loss grid yolo noobj=0.25 coord=2 weight=3")
    model = Model(program)
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    y = np.stack([D.encode(o, (4, 4), 3, 2) for o in OBJECTS[:2]])
    z = model.predict(x)["grid"]
    want = 3 * reference(z, y, 2, 0.25, 2.0)[0]
    assert np.isclose(model.evaluate(x, y)["loss"], want, rtol=1e-4)
    from cnndsl.train.optim import Adam

    model.set_optimizer(Adam(model.store.params, lr=1e-3))
    loss, outs = model.train_step(x, y, 0)
    assert np.isclose(loss, 3 * reference(np.array(outs["grid"]), y, 2, 0.25, 2.0)[0], rtol=1e-4)
    assert 0 <= model.evaluate(x, y)["map50"] <= 1


def test_detection_dataset_and_metric_hook_take_a_yolo_head():
    from cnndsl.tasks.datasets import heads_for
    from cnndsl.tasks.metrics import MetricHook

    model = Model(_load("  loss grid yolo"))
    assert heads_for(model, "detection_digits") == {"grid": "grid"}
    hook = MetricHook.for_model(model)
    assert hook.layouts["grid"] == (3, 2, "yolo")
    assert D.activation_for(model, "grid") == "yolo"
