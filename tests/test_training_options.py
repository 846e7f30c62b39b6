"""Every declared option of the training section, one by one: the frontend accepts its declared
default (and fills it in when the option is left out) and rejects a value outside its declared range
(or of the wrong kind, for an option without a range) with a located diagnostic naming the option.

The options are read from their declarations (cnndsl/ops/training/optimizers.py, cnndsl/train/schedule.py,
cnndsl/augment/ops.py, the loss ops, cnndsl/train/watch.py, the plain settings), so an option added
there is tested here without a line more.
"""
from __future__ import annotations

import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.frontend import loads
# the lookups of the checker: each kind's options as declared beside its implementation
from cnndsl.frontend.training import (AUGMENTATIONS, EARLY_STOPPING, LOSSES, OPTIMIZERS, SCHEDULES,
                                      SETTING_OPTIONS, loss_options)
from cnndsl.frontend.values import show
from cnndsl.ops.registry import REQUIRED, Attr

NET = """network n {
  input image: 3x16x16
  stem = conv 8 kernel=3 padding=same relu
  conv 6 kernel=1 -> grid
  conv(stem) 3 kernel=1 -> masks
  feats = global_avgpool(stem)
  dense 10 -> logits
  dense(feats) 4 -> box
}
"""
HEADS = {"cross_entropy": "logits", "pixel_cross_entropy": "masks", "mse": "box", "smooth_l1": "box",
         "yolo": "grid"}


def _valid(a: Attr):
    """A value inside the declared range (for options the user must give)."""
    if a.kind == "name":
        return "loss"
    lo = a.minimum if a.minimum is not None else (a.above + 0.5 if a.above is not None else 0)
    return int(lo) if a.kind in ("int", "pair") else float(lo)


def _out_of_range(a: Attr):
    """A value the declaration refuses, and the words its message must contain."""
    if a.minimum is not None:
        return a.minimum - 1, "at least"
    if a.above is not None:
        return a.above, "above"
    if a.below is not None:
        return a.below, "below"
    if a.maximum is not None:
        return a.maximum + 1, "at most"
    return ({"bool": 3, "name": 3}.get(a.kind, True), "takes")


def _cases():
    """(id, how a line with `name=value` is written, the option)."""
    for kind, options in OPTIMIZERS.items():
        for a in options.values():
            yield f"optimizer-{kind}-{a.name}", f"optimizer {kind} {{}}", a
    for kind, options in SCHEDULES.items():
        for a in options.values():
            yield f"schedule-{kind}-{a.name}", f"schedule {kind} {{}}", a
    for step, cls in AUGMENTATIONS.items():
        required = " ".join(f"{k}={show(_valid(a))}" for k, a in cls.options.items() if a.default is REQUIRED)
        for a in cls.options.values():
            others = required if a.default is not REQUIRED else ""
            yield f"augment-{step}-{a.name}", f"augment {{{{\n    {step} {others} {{}}\n  }}}}", a
    for kind in LOSSES:
        for a in loss_options(kind).values():
            yield f"loss-{kind}-{a.name}", f"loss {HEADS[kind]} {kind} {{}}", a
    for a in EARLY_STOPPING.values():
        yield f"early_stopping-{a.name}", "early_stopping {}", a
    for name in ("epochs", "batch", "seed"):
        yield f"setting-{name}", f"{name} {{}}", SETTING_OPTIONS[name]


CASES = list(_cases())


def _program(line: str):
    return loads(NET + "train {\n  " + line + "\n}\n", "t.cnn")


def _written(a: Attr, value) -> str:
    # the plain settings are written without a name (`epochs 10`)
    return show(value) if a is SETTING_OPTIONS.get(a.name) else f"{a.name}={show(value)}"


def _value_in(training, line: str, name: str):
    if line.startswith("optimizer"):
        return training.optimizer.options[name]
    if line.startswith("schedule"):
        return training.schedule.options[name]
    if line.startswith("augment"):
        step = training.augment[0]
        return step.p if name == "p" else step.params[name]
    if line.startswith("loss"):
        loss = training.losses[0]
        return loss.weight if name == "weight" else dict(loss.options)[name]
    if line.startswith("early_stopping"):
        return getattr(training.early_stopping, name)
    return getattr(training, name)


def test_every_kind_declares_options():
    assert len(CASES) > 60  # optimizers, schedules, augmentations, losses, early stopping, settings
    for options in OPTIMIZERS.values():
        assert "lr" in options
    assert all("p" in cls.options for cls in AUGMENTATIONS.values())


@pytest.mark.parametrize("template,a", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_default_is_accepted_and_filled_in(template, a):
    if a.default is None:  # derived from the network: random_crop's size, yolo's boxes
        assert _value_in(_program(template.format("")).training, template, a.name) in ((16, 16), 1)
        return
    if a.default is REQUIRED:
        value = _valid(a)
        assert _value_in(_program(template.format(_written(a, value))).training, template, a.name) == value
        return
    training = _program(template.format(_written(a, a.default))).training
    assert _value_in(training, template, a.name) == a.default
    if a is not SETTING_OPTIONS.get(a.name):  # left out: the declared default
        training = _program(template.format("")).training
        assert _value_in(training, template, a.name) == a.default


@pytest.mark.parametrize("template,a", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_out_of_range_value_is_a_located_error_naming_the_option(template, a):
    value, words = _out_of_range(a)
    line = template.format(_written(a, value))
    with pytest.raises(CnnError) as e:
        _program(line)
    (d,) = e.value.errors
    assert d.code == "bad-value", d.render()
    assert d.message.startswith(f"{a.name} ") and words in d.message, d.render()
    if a.unit and words != "takes":
        assert a.unit in d.message, d.render()
    written = NET.count("\n") + 2 + line.count("\n", 0, line.index(_written(a, value)))
    assert d.span is not None and d.span.line == written, d.render()
