"""The training section and profiles -> a validated, frozen TrainingConfig."""
from __future__ import annotations

import dataclasses

import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.frontend import TrainingConfig, loads
from cnndsl.frontend.training import AUGMENTATIONS, LOSSES, METRICS, SETTINGS

NET = """network n(classes = 10) {
  input image: 3x32x32
  stem = conv 8 kernel=3 padding=same relu
  stage1 = conv 8 kernel=3 padding=same
  bn = batchnorm relu
  global_avgpool
  feats = dense 16 relu
  dense(feats) classes -> logits
  dense(feats) 4 -> box
}
"""
SEG = """network s {
  input image: 1x16x16
  conv 3 kernel=3 padding=same -> masks
}
"""


def cfg(train: str, net: str = NET, **kw) -> TrainingConfig:
    return loads(net + train, "t.cnn", **kw).training


def errs(train: str, net: str = NET, **kw):
    with pytest.raises(CnnError) as e:
        loads(net + train, "t.cnn", **kw)
    return e.value.errors


@pytest.mark.parametrize("setting", ["epochs 99999999999999999999999", "augment {\n    rotate 1e999\n  }",
                                     "augment {\n    rotate degrees=1e999\n  }"])
def test_a_value_too_large_is_one_error_not_also_a_missing_one(setting):
    """`epochs 99999999999999999999999` gave 'the number ... is too large' and then 'epochs needs
    epochs (passes over the training set)', as if nothing had been written."""
    (e,) = errs(f"train {{\n  {setting}\n  loss logits cross_entropy\n}}\n")
    assert e.code == "number-too-large" and "is too large" in e.message, e.render()


def test_no_train_section():
    p = loads(NET, "t.cnn")
    assert p.training is None and p.profiles == {}


def test_defaults():
    c = cfg("train {\n}\n")
    assert c.dataset is None and c.epochs == 10 and c.batch == 32 and c.seed == 0
    assert c.optimizer.name == "sgd" and c.optimizer.lr == 0.01
    assert c.schedule.kind == "constant" and c.schedule.warmup == 0
    assert c.losses[0].head == "logits" and c.losses[0].kind == "cross_entropy"  # first head
    assert c.metrics == () and c.augment == () and c.normalize is None and c.freeze == ()
    assert cfg("train {\n}\n", net=SEG).losses[0].kind == "pixel_cross_entropy"


def test_full_section():
    c = cfg("""train {
  dataset "data/my set"
  epochs 3
  batch 8
  seed 42
  optimizer adam lr=2e-3 beta1=0.8 beta2=0.99 eps=1e-7 weight_decay=1e-4
  schedule step step_size=2 gamma=0.5 warmup=1
  loss logits cross_entropy
  loss box smooth_l1 weight=2
  metric logits accuracy top5
  metric box box_iou
  normalize mean=[0.5, 0.5, 0.5] std=[0.25, 0.25, 0.25]
  augment {
    grayscale p=0.1
    hflip
    vflip 0.2
    random_crop 32 padding=4
    color_jitter brightness=0.2 contrast=0.2 saturation=0.2 hue=0.1 p=0.8
    rotate 15 fill=0.5
    translate fraction=0.1 p=0.5
    scale min=0.8 max=1.2
  }
  freeze stem stage1 stats=false
  lr_mult bn=0.5 feats=0.1
}
""")
    assert c.dataset == "data/my set" and (c.epochs, c.batch, c.seed) == (3, 8, 42)
    assert (c.optimizer.name, c.optimizer.hyper()) == ("adam", dict(lr=2e-3, beta1=0.8, beta2=0.99, eps=1e-7,
                                                                   weight_decay=1e-4))
    assert (c.schedule.kind, c.schedule.step_size, c.schedule.gamma, c.schedule.warmup) == ("step", 2, 0.5, 1)
    assert [(l.head, l.kind, l.weight) for l in c.losses] == [("logits", "cross_entropy", 1.0),
                                                              ("box", "smooth_l1", 2.0)]
    assert [(m.head, m.kind) for m in c.metrics] == [("logits", "accuracy"), ("logits", "top5"), ("box", "box_iou")]
    assert c.normalize.mean == (0.5, 0.5, 0.5)
    kinds = [a.kind for a in c.augment]
    assert kinds == ["grayscale", "hflip", "vflip", "random_crop", "color_jitter", "rotate", "translate", "scale"]
    a = {x.kind: x for x in c.augment}
    assert a["hflip"].p == 0.5 and a["vflip"].p == 0.2 and a["grayscale"].p == 0.1
    assert a["random_crop"]["size"] == (32, 32) and a["random_crop"]["padding"] == 4 and a["random_crop"].p == 1.0
    assert a["rotate"]["degrees"] == 15 and a["rotate"]["fill"] == 0.5
    assert a["translate"]["fraction"] == 0.1 and a["scale"]["min"] == 0.8
    assert c.freeze == ("stem", "stage1") and c.freeze_stats is False
    assert c.lr_mult == {"bn": 0.5, "feats": 0.1}
    assert c.spans["optimizer"].line == 16


def test_config_is_frozen():
    c = cfg("train {\n  epochs 2\n}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 3


def test_frozen_nodes_and_lr_factor():
    p = loads(NET + "train {\n  freeze stem\n  lr_mult stage1=0.1 feats=0\n}\n", "t.cnn")
    c, g = p.training, p.graph
    assert c.frozen_nodes(g) == ["stem", "stem.relu"]
    assert c.lr_factor(g, "stage1") == 0.1 and c.lr_factor(g, "feats.relu") == 0.0 and c.lr_factor(g, "bn") == 1.0


def test_parameters_usable_in_settings():
    c = cfg("train {\n  epochs classes * 2\n}\n")
    assert c.epochs == 20


# ---- profiles ----------------------------------------------------------------------
PROFILES = """train {
  epochs 10
  batch 64
  loss logits cross_entropy
  metric logits accuracy
  augment {
    hflip
  }
}
profile deploy { batch 1 }
profile quick {
  epochs 1
  augment {
  }
  metric logits top5
}
"""


def test_profiles_override():
    p = loads(NET + PROFILES, "t.cnn")
    assert p.training.batch == 64 and p.training.profile is None
    d, q = p.profiles["deploy"], p.profiles["quick"]
    assert (d.batch, d.epochs, d.profile) == (1, 10, "deploy")
    assert (q.batch, q.epochs) == (64, 1) and q.augment == ()
    assert [(m.head, m.kind) for m in q.metrics] == [("logits", "top5")]
    assert d.augment == p.training.augment


def test_profile_selection():
    p = loads(NET + PROFILES, "t.cnn", profile="quick")
    assert p.training.epochs == 1 and p.profile == "quick"
    (e,) = errs(PROFILES, profile="qick")
    assert e.code == "unknown-profile" and e.help == "did you mean 'quick'?"


def test_profile_without_train_section():
    p = loads(NET + "profile deploy { batch 1 }\n", "t.cnn", profile="deploy")
    assert p.training.batch == 1 and p.training.epochs == 10


def test_errors_in_profiles_are_reported_once():
    es = errs("train {\n  epochs 0\n}\nprofile a { batch 1 }\nprofile b { batch 2 }\n")
    assert len(es) == 1 and es[0].code == "bad-value"


def test_duplicate_profile_and_train():
    es = errs("train {\n}\ntrain {\n}\nprofile a { batch 1 }\nprofile a { batch 2 }\n")
    assert {e.code for e in es} == {"duplicate-train", "duplicate-profile"}


# ---- errors --------------------------------------------------------------------------
@pytest.mark.parametrize("line,code,hint", [
    ("epoch 3", "unknown-setting", "did you mean 'epochs'?"),
    ("hflip", "unknown-setting", "augment"),
    ("optimizer sdg", "unknown-kind", "did you mean 'sgd'?"),
    ("optimizer sgd momentm=0.9", "unknown-option", "did you mean 'momentum'?"),
    ("optimizer adam momentum=0.9", "unknown-option", None),
    ("schedule cosin", "unknown-kind", "did you mean 'cosine'?"),
    ("schedule step gama=0.1", "unknown-option", "did you mean 'gamma'?"),
    ("loss logit cross_entropy", "unknown-head", "did you mean 'logits'?"),
    ("loss stem cross_entropy", "unknown-head", "declare it with `-> stem` on its layer"),
    ("loss logits cros_entropy", "bad-value", None),
    ("loss logits pixel_cross_entropy", "loss-head", "cross_entropy"),
    ("metric logits acuracy", "bad-value", None),
    ("metric logits mean_iou", "metric-head", None),
    ("metric logits box_iou", "metric-head", None),
    ("freeze stme", "unknown-layer", "did you mean 'stem'?"),
    ("lr_mult stem", "bad-value", None),
    ("lr_mult stem=-1", "bad-value", None),
    ("epochs 0", "bad-value", None),
    ("epochs 2.5", "bad-value", None),
    ("batch true", "bad-value", None),
    ("epochs", "missing-option", None),
    ("epochs 3 4", "too-many-values", None),
    ("normalize mean=0.5 std=0.5", "normalize-channels", None),
    ("normalize mean=[0.5, 0.5, 0.5] std=[0, 1, 1]", "bad-value", None),
    ("normalize mean=[0.5, 0.5, 0.5]", "missing-option", None),
    ("dataset 3", "bad-value", None),
    ("epochs 3\n  epochs 4", "duplicate-setting", None),
    ("optimizer sgd lr=0", "bad-value", None),
    ("optimizer sgd momentum=1", "bad-value", None),
])
def test_setting_errors(line, code, hint):
    es = errs("train {\n  " + line + "\n}\n")
    assert es[0].code == code, es[0].render()
    if hint:
        assert hint in (es[0].help or ""), es[0].render()
    assert es[0].span is not None and es[0].span.line >= 11


@pytest.mark.parametrize("aug,code", [
    ("hflip p=1.5", "bad-value"),
    ("rotate degrees=200", "bad-value"),
    ("rotate", "missing-option"),
    ("translate fraction=1", "bad-value"),
    ("scale min=1.2 max=1.1", "augment-range"),
    ("color_jitter hue=0.6", "bad-value"),
    ("random_crop size=24", "augment-range"),
    ("random_crop padding=-1", "bad-value"),
    ("flip", "unknown-augmentation"),
    ("hflip prob=0.5", "unknown-option"),
])
def test_augmentation_errors(aug, code):
    es = errs("train {\n  augment {\n    " + aug + "\n  }\n}\n")
    assert es[0].code == code, es[0].render()


def test_colour_augmentation_on_grey_input():
    es = errs("train {\n  augment {\n    color_jitter saturation=0.1\n  }\n}\n", net=SEG)
    assert es[0].code == "augment-channels"


def test_several_training_errors_in_one_run():
    es = errs("train {\n  epochs 0\n  batch -1\n  optimizer sgd lr=-1\n}\n")
    assert len(es) == 3


def test_head_of_failed_layer_is_not_reported_again():
    net = NET.replace("dense(feats) classes -> logits", "dense(feats) classes bais=true -> logits")
    es = errs("train {\n  loss logits cross_entropy\n}\n", net=net)
    assert [e.code for e in es] == ["unknown-option"]


def test_schema_tables_are_consistent():
    assert set(LOSSES) == {"cross_entropy", "mse", "smooth_l1", "pixel_cross_entropy", "yolo"}
    assert {"accuracy", "top5", "mean_iou"} <= set(METRICS)
    assert {"grayscale", "hflip", "vflip", "random_crop", "color_jitter", "rotate", "translate", "scale"} == set(
        AUGMENTATIONS)
    assert {"dataset", "epochs", "batch", "seed", "optimizer", "schedule", "loss", "metric", "normalize", "augment",
            "freeze", "lr_mult", "init", "reinit", "early_stopping", "checkpoint"} == set(SETTINGS)


def test_loss_and_metric_heads_come_from_their_declarations(monkeypatch):
    """The frontend keeps no table of losses or metrics: each loss op's OpDef.head_rank and each
    MetricDef's head_rank decide which heads a `loss`/`metric` line accepts, with a located error
    that suggests the kinds that fit."""
    from cnndsl.ops.registry import get_op
    from cnndsl.tasks import metric_kinds

    assert all(LOSSES[k] is get_op(k) for k in LOSSES) and METRICS is metric_kinds.METRICS
    heads = {1: (NET, "logits"), 3: (SEG, "masks")}
    for table, what in ((LOSSES, "loss"), (METRICS, "metric")):
        for kind, d in table.items():
            if d.head_rank is None or kind == "yolo":  # yolo's grid has its own channel rule (test_tasks_yolo)
                continue
            other = 3 if d.head_rank == 1 else 1
            net, head = heads[other]
            lines = f"{what} {head} {kind}" if what == "loss" else f"loss {head} mse\n  {what} {head} {kind}"
            es = errs(f"train {{\n  {lines}\n}}\n", net=net)
            assert es[0].code == f"{what}-head" and es[0].span.line == net.count("\n") + lines.count("\n") + 2, \
                es[0].render()
            fits = [k for k, x in table.items() if x.head_rank in (other, None)]
            assert es[0].help == f"for a {other}-D head use {' or '.join(fits)}", es[0].render()
    # a changed declaration changes what the frontend accepts
    cfg("train {\n  loss logits mse\n  metric logits top5\n}\n")
    monkeypatch.setitem(metric_kinds.METRICS, "top5", dataclasses.replace(METRICS["top5"], head_rank=3))
    assert errs("train {\n  loss logits mse\n  metric logits top5\n}\n")[0].code == "metric-head"
