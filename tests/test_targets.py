"""Targets are checked where they enter: a label the loss kernel would use as an index past the
class count must be a clear error naming the data, never a write out of bounds (issue 13:
`transfer_pretrain.cnn` on the 10-class digits died with "double free or corruption", a label
of 10^7 segfaulted, 10^5 trained to a loss of -2.25e28 and exited 0)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli.main import cli
from cnndsl.diagnostics import CnnError
from cnndsl.ir.graph import TensorType
from cnndsl.ops.training.targets import ClassIndices, RealValues

TINY = """network tiny(classes = 5) {
  input image: 1x8x8
  conv 2 kernel=3 padding=same relu
  global_avgpool
  dense classes -> logits
}
train {
  epochs 1
  batch 4
  optimizer sgd lr=0.01
}
"""

SEG = """network seg(classes = 3) {
  input image: 1x4x4
  conv classes kernel=1 -> masks
}
train {
  epochs 1
  batch 2
  loss masks pixel_cross_entropy
}
"""

YOLO = """network det(classes = 1) {
  input image: 1x8x8
  conv 6 kernel=3 stride=2 padding=same -> grid
}
train {
  batch 2
  loss grid yolo
}
"""


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.train  # noqa: F401  (registers train/eval)

    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.cnn"
    path.write_text(TINY)
    return path


def _npz(path, labels, n=20):
    labels = np.asarray(labels)
    x = np.random.default_rng(0).random((len(labels), 1, 8, 8), np.float32)
    np.savez(path, x=x, y=labels)
    return path


# -- the rules, declared once per loss op ------------------------------------------------

def test_class_indices_rule_finds_the_first_bad_label():
    rule = ClassIndices()
    head = TensorType((5,))
    assert rule.first_bad(head, np.array([0, 4, 3])) is None
    bad = rule.first_bad(head, np.array([0, 5, 1, 9, -1]))
    assert (bad.index, bad.value, bad.count, bad.total) == ((1,), 5, 3, 5)
    assert rule.first_bad(head, np.array([0.0, 2.0])) is None  # whole numbers stored as floats
    assert rule.first_bad(head, np.array([0.0, 2.5])).value == 2.5
    assert rule.first_bad(head, np.array([0.0, np.nan])).index == (1,)
    assert rule.first_bad(head, np.array([1e300])).value == 1e300  # no overflow on conversion
    assert rule.first_bad(head, np.array([2**63 - 1], np.uint64)).value == 2**63 - 1
    assert rule.first_bad(head, np.array(["a"])).value == "a"
    assert rule.first_bad(head, np.zeros(0, np.int64)) is None
    assert rule.allowed(head) == "class indices 0..4"


def test_pixel_rule_allows_the_ignore_value_only():
    rule = cnndsl.ops.registry.get_op("pixel_cross_entropy").target_values
    head = TensorType((3, 2, 2))
    t = np.zeros((2, 2, 2), np.int64)
    t[0, 1, 1] = -1
    assert rule.first_bad(head, t) is None
    t[1, 0, 1] = -2
    assert rule.first_bad(head, t).index == (1, 0, 1)
    t[1, 0, 1] = 3
    assert rule.first_bad(head, t).value == 3
    assert "(or -1: ignored)" in rule.allowed(head)


def test_real_rule_finite_and_yolo_probabilities_in_unit_range():
    head = TensorType((6, 2, 2))
    assert RealValues().first_bad(head, np.zeros((1, 6, 2, 2), np.float32)) is None
    t = np.zeros((1, 6, 2, 2), np.float32)
    t[0, 2, 1, 0] = np.inf
    assert RealValues().first_bad(head, t).index == (0, 2, 1, 0)
    yolo = cnndsl.ops.registry.get_op("yolo").target_values
    t = np.zeros((1, 12, 1, 1), np.float32)  # 2 boxes of (1 class + 5)
    t[0, 0] = -0.5  # a box offset may leave the cell (the encoder clips to [-1, 2])
    assert yolo.first_bad(TensorType((12, 1, 1)), t, {"boxes": 2}) is None
    t[0, 10] = 1.5  # objectness of the second predictor
    assert yolo.first_bad(TensorType((12, 1, 1)), t, {"boxes": 2}).index == (0, 10, 0, 0)


def test_every_loss_declares_its_target_values():
    from cnndsl.ops.registry import all_ops

    losses = [op for op in all_ops().values() if op.category == "loss"]
    assert len(losses) >= 5
    assert all(op.target_values is not None for op in losses), [op.name for op in losses]


# -- the Python API: train_step, evaluate, fit ---------------------------------------------

@pytest.fixture(scope="module")
def model(tiny):
    return cnndsl.compile(tiny, seed=0)


@pytest.mark.parametrize("label", [5, 10**5, 10**7, -1, -2**40])
def test_train_step_refuses_a_label_outside_the_classes(model, label):
    from cnndsl.train.optim import SGD

    model.set_optimizer(SGD(model.store.params, lr=0.01))
    before = model.store.params.data.copy()
    x = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(CnnError) as e:
        model.train_step(x, np.array([0, 1, label, 2]), step=0)
    text = str(e.value.diagnostics[0])
    assert "labels out of range for the cross_entropy loss of head 'logits'" in text
    assert f"found: label {label} at sample 2" in text and "expected: class indices 0..4" in text
    assert np.array_equal(model.store.params.data, before)  # nothing ran


def test_evaluate_and_fit_refuse_bad_labels_before_any_work(model):
    x = np.zeros((6, 1, 8, 8), np.float32)
    with pytest.raises(CnnError, match="labels out of range"):
        model.evaluate(x, np.array([0, 1, 2, 3, 4, 5]))
    with pytest.raises(CnnError) as e:
        model.fit(x, np.array([0, 1, 2, 3, 4, 0]), validation=(x, np.array([0, 0, 0, 0, 0, 7])), epochs=1)
    assert str(e.value.diagnostics[0].span) == "validation labels"
    with pytest.raises(CnnError, match="wrong shape"):
        model.evaluate(x, np.zeros((6, 5), np.int64))
    with pytest.raises(CnnError, match="no targets for head 'logits'"):
        model.evaluate(x, {"boxes": np.zeros(6)})


def test_segmentation_masks_are_checked_per_pixel():
    m = cnndsl.compile(cnndsl.loads(SEG, "seg.cnn"), seed=0)
    x = np.zeros((2, 1, 4, 4), np.float32)
    masks = np.zeros((2, 4, 4), np.int64)
    masks[0, 0, 0] = -1  # ignored pixels are fine
    m.evaluate(x, masks)
    masks[1, 2, 3] = 3
    with pytest.raises(CnnError) as e:
        m.evaluate(x, masks)
    text = str(e.value.diagnostics[0])
    assert "found: label 3 at sample 1, position (2, 3)" in text
    assert "class indices 0..2 (or -1: ignored)" in text


def test_yolo_targets_must_be_finite():
    m = cnndsl.compile(cnndsl.loads(YOLO, "det.cnn"), seed=0)
    x = np.zeros((2, 1, 8, 8), np.float32)
    t = np.zeros((2, 6, 4, 4), np.float32)
    m.evaluate(x, t)
    t[1, 3, 0, 0] = np.nan
    with pytest.raises(CnnError, match="invalid target values for the yolo loss"):
        m.evaluate(x, t)


# -- the command line: every data path ------------------------------------------------------

@pytest.mark.parametrize("label", [5, 10**5, 10**7])
def test_train_on_npz_with_a_label_past_the_classes_exits_1(run, tiny, tmp_path, label):
    labels = np.arange(20) % 5
    labels[13] = label
    data = _npz(tmp_path / "data.npz", labels)
    out = tmp_path / "run"
    r = run("train", tiny, "--data", data, "--out", out, "--no-progress")
    assert r.exit_code == 1, r.output
    assert f"{data}: error: labels out of range for the cross_entropy loss of head 'logits'" in r.output
    assert f"found: label {label} at sample 13" in r.output
    assert "the 5 classes of head 'logits' are set by dense 'logits': classes = 5" in r.output
    if label < 100_000:
        assert f"-D classes={label + 1}" in r.output
    assert "internal error" not in r.output and not (out / "weights.safetensors").exists()


def test_eval_with_bad_labels_exits_1(run, tiny, tmp_path):
    good = _npz(tmp_path / "good.npz", np.arange(20) % 5)
    out = tmp_path / "run"
    r = run("train", tiny, "--data", good, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    labels = np.arange(20) % 5
    labels[3] = 9
    r = run("eval", tiny, "--weights", out / "weights.safetensors", "--data", _npz(tmp_path / "bad.npz", labels))
    assert r.exit_code == 1 and "found: label 9 at sample 3" in r.output


def test_idx_labels_past_the_classes_exit_1(run, tiny, tmp_path):
    from tests.test_user_datasets import idx_bytes

    folder = tmp_path / "mnist_like"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 4)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (n, 8, 8))))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(n) % 10))  # 0..9
    r = run("train", tiny, "--data", folder, "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 1, r.output
    assert "error: labels" in r.output and "0..4" in r.output and "internal error" not in r.output


def test_image_folder_with_more_classes_than_outputs_exits_1(run, tiny, tmp_path):
    from PIL import Image

    for k in range(7):
        (tmp_path / "imgs" / f"class{k}").mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 10 * k, np.uint8)).save(tmp_path / "imgs" / f"class{k}" / "a.png")
    r = run("train", tiny, "--data", tmp_path / "imgs", "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 1, r.output
    assert "found: label 5 at sample 5 (the first of 2 out of 7)" in r.output
    assert "the data has 7 classes, the network 5: out of range are 5 ('class5'), 6 ('class6')" in r.output
    assert "-D classes=7" in r.output and "classes=[0, 1, 2, 3, 4]" in r.output


# -- dataset ... classes=[...]: the shipped transfer example trains as written ------------------

def test_transfer_examples_select_their_digits():
    from pathlib import Path

    from cnndsl.train.data import resolve_datasets

    root = Path(__file__).resolve().parent.parent
    pre = cnndsl.load(root / "examples/transfer_pretrain.cnn")
    assert pre.training.dataset_classes == (0, 1, 2, 3, 4)
    train, test = resolve_datasets(cnndsl.compile(pre, seed=0))
    assert (len(train), len(test)) == (2000, 500)  # 400 and 100 per digit
    assert set(np.unique(train.y)) == set(range(5)) == set(np.unique(test.y))
    fine = cnndsl.load(root / "examples/transfer_finetune.cnn")
    assert fine.training.dataset_classes == (5, 6, 7, 8, 9)


def test_class_selection_renumbers_in_the_order_listed(tmp_path):
    from cnndsl.train.data import resolve_datasets

    labels = np.arange(40) % 10
    x = np.broadcast_to((np.arange(40, dtype=np.float32) / 40)[:, None, None, None], (40, 1, 8, 8))
    np.savez(tmp_path / "d.npz", x=x, y=labels)  # image i has label i % 10 and pixels i / 40
    text = TINY.replace("epochs 1", f'dataset "{tmp_path / "d.npz"}" classes=[7, 2, 9]\n  epochs 1')
    m = cnndsl.compile(cnndsl.loads(text, "t.cnn", defines={"classes": "3"}), seed=0)
    train, test = resolve_datasets(m)
    assert len(train) + len(test) == 12
    for part in (train, test):
        original = np.rint(part.x[:, 0, 0, 0] * 40).astype(int) % 10
        assert np.array_equal(np.array([7, 2, 9])[part.y], original)


@pytest.mark.parametrize("setting, message", [
    ("classes=[1, 1]", "lists a value twice"),
    ("classes=[-1]", "at least 0"),
    ("classes=[1.5]", "whole number"),
])
def test_class_selection_options_are_checked(setting, message):
    with pytest.raises(CnnError, match=message):
        cnndsl.loads(TINY.replace("epochs 1", f"dataset digits {setting}\n  epochs 1"), "t.cnn")


def test_class_selection_of_a_label_the_data_lacks_is_an_error(tmp_path):
    from cnndsl.train.data import resolve_datasets

    data = _npz(tmp_path / "d.npz", np.arange(20) % 4)
    m = cnndsl.compile(cnndsl.loads(TINY.replace("epochs 1", f'dataset "{data}" classes=[1, 8]\n  epochs 1'),
                                    "t.cnn"), seed=0)
    with pytest.raises(CnnError, match="names label 8 that no image has"):
        resolve_datasets(m)


@pytest.mark.parametrize("source", [TINY, SEG, YOLO])
def test_example_targets_are_ones_the_losses_accept(source):
    m = cnndsl.compile(cnndsl.loads(source, "m.cnn"), seed=0)
    for rng in (None, np.random.default_rng(0)):
        m.check_targets(m.example_targets(3, rng))  # raises if a value is out of range


def test_non_finite_images_and_empty_evaluations_are_refused(model):
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[2, 0, 3, 1] = np.nan
    with pytest.raises(CnnError, match=r"input image 2 holds nan at position \(0, 3, 1\)"):
        model.predict(x)
    with pytest.raises(CnnError, match="input image 2"):
        model.train_step(x, np.zeros(4, np.int64), step=0)
    with pytest.raises(CnnError, match="no images"):
        model.evaluate(np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64))


def test_eval_on_an_empty_held_out_split_exits_1(run, tiny, tmp_path):
    good = _npz(tmp_path / "good.npz", np.arange(20) % 5)
    out = tmp_path / "run"
    assert run("train", tiny, "--data", good, "--out", out, "--no-progress").exit_code == 0
    one = _npz(tmp_path / "one.npz", np.array([1]))  # 80/20 of one image: nothing held out
    r = run("eval", tiny, "--weights", out / "weights.safetensors", "--data", one)
    assert r.exit_code == 1 and "the held-out split is empty" in r.output and "internal error" not in r.output


def test_an_os_error_is_a_clean_error_naming_the_path(run, tiny, tmp_path):
    import cnndsl.cli.inspect  # noqa: F401  (registers graph)

    r = run("graph", tiny, "-o", tmp_path)  # a folder in the way
    assert r.exit_code == 1 and f"{tmp_path}: error: cannot access this file: is a folder" in r.output
    r = run("graph", tiny, "-o", tmp_path / ("n" * 300 + ".dot"))
    assert r.exit_code == 1 and "File name too long" in r.output and "internal error" not in r.output
