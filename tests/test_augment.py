import colorsys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnndsl.augment import (REGISTRY, Augmentation, ColorJitter, Grayscale, HFlip, Pipeline, RandomCrop, Rotate,
                            Scale, Translate, VFlip, crop_images, from_config, jitter_images, make_augmentation,
                            rotate_images)
from cnndsl.augment import rng as R

HYP = settings(max_examples=30, deadline=None)

ALL_OPS = {
    "grayscale": {},
    "hflip": {},
    "vflip": {},
    "random_crop": {"size": 8, "padding": 2},
    "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "rotate": {"degrees": 30.0, "fill": 0.5},
    "translate": {"fraction": 0.25, "fill": 0.5},
    "scale": {"min": 0.7, "max": 1.3, "fill": 0.5},
}


def batch(n=6, c=3, h=10, w=10, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def run(op, x, seed=0, epoch=0, idx=None):
    idx = np.arange(len(x)) if idx is None else idx
    return Pipeline([op], seed).apply(x, idx, epoch)


# --------------------------------------------------------------------------- registry and API

def test_registry_names_match_the_model_schema():
    from cnndsl.frontend.training import AUGMENTATIONS
    assert set(REGISTRY) == {"grayscale", "hflip", "vflip", "random_crop", "color_jitter", "rotate",
                             "translate", "scale"}
    assert AUGMENTATIONS is REGISTRY  # the frontend looks the steps up; it keeps no table of its own
    for name, cls in REGISTRY.items():  # the parameters and defaults are the declared options
        assert set(cls.options) == set(cls.DEFAULTS) | {"p"}, name
        assert all(cls.DEFAULTS[k] is cls.options[k].default for k in cls.DEFAULTS), name
        assert cls.DEFAULT_P == cls.options["p"].default, name


def test_from_config_takes_frontend_descriptions():
    from cnndsl.frontend.training import Augmentation as Cfg
    pipe = Pipeline.from_config([Cfg("hflip", 0.5), Cfg("random_crop", 1.0, {"size": (28, 28), "padding": 2}),
                                 Cfg("rotate", 0.5, {"degrees": 10.0, "fill": 0.0})], seed=3)
    assert [op.name for op in pipe.ops] == ["hflip", "random_crop", "rotate"]
    assert pipe.ops[1]["padding"] == 2 and pipe.ops[2].p == 0.5 and pipe.seed == 3
    assert pipe.validate((1, 28, 28)) == []
    assert from_config(Cfg("vflip", 0.25)) == VFlip(p=0.25)


def test_unknown_names_and_parameters():
    with pytest.raises(KeyError, match="unknown augmentation 'flip'"):
        make_augmentation("flip")
    with pytest.raises(TypeError, match="no parameter 'angle'"):
        make_augmentation("rotate", angle=3)
    with pytest.raises(TypeError, match="needs degrees"):
        Rotate()
    assert repr(RandomCrop(size=28, padding=2, p=0.5)) == "random_crop(size=28, padding=2, p=0.5)"


@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_shape_dtype_and_input_untouched(name):
    x = batch()
    keep = x.copy()
    op = make_augmentation(name, p=0.5, **ALL_OPS[name])
    y = run(op, x)
    want = (6, 3, 8, 8) if name == "random_crop" else x.shape
    assert y.shape == want and y.dtype == np.float32 and y.flags.c_contiguous
    assert op.output_shape((3, 10, 10)) == want[1:]
    assert np.array_equal(x, keep)


@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_p_zero_is_identity_bit_exact(name):
    x = batch(c=3, h=10, w=10)
    params = dict(ALL_OPS[name])
    if name == "random_crop":
        params["size"] = 10  # the centre window of the padded image is the image
    y = run(make_augmentation(name, p=0.0, **params), x, seed=5, epoch=2)
    assert np.array_equal(y, x)


@HYP
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1), st.integers(0, 50))
def test_p_zero_identity_any_shape(c, h, w, seed, epoch):
    x = batch(n=3, c=c, h=h, w=w, seed=seed % 1000)
    ops = [HFlip(p=0), VFlip(p=0), RandomCrop(padding=3, p=0), Rotate(degrees=45, p=0),
           Translate(fraction=0.5, p=0), Scale(p=0), ColorJitter(brightness=0.5, contrast=0.5, p=0)]
    assert np.array_equal(Pipeline(ops, seed).apply(x, np.arange(3) + 7, epoch), x)


def test_empty_pipeline_and_empty_batch():
    x = batch()
    y = Pipeline([], 0).apply(x, np.arange(6), 0)
    assert np.array_equal(y, x) and y is not x
    e = Pipeline([HFlip(p=1), Rotate(degrees=5)], 0).apply(np.zeros((0, 3, 10, 10), np.float32),
                                                           np.zeros(0, np.int64), 0)
    assert e.shape == (0, 3, 10, 10)


def test_out_argument_and_errors():
    x = batch()
    pipe = Pipeline([HFlip(p=1)], 0)
    out = np.empty_like(x)
    assert pipe.apply(x, np.arange(6), 0, out=out) is out
    assert np.array_equal(out, x[..., ::-1])
    with pytest.raises(ValueError, match="must not overlap"):
        pipe.apply(x, np.arange(6), 0, out=x)
    with pytest.raises(ValueError, match="shape"):
        pipe.apply(x, np.arange(6), 0, out=np.empty((6, 3, 9, 9), np.float32))
    with pytest.raises(ValueError, match="6 images but 5 indices"):
        pipe.apply(x, np.arange(5), 0)
    with pytest.raises(ValueError, match="needs 3 colour channels"):
        Pipeline([Grayscale(p=1)], 0).apply(batch(c=1), np.arange(6), 0)


# --------------------------------------------------------------------------- flips

def test_flips_match_numpy_and_are_involutions():
    x = batch(c=2, h=7, w=9)
    h = run(HFlip(p=1), x)
    v = run(VFlip(p=1), x)
    assert np.array_equal(h, x[..., ::-1])
    assert np.array_equal(v, x[..., ::-1, :])
    assert np.array_equal(run(HFlip(p=1), h), x)
    assert np.array_equal(Pipeline([VFlip(p=1), VFlip(p=1)], 0).apply(x, np.arange(6), 0), x)


@HYP
@given(st.integers(0, 2**32 - 1), st.integers(0, 100), st.floats(0, 1))
def test_flip_applies_exactly_where_the_hash_says(seed, epoch, p):
    x = batch(n=8, c=1, h=4, w=5)
    idx = np.arange(8) * 3 + 11
    y = Pipeline([HFlip(p=p)], seed).apply(x, idx, epoch)
    for i, k in enumerate(idx):
        flipped = R.uniform_py(R.image_key_py(seed, epoch, int(k), 0), 0) < p
        assert np.array_equal(y[i], x[i, :, :, ::-1] if flipped else x[i])


# --------------------------------------------------------------------------- rotate / scale / translate

@pytest.mark.parametrize("size", [5, 6, 9])
@pytest.mark.parametrize("quarter", [-1, 1, 2, 3])
def test_rotate_quarter_turns_equal_rot90(size, quarter):
    x = batch(n=3, c=3, h=size, w=size)
    y = rotate_images(x, 90.0 * quarter, fill=0.7)
    assert np.array_equal(y, np.rot90(x, quarter, axes=(2, 3)))


def test_rotate_zero_and_per_image_angles():
    x = batch(n=2, c=1, h=6, w=6)
    assert np.array_equal(rotate_images(x, 0.0), x)
    y = rotate_images(x, [90.0, 180.0])
    assert np.array_equal(y[0], np.rot90(x[0], 1, axes=(1, 2)))
    assert np.array_equal(y[1], x[1, :, ::-1, ::-1])


def test_rotate_non_square_uses_fill_and_bilinear():
    x = np.ones((1, 1, 4, 8), np.float32)
    y = rotate_images(x, 90.0, fill=0.25)
    # a 90 degree turn of a 4x8 image about its centre leaves columns 0-1 and 6-7 uncovered
    assert np.all(y[0, 0, :, :2] == np.float32(0.25)) and np.all(y[0, 0, :, 6:] == np.float32(0.25))
    # at 45 degrees pixel values are blends of ones and fill
    z = rotate_images(x, 45.0, fill=0.25)
    assert z.min() == np.float32(0.25) and z.max() == 1.0 and 0.25 < z[0, 0, 0, 2] < 1


def test_scale_one_is_identity_and_zoom_in_keeps_the_centre():
    x = batch(n=2, c=1, h=7, w=7)
    assert np.array_equal(run(Scale(min=1.0, max=1.0, p=1), x), x)
    y = run(Scale(min=2.0, max=2.0, p=1), x)
    assert np.array_equal(y[:, :, 3, 3], x[:, :, 3, 3])  # the centre pixel stays put
    # zooming by 2: pixel (5, 3) samples (4, 3) exactly
    assert np.array_equal(y[:, :, 5, 3], x[:, :, 4, 3])
    small = run(Scale(min=0.5, max=0.5, fill=0.3, p=1), x)
    assert np.all(small[:, :, 0, :] == np.float32(0.3))


def test_translate_matches_the_hash_predicted_shift():
    x = batch(n=5, c=2, h=8, w=10)
    idx = np.array([3, 1, 4, 1, 5])
    seed, epoch, frac, fill = 7, 4, 0.3, 0.9
    y = Pipeline([Translate(fraction=frac, fill=fill, p=1)], seed).apply(x, idx, epoch)
    for i, k in enumerate(idx):
        key = R.image_key_py(seed, epoch, int(k), 0)
        dx = int(np.round((2 * R.uniform_py(key, 1) - 1) * frac * 10))
        dy = int(np.round((2 * R.uniform_py(key, 2) - 1) * frac * 8))
        want = np.full_like(x[i], np.float32(fill))
        ys, xs = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(dx, 0), 10 + min(dx, 0))
        yo, xo = slice(max(-dy, 0), 8 + min(-dy, 0)), slice(max(-dx, 0), 10 + min(-dx, 0))
        want[:, ys, xs] = x[i, :, yo, xo]
        assert np.array_equal(y[i], want)


# --------------------------------------------------------------------------- crop

def test_crop_full_size_no_padding_is_identity():
    x = batch(c=1, h=9, w=7)
    assert np.array_equal(run(RandomCrop(size=(9, 7), padding=0, p=1), x), x)
    assert np.array_equal(run(RandomCrop(p=1), x), x)  # size defaults to the input size


def test_crop_window_is_the_one_the_hash_predicts():
    x = batch(n=6, c=3, h=10, w=10)
    idx = np.array([10, 20, 30, 40, 50, 60])
    seed, epoch, size, pad = 12345, 3, 8, 2
    y = Pipeline([RandomCrop(size=size, padding=pad, p=1)], seed).apply(x, idx, epoch)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    span = 10 + 2 * pad - size + 1  # possible offsets per axis
    offsets = set()
    for i, k in enumerate(idx):
        key = R.image_key_py(seed, epoch, int(k), 0)
        oy, ox = R.randint_py(key, 1, span), R.randint_py(key, 2, span)
        offsets.add((oy, ox))
        assert np.array_equal(y[i], padded[i, :, oy:oy + size, ox:ox + size])
    assert len(offsets) > 1
    # the explicit-offset helper agrees
    assert np.array_equal(crop_images(x[:1], [[1, 3]], size, pad), padded[:1, :, 1:9, 3:11])


def test_crop_not_applied_takes_the_centre_window():
    x = batch(n=2, c=1, h=10, w=10)
    y = run(RandomCrop(size=6, padding=1, p=0), x)
    assert np.array_equal(y, x[:, :, 2:8, 2:8])
    pipe = Pipeline([RandomCrop(size=6, padding=1, p=0.5), HFlip()], 0)
    assert pipe.output_shape((1, 10, 10)) == (1, 6, 6)


# --------------------------------------------------------------------------- colour

def test_grayscale_is_bt601():
    x = batch(n=4, c=3)
    y = run(Grayscale(p=1), x)
    luma = np.float32(0.299) * x[:, 0] + np.float32(0.587) * x[:, 1] + np.float32(0.114) * x[:, 2]
    for c in range(3):
        np.testing.assert_allclose(y[:, c], luma, rtol=0, atol=2e-7)
    assert np.array_equal(y[:, 0], y[:, 1]) and np.array_equal(y[:, 1], y[:, 2])


def _jitter_ref(img, b, c, s, h, order):
    """torchvision's adjust_brightness/contrast/saturation/hue on one float image (C, H, W)."""
    x = img.astype(np.float64)
    gray = lambda t: 0.2989 * t[0] + 0.587 * t[1] + 0.114 * t[2]  # noqa: E731
    for k in order:
        if k == 0:
            x = np.clip(x * b, 0, 1)
        elif k == 1:
            m = gray(x).mean() if x.shape[0] == 3 else x.mean()
            x = np.clip(c * x + (1 - c) * m, 0, 1)
        elif k == 2 and x.shape[0] == 3:
            x = np.clip(s * x + (1 - s) * gray(x)[None], 0, 1)
        elif k == 3 and x.shape[0] == 3 and h != 0:
            out = np.empty_like(x)
            for yy in range(x.shape[1]):
                for xx in range(x.shape[2]):
                    hh, ss, vv = colorsys.rgb_to_hsv(*x[:, yy, xx])
                    out[:, yy, xx] = colorsys.hsv_to_rgb((hh + h) % 1.0, ss, vv)
            x = out
    return x


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)])
def test_color_jitter_matches_torchvision_formulas(order):
    x = batch(n=3, c=3, h=5, w=6)
    b, c, s, h = 1.3, 0.6, 1.7, -0.2
    y = jitter_images(x, b, c, s, h, order)
    for i in range(3):
        np.testing.assert_allclose(y[i], _jitter_ref(x[i], b, c, s, h, order), atol=2e-5)


def test_color_jitter_one_channel_brightness_contrast():
    x = batch(n=2, c=1, h=5, w=5)
    y = jitter_images(x, 0.7, 1.4, 1.0, 0.0, (1, 0, 2, 3))
    for i in range(2):
        np.testing.assert_allclose(y[i], _jitter_ref(x[i], 0.7, 1.4, 1, 0, (1, 0, 2, 3)), atol=2e-6)


def test_color_jitter_factors_lie_in_their_ranges():
    from cnndsl.augment import kernels as K
    idx = np.arange(500, dtype=np.int64)
    t = K.draw_jitter(idx, 1, 2, 0, 1.0, 0.4, 1.5, 0.2, 0.1)
    assert np.all(t[:, 0] == 1)
    assert 0.6 <= t[:, 1].min() and t[:, 1].max() <= 1.4
    assert 0.0 <= t[:, 2].min() and t[:, 2].max() <= 2.5 and t[:, 2].min() < 0.1  # max(0, 1 - 1.5)
    assert 0.8 <= t[:, 3].min() and t[:, 3].max() <= 1.2
    assert -0.1 <= t[:, 4].min() and t[:, 4].max() <= 0.1
    orders = {tuple((int(o) >> (2 * j)) & 3 for j in range(4)) for o in t[:, 5]}
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and len(orders) == 24


# --------------------------------------------------------------------------- ranges and determinism

@HYP
@given(st.sampled_from(sorted(ALL_OPS)), st.floats(-1, 2), st.integers(0, 2**32 - 1), st.integers(0, 9))
def test_values_stay_in_range(name, fill, seed, epoch):
    x = batch(n=5, c=3, h=9, w=9, seed=epoch)
    x[0] = 0.0
    x[1] = 1.0
    params = dict(ALL_OPS[name])
    if "fill" in params:
        params["fill"] = fill
    y = run(make_augmentation(name, p=0.8, **params), x, seed, epoch)
    lo, hi = (min(0.0, fill), max(1.0, fill)) if "fill" in params else (0.0, 1.0)
    assert np.all(np.isfinite(y))
    assert y.min() >= np.float32(lo) - 1e-6 and y.max() <= np.float32(hi) + 1e-6


def _full_pipeline(seed):
    return Pipeline([make_augmentation(n, p=0.6, **kw) for n, kw in ALL_OPS.items()], seed)


def test_same_seed_same_batch_different_epoch_or_seed_differs():
    x = batch(n=16, c=3, h=10, w=10)
    idx = np.arange(16) + 100
    a = _full_pipeline(1).apply(x, idx, 0)
    b = _full_pipeline(1).apply(x, idx, 0)
    assert np.array_equal(a, b)
    assert a.shape == (16, 3, 8, 8)
    assert not np.array_equal(a, _full_pipeline(1).apply(x, idx, 1))
    assert not np.array_equal(a, _full_pipeline(2).apply(x, idx, 0))


def test_each_image_depends_only_on_its_own_index():
    x = batch(n=12, c=3, h=10, w=10)
    idx = np.arange(12) * 5
    pipe = _full_pipeline(9)
    whole = pipe.apply(x, idx, 4)
    perm = np.random.default_rng(0).permutation(12)
    shuffled = pipe.apply(x[perm], idx[perm], 4)
    assert np.array_equal(shuffled, whole[perm])
    part = pipe.apply(x[3:5], idx[3:5], 4)  # a smaller batch, reusing the pipeline's buffers
    assert np.array_equal(part, whole[3:5])


def test_hash_numba_and_python_agree():
    from cnndsl.augment.rng import image_key, randint, uniform
    for args in [(0, 0, 0, 0), (2**32 - 1, 99, 59999, 7), (5, -1, 3, 2)]:
        key = np.uint64(image_key(*args))
        assert int(key) == R.image_key_py(*args)
        for k in range(4):
            assert uniform(key, k) == R.uniform_py(int(key), k)
            assert randint(key, k, 13) == R.randint_py(int(key), k, 13)
    assert image_key(0, 0, 0, 0) != 0


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("op, shape, message", [
    (RandomCrop(size=40, padding=2), (3, 32, 32),
     "random_crop size 40x40 is larger than the 32x32 input padded by 2 on each side (36x36)"),
    (RandomCrop(size=(30, 29)), (1, 28, 28), "random_crop size 30x29 is larger than the 28x28 input"),
    (RandomCrop(size=0), (1, 28, 28), "random_crop size must be at least 1 pixels, got 0"),
    (RandomCrop(size=28, padding=-1), (1, 28, 28), "random_crop padding must be at least 0 pixels, got -1"),
    (RandomCrop(size=28, padding=1.5), (1, 28, 28), "random_crop padding takes a whole number, got 1.5"),
    (ColorJitter(saturation=0.4), (1, 28, 28),
     "color_jitter saturation needs 3 colour channels, but the input is 1x28x28"),
    (ColorJitter(hue=0.1), (1, 28, 28), "color_jitter hue needs 3 colour channels, but the input is 1x28x28"),
    (ColorJitter(hue=0.7), (3, 8, 8), "color_jitter hue must be at most 0.5, got 0.7"),
    (ColorJitter(brightness=-0.1), (3, 8, 8), "color_jitter brightness must be at least 0, got -0.1"),
    (Grayscale(), (1, 28, 28), "grayscale needs 3 colour channels, but the input is 1x28x28"),
    (HFlip(p=1.5), (1, 8, 8), "hflip p must be at most 1, got 1.5"),
    (Rotate(degrees=200), (1, 8, 8), "rotate degrees must be at most 180 degrees, got 200"),
    (Rotate(degrees=10, fill=float("nan")), (1, 8, 8), "rotate fill takes a finite number, got nan"),
    (Translate(fraction=1.0), (1, 8, 8), "translate fraction must be below 1, got 1"),
    (Scale(min=1.2, max=1.1), (1, 8, 8), "scale min 1.2 is larger than max 1.1"),
    (Scale(min=0, max=1.1), (1, 8, 8), "scale min must be above 0, got 0"),
    (HFlip(), (8, 8), "hflip needs image inputs (C, H, W), but the input has shape (8, 8)"),
])
def test_validation_messages(op, shape, message):
    assert op.validate(shape) == [message]


def test_valid_ops_have_no_problems_and_pipeline_chains_shapes():
    for name, kw in ALL_OPS.items():
        assert make_augmentation(name, **kw).validate((3, 10, 10)) == [], name
    assert ColorJitter(brightness=0.3, contrast=0.3).validate((1, 28, 28)) == []
    pipe = Pipeline([RandomCrop(size=20), RandomCrop(size=24)], 0)
    assert pipe.problems((1, 28, 28)) == [(1, "random_crop size 24x24 is larger than the 20x20 input")]
    assert isinstance(pipe.ops[0], Augmentation)


def test_parallel_and_serial_paths_agree():
    # 40x3x24x24 is above the kernels' parallel threshold, 2 images are below it
    x = batch(n=40, c=3, h=24, w=24, seed=3)
    idx = np.arange(40) + 1000
    ops = [make_augmentation(n, p=0.7, **kw) for n, kw in ALL_OPS.items() if n != "random_crop"]
    ops.append(RandomCrop(size=20, padding=3, p=0.7))
    pipe = Pipeline(ops, 21)
    whole = pipe.apply(x, idx, 6)
    parts = np.concatenate([pipe.apply(x[i:i + 2], idx[i:i + 2], 6) for i in range(0, 40, 2)])
    assert np.array_equal(whole, parts)
