import numpy as np
import pytest
from PIL import Image

from cnndsl.diagnostics import CnnError
from cnndsl.io.images import load_image


def gray(h=28, w=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_png_grayscale(tmp_path):
    a = gray()
    Image.fromarray(a, "L").save(tmp_path / "d.png")
    x = load_image(tmp_path / "d.png", (1, 28, 28))
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], a.astype(np.float32) / 255)
    assert x.min() >= 0 and x.max() <= 1


def test_png_rgb(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(a, "RGB").save(tmp_path / "c.png")
    x = load_image(tmp_path / "c.png", (3, 32, 32))
    np.testing.assert_array_equal(x, np.moveaxis(a, -1, 0) / np.float32(255))


def test_jpeg(tmp_path):
    Image.fromarray(gray(), "L").save(tmp_path / "d.jpg", quality=95)
    x = load_image(tmp_path / "d.jpg", (1, 28, 28))
    assert x.shape == (1, 28, 28)


def test_rgb_when_grayscale_expected(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(tmp_path / "c.png")
    with pytest.raises(CnnError) as e:
        load_image(tmp_path / "c.png", (1, 28, 28))
    msg = str(e.value)
    assert "expected: 1x28x28 (grayscale 28x28)" in msg
    assert "found: 3x32x32 RGB" in msg
    assert "c.png" in msg and "convert('L')" in msg and "resize((28, 28))" in msg


def test_wrong_size(tmp_path):
    Image.fromarray(gray(20, 30), "L").save(tmp_path / "s.png")
    with pytest.raises(CnnError) as e:
        load_image(tmp_path / "s.png", (1, 28, 28))
    msg = str(e.value)
    assert "wrong size" in msg and "found: 1x20x30 grayscale" in msg


def test_gray_when_rgb_expected(tmp_path):
    Image.fromarray(gray(), "L").save(tmp_path / "g.png")
    with pytest.raises(CnnError) as e:
        load_image(tmp_path / "g.png", (3, 28, 28))
    assert "channel count" in str(e.value) and "convert('RGB')" in str(e.value)


def test_rgba_opaque_and_transparent(tmp_path):
    a = np.full((8, 8, 4), 255, np.uint8)
    Image.fromarray(a, "RGBA").save(tmp_path / "o.png")
    assert load_image(tmp_path / "o.png", (3, 8, 8)).shape == (3, 8, 8)
    a[0, 0, 3] = 0
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    with pytest.raises(CnnError) as e:
        load_image(tmp_path / "t.png", (3, 8, 8))
    assert "transparent" in str(e.value)


def test_16bit_and_bilevel(tmp_path):
    a = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(a).save(tmp_path / "w.png")
    x = load_image(tmp_path / "w.png", (1, 8, 8))
    np.testing.assert_allclose(x[0], a / 65535, rtol=1e-6)
    Image.fromarray(np.eye(8, dtype=bool)).save(tmp_path / "b.png")
    x = load_image(tmp_path / "b.png", (1, 8, 8))
    np.testing.assert_array_equal(x[0], np.eye(8, dtype=np.float32))


def test_missing_directory_unreadable_truncated(tmp_path):
    with pytest.raises(CnnError, match="does not exist"):
        load_image(tmp_path / "none.png", (1, 28, 28))
    with pytest.raises(CnnError, match="directory"):
        load_image(tmp_path, (1, 28, 28))
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(CnnError, match="not an image file"):
        load_image(tmp_path / "junk.png", (1, 28, 28))
    Image.fromarray(gray(), "L").save(tmp_path / "full.png")
    blob = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CnnError) as e:
        load_image(tmp_path / "cut.png", (1, 28, 28))
    assert e.value.errors[0].code == "image-unreadable"


def test_npy_layouts(tmp_path):
    a = gray()
    np.save(tmp_path / "hw.npy", a)
    np.testing.assert_array_equal(load_image(tmp_path / "hw.npy", (1, 28, 28))[0], a / np.float32(255))
    f = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "chw.npy", f)
    np.testing.assert_array_equal(load_image(tmp_path / "chw.npy", (3, 8, 8)), f)
    np.save(tmp_path / "hwc.npy", np.moveaxis(f, 0, -1))
    np.testing.assert_array_equal(load_image(tmp_path / "hwc.npy", (3, 8, 8)), f)
    np.save(tmp_path / "b.npy", f[None])
    np.testing.assert_array_equal(load_image(tmp_path / "b.npy", (3, 8, 8)), f)


def test_npy_errors(tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((1, 32, 32), np.float32))
    with pytest.raises(CnnError) as e:
        load_image(tmp_path / "big.npy", (1, 28, 28))
    assert "expected: 1x28x28 (grayscale 28x28)" in str(e.value)
    assert "(1, 32, 32)" in str(e.value)
    np.save(tmp_path / "range.npy", np.full((1, 28, 28), 200.0, np.float32))
    with pytest.raises(CnnError, match="outside"):
        load_image(tmp_path / "range.npy", (1, 28, 28))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CnnError, match="cannot read"):
        load_image(tmp_path / "obj.npy", (1, 28, 28))
    np.save(tmp_path / "int.npy", np.zeros((1, 28, 28), np.int32))
    with pytest.raises(CnnError, match="dtype"):
        load_image(tmp_path / "int.npy", (1, 28, 28))
    np.savez(tmp_path / "d.npz", x=np.zeros(3))
    with pytest.raises(CnnError, match="npz"):
        load_image(tmp_path / "d.npz", (1, 28, 28))
