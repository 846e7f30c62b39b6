"""Every example model checks clean, with the shapes its comments promise."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnndsl.frontend import load, loads

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
DOCS = (ROOT / "docs" / "language.md")


def test_all_required_examples_exist():
    names = {p.stem for p in EXAMPLES}
    assert {"lenet5", "nin", "vgg_small", "resnet_tiny", "unet_tiny", "localizer", "detector"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_checks_clean(path: Path):
    program = load(path)
    assert program.diagnostics == []  # no warnings either
    assert program.graph.heads
    for node in program.graph.nodes():
        assert node.type is not None, node.name
    for name, cfg in program.profiles.items():
        assert cfg.profile == name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_documented(path: Path):
    assert f"examples/{path.name}" in DOCS.read_text(encoding="utf-8")


def types(program):
    return {n.name: str(n.type) for n in program.graph.nodes()}


def test_lenet5_shapes():
    p = load(ROOT / "examples" / "lenet5.cnn")
    t = types(p)
    assert t["c1"] == "6x28x28"
    assert t["maxpool1"] == "6x14x14"
    assert t["conv2"] == "16x10x10"
    assert t["maxpool2"] == "16x5x5"
    assert t["flatten1"] == "400"
    assert t["dense1"] == "120" and t["dense2"] == "84" and t["logits"] == "10"
    assert p.graph.heads == {"logits": "logits"}
    assert p.graph.node("c1").params["weight"] == (6, 1, 5, 5)
    cfg = p.training
    assert cfg.dataset == "digits" and cfg.epochs == 15 and cfg.batch == 64
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.05 and cfg.optimizer.weight_decay == 5e-4
    assert cfg.schedule.kind == "cosine" and cfg.schedule.warmup == 1
    assert [a.kind for a in cfg.augment] == ["random_crop", "rotate"]
    assert p.profiles["deploy"].batch == 1 and p.profiles["deploy"].epochs == 15


def test_lenet5_classes_override():
    p = load(ROOT / "examples" / "lenet5.cnn", defines={"classes": "5"})
    assert str(p.graph.node("logits").type) == "5"
    assert p.params == {"classes": 5}


def test_lenet5_profile_selection():
    p = load(ROOT / "examples" / "lenet5.cnn", profile="deploy")
    assert p.training.batch == 1 and p.training.profile == "deploy"


def test_nin_has_no_dense_layer():
    p = load(ROOT / "examples" / "nin.cnn")
    ops = {n.op for n in p.graph.nodes()}
    assert "dense" not in ops and "global_avgpool" in ops
    assert any(n.op == "conv" and n.attrs["kernel"] == (1, 1) for n in p.graph.nodes())
    assert str(p.graph.node(p.graph.heads["logits"]).type) == "10"


def test_vgg_small_stages_and_finetune_profile():
    p = load(ROOT / "examples" / "vgg_small.cnn")
    assert str(p.graph.node("stage3.maxpool1").type) == "128x4x4"
    assert sum(n.name.startswith("stage3.conv") for n in p.graph.nodes()) == 3
    ft = p.profiles["finetune"]
    assert ft.freeze == ("stage1", "stage2") and ft.lr_mult == {"stage3": 0.1}
    frozen = ft.frozen_nodes(p.graph)
    assert "stage1.conv1" in frozen and "stage3.conv1" not in frozen
    assert ft.lr_factor(p.graph, "stage3.conv2") == 0.1 and ft.lr_factor(p.graph, "logits") == 1.0
    assert ft.optimizer.name == "adam" and ft.augment == p.training.augment


def test_resnet_tiny_residuals():
    p = load(ROOT / "examples" / "resnet_tiny.cnn")
    g = p.graph
    assert g.inputs_of("residual1.add1") == ["batchnorm1.relu", "residual1.y"]
    assert str(g.node("down1.add1.relu").type) == "32x16x16"
    assert str(g.node("down2.add1.relu").type) == "64x8x8"
    assert [n for n in g.nx.nodes if n.endswith(".add1")] == [
        "residual1.add1", "residual2.add1", "down1.add1", "residual3.add1", "residual4.add1", "down2.add1",
        "residual5.add1"]


def test_unet_tiny_per_pixel_head():
    p = load(ROOT / "examples" / "unet_tiny.cnn")
    assert str(p.graph.node(p.graph.heads["masks"]).type) == "11x32x32"  # background + 10 digits
    ops = {n.op for n in p.graph.nodes()}
    assert {"conv_transpose", "upsample", "concat"} <= ops
    assert p.training.losses[0].kind == "pixel_cross_entropy"


def test_localizer_two_heads():
    p = load(ROOT / "examples" / "localizer.cnn")
    g = p.graph
    assert list(g.heads) == ["class_logits", "box"]
    assert g.heads["box"] == "box.sigmoid"
    assert str(g.node("box.sigmoid").type) == "4" and str(g.node("class_logits").type) == "10"
    assert [(l.head, l.kind, l.weight) for l in p.training.losses] == [
        ("class_logits", "cross_entropy", 1.0), ("box", "smooth_l1", 50.0)]
    assert p.training.dataset == "localization_digits"


@pytest.mark.parametrize("classes,boxes", [(3, 2), (20, 3), (1, 1)])
def test_detector_head_width_from_parameters(classes, boxes):
    p = load(ROOT / "examples" / "detector.cnn", defines={"classes": str(classes), "boxes": str(boxes)})
    grid = p.graph.node(p.graph.heads["grid"])
    assert grid.type.shape == ((classes + 5) * boxes, 8, 8)
    assert grid.attrs["kernel"] == (1, 1)
    leaky = [n for n in p.graph.nodes() if n.op == "leaky_relu"]
    assert leaky and all(n.attrs["alpha"] == 0.1 for n in leaky)
    # the yolo loss takes its predictors per cell from the network parameter
    (loss,) = p.training.losses
    assert loss.kind == "yolo" and dict(loss.options) == {"noobj": 0.5, "coord": 5.0, "boxes": boxes}


def test_examples_load_from_text_too():
    for path in EXAMPLES:
        loads(path.read_text(encoding="utf-8"), str(path))
