import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from cnndsl.data.dataset import Dataset
from cnndsl.data.formats import (CIFAR10_CLASSES, FORMATS, ClassDataset, check_labels, dataset_splits, find_format,
                                 load_cifar10_bin, load_cifar10_folder, load_dataset, load_idx, load_idx_folder,
                                 load_image_folder)
from cnndsl.diagnostics import CnnError


def message(excinfo) -> str:
    return str(excinfo.value)


def expect_error(fn, *args, **kw) -> str:
    with pytest.raises(CnnError) as e:
        fn(*args, **kw)
    return message(e)


# --------------------------------------------------------------------------- IDX writers

def idx_images(n=5, h=28, w=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def idx_bytes(arr: np.ndarray) -> bytes:
    ndim = arr.ndim
    header = bytes([0, 0, 0x08, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist(folder, n=5, h=28, w=28, prefix="train", gz=False, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    x = idx_images(n, h, w, seed)
    y = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
        data = idx_bytes(arr)
        (folder / (name + suffix)).write_bytes(gzip.compress(data) if gz else data)
    return x, y


def test_idx_roundtrip(tmp_path):
    x, y = write_mnist(tmp_path)
    ds = load_idx(tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte", (1, 28, 28))
    assert isinstance(ds, Dataset) and isinstance(ds, ClassDataset)
    assert ds.x.shape == (5, 1, 28, 28) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x[:, 0], x.astype(np.float32) / 255)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == y.tolist()


def test_idx_gzip_and_folder(tmp_path):
    x, y = write_mnist(tmp_path, n=4, gz=True)
    xt, yt = write_mnist(tmp_path, n=3, prefix="t10k", seed=1)
    ds = load_idx_folder(tmp_path, "train", (1, 28, 28))
    np.testing.assert_array_equal(ds.x[:, 0], x / np.float32(255))
    te = load_idx_folder(tmp_path, "test")
    assert len(te) == 3 and te.name.endswith("/test")
    assert dataset_splits(str(tmp_path)) == ("train", "test")
    assert len(load_dataset(str(tmp_path), (1, 28, 28), "test")) == 3


def test_idx_mnist_dot_names(tmp_path):
    x = idx_images(2)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_bytes(x))
    (tmp_path / "train-labels.idx1-ubyte").write_bytes(idx_bytes(np.array([3, 4], np.uint8)))
    assert load_idx_folder(tmp_path, "train").y.tolist() == [3, 4]
    # a single file of the pair finds its partner
    ds = load_dataset(str(tmp_path / "train-labels.idx1-ubyte"), (1, 28, 28))
    assert ds.y.tolist() == [3, 4]


def test_idx_truncated_data(tmp_path):
    write_mnist(tmp_path, n=5)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    msg = expect_error(load_idx, p, tmp_path / "train-labels-idx1-ubyte")
    assert str(p) in msg and "truncated" in msg
    assert "expected: 3920 data bytes after the header (5 images of 28x28)" in msg
    assert "found: 3820 bytes (only 4 complete)" in msg


def test_idx_truncated_header_and_short_file(tmp_path):
    p = tmp_path / "im"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    msg = expect_error(load_idx, p, p)
    assert "truncated inside its header" in msg and "expected: 16 header bytes" in msg and "found: 6 bytes" in msg
    p.write_bytes(b"\0\0")
    assert "too short to hold a header" in expect_error(load_idx, p, p)


def test_idx_gzip_truncated(tmp_path):
    write_mnist(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:200])
    msg = expect_error(load_idx, p, tmp_path / "train-labels-idx1-ubyte.gz")
    assert str(p) in msg and "cannot decompress" in msg and "expected: a complete gzip file" in msg


def test_idx_wrong_magic_and_swapped_files(tmp_path):
    write_mnist(tmp_path)
    im, lb = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    msg = expect_error(load_idx, lb, im)
    assert str(lb) in msg and "1 dimension, not 3" in msg
    assert "magic number 0x00000803" in msg and "found: magic number 0x00000801" in msg
    assert "swapped" in msg
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x89PNG\r\n\x1a\nxxxxxxxx")
    msg = expect_error(load_idx, junk, lb)
    assert "not an IDX images file" in msg and "found: a PNG image" in msg


def test_idx_float_type_rejected(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(bytes([0, 0, 0x0D, 3]) + (1).to_bytes(4, "big") * 3 + b"\0\0\0\0")
    msg = expect_error(load_idx, p, p)
    assert "holds 32-bit floats" in msg and "expected: unsigned bytes" in msg


def test_idx_trailing_bytes(tmp_path):
    write_mnist(tmp_path, n=2)
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes() + b"\0\0")
    msg = expect_error(load_idx, tmp_path / "train-images-idx3-ubyte", p)
    assert "longer than its header says" in msg and "found: 4 bytes (2 extra)" in msg


def test_idx_count_mismatch_and_shape(tmp_path):
    write_mnist(tmp_path, n=5)
    lb = tmp_path / "train-labels-idx1-ubyte"
    lb.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    msg = expect_error(load_idx, tmp_path / "train-images-idx3-ubyte", lb)
    assert str(lb) in msg and "different numbers of samples" in msg
    assert "expected: 5 labels" in msg and "found: 4 labels" in msg
    write_mnist(tmp_path, n=5)
    msg = expect_error(load_idx, tmp_path / "train-images-idx3-ubyte", lb, (3, 32, 32))
    assert "do not match the network's input shape" in msg
    assert "expected: RGB 32x32 images (3x32x32)" in msg and "found: 5 grayscale 28x28 images (1x28x28)" in msg
    msg = expect_error(load_idx, tmp_path / "train-images-idx3-ubyte", lb, num_classes=3)
    assert "out of range" in msg and "class indices 0..2" in msg


def test_idx_folder_missing_split(tmp_path):
    write_mnist(tmp_path)
    msg = expect_error(load_idx_folder, tmp_path, "test")
    assert str(tmp_path) in msg and "no test split" in msg
    assert "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]" in msg
    assert "found: train-images-idx3-ubyte, train-labels-idx1-ubyte" in msg
    assert dataset_splits(str(tmp_path)) == ("train",)


def test_idx_missing_file(tmp_path):
    msg = expect_error(load_idx, tmp_path / "nope", tmp_path / "nope2")
    assert "does not exist" in msg and "nope" in msg


# --------------------------------------------------------------------------- CIFAR-10

def cifar_records(n=4, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = np.arange(n, dtype=np.uint8) % 10 if labels is None else np.asarray(labels, np.uint8)
    rec = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1)
    return x, y, rec.tobytes()


def test_cifar_file(tmp_path):
    x, y, data = cifar_records(4)
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(data)
    ds = load_cifar10_bin(p, (3, 32, 32))
    assert ds.x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(ds.x, x / np.float32(255))  # CHW order, red plane first
    assert ds.y.tolist() == y.tolist() and ds.class_names == CIFAR10_CLASSES
    assert len(load_dataset(str(p), (3, 32, 32))) == 4


def test_cifar_folder_order_and_meta(tmp_path):
    parts = []
    for k in (1, 2, 10):  # numeric order, not string order
        x, y, data = cifar_records(2, seed=k, labels=[k % 10, k % 10])
        (tmp_path / f"data_batch_{k}.bin").write_bytes(data)
        parts.append(y)
    (tmp_path / "test_batch.bin").write_bytes(cifar_records(3, seed=9)[2])
    names = [f"c{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    tr = load_cifar10_folder(tmp_path, "train", (3, 32, 32))
    assert tr.y.tolist() == [1, 1, 2, 2, 0, 0] and tr.class_names == tuple(names)
    assert len(load_cifar10_folder(tmp_path, "test")) == 3
    assert len(load_dataset(str(tmp_path), (3, 32, 32), "test")) == 3
    assert dataset_splits(str(tmp_path)) == ("train", "test")


def test_cifar_truncated(tmp_path):
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(cifar_records(3)[2][:-10])
    msg = expect_error(load_cifar10_bin, p)
    assert str(p) in msg and "truncated" in msg
    assert "3073 bytes (1 label byte, then 3072 pixel bytes" in msg
    assert "found: 9209 bytes = 2 whole records and 3063 bytes more" in msg
    p.write_bytes(b"")
    assert "is empty" in expect_error(load_cifar10_bin, p)


def test_cifar_bad_labels_and_cifar100(tmp_path):
    p = tmp_path / "b.bin"
    p.write_bytes(cifar_records(2, labels=[3, 42])[2])
    msg = expect_error(load_cifar10_bin, p)
    assert "labels outside 0..9" in msg and "found: label 42 in record 1" in msg
    q = tmp_path / "train.bin"
    q.write_bytes(bytes(3074 * 2))
    assert "looks like a CIFAR-100 binary file" in expect_error(load_cifar10_bin, q)


def test_cifar_shape_mismatch(tmp_path):
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(cifar_records(2)[2])
    msg = expect_error(load_cifar10_bin, p, (1, 28, 28))
    assert "expected: grayscale 28x28 images (1x28x28)" in msg and "found: 2 RGB 32x32 images (3x32x32)" in msg


def test_pickled_cifar_is_refused_not_loaded(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    blob = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=2)
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(blob)
    for call in (lambda: load_dataset(str(folder), (3, 32, 32)),
                 lambda: load_dataset(str(folder / "data_batch_1"), (3, 32, 32)),
                 lambda: load_cifar10_folder(folder, "train"),
                 lambda: load_cifar10_bin(folder / "data_batch_1")):
        with pytest.raises(CnnError) as e:
            call()
        msg = message(e)
        assert "data_batch_1" in msg and "pickle" in msg and "binary version" in msg
        assert "cifar-10-binary.tar.gz" in msg


def test_cifar_folder_missing_test(tmp_path):
    (tmp_path / "data_batch_1.bin").write_bytes(cifar_records(1)[2])
    msg = expect_error(load_cifar10_folder, tmp_path, "test")
    assert "no CIFAR-10 test batches" in msg and "expected: test_batch.bin" in msg
    assert "found: data_batch_1.bin" in msg


# --------------------------------------------------------------------------- image folders

def write_class_folders(root, classes=("dog", "cat", "ant"), per=2, size=(8, 8), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            shape = size[::-1] if mode == "L" else size[::-1] + (3,)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(a, mode).save(root / c / f"{i}.png")
            arrays[(c, i)] = a
    return arrays


def test_image_folder_classes_sorted(tmp_path):
    arrays = write_class_folders(tmp_path)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")  # ignored
    ds = load_image_folder(tmp_path, (1, 8, 8))
    assert ds.class_names == ("ant", "cat", "dog")
    assert ds.y.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(ds.x[2, 0], arrays[("cat", 0)] / np.float32(255))
    assert dataset_splits(str(tmp_path)) == ("train",)


def test_image_folder_rgb_and_split_layout(tmp_path):
    write_class_folders(tmp_path / "train", ("a", "b"), mode="RGB", size=(6, 5))
    write_class_folders(tmp_path / "val", ("a", "b"), per=1, mode="RGB", size=(6, 5))
    tr = load_dataset(str(tmp_path), (3, 5, 6))
    te = load_dataset(str(tmp_path), (3, 5, 6), "test")
    assert tr.x.shape == (4, 3, 5, 6) and te.x.shape == (2, 3, 5, 6)
    assert dataset_splits(str(tmp_path)) == ("train", "test")


def test_image_folder_wrong_size_is_an_error_unless_resize(tmp_path):
    write_class_folders(tmp_path, ("a", "b"), size=(8, 8))
    Image.fromarray(np.zeros((10, 12, 3), np.uint8), "RGB").save(tmp_path / "b" / "big.png")
    msg = expect_error(load_image_folder, tmp_path, (1, 8, 8))
    assert "big.png" in msg and "expected: 1x8x8 (grayscale 8x8)" in msg and "found: 3x10x12 RGB" in msg
    assert "resize=True" in msg
    ds = load_image_folder(tmp_path, (1, 8, 8), resize=True)
    assert ds.x.shape == (5, 1, 8, 8) and ds.x.min() >= 0 and ds.x.max() <= 1
    rgb = load_image_folder(tmp_path, (3, 4, 4), resize=True)
    assert rgb.x.shape == (5, 3, 4, 4)


def test_image_folder_16bit_resize(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "a" / "w.png")
    ds = load_image_folder(tmp_path, (1, 2, 2), resize=True)
    np.testing.assert_allclose(ds.x, 1.0)


def test_image_folder_corrupt_image(tmp_path):
    write_class_folders(tmp_path, ("a",))
    bad = tmp_path / "a" / "broken.png"
    data = (tmp_path / "a" / "0.png").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    msg = expect_error(load_image_folder, tmp_path, (1, 8, 8))
    assert "broken.png" in msg and ("truncated" in msg or "cannot decode" in msg)
    msg = expect_error(load_image_folder, tmp_path, (1, 8, 8), resize=True)
    assert "broken.png" in msg


def test_image_folder_without_class_folders(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "x.png")
    msg = expect_error(load_image_folder, tmp_path, (1, 8, 8))
    assert "no class subfolders" in msg and "found: 1 images directly in the folder" in msg
    (tmp_path / "empty").mkdir()
    msg = expect_error(load_image_folder, tmp_path, (1, 8, 8))
    assert str(tmp_path / "empty") in msg and "has no images" in msg


def test_image_folder_too_many_classes(tmp_path):
    write_class_folders(tmp_path, ("a", "b", "c"), per=1)
    msg = expect_error(load_image_folder, tmp_path, (1, 8, 8), num_classes=2)
    assert "more classes than the network has outputs" in msg and "expected: class indices 0..1" in msg
    assert "found: label 2 ('c'); labels from 0 to 2" in msg and "subfolders in sorted order: a, b, c" in msg


def test_image_folder_without_test_split(tmp_path):
    write_class_folders(tmp_path, ("a",), per=1)
    msg = expect_error(load_dataset, str(tmp_path), (1, 8, 8), "test")
    assert "no test split" in msg


def test_class_dataset_subset_keeps_names(tmp_path):
    write_class_folders(tmp_path, ("a", "b"), per=2)
    ds = load_image_folder(tmp_path, (1, 8, 8)).subset([0, 3])
    assert ds.class_names == ("a", "b") and ds.y.tolist() == [0, 1]


# --------------------------------------------------------------------------- the dispatcher

def test_dispatch_digits_and_npz(tmp_path):
    d = load_dataset("digits", (1, 28, 28), "test")
    assert len(d) == 1000
    msg = expect_error(load_dataset, "digits", (3, 32, 32))
    assert "expected: RGB 32x32 images (3x32x32)" in msg and "found: 4000 grayscale 28x28 images" in msg
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 1, 4, 4), np.float32), y=np.array([0, 1, 2]))
    assert len(load_dataset(str(tmp_path / "d.npz"), (1, 4, 4))) == 3


def test_a_missing_relative_data_set_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """`dataset "data.npz"` in a model file in another folder: 'found: no such file or folder', with
    no word that the path is taken from the current folder, not the model file's."""
    monkeypatch.chdir(tmp_path)
    msg = expect_error(load_dataset, "data.npz", (1, 28, 28))
    assert f"found: no such file or folder in {tmp_path} (a relative path is taken from the current folder)" \
        in msg, msg
    msg = expect_error(load_dataset, str(tmp_path / "data.npz"), (1, 28, 28))
    assert "found: no such file or folder\n" in msg + "\n" and "current folder" not in msg, msg


def test_dispatch_unknown_and_missing(tmp_path):
    msg = expect_error(load_dataset, str(tmp_path / "nothing"), (1, 28, 28))
    assert "data set not found" in msg and "'digits'" in msg
    p = tmp_path / "data.csv"
    p.write_text("1,2,3\n")
    msg = expect_error(load_dataset, str(p), (1, 28, 28))
    assert "unknown data set format" in msg and str(p) in msg and "found: 6 bytes starting with b'1,2,3\\n'" in msg
    q = tmp_path / "train-images-idx3-ubyte"
    q.write_bytes(idx_bytes(idx_images(1)))
    msg = expect_error(load_dataset, str(q), (1, 28, 28))
    assert "train-labels-idx1-ubyte" in msg and "does not exist" in msg
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", (1, 28, 28), "validation")


def test_dispatch_pickle_file(tmp_path):
    p = tmp_path / "data.pkl"
    p.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    msg = expect_error(load_dataset, str(p), (1, 28, 28))
    assert "does not unpickle" in msg and str(p) in msg


def test_cli_renders_without_traceback(tmp_path):
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(b"\x01" * 5000)
    with pytest.raises(CnnError) as e:
        load_dataset(str(p), (3, 32, 32))
    text = e.value.diagnostics[0].render()
    assert text.startswith(f"{p}: error: CIFAR-10 batch file is truncated")
    assert "\n  expected: " in text and "\n  found: 5000 bytes = 1 whole records and 1927 bytes more" in text


def test_cifar_bin_whose_first_bytes_look_like_idx_is_still_cifar(tmp_path):
    # label 0, then red pixels 0 and 8: the file starts 00 00 08 like an IDX magic number
    record = np.zeros(3073, np.uint8)
    record[2] = 8
    path = tmp_path / "batch.bin"
    path.write_bytes(np.concatenate([record, record]).tobytes())
    from cnndsl.data.formats import load_dataset

    ds = load_dataset(str(path), (3, 32, 32))
    assert len(ds) == 2


# --------------------------------------------------------------------------- the registry

def write_sample(fmt: str, root):
    """A small valid data set of format `fmt` under `root`, and the spec that names it. A format
    added to FORMATS without a sample here fails test_every_format_is_detected_and_loads."""
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "digits":
        return "digits"
    if fmt == "idx-folder":
        write_mnist(root)
        write_mnist(root, prefix="t10k")
        return str(root)
    if fmt == "idx":
        write_mnist(root)
        return str(root / "train-labels-idx1-ubyte")
    if fmt == "cifar-folder":
        (root / "data_batch_1.bin").write_bytes(cifar_records(3)[2])
        (root / "test_batch.bin").write_bytes(cifar_records(2, seed=1)[2])
        return str(root)
    if fmt == "cifar":
        (root / "b.bin").write_bytes(cifar_records(3)[2])
        return str(root / "b.bin")
    if fmt == "image-folder":
        write_class_folders(root / "train", size=(28, 28))
        write_class_folders(root / "test", size=(28, 28), seed=1)
        return str(root)
    if fmt == "npz":
        np.savez(root / "d.npz", x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([0, 1, 2]))
        return str(root / "d.npz")
    if fmt == "pickle":
        (root / "data_batch_1").write_bytes(pickle.dumps({"data": [1]}, protocol=2))
        return str(root / "data_batch_1")
    raise AssertionError(f"no sample of the data format '{fmt}': add one to write_sample")


SHAPES = {"cifar-folder": (3, 32, 32), "cifar": (3, 32, 32)}


@pytest.mark.parametrize("fmt", [f.name for f in FORMATS])
def test_every_format_is_detected_and_loads(fmt, tmp_path):
    spec = write_sample(fmt, tmp_path / fmt)
    assert find_format(spec).name == fmt
    shape = SHAPES.get(fmt, (1, 28, 28))
    if fmt == "pickle":  # recognised to be refused, never loaded
        assert "does not unpickle" in expect_error(load_dataset, spec, shape)
        return
    splits = dataset_splits(spec)
    for split in splits or ("train",):
        ds = load_dataset(spec, shape, split)
        assert isinstance(ds, Dataset) and len(ds) > 0 and ds.x.shape[1:] == shape and ds.y.dtype == np.int64
    # one label check for every format: a class count below the labels is refused, naming the data
    msg = expect_error(load_dataset, spec, shape, num_classes=1)
    assert "expected: class indices 0..0" in msg and "labels from 0 to" in msg


def test_check_labels_is_the_loss_rule():
    """The format side refuses exactly the labels the class-index rule of the losses refuses."""
    y = np.array([0, 3, -1, 5, 2], np.int64)
    msg = expect_error(check_labels, "f.npz", y, 4)
    assert msg.startswith("f.npz: error: labels are out of range") and "expected: class indices 0..3" in msg
    assert "found: label -1 in sample 2 (the first of 2 out of 5); labels from -1 to 5" in msg
    assert "found: label -1 in sample 2" in expect_error(check_labels, "f.npz", y, None)  # negative, any count
    check_labels("f.npz", y[[0, 1, 4]], 4)
    check_labels("f.npz", np.zeros(0, np.int64), 1)
