"""The command line a new user meets first: `graph -o` by extension, `predict --resize` with
per-file errors and class names, did-you-mean by meaning, the double-softmax warning, help texts
that match the code."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli.main import cli
from cnndsl.diagnostics import CnnError
from cnndsl.model import Model

TINY = """
network Tiny(classes = 3) {
  input image: 1x8x8
  conv 2 kernel=3 padding=same relu
  flatten
  dense classes -> logits
}
"""


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.inspect  # noqa: F401
    import cnndsl.cli.train  # noqa: F401

    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return path


# ---------------------------------------------------------------------------- graph -o

def test_graph_format_follows_the_extension(run, model_file, tmp_path):
    r = run("graph", model_file, "-o", tmp_path / "net.gv")
    assert r.exit_code == 0 and (tmp_path / "net.gv").read_text().startswith('digraph "Tiny"')
    r = run("graph", model_file, "-o", tmp_path / "net.png")
    if shutil.which("dot"):
        assert r.exit_code == 0 and (tmp_path / "net.png").read_bytes()[:4] == b"\x89PNG"
    else:  # never DOT text in a .png, and a clear way out
        assert r.exit_code == 1 and not (tmp_path / "net.png").exists()
        assert "drawing PNG needs Graphviz's `dot` program, which is not installed" in r.output
        assert f"-o {tmp_path / 'net.dot'}" in r.output and "dot -Tpng" in r.output
    r = run("graph", model_file, "-o", tmp_path / "net.jpeg")
    assert r.exit_code == 1 and "cannot tell the drawing's format from the extension '.jpeg'" in r.output
    r = run("graph", model_file, "--format", "svg", "-o", tmp_path / "net.png")
    assert r.exit_code == 1 and "--format svg does not match the extension '.png'" in r.output


# ---------------------------------------------------------------------------- predict

@pytest.fixture
def weights(tmp_path, model_file):
    model = Model(cnndsl.load(model_file), seed=0)
    path = tmp_path / "w.safetensors"
    model.save_weights(path, {"class_names": json.dumps(["cat", "dog", "emu"])})
    return path


def _png(path, size, mode):
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


def test_predict_resize_converts_and_one_bad_file_does_not_stop_the_others(run, model_file, weights, tmp_path):
    good = _png(tmp_path / "good.png", (8, 8), "L")
    big_rgb = _png(tmp_path / "big.png", (20, 16), "RGB")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = run("predict", model_file, "--weights", weights, good, big_rgb, bad)
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.startswith(str(good) + ": ")]
    assert len(lines) == 1 and any(name in lines[0] for name in ("cat (", "dog (", "emu ("))  # names, not indices
    assert f"{big_rgb}: error: image has the wrong size" in r.output and f"{bad}: error: not an image file" in r.output
    assert "2 of 3 images could not be used (--resize adapts the size and grayscale/RGB)" in r.output
    r = run("predict", model_file, "--weights", weights, "--resize", good, big_rgb)
    assert r.exit_code == 0, r.output
    assert sum(line.startswith((f"{good}: ", f"{big_rgb}: ")) for line in r.output.splitlines()) == 2


@pytest.mark.parametrize("name, words", [("out.jpg", "the picture is written as PNG"), ("folder", "-o names a folder")])
def test_predict_out_image_is_checked_before_predicting(run, model_file, weights, tmp_path, monkeypatch, name, words):
    """-o out.jpg was written with PNG bytes (a .jpg that is no JPEG); -o FOLDER was refused only
    after the predictions were printed. Both are refused before the model is compiled."""
    import cnndsl.cli.train as train_cli

    good = _png(tmp_path / "good.png", (8, 8), "L")
    out = tmp_path / name
    if name == "folder":
        out.mkdir()
    monkeypatch.setattr(train_cli, "_compile", lambda *a, **k: pytest.fail("compiled before checking -o"))
    r = run("predict", model_file, "--weights", weights, good, "-o", out)
    assert r.exit_code == 1 and f"{out}: error: {words}" in r.output, r.output
    assert f"{good}: " not in r.output and not (tmp_path / "out.jpg").exists()


def test_resize_matches_pillow_and_luma(tmp_path):
    from PIL import Image

    from cnndsl.io.images import load_image

    path = _png(tmp_path / "rgb.png", (16, 12), "RGB")
    x = load_image(path, (1, 6, 8), resize=True)
    rgb = np.asarray(Image.open(path), np.float32) / 255
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    want = np.asarray(Image.fromarray(grey, "F").resize((8, 6), Image.BILINEAR))
    assert x.shape == (1, 6, 8) and np.allclose(x[0], np.clip(want, 0, 1), atol=1e-6)
    g = load_image(_png(tmp_path / "g.png", (8, 6), "L"), (3, 6, 8), resize=True)
    assert g.shape == (3, 6, 8) and np.array_equal(g[0], g[2])
    with pytest.raises(CnnError):
        load_image(path, (1, 6, 8))  # without resize: still an error


def test_class_names_are_stored_at_training(run, tmp_path):
    from PIL import Image

    from cnndsl.io.weights import load_weights

    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for cls in ("circle", "square", "star"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / cls / f"{i}.png")
    model_file = tmp_path / "tiny.cnn"
    model_file.write_text(TINY + "train {\n  batch 4\n  epochs 1\n}\n")
    r = run("train", model_file, "--data", root, "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 0, r.output
    _, meta = load_weights(tmp_path / "run" / "weights.safetensors")
    assert json.loads(meta["class_names"]) == ["circle", "square", "star"]
    r = run("predict", model_file, "--weights", tmp_path / "run" / "weights.safetensors", root / "star" / "0.png")
    assert r.exit_code == 0 and any(n in r.output for n in ("circle (", "square (", "star ("))


# ---------------------------------------------------------------------------- did you mean, warnings

def _errors(text):
    with pytest.raises(CnnError) as e:
        cnndsl.loads(text)
    return e.value.diagnostics


def test_did_you_mean_knows_activations_are_trailing_words():
    (d,) = _errors("network N {\n  input x: 1x8x8\n  conv 4 kernel=3 activation=relu\n}")
    assert d.message == "'activation' is not an option of conv"
    assert d.help.startswith("an activation is a word after the options, not an option: `conv ... relu`")
    assert "dilation" not in d.help
    (d,) = _errors("network N {\n  input x: 1x8x8\n  conv 4 in_channels=1\n}")
    assert d.help.startswith("the input's size is inferred from the tensor the layer reads")
    (d,) = _errors("network N {\n  input x: 1x8x8\n  conv 4 kernel_size=3\n}")
    assert d.help == "did you mean 'kernel'? (kernel_size is what other frameworks call it)"


def test_depthwise_conv_is_a_conv_with_groups():
    p = cnndsl.loads("network N {\n  input x: 4x8x8\n  depthwise_conv 3\n  flatten\n  dense 2 -> out\n}")
    node = p.graph.node("depthwise1")
    assert node.op == "conv" and node.attrs["groups"] == 4
    (d,) = _errors("network N {\n  input x: 4x8x8\n  separable_conv 8\n}")
    assert d.help == "a separable conv is `depthwise 3 padding=same` then `conv F kernel=1`"


def test_unknown_op_candidates_come_from_the_registry():
    from cnndsl.ops.registry import OpDef, _REGISTRY, register

    op = register(OpDef(name="relu6_probe", category="activation", doc="probe", shape=lambda ctx: ctx.inputs[0]))
    try:
        (d,) = _errors("network N {\n  input x: 1x8x8\n  relu6_prob\n}")
        assert d.help == "did you mean 'relu6_probe'?"
    finally:
        _REGISTRY.pop(op.name)


def test_softmax_before_cross_entropy_warns():
    p = cnndsl.loads("network N {\n  input x: 1x8x8\n  flatten\n  dense 4 softmax -> probs\n}\n"
                     "train {\n  loss probs cross_entropy\n}")
    (w,) = p.diagnostics
    assert w.code == "double-softmax" and w.severity == "warning"
    assert w.message.startswith("head 'probs' ends in a softmax, and its cross_entropy loss applies softmax itself")
    assert w.notes and w.notes[0][1] == "the loss is declared here"
    fine = cnndsl.loads("network N {\n  input x: 1x8x8\n  flatten\n  dense 4 -> logits\n}\n"
                        "train {\n  loss logits cross_entropy\n}")
    assert fine.diagnostics == []


def test_train_help_matches_the_code(run):
    r = run("train", "--help")
    text = " ".join(r.output.split())
    for fmt in ("a .npz file", "IDX", "CIFAR-10", "a folder of PNG/JPEG images", "detection_digits"):
        assert fmt in text
    for flag in ("--early-stopping", "--patience", "--checkpoint-best"):
        assert flag in text
