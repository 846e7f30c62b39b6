"""Augmentation in the model file: the checker's rules (from cnndsl.augment, on the augment line's
span), the flip-on-digits warning, and `cnndsl augment` (the picture of what the network sees)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnndsl.cli.main import cli
from cnndsl.diagnostics import CnnError
from cnndsl.frontend import loads

NET = """network n {{
  input image: {shape}
  conv 4 kernel=3 padding=same relu
  global_avgpool
  dense 10 -> logits
}}
train {{
  {dataset}
  augment {{
    {steps}
  }}
}}
"""


def source(steps, shape="1x28x28", dataset="dataset digits") -> str:
    return NET.format(shape=shape, dataset=dataset, steps="\n    ".join(steps))


def program(steps, **kw):
    return loads(source(steps, **kw), "t.cnn")


def errors(steps, **kw):
    with pytest.raises(CnnError) as e:
        program(steps, **kw)
    return e.value.errors


# --------------------------------------------------------------------------- the checker

def test_grayscale_on_one_channel_is_an_error_that_says_why():
    (e,) = errors(["rotate 10", "grayscale p=0.2"])
    assert e.code == "augment-channels" and "grayscale needs 3 colour channels" in e.message
    assert (e.span.line, e.span.column) == (11, 5)  # the grayscale line
    assert "does nothing on a one-channel image" in e.help


def test_saturation_and_hue_on_grey_point_at_the_option():
    es = errors(["color_jitter brightness=0.4 saturation=0.2 hue=0.1"])
    assert [e.code for e in es] == ["augment-channels", "augment-channels"]
    cols = [e.span.column for e in es]
    line = source(["color_jitter brightness=0.4 saturation=0.2 hue=0.1"]).splitlines()[9]
    assert [line[c - 1:].split()[0] for c in cols] == ["saturation=0.2", "hue=0.1"]


def test_brightness_and_contrast_work_on_grey_and_go_above_1():
    p = program(["color_jitter brightness=1.5 contrast=2"])
    (a,) = p.training.augment
    assert a["brightness"] == 1.5 and a["contrast"] == 2.0 and p.diagnostics == []
    p = program(["color_jitter saturation=3 hue=0.5"], shape="3x32x32", dataset="")
    assert p.training.augment[0]["saturation"] == 3.0


def test_crop_larger_than_the_padded_input():
    (e,) = errors(["random_crop 32 padding=1"])
    assert e.code == "augment-range" and "larger than the 28x28 input padded by 1" in e.message
    assert e.span.column == 17  # the size value


def test_crop_of_another_size_does_not_fit_the_network():
    (e,) = errors(["random_crop 24 padding=2"])
    assert e.code == "augment-range" and "does not match the 28x28 input" in e.message


def test_translate_and_scale_take_fill():
    p = program(["translate 0.1 fill=0.5", "scale min=0.8 max=1.2 fill=1"])
    t, s = p.training.augment
    assert t["fill"] == 0.5 and s["fill"] == 1.0


def test_scale_min_above_max_and_every_bad_line_reported():
    es = errors(["scale min=1.2 max=1.1", "grayscale", "hflip p=2"])
    assert sorted(e.code for e in es) == ["augment-channels", "augment-range", "bad-value"]


def test_flip_on_digits_is_a_warning():
    p = program(["hflip", "rotate 10", "vflip 0.1"])
    ws = p.diagnostics
    assert [(w.severity, w.code, w.span.line) for w in ws] == [
        ("warning", "augment-flip-label", 10), ("warning", "augment-flip-label", 12)]
    assert "a mirrored digit is not the same digit" in ws[0].message and "remove hflip" in ws[0].help


@pytest.mark.parametrize("dataset,warned", [
    ("", True),  # no dataset: the digits are the default (and the input is 1x28x28)
    ('dataset "data/mnist"', True),
    ('dataset "data/fashion-mnist"', False),  # a mirrored shoe is a shoe
    ('dataset "data/blobs"', False),
])
def test_flip_warning_depends_on_the_dataset(dataset, warned):
    p = program(["hflip"], dataset=dataset)
    assert bool(p.diagnostics) == warned


def test_flip_warning_once_with_profiles():
    text = source(["hflip"]) + "profile a { batch 1 }\nprofile b { batch 2 }\n"
    assert len(loads(text, "t.cnn").diagnostics) == 1


# --------------------------------------------------------------------------- cnndsl augment

@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.augment  # noqa: F401  (registers the command)

    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_augment_grid_png(run, tmp_path):
    model = tmp_path / "m.cnn"
    model.write_text(source(["rotate 20", "translate 0.1 p=0.5"]))
    out = tmp_path / "grid.png"
    r = run("augment", model, "-n", 3, "-k", 4, "--seed", 5, "-o", out)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "3 images" in r.output
    img = Image.open(out)
    assert img.format == "PNG"
    w, h = img.size
    from cnndsl.cli.augment import GAP, LABEL_W, cell_scale
    cell = 28 * cell_scale(28, 28)
    assert w == LABEL_W + 5 * (cell + GAP) + GAP or w > LABEL_W + 5 * (cell + GAP)  # 1 original + 4 versions
    assert h > 3 * cell
    first = out.read_bytes()
    run("augment", model, "-n", 3, "-k", 4, "--seed", 5, "-o", out)
    assert out.read_bytes() == first  # deterministic
    assert not list(tmp_path.glob(".grid.png.*"))  # written atomically, no temporary left


def test_grid_shows_the_original_and_the_pipeline_output():
    from cnndsl.augment import Pipeline, Rotate
    from cnndsl.cli.augment import GAP, LABEL_W, augment_grid

    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    pipe = Pipeline([Rotate(degrees=30)], seed=1)
    versions = np.stack([pipe.apply(x, np.arange(2), e) for e in range(3)])
    grid = np.asarray(augment_grid(x, versions, ["a", "b"], ["original", "1", "2", "3"]))
    top = 22  # the header row (no title)
    cell = grid[top:top + 28 * 4:4, LABEL_W + GAP:LABEL_W + GAP + 28 * 4:4, 0]  # every 4th pixel: the 28x28
    np.testing.assert_array_equal(cell, (x[0, 0] * 255 + 0.5).astype(np.uint8))
    x1 = LABEL_W + GAP + (28 * 4 + GAP)
    cell = grid[top:top + 28 * 4:4, x1:x1 + 28 * 4:4, 0]
    np.testing.assert_array_equal(cell, (np.clip(versions[0, 0, 0], 0, 1) * 255 + 0.5).astype(np.uint8))


def test_augment_without_an_augment_list_exits_1(run, tmp_path):
    model = tmp_path / "plain.cnn"
    model.write_text(source([]).replace("  augment {\n    \n  }\n", ""))
    r = run("augment", model, "-o", tmp_path / "g.png")
    assert r.exit_code == 1 and "declares no augmentation" in r.output
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("problem", ["missing-data", "not-png", "unwritable", "bad-model"])
def test_augment_bad_input_exits_1(run, tmp_path, problem):
    model = tmp_path / "m.cnn"
    model.write_text(source(["rotate 10"]))
    args = ["augment", model, "-o", tmp_path / "g.png"]
    if problem == "missing-data":
        args += ["--data", tmp_path / "nowhere.npz"]
    elif problem == "not-png":
        args[-1] = tmp_path / "g.jpg"
    elif problem == "unwritable":
        (tmp_path / "file").write_text("x")
        args[-1] = tmp_path / "file" / "g.png"  # a folder that is a file
    else:
        model.write_text(source(["grayscale"]))
    r = run(*args)
    assert r.exit_code == 1, r.output
    assert "error" in r.output and "Traceback" not in r.output
    expected = {"missing-data": "nowhere.npz", "not-png": "g.jpg", "unwritable": "g.png", "bad-model": "m.cnn"}
    assert expected[problem] in r.output
